import { CHANGE_TABLES, changeTableDifference } from "../../docgen/change-docs";

// docs/configuration.md's change tables say what changing each key does to running prod and swarm stacks; real
// previews must still say the same (npm run docs:changes regenerates them, measuring each kind of change under load).
describe("the change tables of docs/configuration.md", () => {
  // One test per stack, each with its own time: about 60 previews each, two at a time, 6–7 min each here
  // (CI's machine took longer than 15 min for both in one test, one preview at a time).
  test.each(CHANGE_TABLES.map((t) => t.stack))(
    "match what pulumi preview says for every key on a running %s stack",
    async (stack) => {
      expect(await changeTableDifference(stack)).toBe("");
    },
    1_200_000,
  );
});

import { CHANGE_TABLES, changeTableDifference } from "../../docgen/change-docs";

// docs/configuration.md's change tables say what changing each key does to running prod and swarm stacks; real
// previews must still say the same (npm run docs:changes regenerates them, measuring each kind of change under load).
describe("the change tables of docs/configuration.md", () => {
  // One test per stack, each with its own time: about 40 previews each, 7.5 min on an idle machine (CI's
  // machine took longer than 15 min for both in one test).
  test.each(CHANGE_TABLES.map((t) => t.stack))(
    "match what pulumi preview says for every key on a running %s stack",
    async (stack) => {
      expect(await changeTableDifference(stack)).toBe("");
    },
    1_200_000,
  );
});

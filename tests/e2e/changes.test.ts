import { changeTableDifference } from "../../docgen/change-docs";

// docs/configuration.md's change tables say what changing each key does to running prod and swarm stacks; real
// previews must still say the same (npm run docs:changes regenerates them, measuring each kind of change under load).
describe("the change tables of docs/configuration.md", () => {
  test("match what pulumi preview says for every key on running prod and swarm stacks", async () => {
    expect(await changeTableDifference()).toBe("");
  }, 900_000); // about 75 previews on two stacks: 4.5 min on an idle machine, more on a busy one
});

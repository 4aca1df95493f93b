import { changeTableDifference } from "../../tools/change-docs";

// The README's change table says what changing each key does to a running prod stack; real previews must
// still say the same (npm run docs:changes regenerates it, measuring each kind of change under load).
describe("README's change table", () => {
  test("matches what pulumi preview says for every key on a running prod stack", async () => {
    expect(await changeTableDifference()).toBe("");
  });
});

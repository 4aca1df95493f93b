import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { named, runSuites, RunResults, StepError } from "../../bench/run-results";

// The bench's results file (bench/out/results.json) after a run that fails part-way, without running the bench:
// suites stand in for the data and control planes and save figures as the real ones do.
describe("bench results survive a failing step (bench/run-results.ts)", () => {
  let dir: string;
  let file: string;
  const read = () => JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown> & { run: Record<string, unknown> };
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-bench-results-"));
    file = path.join(dir, "out", "results.json");
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const BIND = "listen tcp4 127.0.0.1:44189: bind: address already in use";
  const dataFigures = { scenarios: [{ name: "prod", rps: 6562 }], measuredAt: "2026-12-01T10:00:00.000Z" };

  test("the control plane failing after the data plane keeps the data figures, the samples so far, and names the step", async () => {
    const saved = new RunResults(file);
    let cleaned = false;
    const failure = await runSuites(
      saved,
      [
        {
          name: "data",
          run: async () => {
            saved.progress("data", { scenarios: [{ name: "prod", rps: 6000 }] }, "5 of 6 rounds");
            return dataFigures;
          },
        },
        {
          name: "control",
          run: async () => {
            saved.progress("control", { controlPlane: [{ name: "compose-up", medianMs: 900 }] }, "5 of 5 rounds, targets");
            return named("control plane: pulumi-up-prod", async () => {
              throw new Error(`pulumi up exited 255: ${BIND}`);
            });
          },
        },
      ],
      async () => {
        cleaned = true;
      },
    );
    expect(cleaned).toBe(true);
    expect(failure).toBeInstanceOf(StepError);
    const written = read();
    expect(written.scenarios).toEqual(dataFigures.scenarios);
    expect(written.controlPlane).toEqual([{ name: "compose-up", medianMs: 900 }]);
    expect(written.run).toMatchObject({
      complete: ["data"],
      partial: { control: "5 of 5 rounds, targets" },
      failed: { step: "control plane: pulumi-up-prod" },
    });
    expect((written.run.failed as { message: string }).message).toContain(BIND);
    // --record keeps only what is complete.
    expect(saved.completeFigures()).toEqual(dataFigures);
    // Replaced in one rename: nothing half written is left beside it.
    expect(fs.readdirSync(path.dirname(file))).toEqual(["results.json"]);
  });

  test("rounds measured before a failing round are on disk", async () => {
    const saved = new RunResults(file);
    const failure = await runSuites(
      saved,
      [
        {
          name: "data",
          run: async () => {
            for (let round = 1; round <= 3; round++) {
              if (round === 3) throw new StepError("prod: measuring", new Error("wrk printed no summary"));
              saved.progress("data", { rounds: round }, `${6 - round} of 6 rounds`);
            }
            return {};
          },
        },
      ],
      async () => undefined,
    );
    expect(failure).toBeDefined();
    expect(read()).toMatchObject({
      rounds: 2,
      run: { complete: [], partial: { data: "4 of 6 rounds" }, failed: { step: "prod: measuring" } },
    });
    expect(saved.completeFigures()).toEqual({});
  });

  test("a step nested in another is named by the innermost one", async () => {
    const e = await named("control plane", () =>
      named("control plane: creating cp-scale-4", async () => {
        throw new Error("boom");
      }),
    ).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(StepError);
    expect((e as StepError).step).toBe("control plane: creating cp-scale-4");
    expect((e as StepError).message).toBe("control plane: creating cp-scale-4: boom");
  });

  test("a run that ends well records every suite as complete and no failure", async () => {
    const saved = new RunResults(file);
    const failure = await runSuites(saved, [{ name: "data", run: async () => dataFigures }], async () => undefined);
    expect(failure).toBeUndefined();
    expect(read()).toEqual({ ...dataFigures, run: { complete: ["data"], partial: {} } });
  });
});

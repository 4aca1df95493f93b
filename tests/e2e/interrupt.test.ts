import { answersHello, recover as recoverStack, upStack, versionsServing, within, type LiveStack } from "./live";

// `pulumi up` interrupted for real: the CLI process gets SIGINT (Ctrl-C) or SIGKILL in the middle of a
// release, and the stack must come back with one documented command at most.
describe("interrupted updates of prod", () => {
  let live: LiveStack;
  let version = 1;
  const nextVersion = () => `0.0.${++version}`;

  const recover = () => recoverStack(live);

  /** After `pulumi up`: the site serves the expected version, and the engine holds nothing the state does not know. */
  const converged = async (v: string) => {
    await live.up();
    await within(10_000, answersHello(live.url), "serves after pulumi up");
    expect(await versionsServing(live.url)).toEqual([v]);
    expect(await live.unknownOnEngine()).toEqual([]);
    expect(await live.preview()).toEqual([]);
  };

  beforeAll(async () => {
    live = await upStack("prod", {}, "interrupt");
  });
  afterAll(async () => {
    await live?.destroy();
  });

  test("on a healthy stack, recover changes nothing and says so", async () => {
    const before = JSON.stringify(await live.readState());
    expect(await recover()).toContain("nothing to recover");
    expect(JSON.stringify(await live.readState())).toBe(before);
  });

  // The CLI's first ^C cancels the update: no new step starts, those in flight finish and are recorded, and
  // the run fails with "update canceled". Nothing is left for `npm run recover`.
  test("Ctrl-C (SIGINT) during a release: pulumi finishes what is in flight, and the next pulumi up converges", async () => {
    const v = nextVersion();
    const run = await live.interruptedUp({ appVersion: v }, /flask-container creating replacement/, "SIGINT");
    console.log(`SIGINT during a release: pulumi up exited ${run.code}`);
    expect(run.code).toBe(1);
    const cancelled = run.output.indexOf("^C received; cancelling.");
    expect(cancelled).toBeGreaterThan(-1);
    const afterCancel = run.output.slice(cancelled);
    expect(afterCancel).toContain("error: update canceled");
    // The replacement being created when ^C came was finished; no step was announced after it.
    expect(afterCancel).toMatch(/flask-container created replacement/);
    expect(afterCancel.match(/^ *[-+~]+ +\S+ \S+ (creating|updating|deleting|replacing)\b.*$/gm) ?? []).toEqual([]);
    expect(await live.unknownOnEngine()).toEqual([]);
    expect(await recover()).toContain("nothing to recover");
    await converged(v);
  });

  // The kill comes a moment after the step is announced, while the provider is at work on it.
  test.each([
    ["while the app image builds", /flask-build-\S+ creating/, 0, {}],
    ["while the app container is being replaced", /flask-container creating replacement/, 200, {}],
    ["while nginx is being replaced", /nginx-container creating replacement/, 200, { nginxWorkerProcesses: "2" }],
  ])("SIGKILL %s: npm run recover, then pulumi up converges with nothing orphaned", async (_when, at, delayMs, change) => {
    const v = nextVersion();
    const run = await live.interruptedUp({ appVersion: v, ...change }, at, "SIGKILL", delayMs);
    expect(run.code).toBeNull(); // the signal ended it, not the run finishing first
    const orphaned = await live.unknownOnEngine();
    console.log(
      `SIGKILL ${_when}: on the engine, unknown to the state: ${orphaned.map((o) => `${o.kind} ${o.name}`).join(", ") || "nothing"}`,
    );
    const out = await recover();
    expect(out).not.toContain("nothing to recover");
    expect(await live.unknownOnEngine()).toEqual([]);
    await converged(v);
  });
});

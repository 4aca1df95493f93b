import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ROOT } from "../../infra/stack-files";
import { answersHello, failures, get, underLoad, upStack, versionsServing, within, type LiveStack } from "./live";

const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };

/** A copy of app/ whose health endpoint fails: a release that never becomes healthy. */
function brokenApp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-broken-"));
  fs.chmodSync(dir, 0o755);
  const code = fs.readFileSync(path.join(ROOT, "app", "main.py"), "utf8");
  const broken = code.replace('return {"status": "ok"}', 'return {"status": "broken"}, 500');
  if (broken === code) throw new Error("app/main.py's health route changed: update brokenApp()");
  fs.writeFileSync(path.join(dir, "main.py"), broken);
  return dir;
}

// The prod shape on plain containers, under steady load through nginx while releases go out with the real
// `pulumi up`: every response is counted, and none may fail.
describe.each([1, 2])("releases of prod with %i app replica(s) under load", (replicas) => {
  let live: LiveStack;
  let version = 1;
  const release = async (what: string, up: (v: string) => Promise<void>) => {
    const next = `0.0.${version + 1}`;
    const { load, error } = await underLoad(live.url, () => up(next));
    console.log(
      `prod ×${replicas}, ${what}: ${load.requests} responses, ${JSON.stringify(failures(load))}, ` +
        `${load.retried} sent again after a keep-alive connection closed`,
    );
    return { load, error, next };
  };

  beforeAll(async () => {
    live = await upStack("prod", { replicas: String(replicas) }, `release${replicas}`);
  });
  afterAll(async () => {
    await live?.destroy();
  });

  const expectOnlyNewAndNothingOld = async (v: string) => {
    expect(await versionsServing(live.url)).toEqual([v]);
    expect(await live.unknownOnEngine()).toEqual([]);
  };

  test("a new appVersion (a rebuilt image) drops no request", async () => {
    const { load, error, next } = await release("appVersion", (v) => live.up({ config: { appVersion: v } }));
    expect(error).toBeUndefined();
    version++;
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual(NO_FAILURES);
    await expectOnlyNewAndNothingOld(next);
  });

  test("a changed command (gunicornWorkers) drops no request", async () => {
    const { load, error } = await release("gunicornWorkers", () => live.up({ config: { gunicornWorkers: "3" } }));
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await live.unknownOnEngine()).toEqual([]);
  });

  test("pulumi up --replace of the app containers drops no request", async () => {
    const names = replicas === 1 ? ["flask-container"] : ["flask-container", "flask-container-2"];
    const before = names.map((n) => live.resource(n).id);
    const { load, error } = await release("up --replace", () => live.up({ replace: names }));
    expect(error).toBeUndefined();
    expect(names.map((n) => live.resource(n).id).filter((id) => before.includes(id))).toEqual([]);
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await live.unknownOnEngine()).toEqual([]);
  });

  test("a release that never becomes healthy fails pulumi up with the reason; the old version serves throughout", async () => {
    const serving = `0.0.${version}`;
    const broken = brokenApp();
    try {
      const { load, error } = await release("unhealthy release", () => live.up({ config: { appCodeMount: broken } }));
      expect(error?.message).toMatch(/the new container is unhealthy \(last healthcheck: .*500/);
      expect(error?.message).toContain("the old one keeps serving");
      expect(load.ok).toBeGreaterThan(500);
      expect(failures(load)).toEqual(NO_FAILURES);
      expect(await versionsServing(live.url)).toEqual([serving]);
      // The next good release goes through, and leaves nothing of the failed one behind.
      const good = await release("good release after the failed one", (v) =>
        live.up({ config: { appCodeMount: "", appVersion: v } }),
      );
      expect(good.error).toBeUndefined();
      version++;
      expect(failures(good.load)).toEqual(NO_FAILURES);
      await expectOnlyNewAndNothingOld(good.next);
    } finally {
      fs.rmSync(broken, { recursive: true, force: true });
    }
  });

  test("a change of nginx's rendered conf reloads the running nginx: no request lost, the same container", async () => {
    const nginx = live.container("nginx-container");
    const before = await nginx.inspect();
    // A request for / in prod's JSON access log, or in the combined format.
    const logged = async () =>
      (await nginx.logs({ stdout: true, stderr: true })).toString("latin1").split(/"uri":"\/"|"GET \/ /).length;
    const { load, error } = await release("nginx conf (access log unbuffered)", () =>
      live.up({ config: { nginxAccessLog: "on" } }),
    );
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual(NO_FAILURES);
    const after = await nginx.inspect();
    expect([after.Id, after.State.StartedAt]).toEqual([before.Id, before.State.StartedAt]);
    // The reloaded conf is the one serving: each request is logged at once now (prod's buffered log would
    // hold them for up to 5 s).
    const lines = await logged();
    for (let i = 0; i < 5; i++) expect((await get(live.url)).status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    expect((await logged()) - lines).toBeGreaterThanOrEqual(5);
  });

  test("a second pulumi preview finds nothing to change after the releases", async () => {
    await within(5_000, answersHello(live.url), "serves");
    expect((await get(live.url)).status).toBe(200);
    expect(await live.preview()).toEqual([]);
  });
});

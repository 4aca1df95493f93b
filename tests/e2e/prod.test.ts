import * as path from "path";
import { APP_HEALTH_PATH, APP_SOCKET_DIR, APP_UID, CODE_DIR, SOCKET_FILE } from "../../app/facts";
import { CONF_PATH, nginxSocketDir } from "../../nginx/conf";
import { answersHello, at, recreateAppUnderNginx, upStack, execIn, get, within, type LiveStack } from "./live";

// The production-shaped stack: gunicorn behind a hardened nginx over a unix socket, app not published.
describe("prod stack on a real Docker Engine", () => {
  let prod: LiveStack;

  beforeAll(async () => {
    prod = await upStack("prod");
  });
  afterAll(async () => {
    await prod?.destroy();
  });

  test("nginx answers Hello world! from gunicorn, with security headers and no version banner", async () => {
    const r = await get(prod.url);
    expect(r.status).toBe(200);
    expect(r.body).toBe("Hello world!");
    expect(r.headers.get("server")).toBe("nginx");
    expect(r.headers.get("x-content-type-options")).toBe("nosniff");
    expect(r.headers.get("x-frame-options")).toBe("DENY");
  });

  test("a second pulumi preview finds nothing to change, from this checkout and from a copy elsewhere", async () => {
    expect(await prod.preview()).toEqual([]);
    // The same state previewed from the project copied to another folder, as a teammate's clone would.
    const [, elsewhere] = await prod.previewers(2);
    expect(elsewhere.projectDir).not.toBe(prod.projectDir);
    expect((await elsewhere.previewSteps({})).map((s) => `${s.name} ${s.op} ${s.diffs.join(",")}`)).toEqual([]);
  });

  test("pulumi refresh right after pulumi up finds nothing to change", async () => {
    expect(await prod.refreshFindsNothing()).toEqual([]);
  });

  test(`${APP_HEALTH_PATH} answers through nginx and both containers report healthy`, async () => {
    expect((await get(at(prod.url, APP_HEALTH_PATH))).status).toBe(200);
    for (const name of ["flask-container", "nginx-container"]) {
      const info = await prod.container(name).inspect();
      expect([name, info.State.Health?.Status]).toEqual([name, "healthy"]);
    }
  });

  test("the app port is not published on the host", async () => {
    const app = await prod.container("flask-container").inspect();
    const bound = Object.values(app.NetworkSettings.Ports ?? {}).filter((b) => b && b.length > 0);
    expect(bound).toEqual([]);
    expect(prod.outputs.appUrl).toBe("(not published)");
  });

  test("the conf nginx reads (from its read-only conf volume) is the one rendered for prod", async () => {
    const nginx = prod.container("nginx-container");
    const { stdout: text } = await execIn(nginx, ["cat", CONF_PATH]);
    expect(text).toBe(prod.resource("nginx-conf-file").inputs?.conf);
    const mount = (await nginx.inspect()).Mounts.find((m) => m.Destination === path.posix.dirname(CONF_PATH));
    expect([mount?.Type, mount?.RW]).toEqual(["volume", false]);
    expect(text).toContain("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
    // Its only upstream is the app's socket, so every 200 through nginx in this suite came over it.
    expect(text.match(/^\s*server \S+;/gm)).toEqual([`    server unix:${nginxSocketDir(1)}/${SOCKET_FILE};`]);
  });

  test("the socket is the app user's, linked under the name nginx connects to, and reached through a read-only mount", async () => {
    const app = prod.container("flask-container");
    // The name nginx connects to links to the socket of the container that serves now (its cutover made it).
    const hostname = (await app.inspect()).Config.Hostname;
    const link = await execIn(app, ["readlink", `${APP_SOCKET_DIR}/${SOCKET_FILE}`]);
    expect(link.stdout.trim()).toBe(`${hostname}.sock`);
    expect((await execIn(app, ["stat", "-L", "-c", "%u %F", `${APP_SOCKET_DIR}/${SOCKET_FILE}`])).stdout.trim()).toBe(
      `${APP_UID} socket`,
    );
    const nginx = prod.container("nginx-container");
    const mount = (await nginx.inspect()).Mounts.find((m) => m.Destination === nginxSocketDir(1));
    expect([mount?.Type, mount?.RW]).toEqual(["volume", false]);
    const viaSocket = await execIn(
      nginx,
      ["curl", "-fsS", "--unix-socket", `${nginxSocketDir(1)}/${SOCKET_FILE}`, "http://localhost/"],
      "nginx",
    );
    expect([viaSocket.exitCode, viaSocket.stdout, viaSocket.stderr]).toEqual([0, "Hello world!", ""]);
  });

  test("cookie sessions still work: the cookieless fast path only skips empty sessions", async () => {
    // Run in the app container against the deployed code, with two throwaway routes on a test client.
    const script = [
      `import sys; sys.path.insert(0, '${CODE_DIR}')`,
      "from flask import session",
      "from main import app",
      "app.add_url_rule('/t/set', 'tset', lambda: session.update(n=41) or 'set')",
      "app.add_url_rule('/t/get', 'tget', lambda: str(session.get('n', 'none')))",
      "c = app.test_client()",
      "print(c.get('/t/get').get_data(as_text=True))",
      "r = c.get('/t/set'); print('cookie' if 'session=' in r.headers.get('Set-Cookie', '') else 'no cookie')",
      "print(c.get('/t/get').get_data(as_text=True))",
      "print(app.test_client().get('/t/get').get_data(as_text=True))",
    ].join("\n");
    const out = await execIn(prod.container("flask-container"), ["python", "-c", script]);
    expect([out.exitCode, out.stderr]).toEqual([0, ""]);
    expect(out.stdout.trim().split("\n")).toEqual(["none", "cookie", "41", "none"]);
  });

  test("nginx finds a recreated app container within 5 s, without restarting", async () => {
    expect(await recreateAppUnderNginx(prod)).toBeLessThanOrEqual(5_000);
  });

  test("a killed app process is brought back by the restart policy", async () => {
    const app = prod.container("flask-container");
    const before = await app.inspect();
    expect(before.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    process.kill(before.State.Pid, "SIGKILL"); // a crash, not a `docker stop`
    await within(20_000, async () => (await app.inspect()).RestartCount > before.RestartCount, "the engine restarts the app");
    await within(20_000, answersHello(prod.url), "nginx serves the restarted app");
  });

  // Last: it changes the stack. An omitted healthcheck never diffs (the provider reads the image's back),
  // and the provider's update leaves a changed one in place; either way the old check would keep running.
  test("turning healthchecks off reaches the running containers", async () => {
    await prod.up({ config: { healthchecks: "false", waitForHealthy: "false" } });
    for (const name of ["flask-container", "nginx-container"]) {
      const info = await prod.container(name).inspect();
      expect([name, info.State.Health?.Status]).toEqual([name, undefined]); // no check runs, none is reported
    }
    await within(20_000, answersHello(prod.url), "served after the change");
    expect(await prod.preview()).toEqual([]);
  });
});

import * as http from "http";
import type Docker from "dockerode";
import { CODE_DIR } from "../../app/facts";
import { freePort } from "../../harness/ports";
import { answersHello, execIn, upStack, portOf, raw, within, type LiveStack } from "./live";

// The prod stack against hostile clients, and its running containers against the container checks of the
// CIS Docker Benchmark (section 5) that apply to them.
describe("prod stack: hostile input and runtime hardening", () => {
  let prod: LiveStack;
  let port: number;

  beforeAll(async () => {
    // With metrics: the forwarder that publishes metricsPort is checked with the rest.
    prod = await upStack("prod", { httpPort: String(await freePort()), metricsPort: String(await freePort()) });
    port = portOf(prod.url);
  });
  afterAll(async () => {
    await prod?.destroy();
  });

  // After each hostile request: both containers still run, and a normal request succeeds.
  afterEach(async () => {
    for (const name of ["flask-container", "nginx-container"]) {
      const s = (await prod.container(name).inspect()).State;
      expect([name, s.Running, s.Restarting]).toEqual([name, true, false]);
    }
    await within(3_000, answersHello(prod.url), "a normal request after the hostile one");
  });

  const statusOf = (text: string) => Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);

  // Sizes just over our limits but under nginx's defaults, so these fail if the limits are removed.
  test.each([6 * 1024, 64 * 1024])("a %i-byte header line is refused with 400", async (size) => {
    const r = await raw(port, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(size)}\r\nConnection: close\r\n\r\n`);
    expect(statusOf(r.text)).toBe(400);
  });

  test.each([100 * 1024, 10 * 1024 * 1024])("a %i-byte body is refused with 413 before it is read", async (size) => {
    const r = await raw(
      port,
      `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n${"x".repeat(1024)}`,
    );
    expect(statusOf(r.text)).toBe(413);
  });

  test("a malformed request line gets 400", async () => {
    const r = await raw(port, "GARBAGE /\x01\x02 NOT-HTTP\r\n\r\n");
    expect(statusOf(r.text)).toBe(400);
  });

  test("a client that stops sending mid-request is cut off by the header timeout", async () => {
    const started = Date.now();
    const r = await raw(port, "GET / HTTP/1.1\r\nHost: x\r\n", 20_000, true);
    expect(r.closedByServer).toBe(true);
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(9_000); // client_header_timeout 10s, not an instant reject
    expect(waited).toBeLessThan(20_000);
  });

  /** GET with the path sent byte for byte (fetch, like any URL parser, resolves dot segments before sending). */
  const getPath = (p: string) =>
    new Promise<{ status: number; servedBy?: string; body: string }>((resolve, reject) => {
      const req = http.get({ host: "127.0.0.1", port, path: p, headers: { Connection: "close" }, timeout: 5000 }, (res) => {
        let body = "";
        res.setEncoding("latin1");
        res.on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, servedBy: res.headers["x-served-by"] as string, body }));
      });
      req.on("timeout", () => req.destroy(new Error(`GET ${p}: no answer within 5 s`)));
      req.on("error", reject);
    });

  // nginx resolves dot segments (after decoding %2e and %2f) and refuses a path that climbs above the root
  // with 400 before any location: the app, which stamps X-Served-By on every answer, never sees it.
  test.each(["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd", "/static/../../../../etc/passwd"])(
    "path traversal above the root %s is refused by nginx itself with 400",
    async (p) => {
      const r = await getPath(p);
      expect({ status: r.status, servedBy: r.servedBy }).toEqual({ status: 400, servedBy: undefined });
    },
  );

  // One level up stays inside the root, so nginx forwards the path as the client sent it (proxy_pass without
  // a URI part); from the app's code folder it names the container's /etc/passwd. The app has one route that
  // reads files, Flask's /static/<path>, which refuses "..": the answer is the app's 404, without the file.
  test.each(["/static/../etc/passwd", "/static/..%2fetc%2fpasswd", "/static/%2e%2e/etc/passwd", "/static/%2e%2e%2fetc%2fpasswd"])(
    "path traversal %s reaches the app, which answers 404 and no file",
    async (p) => {
      const app = prod.container("flask-container");
      const passwd = (await execIn(app, ["cat", "/etc/passwd"])).stdout;
      expect(passwd).toMatch(/^root:/); // what a leak would show
      expect((await execIn(app, ["test", "-f", `${CODE_DIR}/../etc/passwd`])).exitCode).toBe(0);
      const r = await getPath(p);
      expect({ status: r.status, byApp: r.servedBy !== undefined }).toEqual({ status: 404, byApp: true });
      expect(r.body).not.toContain(passwd.split("\n")[0]);
    },
  );

  test("the running containers pass the container checks that apply", async () => {
    type Check = { check: string; ok: (i: Docker.ContainerInspectInfo, name: string) => boolean };
    const network = String(prod.resource("my-network").outputs?.name);
    // nginx's master runs as root to bind :80 and drop to the nginx user; it keeps 4 capabilities only.
    // nginx-netns holds nginx's network namespace (nginx/handover.ts) and only sleeps.
    const allowedCaps: Record<string, string[]> = {
      "flask-container": [],
      "nginx-container": ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE"],
      "nginx-netns": [],
      "nginx-metrics-container": [],
    };
    const holderId = (await prod.container("nginx-netns").inspect()).Id;
    const checks: Check[] = [
      {
        check: "4.1 non-root user",
        ok: (i, n) => n === "nginx-container" || (i.Config.User !== "" && !/^(0|root)(:|$)/.test(i.Config.User)),
      },
      // The holder runs no service to check: its namespace is checked through nginx's.
      { check: "4.6 healthcheck", ok: (i, n) => n === "nginx-netns" || (i.Config.Healthcheck?.Test?.length ?? 0) > 0 },
      { check: "5.4 not privileged", ok: (i) => i.HostConfig.Privileged === false },
      { check: "5.3 cap_drop ALL", ok: (i) => (i.HostConfig.CapDrop ?? []).includes("ALL") },
      {
        check: "5.3 only needed caps",
        ok: (i, n) =>
          ((i.HostConfig.CapAdd as string[] | undefined) ?? []).every((c) => allowedCaps[n].includes(c.replace(/^CAP_/, ""))),
      },
      { check: "5.10 memory limit", ok: (i) => (i.HostConfig.Memory ?? 0) > 0 },
      { check: "5.11 CPU limit", ok: (i) => (i.HostConfig.NanoCpus ?? 0) > 0 },
      { check: "5.12 read-only root", ok: (i) => i.HostConfig.ReadonlyRootfs === true },
      {
        check: "5.14 restart policy",
        ok: (i) => ["unless-stopped", "on-failure", "always"].includes(i.HostConfig.RestartPolicy?.Name ?? ""),
      },
      { check: "5.25 no-new-privileges", ok: (i) => (i.HostConfig.SecurityOpt ?? []).includes("no-new-privileges:true") },
      // 5.9 (no host network) as what the program sets: the stack's own network, and no other; nginx in the
      // namespace of its holder, which is on that network alone.
      {
        check: "5.9 only the stack's network",
        ok: (i, n) =>
          n === "nginx-container"
            ? i.HostConfig.NetworkMode === `container:${holderId}`
            : JSON.stringify(Object.keys(i.NetworkSettings.Networks)) === JSON.stringify([network]),
      },
      { check: "log rotation", ok: (i) => Boolean(i.HostConfig.LogConfig?.Config?.["max-size"]) },
    ];
    const table: Record<string, Record<string, string>> = {};
    const failed: string[] = [];
    for (const name of Object.keys(allowedCaps)) {
      const info = await prod.container(name).inspect();
      for (const c of checks) {
        const ok = c.ok(info, name);
        (table[c.check] ??= {})[name] = ok ? "pass" : "FAIL";
        if (!ok) failed.push(`${name}: ${c.check}`);
      }
    }
    console.table(table);
    expect(failed).toEqual([]);
  });

  // Debug mode (the Werkzeug debugger, the reloader) exists only under `flask run`; prod's command is gunicorn.
  test("the app runs under gunicorn, not flask run, with the stack's secret key", async () => {
    const config = (await prod.container("flask-container").inspect()).Config;
    expect(config.Cmd?.[0]).toBe("gunicorn");
    // 48 characters from the stack's RandomPassword; without it main.py would pick a random key per process.
    expect(config.Env.filter((e) => e.startsWith("FLASK_SECRET_KEY=")).map((e) => e.length - "FLASK_SECRET_KEY=".length)).toEqual(
      [48],
    );
  });
});

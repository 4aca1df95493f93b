import { answersHello, at, recreateAppUnderNginx, deploy, get, within, type Deployed } from "./live";

// The production-shaped stack: gunicorn behind a hardened nginx with upstream keepalive, app not published.
describe("prod stack on a real Docker Engine", () => {
  let prod: Deployed;

  beforeAll(async () => {
    prod = await deploy("prod");
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

  test("/healthz answers through nginx and both containers report healthy", async () => {
    expect((await get(at(prod.url, "/healthz"))).status).toBe(200);
    for (const name of ["flask-container", "nginx-container"]) {
      const info = await prod.realizer.container(name).inspect();
      expect([name, info.State.Health?.Status]).toEqual([name, "healthy"]);
    }
  });

  test("the app port is not published on the host", async () => {
    const app = await prod.realizer.container("flask-container").inspect();
    const bound = Object.values(app.NetworkSettings.Ports ?? {}).filter((b) => b && b.length > 0);
    expect(bound).toEqual([]);
    expect(prod.run.outputs.appUrl).toBe("(not published)");
  });

  test("the config baked into the nginx image is the one rendered for prod", async () => {
    const nginx = prod.realizer.container("nginx-container");
    const exec = await nginx.exec({ Cmd: ["cat", "/etc/nginx/conf.d/default.conf"], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({});
    const text = await new Promise<string>((resolve) => {
      let out = "";
      stream.on("data", (d: Buffer) => (out += d.toString("utf8")));
      stream.on("end", () => resolve(out));
    });
    const rendered = prod.run.resources.find((r) => r.name === "nginx-image")?.inputs.build as { args: Record<string, string> };
    expect(text).toContain(rendered.args.DEFAULT_CONF);
    expect(text).toContain("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
  });

  test("nginx finds a recreated app container within 5 s, without restarting", async () => {
    expect(await recreateAppUnderNginx(prod)).toBeLessThanOrEqual(5_000);
  });

  test("a killed app process is brought back by the restart policy", async () => {
    const app = prod.realizer.container("flask-container");
    const before = await app.inspect();
    expect(before.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    process.kill(before.State.Pid, "SIGKILL"); // a crash, not a `docker stop`
    await within(20_000, async () => (await app.inspect()).RestartCount > before.RestartCount, "the engine restarts the app");
    await within(20_000, answersHello(prod.url), "nginx serves the restarted app");
  });
});

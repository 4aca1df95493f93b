import * as fs from "fs";
import * as path from "path";
import { APP_HEALTH_PATH } from "../../app/facts";
import { answersHello, at, recreateAppUnderNginx, copyOfApp, upStack, get, within, type LiveStack } from "./live";

// The tutorial's stack: nginx 1.13.7 → `flask run`, code bind-mounted, app port 8080 published.
describe("dev stack on a real Docker Engine", () => {
  let dev: LiveStack;
  let code: string;

  beforeAll(async () => {
    code = copyOfApp();
    dev = await upStack("dev", { appCodeMount: code });
    await within(20_000, answersHello(dev.url), "dev answers through nginx");
  });
  afterAll(async () => {
    await dev?.destroy();
    fs.rmSync(code, { recursive: true, force: true });
  });

  test("nginx on port 80 answers Hello world! from Flask", async () => {
    const r = await get(dev.url);
    expect(dev.url).toBe("http://127.0.0.1:80/");
    expect(r.status).toBe(200);
    expect(r.body).toBe("Hello world!");
    expect(r.headers.get("server")).toMatch(/^nginx\//);
  });

  test("a second pulumi preview finds nothing to change", async () => {
    expect(await dev.preview()).toEqual([]);
  });

  test("pulumi refresh right after pulumi up finds nothing to change", async () => {
    expect(await dev.refreshFindsNothing()).toEqual([]);
  });

  test(`${APP_HEALTH_PATH} answers through nginx`, async () => {
    const r = await get(at(dev.url, APP_HEALTH_PATH));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ status: "ok" });
  });

  test("the app port is published on 127.0.0.1:8080 and answers directly", async () => {
    expect(dev.outputs.appUrl).toBe("http://127.0.0.1:8080/");
    const r = await get("http://127.0.0.1:8080/");
    expect(r.body).toBe("Hello world!");
    expect(r.headers.get("server")).toMatch(/Werkzeug/);
  });

  test("editing the bind-mounted main.py changes the answer without a rebuild", async () => {
    const file = path.join(code, "main.py");
    const original = fs.readFileSync(file, "utf8");
    const imageBefore = (await dev.container("flask-container").inspect()).Image;
    try {
      fs.writeFileSync(file, original.replace('"Hello world!"', '"Hello edited!"'));
      await within(15_000, async () => (await get(dev.url, {}, 1000)).body === "Hello edited!", "edited code is served");
    } finally {
      fs.writeFileSync(file, original);
    }
    await within(15_000, answersHello(dev.url), "original code is served again");
    expect((await dev.container("flask-container").inspect()).Image).toBe(imageBefore);
  });

  test("nginx finds a recreated app container within 5 s, without restarting", async () => {
    expect(await recreateAppUnderNginx(dev)).toBeLessThanOrEqual(5_000);
  });
});

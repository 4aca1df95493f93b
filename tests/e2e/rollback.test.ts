import { spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { stackLabel } from "../../infra/engine-objects";
import { LABEL } from "../../infra/naming";
import { ROOT } from "../../infra/stack-files";
import { docker, failures, get, underLoad, upStack, versionsServing, type LiveStack } from "./live";

const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };
const APP = "flask-container";

/** The stack's app builds on the engine (ID and creation time): a build shows as a new entry. */
async function appBuilds(stack: string): Promise<string[]> {
  const images = await docker.listImages({ filters: JSON.stringify({ label: [stackLabel(stack), LABEL.appVersion] }) });
  return images.map((i) => `${i.Id} ${i.Created}`).sort();
}

/**
 * While `during` runs, one GET every 100 ms: returns when (ms after the start) the last response from another
 * version than `version` came, i.e. from when on `version` answered alone.
 */
async function aloneFrom<T>(url: string, version: string, during: () => Promise<T>): Promise<{ value: T; aloneMs: number }> {
  const start = Date.now();
  let lastOther = 0;
  let done = false;
  const probe = (async () => {
    while (!done) {
      const r = await get(url).catch(() => undefined);
      if (r?.headers.get("x-app-version") !== version) lastOther = Date.now() - start;
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  const value = await during();
  done = true;
  await probe;
  return { value, aloneMs: lastOther };
}

/** `npm run rollback -- --stack <name> --cwd <project>` as a user runs it; resolves with its output. */
function runRollback(
  live: LiveStack,
  env: NodeJS.ProcessEnv,
  extra: string[] = [],
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [
        "-r",
        "ts-node/register",
        path.join(ROOT, "tools", "rollback.ts"),
        "--stack",
        live.name,
        "--cwd",
        live.projectDir,
        ...extra,
      ],
      { cwd: ROOT, env: { ...env, TS_NODE_TRANSPILE_ONLY: "1" }, stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString("utf8")));
    child.stderr.on("data", (d: Buffer) => (output += d.toString("utf8")));
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

// The prod shape: release 0.0.2 (changed code, a build), then back to 0.0.1 with `npm run rollback` under load:
// the image 0.0.1 ran, started without a build through the same health-gated release.
describe("rollback on prod: a version names one kept build", () => {
  let live: LiveStack;
  const ran: Record<string, string> = {};
  const imageOfApp = async () => (await live.container(APP).inspect()).Image;
  const mainPy = () => path.join(live.projectDir, "app", "main.py");
  let original = "";

  beforeAll(async () => {
    live = await upStack("prod", {}, "rollback");
    ran["0.0.1"] = await imageOfApp();
    original = fs.readFileSync(mainPy(), "utf8");
  });
  afterAll(async () => {
    await live?.destroy();
  });

  test("release 0.0.2 with changed code builds a new image; no request fails", async () => {
    const changed = original.replace('return "Hello world!"', 'return "Hello world!", {"X-Release": "second"}');
    expect(changed).not.toBe(original);
    fs.writeFileSync(mainPy(), changed);
    const t0 = Date.now();
    const { load, error } = await underLoad(live.url, () => live.up({ config: { appVersion: "0.0.2" } }));
    const releaseMs = Date.now() - t0;
    console.log(
      `rollback test: release 0.0.2 (a build) took ${releaseMs} ms; ${load.requests} responses, ${JSON.stringify(failures(load))}`,
    );
    expect(error).toBeUndefined();
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await versionsServing(live.url)).toEqual(["0.0.2"]);
    expect((await get(live.url)).headers.get("x-release")).toBe("second");
    ran["0.0.2"] = await imageOfApp();
    expect(ran["0.0.2"]).not.toBe(ran["0.0.1"]);
  });

  test("npm run rollback goes back to 0.0.1: the image 0.0.1 ran, no build, no request fails", async () => {
    const before = await appBuilds(live.name);
    const env = await live.cliEnv();
    const t0 = Date.now();
    const { load, value, error } = await underLoad(live.url, () => aloneFrom(live.url, "0.0.1", () => runRollback(live, env)));
    const commandMs = Date.now() - t0;
    expect(error).toBeUndefined();
    console.log(
      `rollback test: npm run rollback took ${commandMs} ms (0.0.1 alone from ${value?.aloneMs} ms); ` +
        `${load.requests} responses, ${JSON.stringify(failures(load))}\n${value?.value.output.slice(-3000)}`,
    );
    expect(value?.value.code).toBe(0);
    expect(value?.value.output).toMatch(/previous version: 0\.0\.1/);
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await versionsServing(live.url)).toEqual(["0.0.1"]);
    expect((await get(live.url)).headers.get("x-release")).toBeNull();
    await live.readState();
    expect(await imageOfApp()).toBe(ran["0.0.1"]);
    // Not one image made: the engine's app builds are the two it had, IDs and creation times alike.
    expect(await appBuilds(live.name)).toEqual(before);
    expect(await live.unknownOnEngine()).toEqual([]);
  });

  test("appVersion 0.0.2 again with pulumi up runs 0.0.2's build, without a build", async () => {
    const before = await appBuilds(live.name);
    const { load, error } = await underLoad(live.url, () => live.up({ config: { appVersion: "0.0.2" } }));
    expect(error).toBeUndefined();
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await imageOfApp()).toBe(ran["0.0.2"]);
    expect(await appBuilds(live.name)).toEqual(before);
  });

  test("an old appVersion with changed code is refused, naming the version and what to do; nothing that serves changes", async () => {
    // Code no kept build was made from (0.0.2's, changed once more), released under 0.0.1's name.
    const before = await appBuilds(live.name);
    const serving = await imageOfApp();
    const released = fs.readFileSync(mainPy(), "utf8");
    fs.writeFileSync(mainPy(), released.replace('"X-Release": "second"', '"X-Release": "third"'));
    let error: Error | undefined;
    await live.up({ config: { appVersion: "0.0.1" } }).catch((e: Error) => (error = e));
    fs.writeFileSync(mainPy(), released);
    expect(error?.message).toMatch(/appVersion 0\.0\.1 names the kept build sha256:[0-9a-f]{12}/);
    expect(error?.message).toMatch(/set a new appVersion/);
    expect(await imageOfApp()).toBe(serving);
    expect(await appBuilds(live.name)).toEqual(before);
    expect(await versionsServing(live.url)).toEqual(["0.0.2"]);
    await live.configure({ appVersion: "0.0.2" });
  });

  test("a new appImageRepository re-tags the kept builds, without a build, and no request fails", async () => {
    // The same builds under another name: each build's image stays (the running container uses it); only
    // the old tag goes. Found by `npm run docs:changes`: the old build's delete removed the image by ID.
    const serving = await imageOfApp();
    const before = (await appBuilds(live.name)).map((b) => b.split(" ")[0]);
    const { load, error } = await underLoad(live.url, () =>
      live.up({ config: { appImageRepository: "registry.example:5000/flask" } }),
    );
    console.log(`rollback test: appImageRepository changed; ${load.requests} responses, ${JSON.stringify(failures(load))}`);
    expect(error).toBeUndefined();
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await imageOfApp()).toBe(serving);
    expect((await appBuilds(live.name)).map((b) => b.split(" ")[0])).toEqual(before);
    const tags = (await docker.getImage(serving).inspect()).RepoTags ?? [];
    expect(tags).toEqual([`registry.example:5000/flask:0.0.2-${live.name}`]);
  });

  test("a second pulumi preview finds nothing to change; destroy leaves no kept build", async () => {
    expect(await live.preview()).toEqual([]);
    const name = live.name;
    await live.destroy();
    live = undefined as unknown as LiveStack;
    expect(await appBuilds(name)).toEqual([]);
  });
});

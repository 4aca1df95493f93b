import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ephemeralRange, freePort } from "../../harness/ports";
import { ROOT } from "../../infra/stack-files";
import { answersHello, upStack, within, type LiveStack } from "./live";

// A port from harness/ports.ts on a stack brought up by the real CLI (as the bench publishes its stacks):
// Docker binds it, and it lies where no outgoing connection can take it first.
describe("host ports from harness/ports.ts on a real stack", () => {
  let live: LiveStack;
  let port: number;
  const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-ports-e2e-"));

  beforeAll(async () => {
    port = await freePort();
    live = await upStack("prod", { httpPort: String(port) }, "ports");
  });
  afterAll(async () => {
    await live?.destroy();
    fs.rmSync(lockDir, { recursive: true, force: true });
  });

  test("nginx is published on the chosen port, outside the kernel's ephemeral range, and answers there", async () => {
    const { low, high } = ephemeralRange();
    expect({ port, outsideEphemeral: port < low || port > high }).toEqual({ port, outsideEphemeral: true });
    expect(live.url).toBe(`http://127.0.0.1:${port}/`);
    const bound = (await live.container("nginx-netns").inspect()).NetworkSettings.Ports["80/tcp"];
    expect(bound).toEqual([{ HostIp: "127.0.0.1", HostPort: String(port) }]);
    await within(20_000, answersHello(live.url), "nginx answers on the chosen port");
  });

  test("another process choosing from that very port skips it: the bind check sees Docker's socket", () => {
    // A fresh process with its own lock folder: neither this process's set nor its lock file can be what skips it.
    const r = spawnSync(
      process.execPath,
      [
        "-r",
        "ts-node/register",
        "-e",
        `require("./harness/ports").freePort({ from: ${port}, lockDir: ${JSON.stringify(lockDir)} }).then(console.log)`,
      ],
      { cwd: ROOT, encoding: "utf8", env: { ...process.env, TS_NODE_TRANSPILE_ONLY: "1" }, timeout: 60_000 },
    );
    expect(r.status).toBe(0);
    const other = Number(r.stdout.trim());
    expect(Number.isInteger(other)).toBe(true);
    expect(other).not.toBe(port);
  });
});

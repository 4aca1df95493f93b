import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { ephemeralRange, freePort, portPool } from "../../harness/ports";

const lockDir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-ports-test-"));
afterAll(() => fs.rmSync(lockDir, { recursive: true, force: true }));

const listen = (port: number, host: string): Promise<net.Server> =>
  new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(port, host, () => resolve(srv));
  });
const close = (srv: net.Server) => new Promise((r) => srv.close(r));

describe("host ports for published containers (harness/ports.ts)", () => {
  test("a port lies outside the kernel's ephemeral range (read now) and can be bound on 127.0.0.1 and 0.0.0.0", async () => {
    const { low, high } = ephemeralRange();
    for (let i = 0; i < 20; i++) {
      const port = await freePort({ lockDir });
      expect({ port, outside: port < low || port > high }).toEqual({ port, outside: true });
      await close(await listen(port, "127.0.0.1"));
      await close(await listen(port, "0.0.0.0"));
    }
  });

  test("two calls never return the same port, even from the same starting point", async () => {
    const from = portPool().low + 500;
    const ports = [];
    for (let i = 0; i < 30; i++) ports.push(await freePort({ lockDir, from }));
    expect(new Set(ports).size).toBe(ports.length);
  });

  test.each([
    ["127.0.0.1", 3000],
    ["0.0.0.0", 3100],
  ])("a port another socket listens on (%s) is skipped", async (host, offset) => {
    // A port this process was never given, held by a plain socket: only binding it shows it is in use.
    let held = portPool().low + offset;
    let srv = await listen(held, host).catch(() => undefined);
    while (!srv) srv = await listen(++held, host).catch(() => undefined);
    try {
      expect(await freePort({ lockDir, from: held })).not.toBe(held);
    } finally {
      await close(srv);
    }
  });

  test("a port another running process was given is skipped; one whose process is gone is handed out", async () => {
    const from = portPool().low + 2000;
    const holder = spawn("sleep", ["30"]);
    const gone = spawnSync("true").pid;
    try {
      fs.writeFileSync(path.join(lockDir, String(from)), String(holder.pid));
      fs.writeFileSync(path.join(lockDir, String(from + 1)), String(gone));
      expect(await freePort({ lockDir, from })).toBe(from + 1);
      expect(fs.readFileSync(path.join(lockDir, String(from + 1)), "utf8")).toBe(String(process.pid));
    } finally {
      holder.kill();
    }
  });

  test("the pool is the larger gap outside the ephemeral range, above the stack files' fixed ports", () => {
    const file = path.join(lockDir, "range");
    fs.writeFileSync(file, "32768\t60999\n");
    expect(ephemeralRange(file)).toEqual({ low: 32768, high: 60999 });
    expect(portPool({ low: 32768, high: 60999 })).toEqual({ low: 20000, high: 32767 });
    expect(portPool({ low: 49152, high: 65535 })).toEqual({ low: 20000, high: 49151 });
    expect(portPool({ low: 1024, high: 30000 })).toEqual({ low: 30001, high: 65535 });
    expect(() => portPool({ low: 1024, high: 65535 })).toThrow(/fewer than 100 ports/);
    expect(ephemeralRange(path.join(lockDir, "absent"))).toEqual({ low: 49152, high: 65535 });
  });
});

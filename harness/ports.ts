// Host ports for what the bench publishes (and any test that needs one). Not `listen(0)`: the kernel answers
// that from its ephemeral range, the one every outgoing connection draws its local port from, so the port can
// be taken (by any client's connection) between the check and Docker's bind. Ports here come from below that
// range (read at run time), are bound once on every address Docker may bind to see that nothing holds them,
// and are handed out once: per process by a set, across processes by a lock file per port (created
// exclusively; a lock whose process is gone is taken over). Docker holds a published port with a socket of
// its own (dockerd's, even with userland-proxy off, on Engine 20.10), so a port a stack publishes fails the bind.
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";

/** Linux's list; elsewhere the IANA range, which macOS and Windows use. */
const RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range";
const IANA_EPHEMERAL = { low: 49152, high: 65535 };
/** Below this lie the fixed ports the stack files use (80, 8000, 8080, 8100, 8190, 8443) and common services'. */
const POOL_FLOOR = 20000;
const LOCK_DIR = path.join(os.tmpdir(), "flask-proxy-ports");

export interface PortRange {
  low: number;
  high: number;
}

/** The kernel's ephemeral port range, as it is now. */
export function ephemeralRange(file = RANGE_FILE): PortRange {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    return IANA_EPHEMERAL;
  }
  const [low, high] = text.trim().split(/\s+/).map(Number);
  if (!Number.isInteger(low) || !Number.isInteger(high) || low > high) throw new Error(`${file}: cannot read "${text.trim()}"`);
  return { low, high };
}

/** The ports handed out: the larger gap outside the ephemeral range, above POOL_FLOOR. */
export function portPool(ephemeral: PortRange = ephemeralRange()): PortRange {
  const below = { low: POOL_FLOOR, high: ephemeral.low - 1 };
  const above = { low: Math.max(POOL_FLOOR, ephemeral.high + 1), high: 65535 };
  const size = (r: PortRange) => Math.max(0, r.high - r.low + 1);
  const pool = size(below) >= size(above) ? below : above;
  if (size(pool) < 100)
    throw new Error(
      `the ephemeral port range ${ephemeral.low}-${ephemeral.high} leaves fewer than 100 ports above ${POOL_FLOOR} ` +
        `outside it; narrow it (sysctl net.ipv4.ip_local_port_range) so published ports cannot be taken by outgoing connections`,
    );
  return pool;
}

/** Whether a listening socket can be bound on `host:port` at this moment. */
function bindable(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", (e: NodeJS.ErrnoException) => {
      // An address family this host lacks (no IPv6) holds nothing.
      resolve(e.code === "EAFNOSUPPORT" || e.code === "EADDRNOTAVAIL");
    });
    srv.listen({ port, host }, () => srv.close(() => resolve(true)));
  });
}

const handed = new Set<number>();
const locked = new Set<string>();

/** Removes this process's lock files when it exits (the ports' users, Docker's binds, are checked by binding). */
process.once("exit", () => {
  for (const file of locked) fs.rmSync(file, { force: true });
});

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // runs, as another user
  }
};

/** Takes the port's lock file for this process; false if a running process holds it. */
function lock(port: number, dir: string): boolean {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: "wx" });
      locked.add(file);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const holder = Number(fs.readFileSync(file, "utf8").trim());
    if (holder === process.pid || (Number.isInteger(holder) && holder > 0 && alive(holder))) return false;
    fs.rmSync(file, { force: true }); // left by a process that is gone
  }
  return false;
}

export interface PortOptions {
  /** Addresses to bind the port on to see it is free (Docker binds 127.0.0.1, or 0.0.0.0 and :: for all interfaces). */
  hosts?: string[];
  /** The first port to try (then upwards, wrapping within the pool); a random one by default. */
  from?: number;
  pool?: PortRange;
  lockDir?: string;
}

/**
 * A host port below the ephemeral range that nothing is bound to now and that no other caller of this
 * function (in this process or another) has been given while its process runs.
 */
export async function freePort(opts: PortOptions = {}): Promise<number> {
  const pool = opts.pool ?? portPool();
  const hosts = opts.hosts ?? ["127.0.0.1", "0.0.0.0", "::"];
  const count = pool.high - pool.low + 1;
  const start = opts.from ?? pool.low + Math.floor(Math.random() * count);
  for (let i = 0; i < count; i++) {
    const port = pool.low + ((start - pool.low + i) % count);
    if (handed.has(port)) continue;
    let free = true;
    for (const host of hosts) if (free) free = await bindable(port, host);
    if (!free || !lock(port, opts.lockDir ?? LOCK_DIR)) continue;
    handed.add(port);
    return port;
  }
  throw new Error(`no free port in ${pool.low}-${pool.high}`);
}

// Shared pieces of the live suite: stacks brought up by the real `pulumi` CLI (harness/live-stack.ts), HTTP to
// the published ports on 127.0.0.1 only, and commands run in the stacks' containers.
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import * as tls from "tls";
import type Docker from "dockerode";
import { docker, type LiveStack } from "../../harness/live-stack";
import { get, within } from "../../harness/load";
import { containerLog, execIn } from "../../infra/engine";
import { LABEL } from "../../infra/naming";
import { ROOT } from "../../infra/stack-files";

export { docker, upStack, type LiveStack } from "../../harness/live-stack";
export { execIn } from "../../infra/engine";
export { failures, get, underLoad, within, type LoadCount, type Reply } from "../../harness/load";

/** curl (to 127.0.0.1 only, as callers pass) trusting the CA file `ca`; its exit status, and stdout then stderr. */
export function curlTrusting(ca: string, args: string[]): { status: number | null; out: string } {
  const r = spawnSync("curl", ["-sS", "--max-time", "10", "--cacert", ca, ...args], { encoding: "utf8", timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A PEM certificate's SHA-256 fingerprint, as Node's TLS client reports a peer's. */
export const fingerprint = (pem: string): string => new crypto.X509Certificate(pem).fingerprint256;

/** Builds `tag` on the local engine from a Dockerfile's text (a test's own image). */
export function buildTestImage(tag: string, dockerfile: string): void {
  const r = spawnSync("docker", ["build", "-q", "-t", tag, "-"], { input: dockerfile, encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`docker build ${tag}: ${r.stderr}`);
}

/** How many nginx worker processes run in the container. */
export async function nginxWorkers(container: Docker.Container): Promise<number> {
  return Number((await execIn(container, ["sh", "-c", "grep -ls 'nginx: worke[r]' /proc/[0-9]*/cmdline | wc -l"])).stdout.trim());
}

/** Whether the engine no longer has the container: only a 404 counts as gone. */
export const containerGone = (engine: Docker, id: string): Promise<boolean> =>
  engine
    .getContainer(id)
    .inspect()
    .then(
      () => false,
      (e: { statusCode?: number }) => e.statusCode === 404,
    );

/** The running containers in the nginx holder's network namespace: the nginx containers that serve (nginx/handover.ts). */
export async function nginxInHolder(live: LiveStack): Promise<string[]> {
  const engine = await live.engine();
  const holder = await live.container("nginx-netns").inspect();
  const list = await engine.listContainers({ filters: { label: [`${LABEL.stack}=${live.name}`] } });
  return list.filter((c) => c.HostConfig.NetworkMode === `container:${holder.Id}`).map((c) => c.Id);
}

export const answersHello = (url: string) => async () => {
  const r = await get(url, {}, 1000);
  return r.status === 200 && r.body === "Hello world!";
};

/**
 * Has `pulumi up --replace` recreate the app container under a running nginx and returns how long after the
 * update nginx serves again (at most 5 s); fails if nginx was restarted for it.
 */
export async function recreateAppUnderNginx(live: LiveStack): Promise<number> {
  const before = await live.container("nginx-container").inspect();
  await live.up({ replace: ["flask-container"] });
  const elapsed = await within(5_000, answersHello(live.url), "nginx serves the recreated app");
  const after = await live.container("nginx-container").inspect();
  if (after.Id !== before.Id || after.State.StartedAt !== before.State.StartedAt || after.RestartCount !== before.RestartCount) {
    throw new Error("nginx was restarted or replaced to find the recreated app");
  }
  console.log(`${live.name}: recreated app served through nginx ${elapsed} ms after pulumi up`);
  return elapsed;
}

/** `npm run recover -- --stack <name>`, as a user runs it (against the stack's own backend and project copy). */
export async function recover(live: LiveStack): Promise<string> {
  const r = spawnSync("npm", ["run", "-s", "recover", "--", "--stack", live.name, "--cwd", live.projectDir], {
    cwd: ROOT,
    env: await live.cliEnv(),
    encoding: "utf8",
    timeout: 180_000,
  });
  console.log(`npm run recover (${live.name}):\n${r.stdout}${r.stderr}`);
  if (r.status !== 0) throw new Error(`npm run recover exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Sends raw bytes to a loopback port and returns what comes back before the server closes, `ms` pass, or
 * (unless the client writes slowly) a complete response head has arrived.
 */
export function raw(
  port: number,
  payload: string | Buffer,
  ms = 5000,
  writeSlowly = false,
): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: "127.0.0.1", port });
    let text = "";
    let closedByServer = false;
    const timer = setTimeout(() => sock.destroy(), ms);
    sock.on("data", (d) => {
      text += d.toString("latin1");
      if (!writeSlowly && text.includes("\r\n\r\n")) sock.destroy(); // the status is all the tests read
    });
    sock.on("end", () => (closedByServer = true));
    sock.on("close", () => {
      clearTimeout(timer);
      resolve({ text, closedByServer });
    });
    sock.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on("connect", () => {
      if (!writeSlowly) sock.write(payload);
      else sock.write(String(payload).slice(0, 10)); // a client that starts a request and goes quiet
    });
  });
}

/** A private copy of app/ to bind-mount, so tests can edit the code without touching the repo. */
export function copyOfApp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-code-"));
  fs.chmodSync(dir, 0o755); // the app runs as an unprivileged user
  for (const f of ["main.py", "requirements.txt"]) fs.copyFileSync(path.join(ROOT, "app", f), path.join(dir, f));
  return dir;
}

export const portOf = (url: string) => Number(new URL(url).port || 80);
export const at = (url: string, p: string) => new URL(p, url).toString();

/** The app versions (X-App-Version) that answer `n` requests in a row. */
export async function versionsServing(url: string, n = 30): Promise<string[]> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add((await get(url)).headers.get("x-app-version") ?? "?");
  return [...seen].sort();
}

/** A container's log so far, stdout and stderr apart (the engine multiplexes them; dockerode splits them). */
export function logsOf(container: Docker.Container): Promise<{ stdout: string; stderr: string }> {
  return containerLog(container);
}

/** A container's log so far, stdout then stderr, as one text. */
export async function logText(container: Docker.Container): Promise<string> {
  const { stdout, stderr } = await logsOf(container);
  return stdout + stderr;
}

/** Runs a command in the project folder (a setup script); its stdout, or throws with its stderr. */
export function runInProject(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * An address of this host that containers on any of its networks reach (Pebble listens there): the default
 * bridge's gateway. The engine does not always list it (20.10 here, freshly installed, listed only the subnet);
 * then it is the address of the bridge's interface, which is this host's even while the link is down.
 */
export async function bridgeGateway(): Promise<string> {
  const bridge = await docker.getNetwork("bridge").inspect();
  const listed = bridge.IPAM?.Config?.[0]?.Gateway as string | undefined;
  if (listed) return listed;
  const name = bridge.Options?.["com.docker.network.bridge.name"] as string | undefined;
  // `ip`, not os.networkInterfaces(): libuv leaves out an interface that is down, as a bridge with no container is.
  const shown = name ? spawnSync("ip", ["-4", "-o", "addr", "show", "dev", name], { encoding: "utf8" }).stdout : "";
  const address = shown?.match(/\binet (\d+\.\d+\.\d+\.\d+)\//)?.[1];
  if (!address) throw new Error(`the default bridge network lists no gateway, and its interface (${name}) has no IPv4 address`);
  return address;
}

/**
 * For a wait on the certificate nginx serves to change: its reload leaves the old workers accepting for 100 ms
 * after the new ones start, so a connection just after the first new answer may still get the old certificate.
 */
export const HELD_PAST_RELOAD = { holdMs: 500 };

/** The leaf nginx serves for `servername` on 127.0.0.1:`port`, verified against `ca` (rejects if it does not verify). */
export function servedCertificate(port: number, servername: string, ca: string): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, servername, ca, timeout: 5000 }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    socket.on("timeout", () => socket.destroy(new Error("TLS handshake: no answer in 5 s")));
    socket.on("error", reject);
  });
}

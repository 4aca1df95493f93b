// The Docker Engine as the docker provider reaches it, for everything else that talks to it: the dynamic
// resources (infra/rollout.ts, infra/cutover.ts, infra/image.ts, nginx/reload.ts), `npm run recover` and the
// live-test harness. One client from the provider's own settings (docker:host, docker:certPath or
// docker:caMaterial/certMaterial/keyMaterial, docker:sshOpts), read as the provider reads them
// (kreuzwerker/terraform-provider-docker internal/provider/config.go, pulumi-docker provider/image.go):
//   client certificates (the three materials, or ca.pem/cert.pem/key.pem in certPath): TLS to a tcp:// host;
//   ssh://[user@]host[:port][/socket]: the `ssh` binary with sshOpts runs `docker system dial-stdio` on the host;
//   otherwise the host as it is (unix://, tcp://), and without docker:host the local socket.
// A setting the stack leaves unset comes from the environment the provider reads it from (DOCKER_HOST, …).
// Each function requires its modules itself: dynamic providers are serialized and run in a process of their own.
import * as pulumi from "@pulumi/pulumi";
import type { Stack } from "@pulumi/pulumi/automation";
import type Dockerode from "dockerode";
import type * as http from "http";
import { Readable, type Duplex } from "stream";

/** The docker provider's connection settings (its config keys without `docker:`). */
export interface EngineSettings {
  host?: string;
  certPath?: string;
  caMaterial?: string;
  certMaterial?: string;
  keyMaterial?: string;
  sshOpts?: string[];
}

/** The settings as a dynamic resource's input: the key material stays a Pulumi secret in the state. */
export type EngineInputs = { [K in keyof EngineSettings]: pulumi.Input<EngineSettings[K]> };

/** The provider's settings of this program's stack (`new pulumi.Config("docker")`), for dynamic resources. */
export function stackEngine(): EngineInputs {
  const c = new pulumi.Config("docker");
  return {
    host: c.get("host"),
    certPath: c.get("certPath"),
    // Certificates are no secret, but a stack may hold them as one; the key always is.
    caMaterial: c.getSecret("caMaterial"),
    certMaterial: c.getSecret("certMaterial"),
    keyMaterial: c.getSecret("keyMaterial"),
    sshOpts: parseSshOpts(c.get("sshOpts")),
  };
}

/** The settings in a config map as the CLI holds it (`docker:host` → value, secrets in plain text). */
export function engineSettingsOf(config: Record<string, string | undefined>): EngineSettings {
  const get = (key: string) => config[`docker:${key}`] || undefined;
  return {
    host: get("host"),
    certPath: get("certPath"),
    caMaterial: get("caMaterial"),
    certMaterial: get("certMaterial"),
    keyMaterial: get("keyMaterial"),
    sshOpts: parseSshOpts(get("sshOpts")),
  };
}

/** A stack's own settings, from its config (secrets decrypted by the CLI), for the tools and the harness. */
export async function stackEngineSettings(stack: Stack): Promise<EngineSettings> {
  const all = await stack.getAllConfig();
  return engineSettingsOf(Object.fromEntries(Object.entries(all).map(([k, v]) => [k, v.value])));
}

/** docker:sshOpts is a list of ssh arguments (`pulumi config set --path 'docker:sshOpts[0]' -i`). */
function parseSshOpts(raw: string | undefined): string[] | undefined {
  if (raw === undefined || raw === "") return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === "string"))
    throw new Error(`docker:sshOpts must be a list of ssh arguments, such as ["-i", "~/.ssh/deploy"] (got ${raw})`);
  return parsed;
}

/** What the stack leaves unset, from the environment variables the provider falls back to. */
function withEnvironment(s: EngineSettings): EngineSettings {
  const env = (name: string) => process.env[name] || undefined;
  return {
    host: s.host || env("DOCKER_HOST"),
    certPath: s.certPath || env("DOCKER_CERT_PATH"),
    caMaterial: s.caMaterial || env("DOCKER_CA_MATERIAL"),
    certMaterial: s.certMaterial || env("DOCKER_CERT_MATERIAL"),
    keyMaterial: s.keyMaterial || env("DOCKER_KEY_MATERIAL"),
    sshOpts: s.sshOpts ?? env("DOCKER_SSH_OPTS")?.split(/\s+/),
  };
}

/** The client certificate and CA to present, from the materials or certPath; undefined for no TLS. */
function clientTls(s: EngineSettings): { ca: string; cert: string; key: string } | undefined {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require("fs") as typeof import("fs");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const path = require("path") as typeof import("path");
  const materials = [s.caMaterial, s.certMaterial, s.keyMaterial];
  if (materials.some(Boolean)) {
    if (!materials.every(Boolean))
      throw new Error("docker:caMaterial, docker:certMaterial and docker:keyMaterial must all be set, or none of them");
    if (s.certPath) throw new Error("docker:certPath must not be set with docker:caMaterial/certMaterial/keyMaterial");
    return { ca: s.caMaterial!, cert: s.certMaterial!, key: s.keyMaterial! };
  }
  if (!s.certPath) return undefined;
  const read = (f: string) => fs.readFileSync(path.join(s.certPath!, f), "utf8");
  return { ca: read("ca.pem"), cert: read("cert.pem"), key: read("key.pem") };
}

/** `ssh`'s arguments for `docker system dial-stdio` on an ssh:// host, as the docker CLI's connhelper builds them. */
export function sshCommand(host: string, sshOpts: string[] = []): string[] {
  const url = new URL(host);
  if (url.password) throw new Error(`${url.protocol}//…: a password in docker:host is not supported; use a key`);
  if (url.search || url.hash) throw new Error(`docker:host ${host}: no query or fragment in an ssh:// URL`);
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  const socket = decodeURIComponent(url.pathname);
  const remote = ["docker", ...(socket.replace(/\//g, "") ? [`--host=unix://${socket}`] : []), "system", "dial-stdio"];
  return [
    ...(url.username ? ["-l", decodeURIComponent(url.username)] : []),
    ...(url.port ? ["-p", url.port] : []),
    ...sshOpts,
    ...(sshOpts.join(" ").includes("ConnectTimeout") ? [] : ["-o", "ConnectTimeout=30"]),
    ...(sshOpts.includes("-T") ? [] : ["-T"]),
    "--",
    url.hostname,
    remote.map(quote).join(" "),
  ];
}

/**
 * An HTTP agent whose every connection is `ssh <args>`'s stdin and stdout: one ssh process per API call, as
 * the provider dials. An ssh that fails (refused, key or host key not accepted) fails the call with its stderr.
 */
function sshAgent(args: string[]): http.Agent {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Agent } = require("http") as typeof import("http");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { spawn } = require("child_process") as typeof import("child_process");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Duplex: DuplexStream } = require("stream") as typeof import("stream");
  const agent = new Agent({ keepAlive: false });
  agent.createConnection = (): Duplex => {
    // This process's environment as it is now (an ssh-agent's SSH_AUTH_SOCK, PATH).
    const child = spawn("ssh", args, { stdio: ["pipe", "pipe", "pipe"], env: process.env });
    let stderr = "";
    const conn = new DuplexStream({
      write: (chunk: Buffer, _enc, done) => child.stdin.write(chunk, done),
      final: (done) => child.stdin.end(done),
      read: () => child.stdout.resume(),
      destroy: (err, done) => {
        if (child.exitCode === null && child.signalCode === null) child.kill();
        done(err);
      },
    });
    // What http may call on a socket; a pipe has no such options.
    Object.assign(conn, {
      setTimeout: () => conn,
      setNoDelay: () => conn,
      setKeepAlive: () => conn,
      ref: () => conn,
      unref: () => conn,
    });
    child.stdout.on("data", (d: Buffer) => {
      if (!conn.push(d)) child.stdout.pause();
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
    child.stdin.on("error", () => undefined); // ssh gone: its exit says why
    child.on("error", (e) => conn.destroy(new Error(`ssh: ${e.message}`)));
    // After its output: the end of the connection, or why ssh could not make one.
    child.on("close", (code, signal) => {
      if (code === 0 || conn.destroyed) conn.push(null);
      else conn.destroy(new Error(`ssh ${args.join(" ")}: ${signal ?? `exit ${code}`}: ${stderr.trim()}`));
    });
    return conn;
  };
  return agent;
}

/**
 * A client for the engine `settings` name (unset ones from the environment, as the provider does), or the
 * local socket. A fresh connection per call: an idle kept-alive one may have been closed by the engine.
 */
export function engineClient(settings: EngineSettings = {}): Dockerode {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Docker = require("dockerode") as typeof Dockerode;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const http = require("http") as typeof import("http");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const https = require("https") as typeof import("https");
  const s = withEnvironment(settings);
  const url = new URL(s.host ?? "unix:///var/run/docker.sock");
  const tls = clientTls(s);
  // Every connection option stated, so that docker-modem's own reading of DOCKER_HOST adds nothing.
  type Options = Dockerode.DockerOptions & { agent: http.Agent };
  const none = { socketPath: undefined, host: undefined, port: undefined, ca: undefined, cert: undefined, key: undefined };
  let options: Options;
  if (url.protocol === "unix:") {
    if (tls) throw new Error("docker:certPath and the *Material settings are for a tcp:// docker:host");
    options = { ...none, socketPath: url.pathname, agent: new http.Agent({ keepAlive: false }) };
  } else if (url.protocol === "ssh:") {
    if (tls) throw new Error("docker:certPath and the *Material settings are for a tcp:// docker:host; ssh:// uses ssh's keys");
    // The host name is a placeholder: the agent's connection is ssh's.
    options = { ...none, protocol: "http", host: "docker.example.com", agent: sshAgent(sshCommand(url.href, s.sshOpts)) };
  } else if (tls || url.protocol === "https:") {
    const port = url.port || "2376";
    options = { ...none, protocol: "https", host: url.hostname, port, ...tls, agent: new https.Agent({ keepAlive: false }) };
  } else if (url.protocol === "tcp:" || url.protocol === "http:") {
    const port = url.port || "2375";
    options = { ...none, protocol: "http", host: url.hostname, port, agent: new http.Agent({ keepAlive: false }) };
  } else {
    throw new Error(`docker:host ${s.host}: not a unix://, tcp:// or ssh:// address`);
  }
  return new Docker(options);
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` in a running container (as `user`, default the image's) and collects its output. */
export async function execIn(
  container: Dockerode.Container,
  cmd: string[],
  user?: string,
  timeoutMs = 30_000,
): Promise<ExecResult> {
  const exec = await container.exec({ Cmd: cmd, User: user, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  const { stdout, stderr } = await demuxed(container, stream, timeoutMs, cmd.join(" "));
  return { exitCode: (await exec.inspect()).ExitCode ?? -1, stdout, stderr };
}

/**
 * An engine stream that multiplexes stdout and stderr (an exec's, a container's logs), read to its end as
 * two strings; `timeoutMs` bounds the wait (`what` names it in the error).
 */
export async function demuxed(
  container: Dockerode.Container,
  stream: NodeJS.ReadableStream,
  timeoutMs = 30_000,
  what = "the engine's stream",
): Promise<{ stdout: string; stderr: string }> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PassThrough } = require("stream") as typeof import("stream");
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
  err.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
  const ended = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no end within ${timeoutMs} ms`)), timeoutMs);
    stream.on("end", () => {
      clearTimeout(timer);
      resolve();
    });
    stream.on("error", (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  container.modem.demuxStream(stream, out, err);
  await ended;
  return { stdout, stderr };
}

/** A container's log so far (its last `tail` lines, or all of it), stdout and stderr apart. */
export async function containerLog(
  container: Dockerode.Container,
  opts: { tail?: number; timeoutMs?: number; what?: string } = {},
): Promise<{ stdout: string; stderr: string }> {
  const buf = await container.logs({ stdout: true, stderr: true, follow: false, ...(opts.tail ? { tail: opts.tail } : {}) });
  return demuxed(container, Readable.from([buf]), opts.timeoutMs ?? 30_000, opts.what ?? "the container's log");
}

/** What an engine lookup (an inspect) gives, or undefined when the object does not exist (404). */
export function unlessMissing<T>(lookup: Promise<T>): Promise<T | undefined> {
  return lookup.catch((e: { statusCode?: number }) => {
    if (e.statusCode === 404) return undefined;
    throw e;
  });
}

/**
 * Runs `script` (sh -c) to its end in a short-lived container of `image` with no network, `binds` mounted
 * and `env` set; removed either way, and labelled so that an interrupted run's is found. For writing files
 * into a volume: a secret in `env` is visible for the second the container lives, only to who may inspect
 * containers on the engine, who can read the volume anyway.
 */
export async function runToEnd(
  settings: EngineSettings,
  spec: { image: string; script: string; env: string[]; binds: string[]; labels: Record<string, string>; what: string },
): Promise<void> {
  const client = engineClient(settings);
  const writer = await client.createContainer({
    Image: spec.image,
    Entrypoint: ["sh", "-c", spec.script],
    Env: spec.env,
    Labels: spec.labels,
    HostConfig: { Binds: spec.binds, NetworkMode: "none" },
  });
  try {
    await writer.start();
    const { StatusCode } = (await writer.wait()) as { StatusCode: number };
    if (StatusCode !== 0) throw new Error(`${spec.what} failed (exit ${StatusCode})`);
  } finally {
    await writer.remove({ force: true });
  }
}

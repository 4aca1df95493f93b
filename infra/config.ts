// Stack config → one validated, typed object. Pulumi hands every config value to the program as a string
// (project defaults from Pulumi.yaml already merged in), so each key is parsed from text here, checked,
// and only then turned into the shape the components take. Nothing downstream reads pulumi.Config.
import * as fs from "fs";
import * as path from "path";
import { closest } from "fastest-levenshtein";
import { z } from "zod";
import { renderNginxConf } from "./nginxConf";

export const PROJECT = "flask-proxy";

const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
// repository[:tag] with an optional registry host; digests are allowed too.
const IMAGE_REF = /^(?:[a-z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const text = z.string().trim();
const int = (min: number, max: number) =>
  text
    .regex(/^-?\d+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));
const bool = text
  .refine((s) => s === "true" || s === "false", "must be true or false")
  .transform((s) => s === "true");
const cpus = text
  .regex(/^\d+(\.\d{1,2})?$/, "must be a number of CPUs such as 1 or 0.5 (0 = no limit)")
  .transform(Number)
  .pipe(z.number().max(64, "must be at most 64"));
const port = int(1, 65535);
const optionalPort = int(0, 65535); // 0 = not published
const image = text.min(1, "must not be empty").regex(IMAGE_REF, "is not a valid image reference (repository[:tag])");

const ipv4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const cidr = text.refine((s) => {
  const [addr, bits, ...rest] = s.split("/");
  return rest.length === 0 && ipv4.test(addr ?? "") && /^\d+$/.test(bits ?? "") && Number(bits) >= 16 && Number(bits) <= 28;
}, "must be an IPv4 CIDR from /16 to /28, e.g. 172.30.77.0/24");

/** Every key the program reads, in the project's namespace. Defaults live in Pulumi.yaml, not here. */
export const configSchema = z.object({
  nginxImage: image,
  pythonImage: image,
  // A registry port (host:5000/flask) is fine; a tag or digest is not: the stack adds its own tag.
  appImageRepository: image.refine((s) => !s.slice(s.lastIndexOf("/") + 1).includes(":") && !s.includes("@"),
    "is a repository without a tag"),
  appVersion: text.regex(/^[\w][\w.-]{0,100}$/, "must be a valid image tag part, e.g. 0.0.1"),
  requirePinnedImages: bool,
  appAlias: text.regex(DNS_LABEL, "must be a lowercase DNS label, e.g. flask-app"),
  appPort: int(1024, 65535),
  appServer: z.enum(["flask-dev", "gunicorn"], { error: "must be flask-dev or gunicorn" }),
  flaskReload: bool,
  gunicornWorkers: int(1, 64),
  gunicornThreads: int(1, 64),
  appCodeMount: text,
  appHostPort: optionalPort,
  httpPort: port,
  bindAddress: text.regex(ipv4, "must be an IPv4 address such as 127.0.0.1 or 0.0.0.0"),
  nginxConfigFile: text,
  // A host[:port] or a single nginx variable: anything else could break out of the quoted directive.
  proxyHostHeader: text.regex(/^(\$[a-z_][a-z0-9_]*|[A-Za-z0-9.-]+(:\d{1,5})?)$/,
    "must be a host name (optionally :port) or an nginx variable such as $host"),
  forwardedHeaders: bool,
  hardened: bool,
  nginxAccessLog: z.enum(["on", "buffered", "off"], { error: "must be on, buffered or off" }),
  nginxWorkerProcesses: int(0, 64),
  upstreamKeepalive: int(0, 1024),
  upstreamTransport: z.enum(["tcp", "unix"], { error: "must be tcp or unix" }),
  networkSubnet: z.union([z.literal(""), cidr]),
  restartPolicy: z.enum(["no", "on-failure", "always", "unless-stopped"], {
    error: "must be one of no, on-failure, always, unless-stopped",
  }),
  healthchecks: bool,
  waitForHealthy: bool,
  appMemoryMb: int(0, 65536),
  nginxMemoryMb: int(0, 65536),
  appCpus: cpus,
  nginxCpus: cpus,
  /** Max processes for the app's user (Docker's --pids-limit is not exposed by the provider). */
  appMaxProcesses: int(0, 65536),
  replicas: int(1, 16),
  target: z.enum(["containers", "swarm"], { error: "must be containers or swarm" }),
  swarmEndpointMode: z.enum(["dnsrr", "vip"], { error: "must be dnsrr or vip" }),
  swarmPublishMode: z.enum(["host", "ingress"], { error: "must be host or ingress" }),
  /** Set with `pulumi config set --secret flaskSecretKey …`; generated and kept in state when absent. */
  flaskSecretKey: z.union([z.literal(""), text.min(32, "must be at least 32 characters")]).optional(),
});
/** Keys whose values never appear in messages. */
const SECRET_KEYS: ReadonlySet<string> = new Set(["flaskSecretKey"]);
export type RawConfig = z.infer<typeof configSchema>;
export const CONFIG_KEYS = Object.keys(configSchema.shape) as (keyof RawConfig)[];

export interface Replica {
  containerName: string;
  /** Pinned address on the network, so a recreated app keeps the address nginx resolved at start. */
  address?: string;
  /** upstreamTransport unix: the volume holding this replica's socket, and where nginx mounts it. */
  socket?: { volumeName: string; nginxDir: string };
}

/**
 * upstreamTransport unix: gunicorn binds SOCKET_FILE in APP_SOCKET_DIR (a volume per replica); nginx
 * mounts replica n's volume read-only at nginxSocketDir(n). The app image creates APP_SOCKET_DIR owned by
 * its user, and Docker gives a new volume that owner when it is first mounted there.
 */
export const APP_SOCKET_DIR = "/srv/socket";
export const SOCKET_FILE = "gunicorn.sock";
const nginxSocketDir = (n: number) => `/srv/sockets/${n}`;

export interface Limits {
  memoryMb?: number;
  cpus?: number;
}

export type AppServer =
  | { kind: "flask-dev"; reload: boolean }
  | { kind: "gunicorn"; workers: number; threads: number };

/** The typed object the components take. */
export interface StackConfig {
  project: string;
  stack: string;
  labels: Record<string, string>;
  network: { name: string; subnet?: string };
  app: {
    /** One entry per app container: its name and, with a subnet, its pinned address. */
    replicas: Replica[];
    imageName: string;
    version: string;
    baseImage: string;
    /** The name nginx proxies to and the network alias: one value. */
    alias: string;
    port: number;
    server: AppServer;
    codeMount?: string;
    hostPort?: number;
    limits: Limits;
    maxProcesses?: number;
    /** From secret config; the program wraps it as a Pulumi secret. Absent: a random one is generated. */
    secretKey?: string;
  };
  nginx: {
    containerName: string;
    /** The public base image (RemoteImage). */
    image: string;
    /** The image built from it with the config baked in, when the config is not bind-mounted. */
    imageName: string;
    httpPort: number;
    configFile?: string;
    hostHeader: string;
    forwardedHeaders: boolean;
    keepalive: number;
    limits: Limits;
    /** worker_processes baked into the image's nginx.conf; undefined keeps the image's default (auto). */
    workerProcesses?: number;
    /** conf.d/default.conf as rendered from this config (see infra/nginxConf.ts). */
    conf: string;
  };
  hardened: boolean;
  /** Plain containers on one engine, or services on a Docker Swarm. */
  target: RawConfig["target"];
  swarm: { endpointMode: RawConfig["swarmEndpointMode"]; publishMode: RawConfig["swarmPublishMode"] };
  bindAddress: string;
  restartPolicy: RawConfig["restartPolicy"];
  healthchecks: boolean;
  waitForHealthy: boolean;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid stack config:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
  }
}

export interface LoadContext {
  stack: string;
  /** Folder relative paths in config are resolved against (the project root). */
  root: string;
  project?: string;
}

/**
 * Validates the full config map (keys like "flask-proxy:httpPort"; other namespaces such as "docker:" are
 * left to their providers) and returns the typed config, or throws ConfigError naming every bad key.
 */
export function parseConfig(all: Record<string, string>, ctx: LoadContext): StackConfig {
  const project = ctx.project ?? PROJECT;
  const prefix = `${project}:`;
  const raw: Record<string, string> = {};
  const problems: string[] = [];
  for (const [key, value] of Object.entries(all)) {
    if (!key.startsWith(prefix)) continue;
    const short = key.slice(prefix.length);
    if (!(CONFIG_KEYS as string[]).includes(short)) {
      problems.push(`${key}: unknown key (did you mean ${prefix}${closest(short, CONFIG_KEYS)}?)`);
      continue;
    }
    raw[short] = value;
  }
  if (!DOCKER_NAME.test(ctx.stack)) problems.push(`stack name "${ctx.stack}" cannot be used in Docker names`);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const key = String(issue.path[0] ?? "");
      const got = key in raw && !SECRET_KEYS.has(key) ? ` (got ${JSON.stringify(raw[key])})` : "";
      const message = issue.code === "invalid_type" && raw[key] === undefined ? "is required" : issue.message;
      problems.push(`${prefix}${key}: ${message}${got}`);
    }
  }
  if (problems.length > 0 || !parsed.success) throw new ConfigError(problems);
  const c = parsed.data;

  // Rules that span keys.
  const rule = (ok: boolean, key: keyof RawConfig, message: string) => {
    if (!ok) problems.push(`${prefix}${key}: ${message}`);
  };
  rule(c.appHostPort === 0 || c.appHostPort !== c.httpPort, "appHostPort",
    `host port ${c.appHostPort} is already taken by httpPort; two containers cannot publish one host port`);
  rule(c.appHostPort === 0 || c.replicas === 1, "appHostPort",
    `cannot publish one host port for ${c.replicas} replicas; set appHostPort to 0 or replicas to 1`);
  rule(c.nginxWorkerProcesses === 0 || c.nginxConfigFile === "", "nginxWorkerProcesses",
    "is baked into the nginx image, which is only built when nginxConfigFile is empty");
  if (c.networkSubnet !== "") {
    const hosts = 2 ** (32 - Number(c.networkSubnet.split("/")[1])) - 2;
    rule(10 + c.replicas - 1 <= hosts, "networkSubnet",
      `${c.networkSubnet} is too small to pin ${c.replicas} app address(es) from host .10 on`);
  }
  rule(c.appCodeMount === "" || isDirectory(path.resolve(ctx.root, c.appCodeMount)), "appCodeMount",
    `${path.resolve(ctx.root, c.appCodeMount)} is not a directory (Docker would mount an empty one over /code)`);
  rule(!c.waitForHealthy || c.healthchecks, "waitForHealthy", "needs healthchecks: true (there is nothing to wait for)");
  rule(!c.flaskReload || c.appServer === "flask-dev", "flaskReload", "only applies to appServer: flask-dev");
  rule(c.upstreamKeepalive === 0 || c.networkSubnet !== "" || c.upstreamTransport === "unix", "upstreamKeepalive",
    "needs networkSubnet (or upstreamTransport: unix), so the app keeps the address nginx resolved at start when it is recreated");
  rule(c.upstreamTransport === "tcp" || c.appServer === "gunicorn", "upstreamTransport",
    "unix needs appServer: gunicorn (flask run listens on TCP only)");
  if (c.target === "swarm") {
    // Tasks are scheduled anywhere and rescheduled at new addresses: nothing may depend on this host's
    // files or on a fixed address, and swarm publishes ports on every interface.
    rule(c.appCodeMount === "", "appCodeMount", "is a bind mount from this machine; not allowed with target: swarm");
    rule(c.nginxConfigFile === "", "nginxConfigFile", "is a bind mount from this machine; not allowed with target: swarm");
    rule(c.upstreamTransport === "tcp", "upstreamTransport",
      "unix shares a volume between containers on one host; not allowed with target: swarm");
    rule(c.upstreamKeepalive === 0, "upstreamKeepalive",
      "needs fixed task addresses, which swarm does not give; use 0 (nginx re-resolves the alias)");
    rule(c.bindAddress === "0.0.0.0", "bindAddress", "must be 0.0.0.0 with target: swarm (swarm publishes on every interface)");
  }
  if (c.requirePinnedImages) {
    for (const key of ["nginxImage", "pythonImage"] as const) {
      rule(isPinned(c[key]), key, `must be pinned to a tag other than latest when requirePinnedImages is true (got "${c[key]}")`);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const prefixName = `${project}-${ctx.stack}`;
  const abs = (p: string) => (p === "" ? undefined : path.resolve(ctx.root, p));
  const replicas: Replica[] = Array.from({ length: c.replicas }, (_, i) => {
    const containerName = `${prefixName}-flask${i === 0 ? "" : `-${i + 1}`}`;
    return {
      containerName,
      address: c.networkSubnet ? hostAddress(c.networkSubnet, 10 + i) : undefined,
      socket: c.upstreamTransport === "unix" ? { volumeName: `${containerName}-socket`, nginxDir: nginxSocketDir(i + 1) } : undefined,
    };
  });
  const conf = renderNginxConf({
    stack: ctx.stack,
    upstreamHost: c.appAlias,
    upstreamPort: c.appPort,
    sockets: replicas.flatMap((r) => (r.socket ? [`${r.socket.nginxDir}/${SOCKET_FILE}`] : [])),
    hostHeader: c.proxyHostHeader,
    forwardedHeaders: c.forwardedHeaders,
    keepalive: c.upstreamKeepalive,
    hardened: c.hardened,
    healthEndpoint: c.healthchecks,
    accessLog: c.nginxAccessLog,
  });
  const configFile = abs(c.nginxConfigFile);
  if (configFile !== undefined) checkMountedConf(`${prefix}nginxConfigFile`, configFile, conf);
  return {
    project,
    stack: ctx.stack,
    labels: { "org.flask-proxy.project": project, "org.flask-proxy.stack": ctx.stack },
    network: { name: `${prefixName}-net`, subnet: c.networkSubnet || undefined },
    app: {
      replicas,
      imageName: `${c.appImageRepository}:${c.appVersion}-${ctx.stack}`,
      version: c.appVersion,
      baseImage: c.pythonImage,
      alias: c.appAlias,
      port: c.appPort,
      server: c.appServer === "gunicorn"
        ? { kind: "gunicorn", workers: c.gunicornWorkers, threads: c.gunicornThreads }
        : { kind: "flask-dev", reload: c.flaskReload },
      codeMount: abs(c.appCodeMount),
      hostPort: c.appHostPort || undefined,
      limits: { memoryMb: c.appMemoryMb || undefined, cpus: c.appCpus || undefined },
      maxProcesses: c.appMaxProcesses || undefined,
      secretKey: c.flaskSecretKey || undefined,
    },
    nginx: {
      containerName: `${prefixName}-nginx`,
      image: c.nginxImage,
      imageName: `${project}-nginx:${ctx.stack}`,
      httpPort: c.httpPort,
      configFile,
      hostHeader: c.proxyHostHeader,
      forwardedHeaders: c.forwardedHeaders,
      keepalive: c.upstreamKeepalive,
      limits: { memoryMb: c.nginxMemoryMb || undefined, cpus: c.nginxCpus || undefined },
      workerProcesses: c.nginxWorkerProcesses || undefined,
      conf,
    },
    hardened: c.hardened,
    target: c.target,
    swarm: { endpointMode: c.swarmEndpointMode, publishMode: c.swarmPublishMode },
    bindAddress: c.bindAddress,
    restartPolicy: c.restartPolicy,
    healthchecks: c.healthchecks,
    waitForHealthy: c.waitForHealthy,
  };
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** A bind-mounted nginx config must be exactly what this config renders, so alias and port cannot drift. */
function checkMountedConf(key: string, file: string, expected: string): void {
  let actual: string;
  try {
    actual = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw new ConfigError([`${key}: cannot read ${file} (${(e as Error).message})`]);
  }
  if (actual !== expected) {
    throw new ConfigError([
      `${key}: ${file} differs from the config rendered for this stack (alias, port or proxy settings changed); ` +
        "run `npm run render:nginx` and commit the result",
    ]);
  }
}

/** A tag is pinned when it is present and not "latest" (a digest pins too). */
export function isPinned(ref: string): boolean {
  if (ref.includes("@sha256:")) return true;
  const lastSlash = ref.lastIndexOf("/");
  const colon = ref.indexOf(":", lastSlash + 1);
  return colon > 0 && ref.slice(colon + 1) !== "latest";
}

/** The n-th host address of an IPv4 subnet, e.g. (172.30.77.0/24, 10) → 172.30.77.10. */
export function hostAddress(subnet: string, n: number): string {
  const [addr, bits] = subnet.split("/");
  const base = addr.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  const network = base - (base % size);
  if (n <= 0 || n >= size - 1) throw new Error(`subnet ${subnet} has no host number ${n}`);
  const v = network + n;
  return [24, 16, 8, 0].map((s) => Math.floor(v / 2 ** s) % 256).join(".");
}

/** Reads the running stack's config through Pulumi; a bad value stops the program before any resource. */
export function loadStackConfig(root: string): StackConfig {
  // Imported here so parseConfig stays usable without a Pulumi runtime (scripts, policy tests).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pulumi = require("@pulumi/pulumi") as typeof import("@pulumi/pulumi");
  try {
    return parseConfig(pulumi.runtime.allConfig(), { stack: pulumi.getStack(), project: pulumi.getProject(), root });
  } catch (e) {
    // RunError: Pulumi prints the message alone, without a stack trace.
    if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
    throw e;
  }
}

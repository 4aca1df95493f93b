// Stack config → one validated, typed object. Pulumi hands every config value to the program as a string
// (project defaults from Pulumi.yaml already merged in), so each key is parsed from text here and checked,
// alone and against the keys it depends on. This file validates; the components derive names, addresses
// and file layouts from what it returns. Nothing downstream reads pulumi.Config.
import * as fs from "fs";
import * as path from "path";
import { closest } from "fastest-levenshtein";
import { z } from "zod";
import { isNginxVariable } from "../nginx/variables";
import { FIRST_APP_HOST } from "./naming";
import { certificateProblems, pemChain } from "./tls";
import type { Limits } from "./workload";

export const PROJECT = "flask-proxy";

const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
// repository[:tag] with an optional registry host; digests are allowed too.
const IMAGE_REF =
  /^(?:[a-z0-9.-]+(?::[0-9]+)?\/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;
const DNS_LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
// host[:port] of a registry: a dot, a port or localhost tells Docker it is a registry and not a Hub user.
const REGISTRY = /^(?:(?:localhost|[a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::\d{1,5})?|[a-z0-9-]+:\d{1,5})$/;
const NODE_LABEL = /^[a-z0-9](?:[a-z0-9._-]{0,126}[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
/** A lowercase DNS name (one label is enough: localhost), at most 253 characters. */
const DNS_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

const text = z.string().trim();
const int = (min: number, max: number) =>
  text
    .regex(/^-?\d+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));
const bool = text.refine((s) => s === "true" || s === "false", "must be true or false").transform((s) => s === "true");
// One decimal at most: the docker provider reads NanoCPUs back rounded to one decimal for values such as
// 0.05, so a finer limit would differ from its read-back and replace the container on every `pulumi up`.
const cpus = text
  .regex(/^\d+(\.\d)?$/, "must be a number of CPUs with at most one decimal, such as 1 or 0.5 (0 = no limit)")
  .transform(Number)
  .pipe(z.number().max(64, "must be at most 64"));
// A lifetime as a number of minutes, hours or days ("90d", "12h"), in seconds.
const UNIT_S = { m: 60, h: 3600, d: 86_400 } as const;
const lifetime = (min: string, max: string) => {
  const seconds = (s: string) => Number(s.slice(0, -1)) * UNIT_S[s.slice(-1) as keyof typeof UNIT_S];
  return text
    .regex(/^[1-9]\d{0,5}[mhd]$/, "must be a number of minutes, hours or days, such as 90d, 12h or 30m")
    .transform(seconds)
    .pipe(z.number().min(seconds(min), `must be at least ${min}`).max(seconds(max), `must be at most ${max}`));
};
const port = int(1, 65535);
const optionalPort = int(0, 65535); // 0 = not published
const image = text.min(1, "must not be empty").regex(IMAGE_REF, "is not a valid image reference (repository[:tag])");
const cidr = text.refine((s) => {
  const [addr, bits, ...rest] = s.split("/");
  return rest.length === 0 && IPV4.test(addr ?? "") && /^\d+$/.test(bits ?? "") && Number(bits) >= 16 && Number(bits) <= 28;
}, "must be an IPv4 CIDR from /16 to /28, e.g. 172.30.77.0/24");

/** Every key the program reads, in the project's namespace. Defaults and descriptions live in Pulumi.yaml. */
export const configSchema = z.object({
  nginxImage: image,
  pythonImage: image,
  // A registry port (host:5000/flask) is fine; a tag or digest is not: the stack adds its own tag.
  appImageRepository: image.refine(
    (s) => !s.slice(s.lastIndexOf("/") + 1).includes(":") && !s.includes("@"),
    "is a repository without a tag",
  ),
  appVersion: text.regex(/^[\w][\w.-]{0,100}$/, "must be a valid image tag part, e.g. 0.0.1"),
  appKeepBuilds: int(1, 20),
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
  tls: z.enum(["off", "internal", "certificate", "acme"], { error: "must be off, internal, certificate or acme" }),
  domain: text.refine(
    (s) => DNS_NAME.test(s) || IPV4.test(s),
    "must be a lowercase DNS name such as example.com, or an IPv4 address",
  ),
  httpsPort: port,
  /** PEM: the certificate, then its chain; set with `pulumi config set --secret`. Checked against the key and domain in parseConfig. */
  tlsCertificate: text.optional(),
  tlsPrivateKey: text.optional(),
  // Apple's clients take a leaf for at most 825 days; 2 minutes is short enough to watch a renewal.
  internalLeafLifetime: lifetime("2m", "825d"),
  acmeServer: text.refine(
    (s) => URL.canParse(s) && new URL(s).protocol === "https:",
    "must be an https:// URL (the ACME directory)",
  ),
  acmeEmail: z.union([z.literal(""), text.regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, "must be an email address")]),
  acmeCaFile: text,
  // certbot's --preferred-profile takes a name the CA lists in its directory's meta.profiles.
  acmeProfile: z.union([z.literal(""), text.regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "must be a profile name such as shortlived")]),
  bindAddress: text.regex(IPV4, "must be an IPv4 address such as 127.0.0.1 or 0.0.0.0"),
  nginxConfigFile: text,
  // A host[:port] or a single nginx variable: anything else could break out of the quoted directive. A
  // variable nginx does not define would pass this and fail `pulumi up` at `nginx -t`: refused here instead.
  proxyHostHeader: text
    .regex(/^(\$[a-z_][a-z0-9_]*|[A-Za-z0-9.-]+(:\d{1,5})?)$/, {
      message: "must be a host name (optionally :port) or an nginx variable such as $host",
      abort: true,
    })
    .refine((s) => !s.startsWith("$") || isNginxVariable(s.slice(1)), {
      error: (issue) =>
        `unknown nginx variable ${String(issue.input)} (nginx would refuse the conf): use one of nginx's http core, ` +
        "proxy or realip variables, such as $host, $http_host, $server_name or $proxy_host",
    }),
  forwardedHeaders: bool,
  hardened: bool,
  nginxAccessLog: z.enum(["on", "buffered", "off"], { error: "must be on, buffered or off" }),
  nginxAccessLogFormat: z.enum(["combined", "timed", "json"], { error: "must be combined, timed or json" }),
  nginxRequestId: bool,
  gunicornAccessLog: bool,
  metricsPort: optionalPort,
  nginxExporterImage: image,
  nginxWorkerProcesses: int(0, 64),
  upstreamReadTimeout: int(1, 3600),
  // Probes 1 s apart after 1 s of silence (nginx/conf.ts): 2 s is the shortest, 128 the kernel's most probes.
  upstreamDeadPeerTimeout: int(0, 128).refine((n) => n !== 1, "must be 0 (off) or at least 2"),
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
  swarmEdgeLabel: z.union([z.literal(""), text.regex(NODE_LABEL, "must be a node label key such as org.flask-proxy.edge")]),
  swarmSecretKey: bool,
  registry: z.union([z.literal(""), text.regex(REGISTRY, "must be a registry host[:port], e.g. registry.example.com:5000")]),
  registryCaFile: text,
  /** Set with `pulumi config set --secret flaskSecretKey …`; generated and kept in state when absent. */
  flaskSecretKey: z.union([z.literal(""), text.min(32, "must be at least 32 characters")]).optional(),
});
export type RawConfig = z.infer<typeof configSchema>;
type Key = keyof RawConfig;
export const CONFIG_KEYS = Object.keys(configSchema.shape) as Key[];
/** Keys whose values never appear in messages (and that the docs show as secrets). */
export const SECRET_KEYS: ReadonlySet<string> = new Set<Key>(["flaskSecretKey", "tlsCertificate", "tlsPrivateKey"]);
/** Secret keys the program generates a value for when unset (the others are simply empty). */
export const GENERATED_KEYS: ReadonlySet<string> = new Set<Key>(["flaskSecretKey"]);

export type AppServer = { kind: "flask-dev"; reload: boolean } | { kind: "gunicorn"; workers: number; threads: number };

/** The typed object the components take: validated values, grouped by who uses them. */
export interface StackConfig {
  project: string;
  stack: string;
  app: {
    /** Base image of app/Dockerfile. */
    baseImage: string;
    /** Repository of the image built from app/; the tag is `<version>-<stack>`. */
    imageRepository: string;
    version: string;
    /** How many app builds the stack keeps on the engine (the released one included), to roll back to. */
    keepBuilds: number;
    /** The name nginx proxies to and the network alias: one value. */
    alias: string;
    port: number;
    server: AppServer;
    replicas: number;
    /** How nginx reaches the app: TCP to the alias, or a unix socket per replica. */
    transport: RawConfig["upstreamTransport"];
    /** Absolute host folder bind-mounted over the code. */
    codeMount?: string;
    hostPort?: number;
    limits: Limits;
    maxProcesses?: number;
    /** From secret config; the program wraps it as a Pulumi secret. Absent: a random one is generated. */
    secretKey?: string;
    /** gunicorn writes an access log line per request (with the request ID nginx sends). */
    accessLog: boolean;
  };
  /** Prometheus metrics on a port published on 127.0.0.1 only; absent: none. */
  metrics?: {
    hostPort: number;
    /** The nginx-prometheus-exporter image that turns nginx's stub_status into Prometheus metrics. */
    exporterImage: string;
  };
  nginx: {
    /** HTTPS at the edge; absent: plain HTTP only (tls: off). */
    tls?: TlsSettings;
    /** The public nginx image (RemoteImage). */
    baseImage: string;
    httpPort: number;
    /** Absolute path of a conf bind-mounted as conf.d/default.conf; absent: the render is baked into an image. */
    configFile?: string;
    hostHeader: string;
    forwardedHeaders: boolean;
    keepalive: number;
    accessLog: RawConfig["nginxAccessLog"];
    /** combined (the image's default), timed (combined plus timings, upstream and request ID) or json. */
    accessLogFormat: RawConfig["nginxAccessLogFormat"];
    /** Give every request an ID ($request_id, or a well-formed one the client sent) and pass it on. */
    requestId: boolean;
    /** Seconds nginx waits for the app's answer; a request unanswered by then gets 504, tried nowhere else (hardened only). */
    readTimeoutS: number;
    /**
     * Seconds of silence, TCP keepalive probes unanswered, after which a replica is taken for lost with its node
     * and the request tried on another (hardened, TCP); absent: off.
     */
    deadPeerTimeoutS?: number;
    limits: Limits;
    /** worker_processes baked into the image's nginx.conf; absent keeps the image's default (auto). */
    workerProcesses?: number;
  };
  /** Pinned subnet of the stack network; app replicas then get fixed addresses in it. */
  networkSubnet?: string;
  hardened: boolean;
  /** Plain containers on one engine, or services on a Docker Swarm. */
  target: RawConfig["target"];
  swarm: {
    endpointMode: RawConfig["swarmEndpointMode"];
    publishMode: RawConfig["swarmPublishMode"];
    /** Node label nginx's tasks are constrained to (`node.labels.<label> == true`). */
    edgeLabel?: string;
    /** Flask's secret key as a swarm secret file instead of an env var. */
    secretKey: boolean;
  };
  /** Where the images are pushed, and run from by digest; absent: built on the engine, never pushed. */
  registry?: RegistrySettings;
  bindAddress: string;
  restartPolicy: RawConfig["restartPolicy"];
  healthchecks: boolean;
  waitForHealthy: boolean;
}

export interface TlsSettings {
  /** internal: the stack's own CA issues the leaf; certificate: the one given in config; acme: an ACME CA's. */
  mode: "internal" | "certificate" | "acme";
  /** The name the certificate is for, and nginx's server_name. */
  domain: string;
  /** Host port of the TLS listener (the redirect from plain HTTP goes there). */
  httpsPort: number;
  /** certificate: the leaf and its chain (re-encoded, one PEM block after another) and the key. */
  certificate?: { certPem: string; keyPem: string };
  /** acme: the CA and how to reach it; the agent beside nginx obtains and renews the certificate. */
  acme?: AcmeSettings;
  /** internal: the leaf's lifetime; the agent beside nginx signs it with the stack's CA and signs it again. */
  internal?: { leafLifetimeS: number };
}

export interface AcmeSettings {
  /** The directory URL. */
  server: string;
  email?: string;
  /** PEM of the CA behind the ACME server's own HTTPS (acmeCaFile's contents); absent: the system's CAs. */
  caPem?: string;
  profile?: string;
}

export interface RegistrySettings {
  /** host[:port] */
  address: string;
  /** The CA the registry's certificate comes from (PEM); empty: the system's CAs. */
  caPem: string;
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

/** A check that needs the whole validated config (e.g. nginx's mounted file against its render). */
export type StackCheck = (cfg: StackConfig) => string[];

/** A rule over several keys; it is only judged when each of its keys is valid on its own. */
interface Rule {
  keys: Key[];
  /** The key the message is reported under. */
  key: Key;
  ok: (c: RawConfig, ctx: LoadContext) => boolean;
  message: (c: RawConfig, ctx: LoadContext) => string;
}

const isDirectory = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
const isFile = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isFile() === true;
const resolveIn = (ctx: LoadContext, p: string) => path.resolve(ctx.root, p);
/** A file's certificates, re-encoded as PEM; undefined when it cannot be read or holds none that parses. */
function pemCertificates(file: string): string | undefined {
  try {
    return pemChain(fs.readFileSync(file, "utf8"))
      .map((cert) => cert.toString())
      .join("");
  } catch {
    return undefined;
  }
}
const swarmOnly = (key: Key, ok: (c: RawConfig) => boolean, message: string): Rule => ({
  keys: ["target", key],
  key,
  ok: (c) => c.target !== "swarm" || ok(c),
  message: () => message,
});

const RULES: Rule[] = [
  {
    keys: ["appCodeMount"],
    key: "appCodeMount",
    ok: (c, ctx) => c.appCodeMount === "" || isDirectory(resolveIn(ctx, c.appCodeMount)),
    message: (c, ctx) => `${resolveIn(ctx, c.appCodeMount)} is not a directory (Docker would mount an empty one over /code)`,
  },
  {
    keys: ["nginxConfigFile"],
    key: "nginxConfigFile",
    ok: (c, ctx) => c.nginxConfigFile === "" || isFile(resolveIn(ctx, c.nginxConfigFile)),
    message: (c, ctx) => `${resolveIn(ctx, c.nginxConfigFile)} is not a file (Docker would mount a directory in its place)`,
  },
  {
    keys: ["appHostPort", "httpPort"],
    key: "appHostPort",
    ok: (c) => c.appHostPort === 0 || c.appHostPort !== c.httpPort,
    message: (c) => `host port ${c.appHostPort} is already taken by httpPort; two containers cannot publish one host port`,
  },
  {
    keys: ["appHostPort", "replicas"],
    key: "appHostPort",
    ok: (c) => c.appHostPort === 0 || c.replicas === 1,
    message: (c) => `cannot publish one host port for ${c.replicas} replicas; set appHostPort to 0 or replicas to 1`,
  },
  {
    keys: ["nginxWorkerProcesses", "nginxConfigFile"],
    key: "nginxWorkerProcesses",
    ok: (c) => c.nginxWorkerProcesses === 0 || c.nginxConfigFile === "",
    message: () => "is baked into the nginx image, which is only built when nginxConfigFile is empty",
  },
  {
    keys: ["networkSubnet", "replicas"],
    key: "networkSubnet",
    ok: (c) => c.networkSubnet === "" || FIRST_APP_HOST + c.replicas - 1 <= 2 ** (32 - Number(c.networkSubnet.split("/")[1])) - 2,
    message: (c) => `${c.networkSubnet} is too small to pin ${c.replicas} app address(es) from host .${FIRST_APP_HOST} on`,
  },
  {
    keys: ["waitForHealthy", "healthchecks"],
    key: "waitForHealthy",
    ok: (c) => !c.waitForHealthy || c.healthchecks,
    message: () => "needs healthchecks: true (there is nothing to wait for)",
  },
  {
    keys: ["flaskReload", "appServer"],
    key: "flaskReload",
    ok: (c) => !c.flaskReload || c.appServer === "flask-dev",
    message: () => "only applies to appServer: flask-dev",
  },
  {
    keys: ["upstreamKeepalive", "networkSubnet", "upstreamTransport"],
    key: "upstreamKeepalive",
    ok: (c) => c.upstreamKeepalive === 0 || c.networkSubnet !== "" || c.upstreamTransport === "unix",
    message: () =>
      "needs networkSubnet (or upstreamTransport: unix), so the app keeps the address nginx resolved at start when it is recreated",
  },
  {
    keys: ["upstreamDeadPeerTimeout", "hardened"],
    key: "upstreamDeadPeerTimeout",
    ok: (c) => c.upstreamDeadPeerTimeout === 0 || c.hardened,
    message: () => "needs hardened: true (the upstream timeouts and retries are hardened settings)",
  },
  {
    keys: ["upstreamDeadPeerTimeout", "upstreamTransport"],
    key: "upstreamDeadPeerTimeout",
    ok: (c) => c.upstreamDeadPeerTimeout === 0 || c.upstreamTransport === "tcp",
    message: () => "needs upstreamTransport: tcp (a unix socket's peer is on the same host and cannot be lost)",
  },
  {
    keys: ["upstreamDeadPeerTimeout", "upstreamReadTimeout"],
    key: "upstreamDeadPeerTimeout",
    ok: (c) => c.upstreamDeadPeerTimeout < c.upstreamReadTimeout,
    message: (c) =>
      `must be less than upstreamReadTimeout (${c.upstreamReadTimeout}): a request is not retried once it has waited that long`,
  },
  {
    keys: ["upstreamTransport", "appServer"],
    key: "upstreamTransport",
    ok: (c) => c.upstreamTransport === "tcp" || c.appServer === "gunicorn",
    message: () => "unix needs appServer: gunicorn (flask run listens on TCP only)",
  },
  // Swarm schedules tasks anywhere and reschedules them at new addresses: nothing may depend on this
  // host's files or on a fixed address, and swarm publishes ports on every interface.
  swarmOnly("appCodeMount", (c) => c.appCodeMount === "", "is a bind mount from this machine; not allowed with target: swarm"),
  swarmOnly(
    "nginxConfigFile",
    (c) => c.nginxConfigFile === "",
    "is a bind mount from this machine; not allowed with target: swarm",
  ),
  swarmOnly(
    "upstreamTransport",
    (c) => c.upstreamTransport === "tcp",
    "unix shares a volume between containers on one host; not allowed with target: swarm",
  ),
  swarmOnly(
    "upstreamKeepalive",
    (c) => c.upstreamKeepalive === 0,
    "needs fixed task addresses, which swarm does not give; use 0 (nginx re-resolves the alias)",
  ),
  ...(["swarmEdgeLabel", "swarmSecretKey"] as const).map((key): Rule => ({
    keys: ["target", key],
    key,
    ok: (c) => c.target === "swarm" || !c[key],
    message: () => "only applies to target: swarm",
  })),
  ...(["tlsCertificate", "tlsPrivateKey"] as const).flatMap((key): Rule[] => [
    {
      keys: ["tls", key],
      key,
      ok: (c) => c.tls !== "certificate" || !!c[key],
      message: () => `is required with tls: certificate (PEM text: \`pulumi config set --secret ${key} -- "$(cat <file>.pem)"\`)`,
    },
    {
      keys: ["tls", key],
      key,
      ok: (c) => c.tls === "certificate" || !c[key],
      message: () => "only applies to tls: certificate",
    },
  ]),
  ...(["acmeEmail", "acmeCaFile", "acmeProfile"] as const).map((key): Rule => ({
    keys: ["tls", key],
    key,
    ok: (c) => c.tls === "acme" || !c[key],
    message: () => "only applies to tls: acme",
  })),
  {
    keys: ["tls", "domain"],
    key: "domain",
    ok: (c) => c.tls !== "acme" || (DNS_NAME.test(c.domain) && !IPV4.test(c.domain) && c.domain.includes(".")),
    message: (c) => `must be a DNS name an ACME CA can reach over HTTP-01 with tls: acme, such as example.com (got ${c.domain})`,
  },
  {
    keys: ["acmeCaFile"],
    key: "acmeCaFile",
    ok: (c, ctx) => c.acmeCaFile === "" || pemCertificates(resolveIn(ctx, c.acmeCaFile)) !== undefined,
    message: (c, ctx) => `${resolveIn(ctx, c.acmeCaFile)} is not a readable file of PEM certificates`,
  },
  {
    keys: ["tls", "nginxConfigFile"],
    key: "tls",
    ok: (c) => c.tls === "off" || c.nginxConfigFile === "",
    message: () => "needs nginxConfigFile empty (the certificate reaches nginx in the rendered conf's volume, next to the conf)",
  },
  // The app must learn the scheme from nginx alone. On the socket only nginx shares, gunicorn trusts its peer.
  // Over TCP it trusts X-Forwarded-Proto from the stack's network (nginx replaces any client's), so nothing
  // outside that network may reach the app's port, and the dev server, which ignores the header, cannot serve.
  {
    keys: ["tls", "upstreamTransport", "appServer", "appHostPort"],
    key: "tls",
    ok: (c) => c.tls === "off" || c.upstreamTransport === "unix" || (c.appServer === "gunicorn" && c.appHostPort === 0),
    message: () =>
      "with upstreamTransport: tcp needs appServer: gunicorn and appHostPort: 0 (gunicorn then trusts X-Forwarded-Proto from the stack's network alone, which a published app port would open to anyone)",
  },
  {
    keys: ["tls", "httpsPort", "httpPort", "appHostPort", "metricsPort"],
    key: "httpsPort",
    ok: (c) => c.tls === "off" || ![c.httpPort, c.appHostPort, c.metricsPort].includes(c.httpsPort),
    message: (c) => `host port ${c.httpsPort} is already taken by httpPort, appHostPort or metricsPort`,
  },
  {
    keys: ["registryCaFile"],
    key: "registryCaFile",
    ok: (c, ctx) => c.registryCaFile === "" || isFile(resolveIn(ctx, c.registryCaFile)),
    message: (c, ctx) =>
      `${resolveIn(ctx, c.registryCaFile)} is not a file (on the stand-in cluster, \`npm run cluster:up\` writes it)`,
  },
  {
    keys: ["registryCaFile", "registry"],
    key: "registryCaFile",
    ok: (c) => c.registryCaFile === "" || c.registry !== "",
    message: () => "needs registry (it is the CA of the registry's certificate)",
  },
  swarmOnly(
    "bindAddress",
    (c) => c.bindAddress === "0.0.0.0",
    "must be 0.0.0.0 with target: swarm (swarm publishes on every interface)",
  ),
  {
    keys: ["gunicornAccessLog", "appServer"],
    key: "gunicornAccessLog",
    ok: (c) => !c.gunicornAccessLog || c.appServer === "gunicorn",
    message: () => "only applies to appServer: gunicorn",
  },
  {
    keys: ["metricsPort", "appServer"],
    key: "metricsPort",
    ok: (c) => c.metricsPort === 0 || c.appServer === "gunicorn",
    message: () => "needs appServer: gunicorn (the app's metrics are served by gunicorn's master process)",
  },
  {
    keys: ["metricsPort", "replicas"],
    key: "metricsPort",
    ok: (c) => c.metricsPort === 0 || c.replicas === 1,
    message: (c) =>
      `needs replicas: 1 (each of ${c.replicas} replicas counts its own requests, and a scrape through the alias would mix them)`,
  },
  {
    keys: ["metricsPort", "httpPort", "appHostPort"],
    key: "metricsPort",
    ok: (c) => c.metricsPort === 0 || (c.metricsPort !== c.httpPort && c.metricsPort !== c.appHostPort),
    message: (c) => `host port ${c.metricsPort} is already taken by httpPort or appHostPort`,
  },
  swarmOnly(
    "metricsPort",
    (c) => c.metricsPort === 0,
    "must be 0 with target: swarm (swarm publishes on every interface; metrics are for the host only)",
  ),
  ...(["nginxImage", "pythonImage", "nginxExporterImage"] as const).map((key): Rule => ({
    keys: ["requirePinnedImages", key],
    key,
    ok: (c) => !c.requirePinnedImages || isPinned(c[key]),
    message: (c) => `must be pinned to a tag other than latest when requirePinnedImages is true (got "${c[key]}")`,
  })),
];

/**
 * Validates the full config map (keys like "flask-proxy:httpPort"; other namespaces such as "docker:" are
 * left to their providers) and returns the typed config, or throws ConfigError naming every bad key: each
 * key is checked on its own and every rule whose keys are valid is judged, in one pass. `checks` run on
 * the typed config once everything else is valid.
 */
export function parseConfig(all: Record<string, string>, ctx: LoadContext, checks: StackCheck[] = []): StackConfig {
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

  const valid: Partial<Record<Key, unknown>> = {};
  for (const key of CONFIG_KEYS) {
    const parsed = configSchema.shape[key].safeParse(raw[key]);
    if (parsed.success) {
      valid[key] = parsed.data;
      continue;
    }
    const got = key in raw && !SECRET_KEYS.has(key) ? ` (got ${JSON.stringify(raw[key])})` : "";
    for (const issue of parsed.error.issues) {
      const message = issue.code === "invalid_type" && raw[key] === undefined ? "is required" : issue.message;
      problems.push(`${prefix}${key}: ${message}${got}`);
    }
  }
  const c = valid as RawConfig;
  for (const rule of RULES) {
    if (rule.keys.every((k) => k in valid) && !rule.ok(c, ctx)) problems.push(`${prefix}${rule.key}: ${rule.message(c, ctx)}`);
  }
  // The certificate and key against each other, the clock and the domain, before anything is declared.
  if (c.tls === "certificate" && c.tlsCertificate && c.tlsPrivateKey && "domain" in valid) {
    for (const p of certificateProblems(c.tlsCertificate, c.tlsPrivateKey, c.domain))
      problems.push(`${prefix}${p.key}: ${p.message}`);
  }
  if (problems.length > 0) throw new ConfigError(problems);

  const cfg = typed(c, project, ctx);
  const late = checks.flatMap((check) => check(cfg));
  if (late.length > 0) throw new ConfigError(late);
  return cfg;
}

function typed(c: RawConfig, project: string, ctx: LoadContext): StackConfig {
  const abs = (p: string) => (p === "" ? undefined : resolveIn(ctx, p));
  return {
    project,
    stack: ctx.stack,
    app: {
      baseImage: c.pythonImage,
      imageRepository: c.appImageRepository,
      version: c.appVersion,
      keepBuilds: c.appKeepBuilds,
      alias: c.appAlias,
      port: c.appPort,
      server:
        c.appServer === "gunicorn"
          ? { kind: "gunicorn", workers: c.gunicornWorkers, threads: c.gunicornThreads }
          : { kind: "flask-dev", reload: c.flaskReload },
      replicas: c.replicas,
      transport: c.upstreamTransport,
      codeMount: abs(c.appCodeMount),
      hostPort: c.appHostPort || undefined,
      limits: { memoryMb: c.appMemoryMb || undefined, cpus: c.appCpus || undefined },
      maxProcesses: c.appMaxProcesses || undefined,
      secretKey: c.flaskSecretKey || undefined,
      accessLog: c.gunicornAccessLog,
    },
    metrics: c.metricsPort ? { hostPort: c.metricsPort, exporterImage: c.nginxExporterImage } : undefined,
    nginx: {
      tls:
        c.tls === "off"
          ? undefined
          : {
              mode: c.tls,
              domain: c.domain,
              httpsPort: c.httpsPort,
              certificate:
                c.tls === "certificate" && c.tlsCertificate && c.tlsPrivateKey
                  ? {
                      // One block after another, each ending in a newline: what nginx reads as a chain.
                      certPem: pemChain(c.tlsCertificate)
                        .map((cert) => cert.toString())
                        .join(""),
                      keyPem: `${c.tlsPrivateKey.trim()}\n`,
                    }
                  : undefined,
              acme:
                c.tls === "acme"
                  ? {
                      server: c.acmeServer,
                      email: c.acmeEmail || undefined,
                      caPem: c.acmeCaFile ? pemCertificates(resolveIn(ctx, c.acmeCaFile)) : undefined,
                      profile: c.acmeProfile || undefined,
                    }
                  : undefined,
              internal: c.tls === "internal" ? { leafLifetimeS: c.internalLeafLifetime } : undefined,
            },
      baseImage: c.nginxImage,
      httpPort: c.httpPort,
      configFile: abs(c.nginxConfigFile),
      hostHeader: c.proxyHostHeader,
      forwardedHeaders: c.forwardedHeaders,
      keepalive: c.upstreamKeepalive,
      accessLog: c.nginxAccessLog,
      accessLogFormat: c.nginxAccessLogFormat,
      requestId: c.nginxRequestId,
      readTimeoutS: c.upstreamReadTimeout,
      deadPeerTimeoutS: c.upstreamDeadPeerTimeout || undefined,
      limits: { memoryMb: c.nginxMemoryMb || undefined, cpus: c.nginxCpus || undefined },
      workerProcesses: c.nginxWorkerProcesses || undefined,
    },
    networkSubnet: c.networkSubnet || undefined,
    hardened: c.hardened,
    target: c.target,
    swarm: {
      endpointMode: c.swarmEndpointMode,
      publishMode: c.swarmPublishMode,
      edgeLabel: c.swarmEdgeLabel || undefined,
      secretKey: c.swarmSecretKey,
    },
    registry: c.registry
      ? { address: c.registry, caPem: c.registryCaFile ? fs.readFileSync(resolveIn(ctx, c.registryCaFile), "utf8") : "" }
      : undefined,
    bindAddress: c.bindAddress,
    restartPolicy: c.restartPolicy,
    healthchecks: c.healthchecks,
    waitForHealthy: c.waitForHealthy,
  };
}

/** A tag is pinned when it is present and not "latest" (a digest pins too). */
export function isPinned(ref: string): boolean {
  if (ref.includes("@sha256:")) return true;
  const lastSlash = ref.lastIndexOf("/");
  const colon = ref.indexOf(":", lastSlash + 1);
  return colon > 0 && ref.slice(colon + 1) !== "latest";
}

/** Reads the running stack's config through Pulumi; a bad value stops the program before any resource. */
export function loadStackConfig(root: string, ...checks: StackCheck[]): StackConfig {
  // Imported here so parseConfig stays usable without a Pulumi runtime (tools, policy tests).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pulumi = require("@pulumi/pulumi") as typeof import("@pulumi/pulumi");
  try {
    return parseConfig(pulumi.runtime.allConfig(), { stack: pulumi.getStack(), project: pulumi.getProject(), root }, checks);
  } catch (e) {
    // RunError: Pulumi prints the message alone, without a stack trace.
    if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
    throw e;
  }
}

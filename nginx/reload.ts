// nginx's conf.d/default.conf on plain containers: a volume nginx mounts read-only, so that a change of the
// rendered conf reloads the running nginx (its master keeps the listening socket; old workers finish their
// requests) instead of replacing the container, which would refuse connections while the new one starts.
//   ConfFile   writes the conf into the volume (with tls on, the certificate and key first, into tls/ of the
//              same volume: nginx/conf.ts TLS_DIR): before nginx starts, and on every change. While nginx runs, a
//              changed conf is first tested there (`nginx -t`); one it refuses is taken back and fails
//              `pulumi up` with nginx's message. A failed update keeps the old state, so the state records
//              only a conf nginx accepted, and the next `up` and `preview` still show the change.
//   ConfReload after the container: `nginx -s reload` in the running container (a new one read the conf at
//              start), done once only new workers accept; a new certificate or key is a reload too, never a
//              new container. It runs after the container's own update, so a conf meant for a replaced
//              container (new socket mounts) is never loaded into the old one.
import * as pulumi from "@pulumi/pulumi";
import type * as docker from "@pulumi/docker";
import type Dockerode from "dockerode";
import * as crypto from "crypto";
import * as path from "path";
import { containerLog, engineClient, execIn, runToEnd, stackEngine, unlessMissing, type EngineSettings } from "../infra/engine";
import { ACME_WEBROOT, TLS_CERT_FILE, TLS_DIR, TLS_KEY_FILE } from "./conf";

interface ConfTarget {
  /** The volume holding the conf, and the file's name in it. */
  volumeName: string;
  fileName: string;
  /** An image with a shell, to write the file from (the stack's nginx image: present wherever nginx runs). */
  image: string;
  labels: Record<string, string>;
  /** The engine nginx runs on: the docker provider's settings. */
  engine: EngineSettings;
}

/** The TLS listener's certificate (leaf, then chain) and key, as PEM. */
export interface TlsFiles {
  certPem: string;
  keyPem: string;
}

interface FileInputs extends ConfTarget {
  conf: string;
  /** tls on: the certificate files, written into `tls/` of the volume before the conf that names them. */
  tls?: TlsFiles;
  /** The nginx container reading the volume (its name, as it is declared after the file), or its holder. */
  containerName: string;
  /** Handover: `containerName` holds the network namespace; the nginx containers are those that joined it. */
  netnsHolder?: boolean;
}

// The writer's script. The certificate and key go first (the key created 0600, in a directory only root may
// enter; nginx's master reads both as root before its workers drop to the nginx user), each through a
// rename, so `nginx -t` and a reload never see a conf that names files missing. The ACME webroot is made
// world-readable, for the workers to serve challenge files from.
const WRITE_SCRIPT = [
  "set -e",
  // Made in every mode: with tls: acme they are where the agent's volumes are mounted over in nginx.
  `mkdir -p "/conf/${path.posix.basename(TLS_DIR)}" "/conf/${path.posix.basename(ACME_WEBROOT)}"`,
  `chmod 0700 "/conf/${path.posix.basename(TLS_DIR)}"; chmod 0755 "/conf/${path.posix.basename(ACME_WEBROOT)}"`,
  'if [ -n "$TLS_CERT" ]; then',
  `  key="/conf/${path.posix.basename(TLS_DIR)}/${TLS_KEY_FILE}"; cert="/conf/${path.posix.basename(TLS_DIR)}/${TLS_CERT_FILE}"`,
  '  (umask 077; printf "%s" "$TLS_KEY" > "$key.next"; printf "%s" "$TLS_CERT" > "$cert.next")',
  '  mv -f "$key.next" "$key"; mv -f "$cert.next" "$cert"',
  "fi",
  'printf "%s" "$CONF" > "/conf/$FILE.next"',
  'mv -f "/conf/$FILE.next" "/conf/$FILE"',
].join("\n");

/** Writes `conf` (and the TLS files, first) into the volume from a short-lived container (infra/engine.ts). */
async function writeConf(target: ConfTarget, conf: string, tls?: TlsFiles): Promise<void> {
  await runToEnd(target.engine, {
    image: target.image,
    script: WRITE_SCRIPT,
    env: [`CONF=${conf}`, `FILE=${target.fileName}`, ...(tls ? [`TLS_CERT=${tls.certPem}`, `TLS_KEY=${tls.keyPem}`] : [])],
    binds: [`${target.volumeName}:/conf`],
    labels: target.labels,
    what: `writing ${target.fileName} into volume ${target.volumeName}`,
  });
}

/** The stack's running nginx containers: none, one, or (a handover under way, or cut short) two. */
async function runningNginx(target: FileInputs): Promise<Dockerode.Container[]> {
  const client = engineClient(target.engine);
  const info = await unlessMissing(client.getContainer(target.containerName).inspect());
  if (!info?.State.Running) return [];
  if (!target.netnsHolder) return [client.getContainer(info.Id)];
  const label = Object.entries(target.labels).map(([k, v]) => `${k}=${v}`);
  const joined = await client.listContainers({ filters: { label } });
  return joined.filter((c) => c.HostConfig.NetworkMode === `container:${info.Id}`).map((c) => client.getContainer(c.Id));
}

/** Runs `nginx -t` in the running container; fails with nginx's message if it refuses the conf on disk. */
async function testConf(nginx: Dockerode.Container, what: string): Promise<void> {
  const test = await execIn(nginx, ["nginx", "-t"]);
  if (test.exitCode !== 0) throw new Error(`${what}: ${test.stderr.trim()}`);
}

const sameTls = (a: TlsFiles | undefined, b: TlsFiles | undefined) => a?.certPem === b?.certPem && a?.keyPem === b?.keyPem;

const fileProvider: pulumi.dynamic.ResourceProvider = {
  // No nginx reads the volume yet: it reads the file when it starts.
  async create(inputs: FileInputs) {
    await writeConf(inputs, inputs.conf, inputs.tls);
    return { id: `${inputs.volumeName}/${inputs.fileName}`, outs: inputs };
  },
  async diff(_id: string, olds: FileInputs, news: FileInputs) {
    return {
      changes: olds.conf !== news.conf || olds.volumeName !== news.volumeName || !sameTls(olds.tls, news.tls),
      replaces: olds.volumeName !== news.volumeName ? ["volumeName"] : [],
    };
  },
  async update(_id: string, olds: FileInputs, news: FileInputs) {
    await writeConf(news, news.conf, news.tls);
    // Without a running nginx there is nothing to test against: a container started later reads the file.
    for (const nginx of await runningNginx(news)) {
      try {
        await testConf(nginx, "nginx refused the new conf, which was taken back (nginx keeps serving the old one)");
      } catch (e) {
        // Only the file changed (nginx is reloaded by ConfReload, after this): putting it back is the whole undo.
        await writeConf(news, olds.conf, olds.tls);
        throw e;
      }
    }
    return { outs: news };
  },
  // The file goes with its volume.
};

/** Where the conf goes and what it says, as the program declares it. */
export interface ConfArgs {
  volumeName: pulumi.Input<string>;
  fileName: string;
  /** The nginx container's name: the file is tested in it while it runs (or, handover, its holder's). */
  containerName: string;
  netnsHolder?: boolean;
  image: pulumi.Input<string>;
  labels: Record<string, string>;
  conf: string;
}

/** The rendered conf, written into the volume nginx mounts (with the TLS files, a secret in the state). */
export class ConfFile extends pulumi.dynamic.Resource {
  constructor(name: string, args: ConfArgs & { tls?: pulumi.Input<TlsFiles> }, opts: pulumi.CustomResourceOptions) {
    super(
      fileProvider,
      name,
      { ...args, tls: args.tls ? pulumi.secret(args.tls) : undefined, engine: stackEngine() },
      { ...opts, additionalSecretOutputs: ["tls"] },
    );
  }
}

interface ReloadInputs extends ConfTarget {
  containerId: string;
  conf: string;
  /** A digest of the TLS files: a new certificate or key is a reload too. */
  tlsDigest?: string;
}

/** What the engine's `top` answers (`ps` on the engine's host, for the container's processes). */
interface Top {
  Titles: string[];
  Processes: string[][];
}

/** The PIDs of nginx's workers that accept connections (one told to quit retitles itself "is shutting down"). */
async function acceptingWorkers(nginx: Dockerode.Container): Promise<string[]> {
  const top = (await nginx.top({ ps_args: "-eo pid,args" })) as Top;
  const [pid, args] = [top.Titles.indexOf("PID"), top.Titles.indexOf("COMMAND")];
  return top.Processes.filter((p) => /^nginx: worker process\s*$/.test(p[args] ?? "")).map((p) => p[pid]);
}

// nginx starts new workers on a reload and leaves the old ones accepting for 100 ms more (its master's
// reconfigure), so `nginx -s reload` returning says nothing about what the next connection gets. The reload
// is done once no old worker accepts; a master that refused the conf keeps them, and says why in its log.
async function reloaded(nginx: Dockerode.Container, old: string[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const now = await acceptingWorkers(nginx);
    if (now.length > 0 && !now.some((w) => old.includes(w))) return;
    if (Date.now() > deadline) {
      const log = await containerLog(nginx, { tail: 5, timeoutMs: 10_000, what: "nginx's log" });
      throw new Error(
        `nginx did not reload in ${timeoutMs / 1000} s: workers ${old.join(", ")} still accept; its log: ${`${log.stdout}${log.stderr}`.trim()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Reloads a running nginx with the conf on its volume; returns once only the new workers accept. */
export async function reloadNginx(nginx: Dockerode.Container): Promise<void> {
  // ConfFile tested the file already; tested again because `nginx -s reload` exits 0 even when the master
  // then refuses the conf (it only logs that and keeps the old one).
  await testConf(nginx, "nginx refuses the conf on its volume, so it was not reloaded");
  const workers = await acceptingWorkers(nginx);
  const reload = await execIn(nginx, ["nginx", "-s", "reload"]);
  if (reload.exitCode !== 0) throw new Error(`nginx -s reload failed: ${reload.stderr.trim()}`);
  await reloaded(nginx, workers);
}

const reloadProvider: pulumi.dynamic.ResourceProvider = {
  // A new container read the conf when it started: nothing to reload.
  async create(inputs: ReloadInputs) {
    return { id: inputs.containerId, outs: inputs };
  },
  async diff(_id: string, olds: ReloadInputs, news: ReloadInputs) {
    return {
      changes: olds.conf !== news.conf || olds.containerId !== news.containerId || olds.tlsDigest !== news.tlsDigest,
    };
  },
  async update(_id: string, olds: ReloadInputs, news: ReloadInputs) {
    if (olds.containerId !== news.containerId) return { outs: news }; // a new container: it read the conf at start
    await reloadNginx(engineClient(news.engine).getContainer(news.containerId));
    return { outs: news };
  },
};

/** Reloads the running nginx whenever its conf changes. */
export class ConfReload extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    args: ConfArgs & { container: docker.Container; file: ConfFile; tls?: pulumi.Input<TlsFiles> },
    opts: pulumi.CustomResourceOptions,
  ) {
    const { container, file, tls, ...target } = args;
    // The digest only: the key itself stays in ConfFile's (secret) state.
    const tlsDigest = tls
      ? pulumi.unsecret(
          pulumi.output(tls).apply((t) => crypto.createHash("sha256").update(`${t.certPem}\n${t.keyPem}`).digest("hex")),
        )
      : undefined;
    super(
      reloadProvider,
      name,
      { ...target, tlsDigest, containerId: container.id, engine: stackEngine() },
      { ...opts, dependsOn: [container, file] },
    );
  }
}

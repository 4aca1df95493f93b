// A real three-node Docker Swarm and a TLS registry on this one machine, for the cluster stack (Pulumi.cluster.yaml)
// and its live tests: `npm run cluster:up` / `npm run cluster:down`. Each node is a container running its own
// Debian dockerd on a volume of its own; the registry is Debian's Distribution registry with a CA made on its
// first start. All of it sits on one bridge network this tool creates, and every host object carries
// CLUSTER.label and the CLUSTER.prefix name, so `down` removes exactly what `up` made. Both are idempotent.
//   node -r ts-node/register tools/cluster.ts up|down
import * as fs from "fs";
import * as http from "http";
import * as path from "path";
import Docker from "dockerode";
import { execIn, unlessMissing } from "../infra/engine";
import { registryRequest } from "../infra/registry";
import { ignoreNotFound } from "../infra/engine-objects";
import { within } from "../harness/load";
import { ROOT, stackConfig } from "../infra/stack-files";

const PREFIX = "flask-proxy-cluster";
/** The stack file the cluster is made for: its published port, edge label and base images come from there. */
export const CLUSTER_STACK = "cluster";
const ENGINE_PORT = 2375;

export interface ClusterNode {
  /** Container name on the host. */
  name: string;
  /** Hostname, which is the swarm node's name too. */
  hostname: string;
  ip: string;
  manager: boolean;
  /** Carries the stack's edge label: nginx runs here, and its port is published on the host. */
  edge: boolean;
}

/** Every name, address and label of the stand-in cluster, stated once. */
export const CLUSTER = {
  prefix: PREFIX,
  label: { key: "org.flask-proxy.cluster", value: PREFIX },
  network: { name: `${PREFIX}-net`, subnet: "10.213.7.0/24" },
  image: `${PREFIX}-node:1`,
  registry: { name: `${PREFIX}-registry`, ip: "10.213.7.10", port: 5000, data: `${PREFIX}-registry-data`, pki: `${PREFIX}-pki` },
  nodes: [1, 2, 3].map((n): ClusterNode => ({
    name: `${PREFIX}-node-${n}`,
    hostname: `node-${n}`,
    ip: `10.213.7.1${n}`,
    manager: n === 1,
    edge: n === 1,
  })),
  /**
   * Address pools of the inner engines, apart from the nodes' network: with the defaults (172.17.0.0/16 …) a
   * worker's join was refused and a task's network attach failed with an address conflict.
   */
  localPool: (n: number) => `10.214.${n}.0/24`,
  swarmPool: "10.215.0.0/16",
  /** Where `up` leaves the registry's CA for the program (registryCaFile) and for people; `down` removes it. */
  caFile: path.join(ROOT, ".cluster", "ca.crt"),
} as const;

export const registryAddress = `${CLUSTER.registry.ip}:${CLUSTER.registry.port}`;
const manager = CLUSTER.nodes.find((n) => n.manager)!;
/** `docker:host` of the cluster stack: the manager's engine, on the cluster's own network only. */
export const managerUrl = `tcp://${manager.ip}:${ENGINE_PORT}`;

const log = (s: string) => process.stderr.write(`[cluster] ${s}\n`);
/** How often the setup steps look again. */
const POLL = { everyMs: 500 };

// A fresh connection per call (see harness/live-stack.ts): node engines go away and come back in the tests.
const freshAgent = () => new http.Agent({ keepAlive: false });
export const hostDocker = new Docker({ agent: freshAgent() } as Docker.DockerOptions);
/** The engine inside a node, over TCP on the cluster network. */
export function nodeEngine(node: ClusterNode): Docker {
  return new Docker({ protocol: "http", host: node.ip, port: ENGINE_PORT, agent: freshAgent() } as Docker.DockerOptions);
}
export const managerEngine = () => nodeEngine(manager);

const labels = { [CLUSTER.label.key]: CLUSTER.label.value };
const labelFilter = JSON.stringify({ label: [`${CLUSTER.label.key}=${CLUSTER.label.value}`] });

/** The cluster stack's settings the machines are made for. */
function stackSettings() {
  const c = stackConfig(CLUSTER_STACK);
  const edgeLabel = c["flask-proxy:swarmEdgeLabel"];
  if (!edgeLabel) throw new Error(`Pulumi.${CLUSTER_STACK}.yaml sets no swarmEdgeLabel`);
  // Both of nginx's ports (the second once tls is on), published from the edge node on the host.
  const edgePorts = ["httpPort", "httpsPort"].map((key) => {
    const port = Number(c[`flask-proxy:${key}`]);
    if (!Number.isInteger(port) || port <= 0) throw new Error(`Pulumi.${CLUSTER_STACK}.yaml sets no ${key}`);
    return port;
  });
  return {
    edgePorts,
    edgeLabel,
    nginxImage: c["flask-proxy:nginxImage"],
    pythonImage: c["flask-proxy:pythonImage"],
  };
}

/** Follows a build, pull or push stream to its end; an error line in it fails. */
function follow(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  return new Promise((resolve, reject) =>
    docker.modem.followProgress(
      stream,
      (err: Error | null, out: { error?: string }[]) => {
        const failed = out.find((o) => o.error);
        if (err || failed) reject(err ?? new Error(failed!.error));
        else resolve();
      },
      () => undefined,
    ),
  );
}

async function exists(p: Promise<unknown>): Promise<boolean> {
  return p.then(
    () => true,
    (e: { statusCode?: number }) => {
      if (e.statusCode === 404) return false;
      throw e;
    },
  );
}

/**
 * Builds the machine image (cluster/Dockerfile: Debian's dockerd, sshd and registry) as `tag` with `label`,
 * unless it is there; returns whether it built it. It builds on the host's copy of the stack's Python image
 * (Debian, as the official one is), which cluster:up pushes anyway: no other base to keep or pull.
 */
export async function ensureNodeImage(tag: string, label: { key: string; value: string }): Promise<boolean> {
  if (await exists(hostDocker.getImage(tag).inspect())) return false;
  const base = hostImage(stackSettings().pythonImage);
  if (!(await exists(hostDocker.getImage(base).inspect())))
    throw new Error(`building ${tag} needs ${base} on this engine (npm run setup:engine makes it)`);
  log(`building ${tag} on ${base} (Debian's docker.io, openssh-server and docker-registry)`);
  const dir = path.join(ROOT, "cluster");
  const stream = await hostDocker.buildImage(
    { context: dir, src: ["Dockerfile", "node-entrypoint.sh", "registry-entrypoint.sh", "registry.yml"] },
    {
      t: tag,
      labels: { [label.key]: label.value },
      buildargs: { BASE_IMAGE: base, LABEL_KEY: label.key, LABEL_VALUE: label.value },
    },
  );
  await follow(hostDocker, stream);
  return true;
}

async function ensureNetwork(): Promise<void> {
  const found = await hostDocker.listNetworks({ filters: JSON.stringify({ name: [CLUSTER.network.name] }) });
  if (found.some((n) => n.Name === CLUSTER.network.name)) return;
  await hostDocker.createNetwork({
    Name: CLUSTER.network.name,
    Driver: "bridge",
    Labels: labels,
    IPAM: { Config: [{ Subnet: CLUSTER.network.subnet }] },
  });
}

async function ensureVolume(name: string): Promise<void> {
  if (await exists(hostDocker.getVolume(name).inspect())) return;
  await hostDocker.createVolume({ Name: name, Labels: labels });
}

/** Starts the container `spec` describes, creating it if it is missing; a stopped one is started again. */
async function ensureContainer(spec: Docker.ContainerCreateOptions & { name: string }): Promise<void> {
  const c = hostDocker.getContainer(spec.name);
  const state = (await unlessMissing(c.inspect()))?.State;
  if (state?.Running) return;
  if (!state) await hostDocker.createContainer(spec);
  log(`starting ${spec.name}`);
  await c.start();
}

const onNetwork = (ip: string): Docker.ContainerCreateOptions["NetworkingConfig"] => ({
  EndpointsConfig: { [CLUSTER.network.name]: { IPAMConfig: { IPv4Address: ip } } },
});

/** @types/dockerode lacks the API's CgroupnsMode (API 1.41). */
type NodeHostConfig = Docker.HostConfig & { CgroupnsMode: "host" | "private" };

/**
 * What a nested dockerd needs here, short of --privileged (which this machine refuses); its containers' cgroups
 * go under `--cgroup-parent /<container name>` (see removeCgroups).
 */
export const NESTED_ENGINE: NodeHostConfig = {
  CapAdd: ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "MKNOD"],
  SecurityOpt: ["seccomp=unconfined", "apparmor=unconfined"],
  // The API's form of `--security-opt systempaths=unconfined`.
  MaskedPaths: [],
  ReadonlyPaths: [],
  CgroupnsMode: "host",
  Binds: ["/sys/fs/cgroup:/sys/fs/cgroup:rw"],
};

function nodeSpec(node: ClusterNode, n: number, edgePorts: number[]): Docker.ContainerCreateOptions & { name: string } {
  const ports = node.edge ? edgePorts.map((p) => [`${p}/tcp`, String(p)] as const) : [];
  const hostConfig: NodeHostConfig = {
    ...NESTED_ENGINE,
    Mounts: [{ Type: "volume", Source: `${node.name}-docker`, Target: "/var/lib/docker" }],
    // The edge node's nginx ports, on the host's loopback only.
    PortBindings: ports.length
      ? Object.fromEntries(ports.map(([k, p]) => [k, [{ HostIp: "127.0.0.1", HostPort: p }]]))
      : undefined,
  };
  return {
    name: node.name,
    Hostname: node.hostname,
    Image: CLUSTER.image,
    Labels: labels,
    Entrypoint: ["node-entrypoint.sh"],
    Cmd: [
      "-H",
      "unix:///var/run/docker.sock",
      "-H",
      `tcp://${node.ip}:${ENGINE_PORT}`,
      "--default-address-pool",
      `base=${CLUSTER.localPool(n)},size=28`,
      // The inner containers' cgroups apart from the host engine's own /docker tree.
      "--cgroup-parent",
      `/${node.name}`,
    ],
    ExposedPorts: ports.length ? Object.fromEntries(ports.map(([k]) => [k, {}])) : undefined,
    HostConfig: hostConfig,
    NetworkingConfig: onNetwork(node.ip),
  };
}

function registrySpec(): Docker.ContainerCreateOptions & { name: string } {
  const r = CLUSTER.registry;
  return {
    name: r.name,
    Hostname: "registry",
    Image: CLUSTER.image,
    Labels: labels,
    Entrypoint: ["registry-entrypoint.sh"],
    Env: [`REGISTRY_ADDRESS=${r.ip}`],
    HostConfig: {
      Mounts: [
        { Type: "volume", Source: r.pki, Target: "/pki" },
        { Type: "volume", Source: r.data, Target: "/var/lib/docker-registry" },
      ],
    },
    NetworkingConfig: onNetwork(r.ip),
  };
}

/** The CA's certificate, once the registry has made it. */
async function caPem(): Promise<string> {
  const c = hostDocker.getContainer(CLUSTER.registry.name);
  let pem = "";
  await within(
    60_000,
    async () => {
      const r = await execIn(c, ["cat", "/pki/ca.crt"]);
      if (r.exitCode === 0 && r.stdout.includes("BEGIN CERTIFICATE")) pem = r.stdout;
      return pem !== "";
    },
    "the registry's CA",
    POLL,
  );
  return pem;
}

/** Every node's engine trusts the registry's CA for its address (certs.d needs no restart). */
async function trustRegistry(ca: string): Promise<void> {
  const dir = `/etc/docker/certs.d/${registryAddress}`;
  for (const node of CLUSTER.nodes) {
    const c = hostDocker.getContainer(node.name);
    const exec = await c.exec({ Cmd: ["sh", "-c", `mkdir -p ${dir} && printf '%s' "$CA" > ${dir}/ca.crt`], Env: [`CA=${ca}`] });
    await exec.start({});
    await within(
      10_000,
      async () => (await execIn(c, ["cat", `${dir}/ca.crt`])).stdout === ca,
      `${node.name} trusts the registry`,
      POLL,
    );
  }
}

type SwarmInfo = { LocalNodeState?: string; NodeID?: string; ControlAvailable?: boolean };
const swarmOf = async (d: Docker) => ((await d.info()) as { Swarm?: SwarmInfo }).Swarm ?? {};

async function formSwarm(edgeLabel: string): Promise<void> {
  const m = managerEngine();
  if ((await swarmOf(m)).LocalNodeState !== "active") {
    log("swarm init on the manager");
    await m.swarmInit({
      ListenAddr: `${manager.ip}:2377`,
      AdvertiseAddr: manager.ip,
      DefaultAddrPool: [CLUSTER.swarmPool],
      SubnetSize: 24,
    });
  }
  const token = ((await m.swarmInspect()) as { JoinTokens: { Worker: string } }).JoinTokens.Worker;
  for (const node of CLUSTER.nodes.filter((n) => !n.manager)) {
    const w = nodeEngine(node);
    if ((await swarmOf(w)).LocalNodeState === "active") continue;
    log(`${node.hostname} joins the swarm`);
    await w.swarmJoin({
      ListenAddr: `${node.ip}:2377`,
      AdvertiseAddr: node.ip,
      RemoteAddrs: [`${manager.ip}:2377`],
      JoinToken: token,
    });
  }
  await within(
    60_000,
    async () => (await m.listNodes()).filter((n) => n.Status?.State === "ready").length === CLUSTER.nodes.length,
    "all nodes ready",
    POLL,
  );
  for (const node of CLUSTER.nodes.filter((n) => n.edge)) {
    const found = (await m.listNodes()).find((n) => n.Description?.Hostname === node.hostname);
    if (!found?.ID || !found.Spec) throw new Error(`no swarm node ${node.hostname}`);
    if (found.Spec.Labels?.[edgeLabel] === "true") continue;
    await m
      .getNode(found.ID)
      .update({ version: found.Version?.Index, ...found.Spec, Labels: { ...found.Spec.Labels, [edgeLabel]: "true" } });
  }
}

/** `host/repo:tag` → [repo, tag] without the registry. */
function inRegistry(ref: string): { repo: string; tag: string } {
  if (!ref.startsWith(`${registryAddress}/`)) throw new Error(`${ref} is not in the cluster's registry ${registryAddress}`);
  const rest = ref.slice(registryAddress.length + 1);
  const at = rest.lastIndexOf(":");
  return { repo: rest.slice(0, at), tag: rest.slice(at + 1) };
}

/** The host engine's name for an image the cluster stack names in its registry. */
function hostImage(ref: string): string {
  const { repo, tag } = inRegistry(ref);
  return `${repo}:${tag}`;
}

/**
 * The stack's base images in the registry: the host engine's stand-ins, loaded into the manager's engine,
 * tagged and pushed from there (the host engine's registry trust is not ours to change).
 */
async function pushBaseImages(refs: string[], ca: string): Promise<void> {
  const m = managerEngine();
  for (const ref of refs) {
    const { repo, tag } = inRegistry(ref);
    const have = await registryRequest(registryAddress, "HEAD", `/v2/${repo}/manifests/${tag}`, ca);
    if (have.status === 200) continue;
    const local = hostImage(ref);
    log(`pushing ${local} to ${ref}`);
    await m.loadImage(await hostDocker.getImage(local).get());
    await m.getImage(local).tag({ repo: `${registryAddress}/${repo}`, tag });
    const img = m.getImage(ref);
    await follow(m, (await img.push({ authconfig: {} })) as NodeJS.ReadableStream);
  }
}

export async function clusterUp(): Promise<void> {
  const started = Date.now();
  const { edgePorts, edgeLabel, nginxImage, pythonImage } = stackSettings();
  await ensureNodeImage(CLUSTER.image, CLUSTER.label);
  await ensureNetwork();
  for (const v of [CLUSTER.registry.pki, CLUSTER.registry.data, ...CLUSTER.nodes.map((n) => `${n.name}-docker`)])
    await ensureVolume(v);
  await ensureContainer(registrySpec());
  for (const [i, node] of CLUSTER.nodes.entries()) await ensureContainer(nodeSpec(node, i + 1, edgePorts));
  const ca = await caPem();
  fs.mkdirSync(path.dirname(CLUSTER.caFile), { recursive: true });
  fs.writeFileSync(CLUSTER.caFile, ca);
  await within(
    60_000,
    async () => (await registryRequest(registryAddress, "GET", "/v2/", ca)).status === 200,
    "the registry answers over TLS",
    POLL,
  );
  for (const node of CLUSTER.nodes)
    await within(60_000, async () => Boolean(await nodeEngine(node).ping()), `${node.name}'s engine`, POLL);
  await trustRegistry(ca);
  await formSwarm(edgeLabel);
  await pushBaseImages([nginxImage, pythonImage], ca);
  log(
    `up in ${((Date.now() - started) / 1000).toFixed(1)} s: manager ${managerUrl}, registry ${registryAddress} ` +
      `(CA ${path.relative(ROOT, CLUSTER.caFile)}: \`pulumi config set registryCaFile ${path.relative(ROOT, CLUSTER.caFile)}\`), ` +
      `nginx on 127.0.0.1:${edgePorts.join(" and ")}`,
  );
}

/** Removes every host object with the cluster's label (containers, volumes, network, image) and the CA file. */
export async function clusterDown(): Promise<void> {
  for (const c of await hostDocker.listContainers({ all: true, filters: labelFilter })) {
    log(`removing ${c.Names.join(",")}`);
    await hostDocker.getContainer(c.Id).remove({ force: true }).catch(ignoreNotFound);
  }
  for (const v of (await hostDocker.listVolumes({ filters: labelFilter })).Volumes ?? []) {
    await hostDocker.getVolume(v.Name).remove().catch(ignoreNotFound);
  }
  for (const n of await hostDocker.listNetworks({ filters: labelFilter }))
    await hostDocker.getNetwork(n.Id).remove().catch(ignoreNotFound);
  for (const i of await hostDocker.listImages({ filters: labelFilter })) {
    await hostDocker.getImage(i.Id).remove({ force: true }).catch(ignoreNotFound);
  }
  fs.rmSync(path.dirname(CLUSTER.caFile), { recursive: true, force: true });
  removeCgroups(CLUSTER.nodes.map((n) => n.name));
}

/**
 * The inner engines' cgroup trees (--cgroup-parent /<node>) in the host's hierarchy: their processes die with
 * the node containers, the empty directories stay behind. Only directories named after `nodes` are touched.
 */
export function removeCgroups(nodes: string[]): void {
  const root = "/sys/fs/cgroup";
  const controllers = fs.existsSync(path.join(root, "cgroup.controllers")) ? [""] : fs.readdirSync(root);
  const rmTree = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmTree(path.join(dir, e.name));
    fs.rmdirSync(dir);
  };
  for (const ctl of controllers) {
    for (const node of nodes) {
      const dir = path.join(root, ctl, node);
      try {
        if (fs.statSync(dir).isDirectory()) rmTree(dir);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT" && (e as NodeJS.ErrnoException).code !== "ENOTDIR") throw e;
      }
    }
  }
}

/** What of the cluster is on the host: containers, volumes, networks and images with its label. */
export async function clusterLeftovers(): Promise<string[]> {
  return [
    ...(await hostDocker.listContainers({ all: true, filters: labelFilter })).map((c) => `container ${c.Names.join(",")}`),
    ...((await hostDocker.listVolumes({ filters: labelFilter })).Volumes ?? []).map((v) => `volume ${v.Name}`),
    ...(await hostDocker.listNetworks({ filters: labelFilter })).map((n) => `network ${n.Name}`),
    ...(await hostDocker.listImages({ filters: labelFilter })).map((i) => `image ${(i.RepoTags ?? []).join(",") || i.Id}`),
  ];
}

if (require.main === module) {
  const cmd = process.argv[2];
  const run = cmd === "up" ? clusterUp : cmd === "down" ? clusterDown : undefined;
  if (!run) {
    console.error("usage: cluster.ts up|down");
    process.exit(2);
  }
  run().catch((e: Error) => {
    console.error(`[cluster] ${cmd} failed: ${e.message}`);
    process.exit(1);
  });
}

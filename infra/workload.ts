// One description of a service (image, command, env, network alias, ports, mounts, healthcheck, limits,
// hardening), declared either as plain containers on one engine or as a Docker Swarm service. The
// components describe what runs; this file alone knows how each backend spells it.
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { labelList, replicaSuffix } from "./naming";
import { Cutover } from "./cutover";
import { ServiceRollout } from "./rollout";

export type RestartPolicy = "no" | "on-failure" | "always" | "unless-stopped";

export interface Limits {
  memoryMb?: number;
  cpus?: number;
}

/** How and where every workload of a stack runs (not to be confused with the CrossGuard pack in policy/). */
export interface WorkloadSettings {
  labels: Record<string, string>;
  restartPolicy: RestartPolicy;
  healthchecks: boolean;
  waitForHealthy: boolean;
  bindAddress: string;
  hardened: boolean;
  target: "containers" | "swarm";
  swarm: { endpointMode: "dnsrr" | "vip"; publishMode: "host" | "ingress"; edgeLabel?: string };
}

export interface Tmpfs {
  path: string;
  sizeMb: number;
  noexec?: boolean;
}

/** A named volume mounted into the container. */
export interface VolumeMount {
  volumeName: pulumi.Input<string>;
  target: string;
  readOnly: boolean;
}

/** One container of a workload on plain containers. */
export interface ReplicaSpec {
  containerName: string;
  /** Fixed address on the network. */
  address?: string;
  /** Named volumes this replica mounts (containers only). */
  volumes?: VolumeMount[];
}

export interface WorkloadSpec {
  image: pulumi.Input<string>;
  /** The image's CMD replaced (its ENTRYPOINT is kept). */
  command?: string[];
  env?: pulumi.Input<string>[];
  network: docker.Network;
  aliases?: string[];
  /** A container port published on the host. */
  publish?: { internal: number; external: number };
  /** Containers only: more container ports published like `publish` (nginx's TLS listener). */
  alsoPublish?: { internal: number; external: number }[];
  /** Containers only: a container port published on 127.0.0.1 whatever bindAddress is (metrics, for the host alone). */
  hostOnly?: { internal: number; external: number };
  /** Read-only bind mounts from the host. */
  binds?: { source: string; target: string }[];
  /** Writable paths under a read-only root (hardened only). */
  tmpfs?: Tmpfs[];
  /** Healthcheck command, run in the container (exec form). */
  healthcheck?: string[];
  limits: Limits;
  /** Capabilities kept when hardened; everything else is dropped. */
  capAdds?: string[];
  /** nproc ulimit (containers only: neither Docker's pids limit nor ulimits are in the provider's service). */
  maxProcesses?: number;
  /** One entry per replica: container names, addresses and volumes or, for a service, the count. */
  replicas: ReplicaSpec[];
  /** Service name on swarm (the first replica's name on plain containers). */
  serviceName: string;
  /** Seconds a stopped or deleted container gets to finish its requests before SIGKILL. */
  stopGraceS?: number;
  /**
   * Containers only: how a replacement takes over (infra/cutover.ts). `sideBySide`: the new container boots
   * under a new generated name beside the old one, is health-gated and switched to, and only then is the old
   * one deleted, which drains it (stopGraceS): a release that drops no request. It needs replicas without a
   * host port or a fixed address (two generations run at once). Otherwise each container keeps its fixed
   * name and the old one is deleted first; a `switchCommand` still runs once the new one is healthy.
   */
  release?: {
    sideBySide: boolean;
    switchCommand?: string[];
    settleS: number;
    /** Run in the old container once the new one passes its gate, then `drainS` waited, before it is deleted. */
    drainCommand?: string[];
    drainS?: number;
  };
  /**
   * Containers only: a container of its own (this name) holds the network namespace: the network and
   * aliases, the published ports and the sysctls. The replicas join it, so a replacement boots beside the old
   * one on the same ports (both must listen with SO_REUSEPORT) and no published port ever closes. It runs
   * `command` from `image`, keeps the image it was created with (it only sleeps), and is replaced only when
   * what it holds changes (a port: an address moves, which no handover hides).
   */
  netnsHolder?: { containerName: string; image: pulumi.Input<string>; command: string[] };
  /** The signal that stops the container gracefully (docker stop, and the provider's delete). */
  stopSignal?: string;
  /** The user the command runs as, instead of the image's. */
  user?: string;
  /** Kernel parameters of the container's own network namespace (net.*). */
  sysctls?: Record<string, string>;
  /** Swarm only: swarm secrets mounted as files under /run/secrets. */
  secrets?: SecretMount[];
}

export interface SecretMount {
  secret: docker.Secret;
  /** File name under /run/secrets. */
  fileName: string;
  /** Owner of the file (read-only to it alone). */
  uid: number;
}

const LOOPBACK = "127.0.0.1";
const LOG = { driver: "json-file", options: { "max-size": "10m", "max-file": "3" } };
/** How long `pulumi up` waits for a service's rolling update to finish. */
const ROLLOUT_TIMEOUT_S = 300;
const HEALTH = { interval: "5s", timeout: "3s", retries: 3, startPeriod: "10s" };

/** How long a new app container may take to become healthy before its release fails. */
const CUTOVER_TIMEOUT_S = 60;

/** What a workload was declared as: the resources others may depend on. */
export interface Workload {
  resources: pulumi.Resource[];
  containers: docker.Container[];
  service?: docker.Service;
}

export function declareWorkload(
  name: string,
  spec: WorkloadSpec,
  settings: WorkloadSettings,
  opts: pulumi.CustomResourceOptions,
): Workload {
  if (settings.target === "swarm") {
    // Swarm publishes on every interface: there is no host-only port (config validation refuses metrics there).
    if (spec.hostOnly) throw new Error(`${name}: a port for the host only cannot be published with target: swarm`);
    // nginx, the one user of a second port, runs as plain containers on swarm too (nginx/nginxProxy.ts).
    if (spec.alsoPublish?.length) throw new Error(`${name}: a second published port is not supported with target: swarm`);
    // Config validation keeps volumes out of swarm stacks: tasks land on any node.
    if (spec.replicas.some((r) => r.volumes?.length)) {
      throw new Error(`${name}: named volumes are not supported with target: swarm`);
    }
    const service = new docker.Service(`${name}-service`, serviceArgs(spec, settings), opts);
    if (!settings.waitForHealthy) return { resources: [service], containers: [], service };
    const rollout = new ServiceRollout(`${name}-rollout`, service, ROLLOUT_TIMEOUT_S, opts);
    return { resources: [service, rollout], containers: [], service };
  }
  const release = spec.release;
  const sideBySide = release?.sideBySide === true;
  const holder = spec.netnsHolder ? declareNetnsHolder(name, spec.netnsHolder, spec, settings, opts) : undefined;
  if (sideBySide && !holder && (spec.publish || spec.hostOnly || spec.replicas.some((r) => r.address))) {
    throw new Error(`${name}: side-by-side releases need containers without a host port or a fixed address`);
  }
  // Replica 1 keeps the unsuffixed resource name, so scaling 1 → N adds containers and replaces none.
  const containers = spec.replicas.map(
    (replica, i) =>
      new docker.Container(`${name}-container${replicaSuffix(i + 1)}`, containerArgs(spec, settings, replica, holder), {
        ...opts,
        // Side by side: the new container is created (under a new generated name) before the old one goes.
        // Fixed names: the old one must go first, and the provider asks for that only when a diff forces
        // the replacement, not for `pulumi up --replace`.
        deleteBeforeReplace: !sideBySide,
        // The provider's update applies restart, memory and CPU settings only; a changed healthcheck or
        // tmpfs would be reported as updated while the running container kept the old one.
        replaceOnChanges: ["healthcheck", "tmpfs"],
      }),
  );
  const resources = holder ? [holder, ...containers] : containers;
  if (!hasCutover(spec, settings)) return { resources, containers };
  // Gate-only (no release steps): the same resource, named for what it does.
  const step = hasReleaseSteps(spec) ? "cutover" : "health-gate";
  const cutovers = containers.map(
    (c, i) =>
      new Cutover(
        `${name}-${step}${replicaSuffix(i + 1)}`,
        c,
        {
          healthGate: gatesOnHealth(spec, settings),
          switchCommand: release?.switchCommand,
          // Waiting for a proxy's DNS cache is only worth it while the old container still serves.
          settleS: sideBySide ? (release?.settleS ?? 0) : 0,
          oldServes: sideBySide,
          timeoutS: CUTOVER_TIMEOUT_S,
          drainCommand: sideBySide ? release?.drainCommand : undefined,
          drainS: release?.drainS ?? 0,
        },
        opts,
      ),
  );
  return { resources: [...resources, ...cutovers], containers };
}

/** The container holding a workload's network namespace (WorkloadSpec.netnsHolder): it serves nothing itself. */
function declareNetnsHolder(
  name: string,
  holder: NonNullable<WorkloadSpec["netnsHolder"]>,
  spec: WorkloadSpec,
  settings: WorkloadSettings,
  opts: pulumi.CustomResourceOptions,
): docker.Container {
  const holds: WorkloadSpec = {
    image: holder.image,
    command: holder.command,
    network: spec.network,
    aliases: spec.aliases,
    publish: spec.publish,
    alsoPublish: spec.alsoPublish,
    hostOnly: spec.hostOnly,
    sysctls: spec.sysctls,
    limits: { memoryMb: 16, cpus: 0.1 },
    capAdds: [],
    // Nobody: it needs no privilege to hold a namespace (the engine publishes the ports and sets the sysctls).
    user: "65534:65534",
    // Nothing to finish: it holds sockets, not connections.
    stopSignal: "SIGKILL",
    replicas: [],
    serviceName: holder.containerName,
  };
  // Hardened whatever the stack's `hardened` says: it only sleeps, so nothing in it needs a write or a
  // capability, and turning `hardened` off or on then leaves the ports (and nginx's handover) alone.
  const args = containerArgs(holds, { ...settings, hardened: true }, { containerName: holder.containerName });
  return new docker.Container(`${name}-netns`, args, {
    ...opts,
    // Its fixed name and ports are taken until it goes.
    deleteBeforeReplace: true,
    // A new image for the workload is no reason to close the ports: the holder only sleeps.
    ignoreChanges: ["image"],
  });
}

/** Release steps run for side-by-side releases, and wherever traffic must be switched to a new container. */
const hasReleaseSteps = (spec: WorkloadSpec) =>
  spec.release !== undefined && (spec.release.sideBySide || spec.release.switchCommand !== undefined);

/**
 * A cutover resource runs for release steps, and as the health gate of every container with a healthcheck
 * when `pulumi up` waits for health: it passes as soon as the check does, where the provider's own wait
 * (`wait`) sees the first result only one healthcheck interval (5 s) after the start.
 */
const hasCutover = (spec: WorkloadSpec, settings: WorkloadSettings) => hasReleaseSteps(spec) || gatesOnHealth(spec, settings);

/** Whether `pulumi up` waits for this workload's healthcheck to pass. */
const gatesOnHealth = (spec: WorkloadSpec, settings: WorkloadSettings) =>
  settings.waitForHealthy && settings.healthchecks && spec.healthcheck !== undefined;

/** The provider's own wait for health: where no cutover gates on it and there is a healthcheck to wait for. */
const providerWaits = (spec: WorkloadSpec, settings: WorkloadSettings) =>
  settings.waitForHealthy && spec.healthcheck !== undefined && !hasCutover(spec, settings);

function containerArgs(
  spec: WorkloadSpec,
  settings: WorkloadSettings,
  replica: ReplicaSpec,
  netns?: docker.Container,
): docker.ContainerArgs {
  const hardened = settings.hardened;
  // In another container's namespace: its network, ports and sysctls are that container's.
  const own = netns === undefined;
  return {
    // Side-by-side releases leave the name to the provider, which generates a new one for each replacement.
    name: spec.release?.sideBySide ? undefined : replica.containerName,
    image: spec.image,
    command: spec.command,
    envs: spec.env,
    labels: labelList(settings.labels),
    // By ID: the provider never reads a container's networks back, so a network removed and created again
    // (same name, new ID) would leave the containers off it; a new ID replaces them instead.
    networksAdvanced: own ? [{ name: spec.network.id, aliases: spec.aliases, ipv4Address: replica.address }] : undefined,
    networkMode: own ? undefined : pulumi.interpolate`container:${netns.id}`,
    ports: !own
      ? undefined
      : [
          ...(spec.publish
            ? [{ internal: spec.publish.internal, external: spec.publish.external, ip: settings.bindAddress, protocol: "tcp" }]
            : []),
          ...(spec.alsoPublish ?? []).map((p) => ({
            internal: p.internal,
            external: p.external,
            ip: settings.bindAddress,
            protocol: "tcp",
          })),
          ...(spec.hostOnly
            ? [{ internal: spec.hostOnly.internal, external: spec.hostOnly.external, ip: LOOPBACK, protocol: "tcp" }]
            : []),
        ],
    volumes: [
      ...(spec.binds ?? []).map((b) => ({ hostPath: b.source, containerPath: b.target, readOnly: true })),
      ...(replica.volumes ?? []).map((v) => ({ volumeName: v.volumeName, containerPath: v.target, readOnly: v.readOnly })),
    ],
    restart: settings.restartPolicy,
    // `pulumi up` returns only once the container runs (and its healthcheck passes: the cutover gates on
    // that), so a broken release fails the update and leaves nothing half-done in the state.
    // (A container without a healthcheck, such as the metrics exporter, has nothing to wait for: the provider refuses.)
    wait: providerWaits(spec, settings),
    waitTimeout: providerWaits(spec, settings) ? 90 : undefined,
    // SIGTERM, then time to finish in-flight requests: on `docker stop`, and when Pulumi deletes the container
    // (a replaced generation, or destroy). Without it the provider's delete kills at once.
    stopTimeout: spec.stopGraceS,
    destroyGraceSeconds: spec.stopGraceS,
    memory: spec.limits.memoryMb,
    // No swap on top of the memory limit. Left unset, Docker allows as much again and the provider reads
    // that back as a change to make on every `pulumi up`.
    memorySwap: spec.limits.memoryMb,
    cpus: spec.limits.cpus === undefined ? undefined : engineCpus(spec.limits.cpus),
    // json-file with rotation: the default driver grows without bound.
    logDriver: LOG.driver,
    logOpts: LOG.options,
    // Hardened: nothing in the image can change at run time, no process can gain privileges through
    // setuid binaries, and only the listed capabilities remain.
    readOnly: hardened ? true : undefined,
    securityOpts: hardened ? ["no-new-privileges:true"] : undefined,
    capabilities: hardened
      ? { drops: ["ALL"], adds: spec.capAdds?.length ? engineCapabilities(spec.capAdds) : undefined }
      : undefined,
    tmpfs:
      hardened && spec.tmpfs?.length
        ? Object.fromEntries(spec.tmpfs.map((t) => [t.path, `rw,${t.noexec ? "noexec," : ""}nosuid,nodev,size=${t.sizeMb}m`]))
        : undefined,
    sysctls: own ? spec.sysctls : undefined,
    stopSignal: spec.stopSignal,
    user: spec.user,
    // A fork bomb or runaway worker spawning stops here (Docker's pids limit is not in the provider).
    ulimits: spec.maxProcesses ? [{ name: "nproc", soft: spec.maxProcesses, hard: spec.maxProcesses }] : undefined,
    // Off is said explicitly: an omitted healthcheck is read back from the image and never diffs, so
    // turning healthchecks off would leave the running containers' checks in place.
    healthcheck:
      settings.healthchecks && spec.healthcheck ? { tests: ["CMD", ...spec.healthcheck], ...HEALTH } : { tests: ["NONE"] },
  };
}

/**
 * A CPU limit as the provider reads it back from the engine's NanoCPUs ("2" comes back as "2.0"): `cpus`
 * forces a replacement, so the number as written would replace the container on every `pulumi up`.
 */
export function engineCpus(cpus: number): string {
  const nine = cpus.toFixed(9);
  return (nine.match(/0/g) ?? []).length === 9 ? cpus.toFixed(1) : nine.replace(/0+$/, "");
}

/**
 * Capabilities as the engine stores and the provider reads them back (`CHOWN` becomes `CAP_CHOWN`): written
 * otherwise, `pulumi refresh` finds a change, and the `pulumi up` after it replaces the container.
 */
export function engineCapabilities(caps: string[]): string[] {
  return caps.map((c) => (c.startsWith("CAP_") ? c : `CAP_${c}`)).sort();
}

const SWARM_RESTART: Record<RestartPolicy, string> = {
  no: "none",
  "on-failure": "on-failure",
  always: "any",
  "unless-stopped": "any",
};

function serviceArgs(spec: WorkloadSpec, settings: WorkloadSettings): docker.ServiceArgs {
  const hardened = settings.hardened;
  // A service's env is a map; the KEY=VALUE list (secrets included) is split once resolved.
  const env = pulumi
    .all(spec.env ?? [])
    .apply((list) => Object.fromEntries(list.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)])));
  return {
    name: spec.serviceName,
    labels: labelList(settings.labels),
    taskSpec: {
      containerSpec: {
        image: spec.image,
        args: spec.command,
        env,
        labels: labelList(settings.labels),
        readOnly: hardened ? true : undefined,
        capDrops: hardened ? ["ALL"] : undefined,
        capAdds: hardened && spec.capAdds?.length ? spec.capAdds : undefined,
        mounts: [
          ...(spec.binds ?? []).map((b) => ({ type: "bind", source: b.source, target: b.target, readOnly: true })),
          ...(hardened ? (spec.tmpfs ?? []) : []).map((t) => ({
            type: "tmpfs",
            target: t.path,
            tmpfsOptions: { sizeBytes: t.sizeMb * 1024 * 1024 },
          })),
        ],
        healthcheck: settings.healthchecks && spec.healthcheck ? { tests: ["CMD", ...spec.healthcheck], ...HEALTH } : undefined,
        secrets: spec.secrets?.length
          ? spec.secrets.map((s) => ({
              secretId: s.secret.id,
              secretName: s.secret.name,
              fileName: s.fileName,
              fileUid: String(s.uid),
              fileGid: String(s.uid),
              fileMode: 0o400,
            }))
          : undefined,
        sysctl: spec.sysctls,
        // Time for in-flight requests to finish before SIGKILL.
        stopGracePeriod: `${spec.stopGraceS ?? 10}s`,
      },
      // By ID, as the provider asks: `name` is deprecated there (no diff came of it here, but upstream warns of
      // constant replacements).
      networksAdvanceds: [{ id: spec.network.id, aliases: spec.aliases }],
      resources: {
        limits: {
          memoryBytes: spec.limits.memoryMb === undefined ? undefined : spec.limits.memoryMb * 1024 * 1024,
          nanoCpus: spec.limits.cpus === undefined ? undefined : Math.round(spec.limits.cpus * 1e9),
        },
      },
      restartPolicy: { condition: SWARM_RESTART[settings.restartPolicy], delay: "2s", window: "30s" },
      logDriver: { name: LOG.driver, options: LOG.options },
    },
    mode: { replicated: { replicas: spec.replicas.length } },
    // One task at a time; the new one must be healthy before the old one stops. A host-mode published
    // port cannot be held by two tasks on one node, so those services stop the old task first.
    updateConfig: {
      parallelism: 1,
      delay: "5s",
      order: spec.publish ? "stop-first" : "start-first",
      failureAction: "rollback",
      monitor: "10s",
    },
    rollbackConfig: { parallelism: 1, order: spec.publish ? "stop-first" : "start-first", monitor: "10s" },
    // dnsrr: the alias resolves to the task addresses (no IPVS needed). Host mode: the port is bound on
    // the node running the task, not through the ingress mesh.
    endpointSpec: {
      mode: settings.swarm.endpointMode,
      ports: spec.publish
        ? [
            {
              targetPort: spec.publish.internal,
              publishedPort: spec.publish.external,
              publishMode: settings.swarm.publishMode,
              protocol: "tcp",
            },
          ]
        : [],
    },
    // `pulumi up` waits until every task runs (and, with a healthcheck, is healthy).
    convergeConfig: settings.waitForHealthy ? { delay: "1s", timeout: "3m" } : undefined,
  };
}

export function localUrl(bindAddress: string, port: number): string {
  return `http://${bindAddress === "0.0.0.0" ? "127.0.0.1" : bindAddress}:${port}/`;
}

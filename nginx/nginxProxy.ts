// nginx in front of the app: the pinned public image, its conf.d/default.conf, and the published port.
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { NGINX_EXPORTER_ALIAS, NGINX_EXPORTER_PORT, type AppUpstream } from "../app/facts";
import type { StackConfig } from "../infra/config";
import { engineClient, unlessMissing, type EngineSettings } from "../infra/engine";
import { labelList, objectName } from "../infra/naming";
import { buildImage, type BuiltImage } from "../infra/image";
import { declareWorkload, localUrl, type Workload, type WorkloadSettings } from "../infra/workload";
import {
  CONF_PATH,
  deadPeerSysctls,
  handsOver,
  HTTPS_CONTAINER_PORT,
  metricsForwarderStart,
  nginxTls,
  servingListens,
  NGINX_HEALTH_PATH,
  NGINX_METRICS_PORT,
  nginxSocketDir,
  stackNginxConf,
  STUB_STATUS_PATH,
} from "./conf";
import { DRAIN_S, HANDOVER_HEALTHCHECK, HANDOVER_SYSCTLS, nginxDrainCommand, nginxStartCommand } from "./handover";
import { ConfFile, ConfReload, type TlsFiles } from "./reload";
import { StackCa } from "../infra/stack-ca";
import { leafSubjectAltName } from "../infra/tls";
import {
  declareCertAgent,
  declareCertStore,
  type AcmeIssuer,
  type CertAgent,
  type CertStore,
  type InternalIssuer,
} from "../certs/certAgent";

export interface NginxProxyArgs {
  /** The stack's config: nginx's own settings, and the stack-wide ones its conf is rendered with. */
  cfg: StackConfig;
  settings: WorkloadSettings;
  network: docker.Network;
  /** Where the app listens. */
  upstream: AppUpstream;
  /** upstreamTransport unix: the app's socket volumes, in replica order. */
  socketVolumes: pulumi.Input<string>[];
  /** What nginx proxies to; nginx starts after it (compose's depends_on). */
  backends: pulumi.Resource[];
  /** The nginx version the base image declares when the engine has it (imageNginxVersion). */
  imageVersion?: string;
}

/** Temp and pid paths of the official image (/var/cache/nginx, /run) and of Debian's (/var/lib/nginx). */
const NGINX_TMPFS = ["/var/cache/nginx", "/var/lib/nginx", "/run", "/tmp"].map((p) => ({ path: p, sizeMb: 16 }));

export class NginxProxy extends pulumi.ComponentResource {
  readonly baseImage: docker.RemoteImage;
  /** The base image with the stack's settings (and, on swarm, the rendered conf); absent when the conf is bind-mounted. */
  readonly image?: BuiltImage;
  readonly workload: Workload;
  /** metricsPort set: nginx-prometheus-exporter, reading nginx's stub_status. */
  readonly exporter?: Workload;
  readonly url: pulumi.Output<string>;
  /** tls on: the HTTPS address (the site; `url` redirects to it). */
  readonly httpsUrl?: pulumi.Output<string>;
  /** tls internal: the stack CA's root certificate (PEM), for clients to trust. */
  readonly caCertificate?: pulumi.Output<string>;
  /** metricsPort set: the one container publishing metricsPort, forwarding to nginx's metrics listener. */
  readonly metricsForwarder?: Workload;
  /** metricsPort set: the metrics listener, on 127.0.0.1. */
  readonly metricsUrl?: pulumi.Output<string>;
  /** tls acme or internal: the agent that obtains (or signs) and renews the certificate, in nginx's PID namespace. */
  readonly certAgent?: CertAgent;

  constructor(name: string, args: NginxProxyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:NginxProxy", name, {}, opts);
    const { cfg, settings } = args;
    const nginx = cfg.nginx;
    const containerName = objectName(cfg.project, cfg.stack, "nginx");

    // keepLocally: the base image may be shared with other stacks on the host; destroy leaves it.
    this.baseImage = new docker.RemoteImage(`${name}-base-image`, { name: nginx.baseImage, keepLocally: true }, { parent: this });
    // Dev mounts the repo's file as the tutorial does. Otherwise the conf is rendered, written into a volume
    // nginx mounts read-only, and a change reloads the running nginx (nginx/reload.ts): the container, its
    // published port and its listening socket stay, so no connection is refused. A conf the running nginx
    // refuses fails `pulumi up` and is not recorded.
    const conf = stackNginxConf(cfg, args.upstream, args.imageVersion);
    // The same containers hand their ports over on a replacement (nginx/handover.ts): a holder named
    // `<name>-netns` owns the namespace, and the nginx containers under generated names join it.
    const reloadable = handsOver(cfg);
    // On swarm too nginx is plain containers, on the engine the stack deploys through (the edge node, checked
    // by edgeNodeProblem), joined to the overlay network where it resolves the app's tasks: a service that
    // publishes its port in host mode cannot start its next task before the old one stops (measured: 3,005–4,306
    // failed requests per nginx change). The app stays a service, rolled start-first.
    const nginxSettings: WorkloadSettings = { ...settings, target: "containers" };
    const holderName = `${containerName}-netns`;
    if (!nginx.configFile) {
      this.image = buildImage(
        `${name}-image`,
        {
          imageName: `${cfg.project}-nginx:${cfg.stack}`,
          context: __dirname,
          buildArgs: {
            NGINX_IMAGE: this.baseImage.name,
            CONF_PATH,
            ...(reloadable ? {} : { DEFAULT_CONF: conf }),
            ...(nginx.workerProcesses ? { WORKER_PROCESSES: String(nginx.workerProcesses) } : {}),
          },
          project: cfg.project,
          stack: cfg.stack,
          registry: cfg.registry,
        },
        { parent: this },
      );
    }
    const confDir = path.posix.dirname(CONF_PATH);
    const confVolume = reloadable
      ? new docker.Volume(`${name}-conf`, { name: `${containerName}-conf`, labels: labelList(settings.labels) }, { parent: this })
      : undefined;
    const confTarget = confVolume &&
      this.image && {
        volumeName: confVolume.name,
        fileName: path.posix.basename(CONF_PATH),
        containerName: holderName,
        netnsHolder: true,
        image: this.image.id,
        labels: settings.labels,
        conf,
      };
    // certificate: the configured files, in the conf volume. acme and internal: the agent's volumes, seeded
    // with what nginx starts with (the stack CA's leaf, or a placeholder until the ACME CA's); the agent issues,
    // renews and reloads.
    const tlsFiles: pulumi.Input<TlsFiles> | undefined = nginx.tls?.certificate
      ? pulumi.secret(nginx.tls.certificate)
      : undefined;
    let issuer: AcmeIssuer | InternalIssuer | undefined;
    if (nginx.tls?.acme) {
      issuer = { kind: "acme", ...nginx.tls.acme };
    } else if (nginx.tls?.internal) {
      const ca = new StackCa(`${name}-ca`, { commonName: `${cfg.project} ${cfg.stack} CA` }, { parent: this });
      this.caCertificate = ca.certPem;
      issuer = {
        kind: "internal",
        lifetimeSeconds: nginx.tls.internal.leafLifetimeS,
        sans: leafSubjectAltName(nginx.tls.domain),
        ca: { certPem: ca.certPem, keyPem: ca.keyPem },
      };
    }
    const certStore: CertStore | undefined =
      nginx.tls && issuer
        ? declareCertStore(
            `${name}-certs`,
            { project: cfg.project, stack: cfg.stack, labels: settings.labels, domains: [nginx.tls.domain], issuer },
            { parent: this },
          )
        : undefined;
    const confFile = confTarget
      ? new ConfFile(`${name}-conf-file`, { ...confTarget, tls: tlsFiles }, { parent: this })
      : undefined;

    const tlsListener = nginx.tls ? nginxTls(nginx.baseImage, nginx.tls, args.imageVersion) : undefined;
    this.workload = declareWorkload(
      name,
      {
        image: this.image ? this.image.ref : this.baseImage.imageId,
        command: reloadable ? nginxStartCommand(servingListens(tlsListener)) : undefined,
        network: args.network,
        publish: { internal: 80, external: nginx.httpPort },
        alsoPublish: nginx.tls ? [{ internal: HTTPS_CONTAINER_PORT, external: nginx.tls.httpsPort }] : undefined,
        binds: nginx.configFile ? [{ source: nginx.configFile, target: CONF_PATH }] : [],
        tmpfs: NGINX_TMPFS,
        healthcheck: reloadable
          ? HANDOVER_HEALTHCHECK
          : ["curl", "-fsS", "-o", "/dev/null", `http://127.0.0.1${NGINX_HEALTH_PATH}`],
        limits: nginx.limits,
        // The master stays root to bind port 80 and switch workers to the nginx user; it keeps only that.
        capAdds: ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE"],
        // The conf renders the keepalive probes only where the config allows them (hardened, TCP).
        sysctls:
          reloadable || nginx.deadPeerTimeoutS
            ? {
                ...(nginx.deadPeerTimeoutS ? deadPeerSysctls(nginx.deadPeerTimeoutS) : {}),
                ...(reloadable ? HANDOVER_SYSCTLS : {}),
              }
            : undefined,
        netnsHolder: reloadable
          ? { containerName: holderName, image: this.baseImage.imageId, command: ["sleep", "infinity"] }
          : undefined,
        release: reloadable ? { sideBySide: true, settleS: 0, drainCommand: nginxDrainCommand(), drainS: DRAIN_S } : undefined,
        // Graceful: nginx finishes its requests (the slowest the read timeout allows) and closes idle connections.
        stopSignal: reloadable ? "SIGQUIT" : undefined,
        stopGraceS: reloadable ? nginx.readTimeoutS + 5 : undefined,
        replicas: [
          {
            containerName,
            volumes: [
              ...(confVolume ? [{ volumeName: confVolume.name, target: confDir, readOnly: true }] : []),
              ...args.socketVolumes.map((volumeName, i) => ({ volumeName, target: nginxSocketDir(i + 1), readOnly: true })),
              ...(certStore?.nginxVolumes ?? []),
            ],
          },
        ],
        serviceName: containerName,
      },
      nginxSettings,
      { parent: this, dependsOn: [...args.backends, ...(confFile ? [confFile] : []), ...(certStore ? [certStore.seed] : [])] },
    );
    let confReload: ConfReload | undefined;
    if (confTarget && confFile) {
      confReload = new ConfReload(
        `${name}-conf-reload`,
        { ...confTarget, container: this.workload.containers[0], file: confFile, tls: tlsFiles },
        { parent: this },
      );
    }

    if (certStore && nginx.tls) {
      // `pulumi up` returns once the CA's certificate is served. A new nginx (a handover) means a new agent: it
      // joins that nginx's PID namespace, and its fixed name goes with the old one first.
      this.certAgent = declareCertAgent(
        `${name}-cert-agent`,
        {
          project: cfg.project,
          stack: cfg.stack,
          labels: settings.labels,
          store: certStore,
          nginx: this.workload.containers[0],
          network: args.network,
          domains: [nginx.tls.domain],
        },
        { parent: this, deleteBeforeReplace: true },
      );
    }

    if (cfg.metrics) {
      // Where nginx's metrics listener is on the network: the holder's name, with a handover (nginx listens in
      // its namespace).
      const edgeHost = reloadable ? holderName : containerName;
      // nginx serves the metrics listener once it runs and, on a running stack metrics are turned on for, once
      // it has reloaded the conf that adds it.
      const servingMetrics = [...this.workload.resources, ...(confReload ? [confReload] : [])];
      // The official exporter: stub_status's counters (connections by state, requests) in Prometheus's format.
      // Reached by nginx's metrics listener over the network; it publishes nothing itself.
      const exporterImage = new docker.RemoteImage(
        `${name}-exporter-base-image`,
        { name: cfg.metrics.exporterImage, keepLocally: true },
        { parent: this },
      );
      this.exporter = declareWorkload(
        `${name}-exporter`,
        {
          image: exporterImage.imageId,
          // Flags both the 0.x (Go flag) and 1.x (kingpin) exporters take.
          command: [
            `--nginx.scrape-uri=http://${edgeHost}:${NGINX_METRICS_PORT}${STUB_STATUS_PATH}`,
            `--web.listen-address=:${NGINX_EXPORTER_PORT}`,
          ],
          network: args.network,
          aliases: [NGINX_EXPORTER_ALIAS],
          // The image has no shell or HTTP client to run a check with.
          limits: { memoryMb: 32 },
          capAdds: [],
          replicas: [{ containerName: objectName(cfg.project, cfg.stack, "nginx-exporter") }],
          serviceName: objectName(cfg.project, cfg.stack, "nginx-exporter"),
        },
        settings,
        // After nginx: the 0.x exporter exits when its first read of stub_status fails.
        { parent: this, dependsOn: servingMetrics },
      );
      // Metrics for the host alone, on a container of their own: published on 127.0.0.1 whatever bindAddress is,
      // and a new metricsPort replaces that container, not nginx's port holder (which every request goes through).
      const forwarderName = objectName(cfg.project, cfg.stack, "nginx-metrics");
      this.metricsForwarder = declareWorkload(
        `${name}-metrics`,
        {
          image: this.baseImage.imageId,
          ...metricsForwarderStart(edgeHost),
          network: args.network,
          hostOnly: { internal: NGINX_METRICS_PORT, external: cfg.metrics.hostPort },
          tmpfs: [{ path: "/tmp", sizeMb: 16 }],
          // Through to nginx's listener: it answers when both do.
          healthcheck: ["curl", "-fsS", "-o", "/dev/null", `http://127.0.0.1:${NGINX_METRICS_PORT}${STUB_STATUS_PATH}`],
          limits: { memoryMb: 32, cpus: 0.25 },
          // Nobody, without a capability: it binds a port above 1024 and writes only its tmpfs.
          user: "65534:65534",
          capAdds: [],
          replicas: [{ containerName: forwarderName }],
          serviceName: forwarderName,
        },
        settings,
        // After nginx's holder too: moving an older stack's metrics port off the holder frees it for this one.
        { parent: this, dependsOn: servingMetrics },
      );
      this.metricsUrl = pulumi.output(localUrl("127.0.0.1", cfg.metrics.hostPort));
    }

    this.url = pulumi.output(localUrl(settings.bindAddress, nginx.httpPort));
    if (nginx.tls) this.httpsUrl = pulumi.output(localUrl(settings.bindAddress, nginx.tls.httpsPort).replace(/^http:/, "https:"));
    this.registerOutputs({
      url: this.url,
      httpsUrl: this.httpsUrl,
      metricsUrl: this.metricsUrl,
      caCertificate: this.caCertificate,
    });
  }
}

/**
 * The nginx version an image on the engine declares: the official images' ENV NGINX_VERSION (the stand-ins
 * here set Debian's). Undefined when the engine lacks the image (the first `up` pulls it) or it says none.
 */
export async function imageNginxVersion(engine: EngineSettings, image: string): Promise<string | undefined> {
  const found = await unlessMissing(engineClient(engine).getImage(image).inspect());
  const env = found?.Config.Env ?? [];
  return env.find((e) => e.startsWith("NGINX_VERSION="))?.slice("NGINX_VERSION=".length);
}

/**
 * A stack deployed before nginx handed its ports over (nginx/handover.ts) runs an nginx under the fixed name
 * that publishes the ports itself: the holder cannot take them while it runs, and Pulumi creates the holder
 * before it deletes the old nginx. Returns how to move it, once; undefined when there is nothing to move.
 */
export async function nginxBeforeHandover(engine: EngineSettings, cfg: StackConfig): Promise<string | undefined> {
  if (!handsOver(cfg)) return undefined;
  const name = objectName(cfg.project, cfg.stack, "nginx");
  if (cfg.target === "swarm") return nginxServiceBeforeHandover(engine, cfg, name);
  const found = await unlessMissing(engineClient(engine).getContainer(name).inspect());
  // The engine's answer, typed loosely by dockerode: container port → host bindings (null when unpublished).
  const bindings = (found?.HostConfig.PortBindings ?? {}) as Record<string, unknown[] | null>;
  if (!found || !Object.values(bindings).some((b) => b?.length)) return undefined;
  return (
    `${name} publishes the stack's ports itself (deployed before nginx handed them over to a holder container, ` +
    `nginx/handover.ts). ${moveOnce(cfg, "container:Container::nginx-container")}`
  );
}

/** The one command that moves an nginx made by an earlier version out of the way (`resource`: type::name). */
function moveOnce(cfg: StackConfig, resource: string): string {
  const urn = `urn:pulumi:${cfg.stack}::${cfg.project}::flask-proxy:index:NginxProxy$docker:index/${resource}`;
  return (
    "Move it once, with a few seconds without nginx: " +
    `pulumi destroy --stack ${cfg.stack} --target '${urn}' --target-dependents, then pulumi up`
  );
}

/** A swarm stack deployed when nginx was a service: its task holds the host port the holder container needs. */
async function nginxServiceBeforeHandover(engine: EngineSettings, cfg: StackConfig, name: string): Promise<string | undefined> {
  // An engine that is no swarm manager (503) has no such service; declaring the app's service says why it fails.
  const found = await unlessMissing(engineClient(engine).getService(name).inspect()).catch((e: { statusCode?: number }) => {
    if (e.statusCode === 503) return undefined;
    throw e;
  });
  if (!found) return undefined;
  return (
    `${name} is a swarm service publishing the stack's port (deployed before nginx ran as containers on the edge ` +
    `node, nginx/nginxProxy.ts). ${moveOnce(cfg, "service:Service::nginx-service")}`
  );
}

/**
 * On swarm nginx runs on the engine the stack deploys through: with swarmEdgeLabel set, that engine's node must
 * carry the label. Returns what is wrong, naming the node and the label; undefined when nothing is.
 */
export async function edgeNodeProblem(engine: EngineSettings, cfg: StackConfig): Promise<string | undefined> {
  const label = cfg.swarm.edgeLabel;
  if (cfg.target !== "swarm" || !label) return undefined;
  const client = engineClient(engine);
  // dockerode types info() loosely; the engine's answer names its node under Swarm.NodeID.
  const info = (await client.info()) as { Swarm?: { NodeID?: string } };
  const nodeId = info.Swarm?.NodeID;
  if (!nodeId) return `swarmEdgeLabel: the engine docker:host points at is not a swarm node`;
  const node = (await client.getNode(nodeId).inspect()) as {
    Description?: { Hostname?: string };
    Spec?: { Labels?: Record<string, string> };
  };
  if (node.Spec?.Labels?.[label] === "true") return undefined;
  const host = node.Description?.Hostname ?? nodeId;
  return (
    `swarmEdgeLabel: nginx runs on the node docker:host points at (${host}), which has no label ${label}=true. ` +
    `Point docker:host at a manager that is an edge node, or label this one: docker node update --label-add ${label}=true ${host}`
  );
}

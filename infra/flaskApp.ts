import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { APP_SOCKET_DIR, SOCKET_FILE, type StackConfig } from "./config";
import { deploy, labelList, type Deployment, type VolumeMount, type WorkloadPolicy } from "./workload";

export const APP_HEALTH_PATH = "/healthz";
const CODE_DIR = "/code";

export interface FlaskAppArgs {
  app: StackConfig["app"];
  policy: WorkloadPolicy;
  /** Build context holding the Dockerfile (the repo's app/). */
  context: string;
  network: docker.Network;
}

/** The Flask service: the image built from app/ and what runs it (containers or a swarm service). */
export class FlaskApp extends pulumi.ComponentResource {
  readonly image: docker.Image;
  readonly deployment: Deployment;
  /** Where nginx reaches the app: the network alias and port. */
  readonly upstream: { host: string; port: number };
  /** upstreamTransport unix: each replica's socket volume, as nginx mounts it (read-only). */
  readonly socketMounts: VolumeMount[];

  constructor(name: string, args: FlaskAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:FlaskApp", name, {}, opts);
    const { app, policy } = args;

    this.image = new docker.Image(`${name}-image`, {
      imageName: app.imageName,
      build: {
        context: args.context,
        dockerfile: path.join(args.context, "Dockerfile"),
        args: { BASE_IMAGE: app.baseImage, APP_VERSION: app.version },
      },
      skipPush: true,
    }, { parent: this });

    // Secret in state and in the container's env: from secret config, else generated once per stack.
    const secretKey = app.secretKey !== undefined
      ? pulumi.secret(app.secretKey)
      // The provider marks `result` secret; wrapping says so here too, whatever the provider does.
      : pulumi.secret(new random.RandomPassword(`${name}-secret-key`, { length: 48, special: false }, { parent: this }).result);

    // One volume per replica holds its gunicorn socket; nginx mounts them all (see infra/config.ts).
    this.socketMounts = [];
    const replicas = app.replicas.map((r, i) => {
      if (!r.socket) return { containerName: r.containerName, address: r.address };
      const volume = new docker.Volume(`${name}-socket${i === 0 ? "" : `-${i + 1}`}`, {
        name: r.socket.volumeName,
        labels: labelList(policy.labels),
      }, { parent: this });
      this.socketMounts.push({ volumeName: volume.name, target: r.socket.nginxDir, readOnly: true });
      return { containerName: r.containerName, address: r.address, volumes: [{ volumeName: volume.name, target: APP_SOCKET_DIR, readOnly: false }] };
    });

    this.deployment = deploy(name, {
      // The image ID, so a rebuilt image replaces the containers (or rolls the service).
      image: this.image.repoDigest,
      command: serverCommand(app, this.socketMounts.length > 0),
      env: [`FLASK_APP=${CODE_DIR}/main.py`, pulumi.interpolate`FLASK_SECRET_KEY=${secretKey}`],
      network: args.network.name,
      aliases: [app.alias],
      publish: app.hostPort ? { internal: app.port, external: app.hostPort } : undefined,
      // Dev: the code on the host shadows the baked-in copy, so edits show without a rebuild.
      binds: app.codeMount ? [{ source: app.codeMount, target: CODE_DIR }] : [],
      tmpfs: [{ path: "/tmp", sizeMb: 16, noexec: true }],
      healthcheck: ["python", "-c",
        `import urllib.request; urllib.request.urlopen("http://127.0.0.1:${app.port}${APP_HEALTH_PATH}", timeout=2)`],
      limits: app.limits,
      capAdds: [],
      maxProcesses: app.maxProcesses,
      replicas,
      serviceName: app.replicas[0].containerName,
    }, policy, { parent: this });

    this.upstream = { host: app.alias, port: app.port };
    this.registerOutputs({ imageName: this.image.imageName });
  }
}

function serverCommand(app: StackConfig["app"], unixSocket: boolean): string[] {
  if (app.server.kind === "flask-dev") {
    // The tutorial's command; --reload makes the bind-mounted code take effect on save.
    return ["flask", "run", "--host=0.0.0.0", `--port=${app.port}`, ...(app.server.reload ? ["--reload"] : [])];
  }
  return [
    "gunicorn",
    // TCP stays for the network alias, the healthcheck and anything else on the network.
    "--bind", `0.0.0.0:${app.port}`,
    ...(unixSocket ? ["--bind", `unix:${APP_SOCKET_DIR}/${SOCKET_FILE}`] : []),
    "--workers", String(app.server.workers),
    "--threads", String(app.server.threads),
    // Heartbeat files on tmpfs, not the container's overlay filesystem.
    "--worker-tmp-dir", "/dev/shm",
    "main:app",
  ];
}

import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { StackConfig } from "./config";
import { baseContainerArgs, capabilities, ContainerPolicy, healthcheck, publish } from "./common";

export const APP_HEALTH_PATH = "/healthz";
const CODE_DIR = "/code";

export interface FlaskAppArgs {
  app: StackConfig["app"];
  policy: ContainerPolicy;
  /** Build context holding the Dockerfile (the repo's app/). */
  context: string;
  network: docker.Network;
}

/** The Flask service: the image built from app/ and the container that runs it on the stack network. */
export class FlaskApp extends pulumi.ComponentResource {
  readonly image: docker.Image;
  /** One container per replica; all share the alias, so nginx reaches each of them by one name. */
  readonly containers: docker.Container[];
  /** Where nginx reaches the app: the network alias and port. */
  readonly upstream: { host: string; port: number };

  constructor(name: string, args: FlaskAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:FlaskApp", name, {}, opts);
    const { app, policy } = args;

    this.image = new docker.Image(`${name}-image`, {
      imageName: app.imageName,
      build: {
        context: args.context,
        dockerfile: path.join(args.context, "Dockerfile"),
        args: { BASE_IMAGE: app.baseImage },
      },
      skipPush: true,
    }, { parent: this });

    // Secret in state and in the container's env: from secret config, else generated once per stack.
    const secretKey = app.secretKey !== undefined
      ? pulumi.secret(app.secretKey)
      // The provider marks `result` secret; wrapping says so here too, whatever the provider does.
      : pulumi.secret(new random.RandomPassword(`${name}-secret-key`, { length: 48, special: false }, { parent: this }).result);

    // Replica 1 keeps the unsuffixed names, so scaling 1 → N adds containers and replaces none.
    this.containers = app.replicas.map((replica, i) => new docker.Container(`${name}-container${i === 0 ? "" : `-${i + 1}`}`, {
      ...baseContainerArgs(policy, app.limits),
      name: replica.containerName,
      // The image ID, so a rebuilt image replaces the container.
      image: this.image.repoDigest,
      command: serverCommand(app),
      envs: [`FLASK_APP=${CODE_DIR}/main.py`, pulumi.interpolate`FLASK_SECRET_KEY=${secretKey}`],
      networksAdvanced: [{ name: args.network.name, aliases: [app.alias], ipv4Address: replica.address }],
      ports: publish(policy, app.port, app.hostPort),
      // Dev: the code on the host shadows the baked-in copy, so edits show without a rebuild.
      volumes: app.codeMount ? [{ hostPath: app.codeMount, containerPath: CODE_DIR, readOnly: true }] : [],
      capabilities: capabilities(policy, []),
      tmpfs: policy.hardened ? { "/tmp": "rw,noexec,nosuid,size=16m" } : undefined,
      // A fork bomb or runaway worker spawning stops here (Docker's pids limit is not in the provider).
      ulimits: app.maxProcesses ? [{ name: "nproc", soft: app.maxProcesses, hard: app.maxProcesses }] : undefined,
      healthcheck: policy.healthchecks
        ? healthcheck(["python", "-c",
            `import urllib.request; urllib.request.urlopen("http://127.0.0.1:${app.port}${APP_HEALTH_PATH}", timeout=2)`])
        : undefined,
    }, { parent: this }));

    this.upstream = { host: app.alias, port: app.port };
    this.registerOutputs({ imageName: this.image.imageName, containerNames: this.containers.map((c) => c.name) });
  }
}

function serverCommand(app: StackConfig["app"]): string[] {
  if (app.server.kind === "flask-dev") {
    // The tutorial's command; --reload makes the bind-mounted code take effect on save.
    return ["flask", "run", "--host=0.0.0.0", `--port=${app.port}`, ...(app.server.reload ? ["--reload"] : [])];
  }
  return [
    "gunicorn",
    "--bind", `0.0.0.0:${app.port}`,
    "--workers", String(app.server.workers),
    "--threads", String(app.server.threads),
    // Heartbeat files on tmpfs, not the container's overlay filesystem.
    "--worker-tmp-dir", "/dev/shm",
    "main:app",
  ];
}

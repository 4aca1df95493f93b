// The Flask service: the image built from this folder and what runs it (containers or a swarm service).
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import type { StackConfig } from "../infra/config";
import {
  AppBuild,
  contentHash,
  keptVersions,
  planRelease,
  VersionConflict,
  type KeptBuild,
  type ReleasePlan,
} from "../infra/builds";
import { FIRST_APP_HOST, hostAddress, LABEL, labelBuildArgs, labelList, objectName, replicaSuffix } from "../infra/naming";
import { buildImage, tagImage } from "../infra/image";
import type { RegistrySettings } from "../infra/config";
import { declareWorkload, type ReplicaSpec, type SecretMount, type Workload, type WorkloadSettings } from "../infra/workload";
import { NGINX_DNS_CACHE_S } from "../nginx/conf";
import {
  APP_GRACEFUL_TIMEOUT_S,
  APP_HEALTH_PATH,
  APP_METRICS_DIR,
  APP_METRICS_PORT,
  APP_SOCKET_DIR,
  APP_UID,
  appUpstream,
  CODE_DIR,
  GUNICORN_ACCESS_LOG_FORMAT,
  GUNICORN_CONF,
  METRICS_DIR_ENV,
  METRICS_PORT_ENV,
  IMAGE_FILES,
  SECRET_KEY_FILE_ENV,
  SECRET_KEY_FILE_NAME,
  SECRETS_DIR,
  socketCutoverCommand,
  SOCKET_DIR_ENV,
  type AppUpstream,
} from "./facts";

export interface FlaskAppArgs {
  app: StackConfig["app"];
  project: string;
  stack: string;
  settings: WorkloadSettings;
  network: docker.Network;
  /** Pinned subnet of the network: replicas get fixed addresses in it. */
  networkSubnet?: string;
  /** Push the image there and run it by digest. */
  registry?: RegistrySettings;
  /** Swarm: the secret key as a swarm secret file instead of an env var. */
  secretAsFile?: boolean;
  /** metricsPort set: gunicorn's master serves the app's Prometheus metrics on APP_METRICS_PORT. */
  metrics?: boolean;
  /**
   * tls over TCP: gunicorn takes X-Forwarded-Proto from any peer on the stack's network (config validation keeps
   * the app's port off the host), where nginx, which replaces a client's header, is what sends requests.
   */
  forwardedProtoFromNetwork?: boolean;
  /** The stack's app builds on the engine (infra/builds.ts findBuilds). */
  builds: KeptBuild[];
}

export class FlaskApp extends pulumi.ComponentResource {
  /** The released build: its ID on the engine, and what the workload runs. */
  readonly image: { id: pulumi.Output<string>; ref: pulumi.Output<string> };
  /** The image's name: `<repository>:<version>-<stack>`, with the registry when there is one. */
  readonly imageName: string;
  /** The versions whose builds the stack keeps, newest build first. */
  readonly keptVersions: string[];
  readonly workload: Workload;
  readonly upstream: AppUpstream;
  /** upstreamTransport unix: each replica's socket volume, in replica order, for nginx to mount. */
  readonly socketVolumes: pulumi.Output<string>[];

  constructor(name: string, args: FlaskAppArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:FlaskApp", name, {}, opts);
    const { app, settings } = args;

    // The build args but the version and the labels: with the files below, what a build is made from.
    const buildArgs = {
      BASE_IMAGE: app.baseImage,
      APP_UID: String(APP_UID),
      CODE_DIR,
      SOCKET_DIR: APP_SOCKET_DIR,
      APP_PORT: String(app.port),
      GUNICORN_CONF,
    };
    const content = contentHash(__dirname, IMAGE_FILES, buildArgs);
    const tag = `${app.imageRepository}:${app.version}-${args.stack}`;
    this.imageName = args.registry ? `${args.registry.address}/${tag}` : tag;
    let plan: ReleasePlan;
    try {
      plan = planRelease(args.builds, {
        version: app.version,
        content,
        keep: app.keepBuilds,
        imageName: this.imageName,
        // Bind-mounted code shadows the image's copy, so the build's code never runs: rebuilt, as before.
        rebuildOnConflict: app.codeMount !== undefined,
      });
    } catch (e) {
      if (e instanceof VersionConflict) throw new pulumi.RunError(e.message);
      throw e;
    }
    if (plan.rebuilds) {
      pulumi.log.warn(`appVersion ${app.version}: app/ changed since its build; rebuilt (the code is bind-mounted)`, this);
    }
    const versionArgs = (version: string, built: string) => ({
      ...buildArgs,
      ...labelBuildArgs(args.project, args.stack),
      APP_VERSION: version,
      VERSION_LABEL: LABEL.appVersion,
      CONTENT_LABEL: LABEL.appContent,
      CONTENT: built,
    });
    if (args.registry) {
      // With a registry: one build, pushed and run by digest, replaced by the next (no kept builds).
      this.keptVersions = [app.version];
      const built = buildImage(
        `${name}-image`,
        {
          imageName: tag,
          context: __dirname,
          buildArgs: versionArgs(app.version, content),
          project: args.project,
          stack: args.stack,
          registry: args.registry,
        },
        { parent: this },
      );
      this.image = { id: built.id, ref: built.ref };
    } else {
      this.keptVersions = keptVersions(plan, app.version);
      // Each kept build is a resource named after its version; the released one is built only if it is new.
      const build = (version: string, built: string) =>
        new AppBuild(
          `${name}-build-${version}`,
          {
            version,
            content: built,
            tag: `${app.imageRepository}:${version}-${args.stack}`,
            context: __dirname,
            files: ["Dockerfile", ...IMAGE_FILES],
            buildArgs: versionArgs(version, built),
            stack: args.stack,
          },
          { parent: this },
        );
      const released = build(app.version, plan.reuse?.content ?? content);
      for (const b of plan.others) build(b.version, b.content);
      tagImage(`${name}-image-tag`, released.imageId, this.imageName, { parent: this });
      this.image = { id: released.imageId, ref: released.imageId };
    }

    // Secret in state and in the container's env: from secret config, else generated once per stack.
    const secretKey =
      app.secretKey !== undefined
        ? pulumi.secret(app.secretKey)
        : // The provider marks `result` secret; wrapping says so here too, whatever the provider does.
          pulumi.secret(new random.RandomPassword(`${name}-secret-key`, { length: 48, special: false }, { parent: this }).result);

    // Swarm: a secret is kept encrypted in the managers' raft log and mounted only into the app's tasks, where
    // an env var shows in every `docker service inspect`. Secrets cannot change, so a new key is a new secret
    // (generated name) that the service rolls to.
    const secrets: SecretMount[] = args.secretAsFile
      ? [
          {
            secret: new docker.Secret(
              `${name}-secret`,
              { data: secretKey.apply((k) => Buffer.from(k, "utf8").toString("base64")), labels: labelList(settings.labels) },
              { parent: this },
            ),
            fileName: SECRET_KEY_FILE_NAME,
            uid: APP_UID,
          },
        ]
      : [];

    this.upstream = appUpstream(app);
    const sockets = this.upstream.sockets > 0;
    this.socketVolumes = [];
    const replicas: ReplicaSpec[] = [];
    for (let n = 1; n <= app.replicas; n++) {
      const containerName = objectName(args.project, args.stack, "flask", n);
      const address = args.networkSubnet ? hostAddress(args.networkSubnet, FIRST_APP_HOST + n - 1) : undefined;
      if (n > this.upstream.sockets) {
        replicas.push({ containerName, address });
        continue;
      }
      // One volume per replica holds its gunicorn socket; nginx mounts them all.
      const volume = new docker.Volume(
        `${name}-socket${replicaSuffix(n)}`,
        { name: `${containerName}-socket`, labels: labelList(settings.labels) },
        { parent: this },
      );
      this.socketVolumes.push(volume.name);
      replicas.push({ containerName, address, volumes: [{ volumeName: volume.name, target: APP_SOCKET_DIR, readOnly: false }] });
    }

    this.workload = declareWorkload(
      name,
      {
        // The image's ID (or its digest in the registry), so a rebuilt image replaces the containers (or rolls
        // the service).
        image: this.image.ref,
        command: serverCommand(app),
        env: [
          `FLASK_APP=${CODE_DIR}/main.py`,
          secrets.length > 0
            ? `${SECRET_KEY_FILE_ENV}=${SECRETS_DIR}/${SECRET_KEY_FILE_NAME}`
            : pulumi.interpolate`FLASK_SECRET_KEY=${secretKey}`,
          ...(sockets ? [`${SOCKET_DIR_ENV}=${APP_SOCKET_DIR}`] : []),
          // prometheus_client's multiprocess mode: each worker's values in files there, summed by the master.
          ...(args.metrics ? [`${METRICS_DIR_ENV}=${APP_METRICS_DIR}`, `${METRICS_PORT_ENV}=${APP_METRICS_PORT}`] : []),
          // gunicorn's own setting, read from its env (default 127.0.0.1: no peer on the network).
          ...(args.forwardedProtoFromNetwork ? ["FORWARDED_ALLOW_IPS=*"] : []),
        ],
        network: args.network,
        aliases: [app.alias],
        publish: app.hostPort ? { internal: app.port, external: app.hostPort } : undefined,
        // Dev: the code on the host shadows the baked-in copy, so edits show without a rebuild.
        binds: app.codeMount ? [{ source: app.codeMount, target: CODE_DIR }] : [],
        tmpfs: [{ path: "/tmp", sizeMb: 16, noexec: true }],
        healthcheck: [
          "python",
          "-c",
          `import urllib.request; urllib.request.urlopen("http://127.0.0.1:${app.port}${APP_HEALTH_PATH}", timeout=2)`,
        ],
        limits: app.limits,
        capAdds: [],
        maxProcesses: app.maxProcesses,
        replicas,
        serviceName: replicas[0].containerName,
        stopGraceS: APP_GRACEFUL_TIMEOUT_S + 5,
        secrets,
        // Releases without a dropped request wherever two generations can run side by side: no host port
        // (dev publishes 8080, as the tutorial does) and no fixed address. nginx reaches the new container
        // through the socket link its cutover moves (with fixed names too), or finds it by the alias within
        // its DNS cache time.
        release: {
          sideBySide: !app.hostPort && !args.networkSubnet,
          switchCommand: sockets ? socketCutoverCommand() : undefined,
          settleS: sockets ? 0 : NGINX_DNS_CACHE_S + 1,
        },
      },
      settings,
      { parent: this },
    );

    this.registerOutputs({ imageName: this.imageName, keptVersions: this.keptVersions });
  }
}

function serverCommand(app: StackConfig["app"]): string[] {
  if (app.server.kind === "flask-dev") {
    // The tutorial's command; --reload makes the bind-mounted code take effect on save.
    return ["flask", "run", "--host=0.0.0.0", `--port=${app.port}`, ...(app.server.reload ? ["--reload"] : [])];
  }
  return [
    "gunicorn",
    // Where it listens (TCP on the image's port, and the socket when SOCKET_DIR_ENV is set).
    "--config",
    GUNICORN_CONF,
    "--workers",
    String(app.server.workers),
    "--threads",
    String(app.server.threads),
    // Heartbeat files on tmpfs, not the container's overlay filesystem.
    "--worker-tmp-dir",
    "/dev/shm",
    // In-flight requests finish after SIGTERM (a release draining the old container).
    "--graceful-timeout",
    String(APP_GRACEFUL_TIMEOUT_S),
    // A line per request on stdout, with the request ID nginx sent.
    ...(app.accessLog ? ["--access-logfile", "-", "--access-logformat", GUNICORN_ACCESS_LOG_FORMAT] : []),
    "main:app",
  ];
}

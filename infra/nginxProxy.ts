import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { StackConfig } from "./config";
import { NGINX_HEALTH_PATH } from "./nginxConf";
import { deploy, localUrl, type Deployment, type VolumeMount, type WorkloadPolicy } from "./workload";

const CONF_PATH = "/etc/nginx/conf.d/default.conf";

export interface NginxProxyArgs {
  nginx: StackConfig["nginx"];
  policy: WorkloadPolicy;
  network: docker.Network;
  /** What nginx proxies to; nginx starts after it (compose's depends_on). */
  backends: pulumi.Resource[];
  /** The app's socket volumes, when nginx reaches it over unix sockets. */
  sockets: VolumeMount[];
  /** Folder with the Dockerfile that bakes the config into the image (the repo's nginx/). */
  context: string;
}

/** nginx in front of the app: the pinned public image, its conf.d/default.conf, and the published port. */
export class NginxProxy extends pulumi.ComponentResource {
  readonly baseImage: docker.RemoteImage;
  /** The base image with the rendered config baked in; absent when the config is bind-mounted. */
  readonly image?: docker.Image;
  readonly deployment: Deployment;
  readonly url: pulumi.Output<string>;

  constructor(name: string, args: NginxProxyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:NginxProxy", name, {}, opts);
    const { nginx, policy } = args;

    // keepLocally: the base image may be shared with other stacks on the host; destroy leaves it.
    this.baseImage = new docker.RemoteImage(`${name}-base-image`, { name: nginx.image, keepLocally: true }, { parent: this });
    // Dev mounts the repo's file as the tutorial does. Otherwise the rendered text is baked into an image:
    // it works against a remote Docker host and with a read-only root filesystem (nothing can be copied
    // into such a container), and a config change replaces the container.
    if (!nginx.configFile) {
      this.image = new docker.Image(`${name}-image`, {
        imageName: nginx.imageName,
        build: {
          context: args.context,
          dockerfile: path.join(args.context, "Dockerfile"),
          args: {
            NGINX_IMAGE: this.baseImage.name,
            DEFAULT_CONF: nginx.conf,
            ...(nginx.workerProcesses ? { WORKER_PROCESSES: String(nginx.workerProcesses) } : {}),
          },
        },
        skipPush: true,
      }, { parent: this });
    }

    this.deployment = deploy(name, {
      image: this.image ? this.image.repoDigest : this.baseImage.imageId,
      network: args.network.name,
      publish: { internal: 80, external: nginx.httpPort },
      binds: nginx.configFile ? [{ source: nginx.configFile, target: CONF_PATH }] : [],
      // Temp and pid paths of the official image (/var/cache/nginx, /run) and of Debian's (/var/lib/nginx).
      tmpfs: ["/var/cache/nginx", "/var/lib/nginx", "/run", "/tmp"].map((p) => ({ path: p, sizeMb: 16 })),
      healthcheck: ["curl", "-fsS", "-o", "/dev/null", `http://127.0.0.1${NGINX_HEALTH_PATH}`],
      limits: nginx.limits,
      // The master stays root to bind port 80 and switch workers to the nginx user; it keeps only that.
      capAdds: ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE"],
      replicas: [{ containerName: nginx.containerName, volumes: args.sockets }],
      serviceName: nginx.containerName,
    }, policy, { parent: this, dependsOn: args.backends });

    this.url = pulumi.output(localUrl(policy.bindAddress, nginx.httpPort));
    this.registerOutputs({ url: this.url });
  }
}

import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { StackConfig } from "./config";
import { baseContainerArgs, capabilities, ContainerPolicy, healthcheck, localUrl, publish } from "./common";
import { NGINX_HEALTH_PATH } from "./nginxConf";

const CONF_PATH = "/etc/nginx/conf.d/default.conf";

export interface NginxProxyArgs {
  nginx: StackConfig["nginx"];
  policy: ContainerPolicy;
  network: docker.Network;
  /** The containers nginx proxies to; nginx starts after them (compose's depends_on). */
  backends: docker.Container[];
  /** Folder with the Dockerfile that bakes the config into the image (the repo's nginx/). */
  context: string;
}

/** nginx in front of the app: the pinned public image, its conf.d/default.conf, and the published port. */
export class NginxProxy extends pulumi.ComponentResource {
  readonly baseImage: docker.RemoteImage;
  /** The base image with the rendered config baked in; absent when the config is bind-mounted. */
  readonly image?: docker.Image;
  readonly container: docker.Container;
  readonly url: pulumi.Output<string>;

  constructor(name: string, args: NginxProxyArgs, opts?: pulumi.ComponentResourceOptions) {
    super("flask-proxy:index:NginxProxy", name, {}, opts);
    const { nginx, policy } = args;

    // keepLocally: the base image may be shared with other stacks on the host; destroy leaves it.
    this.baseImage = new docker.RemoteImage(`${name}-base-image`, { name: nginx.image, keepLocally: true }, { parent: this });
    // Dev mounts the repo's file as the tutorial does. Otherwise the rendered text is baked into an image:
    // it works against a remote Docker host, with a read-only root filesystem, and a config change
    // replaces the container.
    if (!nginx.configFile) {
      this.image = new docker.Image(`${name}-image`, {
        imageName: nginx.imageName,
        build: {
          context: args.context,
          dockerfile: path.join(args.context, "Dockerfile"),
          args: { NGINX_IMAGE: this.baseImage.name, DEFAULT_CONF: nginx.conf },
        },
        skipPush: true,
      }, { parent: this });
    }

    this.container = new docker.Container(`${name}-container`, {
      ...baseContainerArgs(policy, nginx.limits),
      name: nginx.containerName,
      image: this.image ? this.image.repoDigest : this.baseImage.imageId,
      networksAdvanced: [{ name: args.network.name }],
      ports: publish(policy, 80, nginx.httpPort),
      volumes: nginx.configFile ? [{ hostPath: nginx.configFile, containerPath: CONF_PATH, readOnly: true }] : [],
      // The master stays root to bind port 80 and switch workers to the nginx user; it keeps only that.
      capabilities: capabilities(policy, ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE"]),
      // Read-only root: temp and pid paths of the official image (/var/cache/nginx, /run) and of Debian's
      // build (/var/lib/nginx) are tmpfs.
      tmpfs: policy.hardened
        ? Object.fromEntries(["/var/cache/nginx", "/var/lib/nginx", "/run", "/tmp"].map((p) => [p, "rw,nosuid,nodev,size=16m"]))
        : undefined,
      healthcheck: policy.healthchecks
        ? healthcheck(["curl", "-fsS", "-o", "/dev/null", `http://127.0.0.1${NGINX_HEALTH_PATH}`])
        : undefined,
    }, { parent: this, dependsOn: args.backends });

    this.url = pulumi.output(localUrl(policy.bindAddress, nginx.httpPort));
    this.registerOutputs({ url: this.url, containerName: this.container.name });
  }
}

// nginx → Flask on Docker: the tutorial's docker-compose file as a Pulumi program.
// Config comes from Pulumi.<stack>.yaml (defaults in Pulumi.yaml), validated into one typed object.
import * as path from "path";
import * as docker from "@pulumi/docker";
import { loadStackConfig } from "./infra/config";
import { FlaskApp } from "./infra/flaskApp";
import { NginxProxy } from "./infra/nginxProxy";
import { labelList, localUrl, policyOf } from "./infra/workload";

const cfg = loadStackConfig(__dirname);
const policy = policyOf(cfg);

// networks: my-network
const network = new docker.Network("my-network", {
  name: cfg.network.name,
  // Swarm services need an overlay network; attachable lets plain containers join it for debugging.
  driver: cfg.target === "swarm" ? "overlay" : undefined,
  attachable: cfg.target === "swarm" ? true : undefined,
  labels: labelList(cfg.labels),
  ipamConfigs: cfg.network.subnet ? [{ subnet: cfg.network.subnet }] : undefined,
});

// services.flask: built from app/, alias flask-app on my-network (× replicas)
const flask = new FlaskApp("flask", { app: cfg.app, policy, context: path.join(__dirname, "app"), network });

// services.nginx: depends_on flask, proxies to the alias, port 80
const nginx = new NginxProxy("nginx", {
  nginx: cfg.nginx, policy, network, backends: flask.deployment.resources, sockets: flask.socketMounts,
  context: path.join(__dirname, "nginx"),
});

export const url = nginx.url;
export const appUrl = cfg.app.hostPort ? localUrl(cfg.bindAddress, cfg.app.hostPort) : "(not published)";
export const networkName = network.name;
export const appWorkload = flask.deployment.service?.name ?? flask.deployment.containers.map((c) => c.name);
export const nginxWorkload = nginx.deployment.service?.name ?? nginx.deployment.containers[0].name;
export const appImage = flask.image.imageName;

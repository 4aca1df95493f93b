// nginx → Flask on Docker: the tutorial's docker-compose file as a Pulumi program.
// Config comes from Pulumi.<stack>.yaml (defaults in Pulumi.yaml), validated into one typed object before
// anything is declared: a bad value, or a mounted nginx conf that differs from its render, creates nothing.
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { FlaskApp } from "./app/flaskApp";
import { findBuilds } from "./infra/builds";
import { loadStackConfig } from "./infra/config";
import { engineSettingsOf } from "./infra/engine";
import { labelList, objectName, stackLabels } from "./infra/naming";
import { localUrl, type WorkloadSettings } from "./infra/workload";
import { checkMountedConf } from "./nginx/conf";
import { edgeNodeProblem, imageNginxVersion, nginxBeforeHandover, NginxProxy } from "./nginx/nginxProxy";

// An async program: it asks the engine which app builds the stack keeps before it declares the app.
export = async () => {
  const cfg = loadStackConfig(__dirname, checkMountedConf);
  const { project, stack } = cfg;
  const settings: WorkloadSettings = {
    labels: stackLabels(project, stack),
    restartPolicy: cfg.restartPolicy,
    healthchecks: cfg.healthchecks,
    waitForHealthy: cfg.waitForHealthy,
    bindAddress: cfg.bindAddress,
    hardened: cfg.hardened,
    target: cfg.target,
    swarm: cfg.swarm,
  };

  // networks: my-network (an overlay on swarm; attachable so plain containers can join it for debugging)
  const network = new docker.Network("my-network", {
    name: objectName(project, stack, "net"),
    driver: cfg.target === "swarm" ? "overlay" : undefined,
    attachable: cfg.target === "swarm" ? true : undefined,
    labels: labelList(settings.labels),
    ipamConfigs: cfg.networkSubnet ? [{ subnet: cfg.networkSubnet }] : undefined,
  });

  const engine = engineSettingsOf(pulumi.runtime.allConfig());
  // An nginx that predates the handover holds the ports the holder needs, or (swarm) the engine is not the edge
  // node nginx must run on: say what to do, change nothing.
  const moveFirst = (await nginxBeforeHandover(engine, cfg)) ?? (await edgeNodeProblem(engine, cfg));
  if (moveFirst) throw new pulumi.RunError(moveFirst);
  // The stack's kept app builds, looked up before anything is declared: whether this release needs a build.
  const builds = await findBuilds(engine, stack, cfg.registry ? `${cfg.registry.address}/${cfg.app.imageRepository}` : undefined);

  // services.flask: built from app/, alias flask-app on my-network (× replicas)
  const flask = new FlaskApp("flask", {
    app: cfg.app,
    project,
    stack,
    settings,
    network,
    networkSubnet: cfg.networkSubnet,
    registry: cfg.registry,
    secretAsFile: cfg.swarm.secretKey,
    metrics: cfg.metrics !== undefined,
    forwardedProtoFromNetwork: cfg.nginx.tls !== undefined && cfg.app.transport === "tcp",
    builds,
  });

  // services.nginx: depends_on flask, proxies to the alias (or the app's sockets), port 80
  const nginx = new NginxProxy("nginx", {
    imageVersion: await imageNginxVersion(engine, cfg.nginx.baseImage),
    cfg,
    settings,
    network,
    upstream: flask.upstream,
    socketVolumes: flask.socketVolumes,
    backends: flask.workload.resources,
  });

  return {
    url: nginx.url,
    // tls on: the site's address; plain HTTP on `url` redirects there.
    httpsUrl: nginx.httpsUrl ?? "(no HTTPS: tls is off)",
    // tls internal: the root to trust, e.g. `curl --cacert <(pulumi stack output caCertificate) <httpsUrl>`.
    caCertificate: nginx.caCertificate ?? "(no stack CA: tls is not internal)",
    appUrl: cfg.app.hostPort ? localUrl(cfg.bindAddress, cfg.app.hostPort) : "(not published)",
    networkName: network.name,
    appWorkload: flask.workload.service?.name ?? flask.workload.containers.map((c) => c.name),
    nginxWorkload: nginx.workload.service?.name ?? nginx.workload.containers[0].name,
    appImage: flask.imageName,
    // The versions `npm run rollback` can go back to without a build, newest build first.
    appVersions: flask.keptVersions,
    metricsUrl: nginx.metricsUrl ?? "(no metrics: metricsPort is 0)",
  };
};

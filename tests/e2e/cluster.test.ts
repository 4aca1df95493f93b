import * as fs from "fs";
import * as path from "path";
import type Docker from "dockerode";
import { SECRET_KEY_FILE_ENV, SECRET_KEY_FILE_NAME, SECRETS_DIR } from "../../app/facts";
import { LABEL } from "../../infra/naming";
import { parseDigestRef, registryRequest } from "../../infra/registry";
import {
  CLUSTER,
  CLUSTER_STACK,
  clusterDown,
  clusterLeftovers,
  clusterUp,
  hostDocker,
  managerEngine,
  nodeEngine,
  registryAddress,
  type ClusterNode,
} from "../../tools/cluster";
import { stackConfig } from "../../infra/stack-files";
import { deadPeerSysctls } from "../../nginx/conf";
import { httpsGet } from "../../harness/pebble";
import { createRootCa, issue, leafNames } from "../../infra/tls";
import {
  answersHello,
  at,
  containerGone,
  execIn,
  failures,
  fingerprint,
  get,
  nginxInHolder,
  nginxWorkers,
  servedCertificate,
  underLoad,
  upStack,
  versionsServing,
  within,
  type LiveStack,
  type Reply,
} from "./live";

// The cluster stack (Pulumi.cluster.yaml) on a real three-node swarm with a TLS registry, made on this machine by
// tools/cluster.ts (`npm run cluster:up`): nested engines, so the loss of a node is a container killed. The
// tests run in order, each on what the one before left; the last takes everything down again.
const stackLabel = `${LABEL.stack}=${CLUSTER_STACK}`;
const ca = () => require("fs").readFileSync(CLUSTER.caFile, "utf8") as string; // eslint-disable-line @typescript-eslint/no-require-imports

type Task = { ID: string; NodeID: string; Status?: { State?: string; ContainerStatus?: { ContainerID?: string } } };
/** The service's tasks that should run and do. */
async function runningTasks(service: string): Promise<Task[]> {
  const tasks = (await managerEngine().listTasks({
    filters: JSON.stringify({ service: [service], "desired-state": ["running"] }),
  })) as Task[];
  return tasks.filter((t) => t.Status?.State === "running");
}

/** Swarm node ID → the cluster node (container) it is. */
async function nodesById(): Promise<Map<string, ClusterNode>> {
  const nodes = await managerEngine().listNodes();
  return new Map(
    nodes.flatMap((n) => {
      const c = CLUSTER.nodes.find((x) => x.hostname === n.Description?.Hostname);
      return c && n.ID ? [[n.ID, c] as const] : [];
    }),
  );
}

/** What a task's container has written to stdout and stderr, since `sinceS` (Unix seconds). */
async function taskLogs(task: Task, byId: Map<string, ClusterNode>, sinceS = 0): Promise<string> {
  const c = nodeEngine(byId.get(task.NodeID)!).getContainer(task.Status!.ContainerStatus!.ContainerID!);
  return (await c.logs({ stdout: true, stderr: true, since: sinceS, follow: false })).toString("utf8");
}

// A route of the test's own in the stack's copy of the app (the shipped app has none): it says when a request
// reaches a replica, then takes `s` seconds to answer, as a legitimately slow request does.
const SLOW_ROUTE = `
import time as _time
from flask import request as _request


@app.route("/slow/<token>")
def slow(token):
    print(f"slow request {token} arrived", flush=True)
    _time.sleep(float(_request.args.get("s", "1")))
    return "slow done"
`;
/** Seconds the request in flight on a killed worker takes: long enough to be running there when it goes. */
const IN_FLIGHT_S = 4;
const addSlowRoute = (projectDir: string) => fs.appendFileSync(path.join(projectDir, "app", "main.py"), SLOW_ROUTE);

/** The nginx container serving now, on the manager's engine. */
const nginxOf = (live: LiveStack) => managerEngine().getContainer(String(live.outputs.nginxWorkload));

/** Every digest reference the stack's state holds for the images it pushed. */
function pushedRefs(live: LiveStack): string[] {
  return ["flask-image-manifest", "nginx-image-manifest"].map((n) => String(live.resource(n).outputs?.ref));
}

describe("cluster stack on a three-node swarm with a TLS registry", () => {
  let live: LiveStack | undefined;
  const appService = () => String(live!.outputs.appWorkload);
  const desired = Number(stackConfig(CLUSTER_STACK)["flask-proxy:replicas"]);
  const deadPeerS = Number(stackConfig(CLUSTER_STACK)["flask-proxy:upstreamDeadPeerTimeout"]);
  const pushed = new Set<string>();
  // A worker that is not the edge: losing it must not take nginx with it.
  const victim = CLUSTER.nodes.find((n) => !n.manager && !n.edge)!;

  beforeAll(async () => {
    const t = Date.now();
    await clusterUp();
    console.log(`cluster:up took ${((Date.now() - t) / 1000).toFixed(1)} s`);
  });
  afterAll(async () => {
    await live?.destroy().catch((e: Error) => console.error(`destroy after failure: ${e.message}`));
    await clusterDown();
  });

  test("pulumi up: app tasks on 3 different nodes, nginx on the edge (the manager), images by digest, the key as a swarm secret", async () => {
    live = await upStack(CLUSTER_STACK, { registryCaFile: CLUSTER.caFile }, undefined, { edit: addSlowRoute });
    await within(60_000, answersHello(live.url), "nginx answers Hello world! through the edge node");
    const byId = await nodesById();
    const app = await runningTasks(appService());
    expect(app).toHaveLength(desired);
    expect(new Set(app.map((t) => byId.get(t.NodeID)?.hostname)).size).toBe(CLUSTER.nodes.length);
    // nginx: containers on the engine the stack deploys through, the manager, which is the edge node.
    const manager = (await managerEngine().info()) as { Swarm: { NodeID: string } };
    expect(byId.get(manager.Swarm.NodeID)?.edge).toBe(true);
    const nginxContainer = nginxOf(live);
    expect((await nginxContainer.inspect()).State.Running).toBe(true);
    // The keepalive timers the holder asks for are the ones nginx's network namespace runs with.
    const timers = await execIn(nginxContainer, [
      "sh",
      "-c",
      "cd /proc/sys/net/ipv4 && cat tcp_keepalive_time tcp_keepalive_intvl tcp_keepalive_probes",
    ]);
    expect(timers.stdout.trim().split(/\s+/)).toEqual(Object.values(deadPeerSysctls(deadPeerS)));

    for (const ref of pushedRefs(live)) {
      expect(ref).toMatch(new RegExp(`^${registryAddress.replace(/\./g, "\\.")}/[a-z0-9/_.-]+@sha256:[a-f0-9]{64}$`));
      pushed.add(ref);
    }
    const spec = (await managerEngine().getService(appService()).inspect()).Spec.TaskTemplate.ContainerSpec;
    expect(pushed.has(spec.Image)).toBe(true);
    // No key in the service's env (anyone with API access reads that); a file only the app's user can read.
    expect((spec.Env as string[]).filter((e) => e.startsWith("FLASK_SECRET_KEY="))).toEqual([]);
    expect(spec.Env).toContain(`${SECRET_KEY_FILE_ENV}=${SECRETS_DIR}/${SECRET_KEY_FILE_NAME}`);
    expect(spec.Secrets).toHaveLength(1);
    // Every node runs the same bytes: each task's container runs the image of the pushed digest.
    for (const t of app) {
      const engine = nodeEngine(byId.get(t.NodeID)!);
      const c = engine.getContainer(t.Status!.ContainerStatus!.ContainerID!);
      const image = await engine.getImage((await c.inspect()).Image).inspect();
      expect(image.RepoDigests).toContain(spec.Image);
      const key = await execIn(c, ["sh", "-c", `wc -c < ${SECRETS_DIR}/${SECRET_KEY_FILE_NAME}`]);
      expect(Number(key.stdout.trim())).toBeGreaterThanOrEqual(32);
    }
  });

  test("a second pulumi preview finds nothing to change", async () => {
    expect(await live!.preview()).toEqual([]);
  });

  test("a request slower than a lost node takes to be noticed is served once: 200, and one replica saw it", async () => {
    // Longer than nginx gives a silent replica before it tries the next (upstreamDeadPeerTimeout), so a
    // request that waits for a live but busy app must not be taken for one lost with its node.
    const slowS = 8;
    expect(slowS).toBeGreaterThan(2 * deadPeerS);
    const token = `t${Date.now()}`;
    const started = Date.now();
    const reply = await get(at(live!.url, `/slow/${token}?s=${slowS}`), {}, 60_000);
    const tookS = (Date.now() - started) / 1000;
    const byId = await nodesById();
    const logs = await Promise.all((await runningTasks(appService())).map((t) => taskLogs(t, byId)));
    const arrivals = logs.join("").split(`slow request ${token} arrived`).length - 1;
    console.log(
      `cluster slow request (${slowS} s): ${reply.status} after ${tookS.toFixed(1)} s, reached the app ${arrivals} time(s)`,
    );
    expect({ status: reply.status, body: reply.body, arrivals }).toEqual({ status: 200, body: "slow done", arrivals: 1 });
  });

  test("a rolling release under steady load fails no request; the replaced images leave the registry", async () => {
    const before = pushedRefs(live!);
    const { load, error } = await underLoad(live!.url, () => live!.up({ config: { appVersion: "0.0.2" } }));
    console.log(`cluster rolling release under load: ${JSON.stringify(load)}`);
    expect(error).toBeUndefined();
    expect(load.requests).toBeGreaterThan(100);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    expect(await versionsServing(live!.url)).toEqual(["0.0.2"]);
    const after = pushedRefs(live!);
    for (const ref of after) pushed.add(ref);
    const replaced = before.filter((r) => !after.includes(r));
    expect(replaced.length).toBeGreaterThan(0); // the app image at least
    for (const ref of replaced) {
      const { address, repository, digest } = parseDigestRef(ref);
      expect((await registryRequest(address, "HEAD", `/v2/${repository}/manifests/${digest}`, ca())).status).toBe(404);
    }
  });

  test("nginx replaced under steady load (a new worker count: a new image, pushed): no request fails, the new one alone serves", async () => {
    const before = await nginxOf(live!).inspect();
    const { load, error } = await underLoad(live!.url, () => live!.up({ config: { nginxWorkerProcesses: "2" } }), {
      newConnections: 8,
    });
    console.log(`cluster nginx handover under load: ${JSON.stringify(load)}`);
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(200);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    const after = await nginxOf(live!).inspect();
    expect([after.Id === before.Id, await containerGone(managerEngine(), before.Id)]).toEqual([false, true]);
    expect(await nginxInHolder(live!)).toEqual([after.Id]);
    expect(await nginxWorkers(nginxOf(live!))).toBe(2);
    for (const ref of pushedRefs(live!)) pushed.add(ref);
  });

  test("a worker node killed under steady load: requests counted, one in flight on it retried, every task runs again on the survivors", async () => {
    const byId = await nodesById();
    const victimId = [...byId].find(([, n]) => n.name === victim.name)![0];
    expect((await runningTasks(appService())).some((t) => t.NodeID === victimId)).toBe(true);
    let rescheduledMs = -1;
    let killed = 0;
    let inFlight: { reply: Promise<Reply & { tookS: number }>; sent: number; token: string } | undefined;
    const sinceS = Math.floor(Date.now() / 1000);
    const { load, error } = await underLoad(live!.url, async () => {
      // A request the victim is running when it goes (whether the load has one there then is chance): sent until
      // one lands there, each awaited otherwise, so that no two slow ones queue on a survivor.
      for (let i = 0; i < 12 && !inFlight; i++) {
        const token = `lost${Date.now()}`;
        const sent = Date.now();
        const reply = get(at(live!.url, `/slow/${token}?s=${IN_FLIGHT_S}`), {}, 60_000)
          .catch((e: Error): Reply => ({ status: 0, body: e.message, headers: new Headers() }))
          .then((r) => ({ ...r, tookS: (Date.now() - sent) / 1000 }));
        const tasks = await runningTasks(appService());
        let on: Task | undefined;
        await within(
          5_000,
          async () => {
            const logs = await Promise.all(tasks.map((t) => taskLogs(t, byId, Math.floor(sent / 1000) - 1)));
            on = tasks[logs.findIndex((l) => l.includes(`slow request ${token} arrived`))];
            return on !== undefined;
          },
          `slow request ${token} reaches a replica`,
        );
        if (on?.NodeID === victimId) inFlight = { reply, sent, token };
        else await reply;
      }
      if (!inFlight) throw new Error(`no slow request landed on ${victim.hostname} in 12 tries`);
      killed = Date.now();
      await hostDocker.getContainer(victim.name).kill();
      await within(
        120_000,
        async () => {
          const tasks = await runningTasks(appService());
          return tasks.length === desired && tasks.every((t) => t.NodeID !== victimId);
        },
        `${desired} app tasks running on the surviving nodes`,
      );
      rescheduledMs = Date.now() - killed;
      // nginx's DNS cache (5 s) and a little more: requests keep flowing after the reschedule too.
      await new Promise((r) => setTimeout(r, 8000));
    });
    const lost = await inFlight?.reply;
    console.log(
      `cluster worker ${victim.hostname} killed under load: ${JSON.stringify(load)}; ` +
        `all ${desired} app tasks running again on the survivors after ${(rescheduledMs / 1000).toFixed(1)} s`,
    );
    // How nginx saw the lost replica, from its error log: a connect that timed out (a new connection to the
    // dead address), a read that did, or a connection the kernel gave up on (keepalive probes unanswered).
    const nginxLog = (await nginxOf(live!).logs({ stdout: true, stderr: true, since: sinceS, follow: false })).toString("utf8");
    const kinds = {
      connectTimedOut: /upstream timed out \(110: [^)]*\) while connecting to upstream/,
      readTimedOut: /upstream timed out \(110: [^)]*\) while reading response header/,
      deadPeer: /recv\(\) failed \(110: [^)]*\) while reading response header/,
      otherUpstreamErrors: /\[error\](?!.*(upstream timed out|recv\(\) failed \(110)).*upstream/,
    };
    // Each kind: how many lines, and from when to when after the kill (nginx stamps its lines in UTC, to the second).
    const afterKillS = (line: string) => {
      const [, day, time] = /(\d{4}\/\d\d\/\d\d) (\d\d:\d\d:\d\d)/.exec(line) ?? [];
      return Math.round((Date.parse(`${day?.replace(/\//g, "-")}T${time}Z`) - killed) / 1000);
    };
    const lines = nginxLog.split("\n");
    const seen = Object.fromEntries(
      Object.entries(kinds).map(([k, re]) => {
        const at = lines.filter((l) => re.test(l)).map(afterKillS);
        return [k, at.length ? `${at.length} (${Math.min(...at)}..${Math.max(...at)} s)` : 0];
      }),
    );
    console.log(
      `cluster worker killed: nginx's error log: ${JSON.stringify(seen)}; the request in flight on it: ` +
        `${lost?.status}, ${lost?.tookS.toFixed(1)} s after it was sent (${((killed - (inFlight?.sent ?? 0)) / 1000).toFixed(1)} s before the kill); nginx about it: ` +
        JSON.stringify(
          lines.filter((l) => inFlight && l.includes(inFlight.token)).map((l) => l.replace(/^.*?\[error\] /, "").slice(0, 160)),
        ),
    );
    expect(error).toBeUndefined();
    expect(load.requests).toBeGreaterThan(100);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    // Tried again on a survivor once the victim's silence was taken for its loss, not left to the read timeout.
    expect({ status: lost?.status, body: lost?.body }).toEqual({ status: 200, body: "slow done" });
  });

  test("the node back: the service keeps serving, and pulumi up converges with nothing left to change", async () => {
    const { load, error } = await underLoad(live!.url, async () => {
      const back = Date.now();
      await hostDocker.getContainer(victim.name).start();
      await within(
        120_000,
        async () => {
          const n = (await managerEngine().listNodes()).find((x) => x.Description?.Hostname === victim.hostname);
          return n?.Status?.State === "ready";
        },
        `${victim.hostname} ready again`,
      );
      console.log(`cluster ${victim.hostname} ready again ${((Date.now() - back) / 1000).toFixed(1)} s after its start`);
      await live!.up();
    });
    console.log(`cluster node back, then pulumi up, under load: ${JSON.stringify(load)}`);
    expect(error).toBeUndefined();
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    expect(await live!.preview()).toEqual([]);
    expect((await get(live!.url)).body).toBe("Hello world!");
  });

  test("tls: certificate on the cluster: HTTPS through the edge node, the app (over TCP) builds https:// URLs; a rotation under HTTPS load fails no request", async () => {
    const root = await createRootCa({ commonName: "cluster.test root", days: 30 });
    const newLeaf = () => issue(root, { commonName: "localhost", days: 30, ...leafNames("localhost") });
    const leaf = await newLeaf();
    await live!.configureSecrets({ tlsCertificate: leaf.certPem, tlsPrivateKey: leaf.keyPem });
    // A new port: the holder is replaced, delete-first (the change tables' cost of a new address).
    await live!.up({ config: { tls: "certificate" } });
    const httpsUrl = String(live!.outputs.httpsUrl);
    expect(httpsUrl).toBe(`https://127.0.0.1:${stackConfig(CLUSTER_STACK)["flask-proxy:httpsPort"]}/`);
    const port = Number(new URL(httpsUrl).port);
    await within(
      30_000,
      async () => (await httpsGet(httpsUrl, root.certPem).catch(() => "")) === "Hello world!",
      "HTTPS answers",
    );
    const served = async () => (await servedCertificate(port, "localhost", root.certPem)).fingerprint256;
    expect(await served()).toBe(fingerprint(leaf.certPem));
    // (The cluster stack passes $host, without the port, as the Host header.)
    expect((JSON.parse(await httpsGet(`${httpsUrl}links`, root.certPem)) as { index: string }).index).toBe("https://127.0.0.1/");

    const before = await nginxOf(live!).inspect();
    const next = await newLeaf();
    await live!.configureSecrets({ tlsCertificate: next.certPem, tlsPrivateKey: next.keyPem });
    const { load, error } = await underLoad(httpsUrl, () => live!.up(), { ca: root.certPem, newConnections: 8 });
    console.log(`cluster tls rotation under HTTPS load: ${JSON.stringify(load)}`);
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(200);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    expect(await served()).toBe(fingerprint(next.certPem));
    expect((await nginxOf(live!).inspect()).Id).toBe(before.Id);
    for (const ref of pushedRefs(live!)) pushed.add(ref);
  });

  test("pulumi destroy, then cluster:down, leave nothing on any node, in the registry, or on the host", async () => {
    await live!.destroy();
    live = undefined;
    const filters = JSON.stringify({ label: [stackLabel] });
    // A worker removes a deleted service's task containers in its own time (seen: two still there 10 s after the
    // destroy, with the machine busy): bounded, then what is left is reported below.
    await within(
      60_000,
      async () => {
        for (const node of CLUSTER.nodes)
          if ((await nodeEngine(node).listContainers({ all: true, filters })).length) return false;
        return true;
      },
      "the stack's task containers gone from every node",
    ).catch(() => undefined);
    for (const node of CLUSTER.nodes) {
      const engine: Docker = nodeEngine(node);
      const left = {
        node: node.hostname,
        services: node.manager ? (await engine.listServices({ filters })).map((s) => s.Spec?.Name) : [],
        secrets: node.manager
          ? ((await engine.listSecrets({ filters })) as { Spec?: { Name?: string } }[]).map((s) => s.Spec?.Name)
          : [],
        networks: (await engine.listNetworks({ filters })).map((n) => n.Name),
        containers: (await engine.listContainers({ all: true, filters })).map((c) => c.Names.join(",")),
        volumes: ((await engine.listVolumes({ filters })).Volumes ?? []).map((v) => v.Name),
      };
      expect(left).toEqual({ node: node.hostname, services: [], secrets: [], networks: [], containers: [], volumes: [] });
    }
    // Every manifest the test pushed is gone, and no tag of the stack's repositories is left.
    expect(pushed.size).toBeGreaterThanOrEqual(3);
    for (const ref of pushed) {
      const { address, repository, digest } = parseDigestRef(ref);
      expect([ref, (await registryRequest(address, "HEAD", `/v2/${repository}/manifests/${digest}`, ca())).status]).toEqual([
        ref,
        404,
      ]);
      const tags = await registryRequest(address, "GET", `/v2/${repository}/tags/list`, ca());
      expect([repository, tags.status === 200 ? ((JSON.parse(tags.body) as { tags?: string[] | null }).tags ?? []) : []]).toEqual(
        [repository, []],
      );
    }
    await clusterDown();
    expect(await clusterLeftovers()).toEqual([]);
  });
});

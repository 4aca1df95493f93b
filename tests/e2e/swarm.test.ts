import { leftovers, stackLabel } from "../../infra/engine-objects";
import { enterSwarm } from "../../harness/swarm-mode";
import type Docker from "dockerode";
import {
  answersHello,
  buildTestImage,
  containerGone,
  docker,
  execIn,
  failures,
  get,
  nginxInHolder,
  nginxWorkers,
  underLoad,
  upStack,
  within,
  type LiveStack,
} from "./live";

// The swarm stack on a single-node swarm: the app as a service, nginx as containers on the node that hand the
// port over (nginx/handover.ts). This kernel has no IPVS, so the stack uses dnsrr endpoints (see Pulumi.swarm.yaml).

/** The swarm stack's nginx image (a stand-in here: Debian's nginx 1.22), and the routine update: one more layer. */
const BASE = "nginx:1.27.3";
const NEXT = "nginx:1.27.3-swarm-next";
const LAYER_FILE = "/etc/swarm-test-layer";
describe("swarm stack on a single-node Docker Swarm", () => {
  let leaveSwarm: (() => Promise<void>) | undefined;
  let swarm: LiveStack | undefined;

  beforeAll(async () => {
    leaveSwarm = await enterSwarm(docker);
  });
  afterAll(async () => {
    await swarm?.destroy();
    await leaveSwarm?.();
    await docker
      .getImage(NEXT)
      .remove()
      .catch(() => undefined);
  });

  test("the app service converges and answers Hello world! through nginx on 127.0.0.1", async () => {
    swarm = await upStack("swarm", { replicas: "1" });
    await within(30_000, answersHello(swarm.url), "nginx answers");
    expect(swarm.url).toBe("http://127.0.0.1:8100/");
    const svc = await swarm.service("flask-service").inspect();
    expect(svc.Spec?.EndpointSpec?.Mode).toBe("dnsrr");
  });

  test("a second pulumi preview finds nothing to change", async () => {
    expect(await swarm!.preview()).toEqual([]);
  });

  test("pulumi refresh right after pulumi up finds nothing to change", async () => {
    expect(await swarm!.refreshFindsNothing()).toEqual([]);
  });

  test("scaling the app 1 → 3 spreads requests over three tasks", async () => {
    expect(swarm).toBeDefined();
    await swarm!.up({ config: { replicas: "3" } });
    const seen = new Set<string>();
    // nginx caches the alias's addresses for 5 s; poll (bounded) until all three tasks have answered.
    await within(
      20_000,
      async () => {
        for (let i = 0; i < 30; i++) seen.add((await get(swarm!.url)).headers.get("x-served-by") ?? "?");
        return seen.size === 3;
      },
      "three tasks answer",
    );
    expect(seen.size).toBe(3);
  });

  test("a rolling update of the app image under load fails no request, and is over when pulumi up returns", async () => {
    expect(swarm).toBeDefined();
    expect((await get(swarm!.url)).headers.get("x-app-version")).toBe("0.0.1");
    // The project's load harness (harness/load.ts): it honours nginx's `Connection: close` (keepalive_requests),
    // so only real failures count. The update returns once every task runs 0.0.2 (infra/rollout.ts); the load
    // runs on past nginx's 5 s DNS cache, so requests still meet the addresses it had cached of the old tasks.
    const { load, error } = await underLoad(swarm!.url, async () => {
      await swarm!.up({ config: { appVersion: "0.0.2" } });
      await new Promise((r) => setTimeout(r, 6000));
    });
    console.log(
      `swarm rolling update under load: ${load.requests} responses, ${JSON.stringify(failures(load))}, ` +
        `${load.retried} sent again after a keep-alive connection closed`,
    );
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    const versions = new Set<string>();
    for (let i = 0; i < 30; i++) versions.add((await get(swarm!.url)).headers.get("x-app-version") ?? "?");
    expect([...versions]).toEqual(["0.0.2"]);
  });

  test("after the update, a second pulumi preview finds nothing to change", async () => {
    expect(await swarm!.preview()).toEqual([]);
  });

  /**
   * `pulumi up` with `config` under steady load (half the clients a new connection per request): no request
   * fails, and a new nginx alone runs in the holder's namespace, the old one gone (nginx/handover.ts).
   */
  async function handsOver(what: string, config: Record<string, string>): Promise<Docker.ContainerInspectInfo> {
    const before = await swarm!.container("nginx-container").inspect();
    const { load, error } = await underLoad(swarm!.url, () => swarm!.up({ config }), { newConnections: 8 });
    console.log(
      `swarm ${what} under load: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} retried`,
    );
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(200);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
    const after = await swarm!.container("nginx-container").inspect();
    expect([after.Id === before.Id, await containerGone(docker, before.Id)]).toEqual([false, true]);
    expect(await nginxInHolder(swarm!)).toEqual([after.Id]);
    return after;
  }

  test("nginx replaced under load, a new image and then a new worker count: no request fails, the new one alone serves", async () => {
    buildTestImage(NEXT, `FROM ${BASE}\nRUN echo next > ${LAYER_FILE}\n`);
    const fromNext = await handsOver(`nginxImage ${BASE} -> ${NEXT}`, { nginxImage: NEXT });
    expect((await execIn(docker.getContainer(fromNext.Id), ["cat", LAYER_FILE])).stdout.trim()).toBe("next");
    const twoWorkers = await handsOver("nginxWorkerProcesses 1 -> 2", { nginxWorkerProcesses: "2" });
    expect(await nginxWorkers(docker.getContainer(twoWorkers.Id))).toBe(2);
  });

  test("swarmEdgeLabel naming a label this node lacks fails pulumi up, naming the label and the node; nginx serves on unchanged", async () => {
    const before = await swarm!.container("nginx-container").inspect();
    const label = "org.flask-proxy.test-edge";
    await expect(swarm!.up({ config: { swarmEdgeLabel: label } })).rejects.toThrow(
      `has no label ${label}=true. Point docker:host at a manager that is an edge node, or label this one: docker node update --label-add ${label}=true`,
    );
    await swarm!.configure({ swarmEdgeLabel: "" });
    expect((await swarm!.container("nginx-container").inspect()).Id).toBe(before.Id);
    expect((await get(swarm!.url)).body).toBe("Hello world!");
  });

  test("after the handovers: refresh finds nothing, and preview no change", async () => {
    expect(await swarm!.refreshFindsNothing()).toEqual([]);
    expect(await swarm!.preview()).toEqual([]);
  });

  test("destroy removes the services and the network", async () => {
    const name = swarm!.name;
    await swarm!.destroy();
    swarm = undefined;
    // This stack's objects: other stacks of the project may run on the same engine.
    const left = await leftovers(docker, stackLabel(name));
    expect(left).toEqual({ services: [], containers: [], networks: [], volumes: [], images: [] });
  });
});

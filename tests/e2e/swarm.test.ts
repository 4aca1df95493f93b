import { leftovers, stackLabel } from "../../infra/engine-objects";
import { enterSwarm } from "../../harness/swarm-mode";
import { upStack, docker, failures, get, underLoad, within, answersHello, type LiveStack } from "./live";

// The swarm stack on a single-node swarm: the same components as services. This kernel has no IPVS, so
// the stack uses dnsrr endpoints and host-mode ports (see Pulumi.swarm.yaml).
describe("swarm stack on a single-node Docker Swarm", () => {
  let leaveSwarm: (() => Promise<void>) | undefined;
  let swarm: LiveStack | undefined;

  beforeAll(async () => {
    leaveSwarm = await enterSwarm(docker);
  });
  afterAll(async () => {
    await swarm?.destroy();
    await leaveSwarm?.();
  });

  test("services converge and answer Hello world! through nginx on 127.0.0.1", async () => {
    swarm = await upStack("swarm", { replicas: "1" });
    await within(30_000, answersHello(swarm.url), "nginx service answers");
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

  test("destroy removes the services and the network", async () => {
    const name = swarm!.name;
    await swarm!.destroy();
    swarm = undefined;
    // This stack's objects: other stacks of the project may run on the same engine.
    const left = await leftovers(docker, stackLabel(name));
    expect(left).toEqual({ services: [], containers: [], networks: [], volumes: [], images: [] });
  });
});

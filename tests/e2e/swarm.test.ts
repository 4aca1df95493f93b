import autocannon from "autocannon";
import { LABEL } from "../../infra/naming";
import { leftovers } from "../../infra/engine-objects";
import { enterSwarm } from "../../harness/swarm-mode";
import { upStack, docker, get, within, answersHello, type LiveStack } from "./live";

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
    // nginx ends a client connection after keepalive_requests (1000) with "Connection: close"; autocannon
    // writes its next request without waiting for that and gets a reset. Reopening every 500 requests is
    // what a client that honours the header does. (Through docker-proxy the race was hidden.)
    const load = autocannon({ url: swarm!.url, connections: 4, amount: 200_000, duration: 90, timeout: 10, reconnectRate: 500 });
    await new Promise((r) => setTimeout(r, 1000));
    await swarm!.up({ config: { appVersion: "0.0.2" } }); // returns once every task runs 0.0.2 (infra/rollout.ts)
    await new Promise((r) => setTimeout(r, 6000)); // past nginx's 5 s DNS cache
    (load as unknown as { stop(): void }).stop();
    const result = await load;
    console.log(
      `swarm rolling update under load: ${result.requests.total} requests, ${result.errors} errors, ` +
        `${result.timeouts} timeouts, ${result.non2xx} non-2xx`,
    );
    expect(result.requests.total).toBeGreaterThan(500);
    expect({ errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }).toEqual({
      errors: 0,
      timeouts: 0,
      non2xx: 0,
    });
    const versions = new Set<string>();
    for (let i = 0; i < 30; i++) versions.add((await get(swarm!.url)).headers.get("x-app-version") ?? "?");
    expect([...versions]).toEqual(["0.0.2"]);
  });

  test("after the update, a second pulumi preview finds nothing to change", async () => {
    expect(await swarm!.preview()).toEqual([]);
  });

  test("destroy removes the services and the network", async () => {
    await swarm!.destroy();
    swarm = undefined;
    const left = await leftovers(docker, LABEL.project);
    expect(left).toEqual({ services: [], containers: [], networks: [], volumes: [], images: [] });
  });
});

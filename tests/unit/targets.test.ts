import { ConfigError, parseConfig } from "../../infra/config";
import { ProgramError, ROOT, runProgram, stackConfig, type Declared, type ProgramRun } from "../support/program";

const SERVICE = "docker:index/service:Service";
const CONTAINER = "docker:index/container:Container";
const find = (run: ProgramRun, name: string): Declared => {
  const r = run.resources.find((x) => x.name === name);
  if (!r) throw new Error(`${name} not declared; have ${run.resources.map((x) => x.name).join(", ")}`);
  return r;
};
type Spec = { containerSpec: Record<string, unknown>; networksAdvanceds: { id: string; aliases?: string[] }[] };

describe("swarm target", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("swarm");
  });

  test("declares the app as a service and nginx as containers (a port holder and nginx) on an attachable overlay network", () => {
    expect(run.resources.filter((r) => r.type === SERVICE).map((r) => r.name)).toEqual(["flask-service"]);
    expect(
      run.resources
        .filter((r) => r.type === CONTAINER)
        .map((r) => r.name)
        .sort(),
    ).toEqual(["nginx-container", "nginx-netns"]);
    const net = find(run, "my-network").inputs;
    expect([net.driver, net.attachable, net.name]).toEqual(["overlay", true, "flask-proxy-swarm-net"]);
  });

  test("the app service: replicas, dnsrr, health-gated start-first rolling updates, limits, hardening", () => {
    const app = find(run, "flask-service");
    const i = app.inputs as Record<string, Record<string, unknown>>;
    expect(i.mode).toEqual({ replicated: { replicas: 2 } });
    expect(i.endpointSpec).toEqual({ mode: "dnsrr", ports: [] });
    expect(i.updateConfig).toMatchObject({ order: "start-first", failureAction: "rollback", parallelism: 1 });
    const ts = i.taskSpec as Spec & { resources: unknown; restartPolicy: { condition: string } };
    // The network's ID: the provider stores the ID, so a name would replace the service on every up.
    expect(ts.networksAdvanceds).toEqual([{ id: "my-network-id", aliases: ["flask-app"] }]);
    expect(ts.resources).toEqual({ limits: { memoryBytes: 256 * 1024 * 1024, nanoCpus: 1e9 } });
    expect(ts.restartPolicy.condition).toBe("any");
    expect(ts.containerSpec).toMatchObject({ readOnly: true, capDrops: ["ALL"] });
    expect((ts.containerSpec.healthcheck as { tests: string[] }).tests.join(" ")).toContain("/healthz");
    expect(Object.keys(ts.containerSpec.env as object).sort()).toEqual(["FLASK_APP", "FLASK_SECRET_KEY"]);
    expect(app.secretInputs).toContain("taskSpec");
    expect(i.convergeConfig).toBeDefined();
  });

  test("nginx: containers that hand the port over, its holder on the overlay publishing it, after the app's rollout", () => {
    // A service's host-mode port cannot be held by two tasks on one node (a stop-first update); a holder's can.
    const holder = find(run, "nginx-netns").inputs as Record<string, unknown>;
    expect(holder.ports).toEqual([{ external: 8100, internal: 80, ip: "0.0.0.0", protocol: "tcp" }]);
    expect(holder.networksAdvanced).toEqual([{ name: "my-network-id" }]);
    expect(holder.sysctls).toMatchObject({ "net.ipv4.tcp_migrate_req": "1" });
    const nginx = find(run, "nginx-container");
    expect(nginx.inputs.ports).toBeUndefined();
    expect(String(nginx.inputs.networkMode)).toMatch(/^container:/);
    expect(String(nginx.inputs.command)).toContain("reuseport");
    // After the app's rolling update has finished, not just after its service spec was accepted.
    expect(nginx.dependsOn).toEqual(expect.arrayContaining(["flask-service", "flask-rollout"]));
    // Task addresses change on every update, so nginx must re-resolve: no keepalive upstream block.
    const conf = String(find(run, "nginx-conf-file").inputs.conf);
    expect(conf).toContain("resolver 127.0.0.11");
    expect(conf).not.toContain("upstream flask_app");
    expect(run.outputs.url).toBe("http://127.0.0.1:8100/");
  });

  test("one description, two backends: the same stack as containers runs the same thing", async () => {
    const asContainers = await runProgram("swarm", { overrides: { target: "containers", replicas: "1" } });
    const c = find(asContainers, "flask-container").inputs;
    const s = find(run, "flask-service").inputs.taskSpec as Spec;
    expect(s.containerSpec.args).toEqual(c.command);
    expect(Object.entries(s.containerSpec.env as Record<string, string>).map(([k, v]) => `${k}=${v}`)).toEqual(c.envs);
    expect(s.containerSpec.healthcheck).toEqual(c.healthcheck);
    expect(s.networksAdvanceds[0].aliases).toEqual((c.networksAdvanced as { aliases: string[] }[])[0].aliases);
    expect(s.containerSpec.image).toBe(c.image);
  });

  test.each([
    ["appCodeMount", "app"],
    ["nginxConfigFile", "nginx/dev.conf"],
    ["upstreamKeepalive", "16"],
    ["bindAddress", "127.0.0.1"],
  ])("refuses %s=%s, which cannot work on a swarm, before declaring anything", async (key, value) => {
    const err = await runProgram("swarm", { overrides: { [key]: value } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProgramError);
    expect((err as ProgramError).message).toContain(`flask-proxy:${key}:`);
    expect((err as ProgramError).registered.filter((r) => r.custom)).toEqual([]);
  });
});

describe("replicas on one engine", () => {
  test("prod with 3 replicas: three containers behind one alias, each with its own socket volume, nginx after all", async () => {
    const run = await runProgram("prod", { overrides: { replicas: "3" } });
    const apps = ["flask-container", "flask-container-2", "flask-container-3"].map((n) => find(run, n).inputs);
    // Named by the provider, a new name per generation (zero-downtime releases).
    expect(apps.map((a) => a.name)).toEqual([undefined, undefined, undefined]);
    expect(apps.map((a) => (a.networksAdvanced as { aliases: string[] }[])[0])).toEqual(
      [1, 2, 3].map(() => ({ name: "my-network-id", aliases: ["flask-app"] })),
    );
    const volumes = ["", "-2", "-3"].map((s) => `flask-proxy-prod-flask${s}-socket`);
    expect(apps.map((a) => a.volumes)).toEqual(
      volumes.map((v) => [{ volumeName: v, containerPath: "/srv/socket", readOnly: false }]),
    );
    expect(find(run, "nginx-container").inputs.volumes).toEqual([
      { volumeName: "flask-proxy-prod-nginx-conf", containerPath: "/etc/nginx/conf.d", readOnly: true },
      ...volumes.map((v, i) => ({ volumeName: v, containerPath: `/srv/sockets/${i + 1}`, readOnly: true })),
    ]);
    expect(find(run, "nginx-container").dependsOn.sort()).toEqual([
      "flask-container",
      "flask-container-2",
      "flask-container-3",
      "flask-cutover",
      "flask-cutover-2",
      "flask-cutover-3",
      "nginx-conf-file",
    ]);
  });

  test("prod over TCP with keepalive and a subnet: replicas on pinned addresses", async () => {
    const run = await runProgram("prod", {
      overrides: { replicas: "2", upstreamTransport: "tcp", upstreamKeepalive: "32", networkSubnet: "172.30.77.0/24" },
    });
    const apps = ["flask-container", "flask-container-2"].map((n) => find(run, n).inputs);
    expect(apps.map((a) => (a.networksAdvanced as { ipv4Address?: string }[])[0].ipv4Address)).toEqual([
      "172.30.77.10",
      "172.30.77.11",
    ]);
    expect(apps.map((a) => a.volumes)).toEqual([[], []]);
    // No socket volumes; nginx's conf volume is the only one.
    expect(run.resources.filter((r) => r.type === "docker:index/volume:Volume").map((r) => r.name)).toEqual(["nginx-conf"]);
  });

  test("one replica keeps the unsuffixed names, so scaling up replaces nothing", async () => {
    const run = await runProgram("prod");
    expect(
      run.resources
        .filter((r) => r.type === CONTAINER)
        .map((r) => r.name)
        .sort(),
    ).toEqual(["flask-container", "nginx-container", "nginx-netns"]);
  });

  test("a published app port with several replicas is refused, naming the key", () => {
    const all = stackConfig("dev", { replicas: "2" });
    expect(() => parseConfig(all, { stack: "dev", root: ROOT })).toThrow(ConfigError);
    expect(() => parseConfig(all, { stack: "dev", root: ROOT })).toThrow(
      /flask-proxy:appHostPort: cannot publish one host port for 2 replicas/,
    );
  });
});

describe("releases where two generations cannot run at once", () => {
  test("prod publishing the app's port: fixed name, deleted first, and the socket link still switched to the new container", async () => {
    const run = await runProgram("prod", { overrides: { appHostPort: "8081" } });
    expect(find(run, "flask-container").inputs.name).toBe("flask-proxy-prod-flask");
    const cutover = find(run, "flask-cutover").inputs as { switchCommand?: string[]; settleS: number };
    expect(cutover.switchCommand?.join(" ")).toContain("gunicorn.sock");
    expect(cutover.settleS).toBe(0);
  });

  test("dev (TCP, port published): no cutover, the provider's own wait as before", async () => {
    const run = await runProgram("dev");
    expect(run.resources.filter((r) => r.name.startsWith("flask-cutover"))).toEqual([]);
  });
});

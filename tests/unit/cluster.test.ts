import { SECRET_KEY_FILE_ENV } from "../../app/facts";
import { CLUSTER, CLUSTER_STACK, managerUrl, registryAddress } from "../../tools/cluster";
import { runProgram, stackConfig, type Declared, type ProgramRun } from "../support/program";

const SERVICE = "docker:index/service:Service";
const find = (run: ProgramRun, name: string): Declared => {
  const r = run.resources.find((x) => x.name === name);
  if (!r) throw new Error(`${name} not declared; have ${run.resources.map((x) => x.name).join(", ")}`);
  return r;
};
type TaskSpec = {
  containerSpec: {
    image: string;
    env: Record<string, string>;
    secrets?: { fileName: string; fileUid: string }[];
    sysctl?: Record<string, string>;
  };
  placement?: { constraints: string[] };
};

describe("cluster stack file and the stand-in cluster agree", () => {
  const c = stackConfig(CLUSTER_STACK);
  test("docker:host is the manager's engine and registry the cluster's registry", () => {
    expect(c["docker:host"]).toBe(managerUrl);
    expect(c["flask-proxy:registry"]).toBe(registryAddress);
  });
  test("the base images come from that registry (cluster:up pushes them there)", () => {
    for (const key of ["nginxImage", "pythonImage"]) expect(c[`flask-proxy:${key}`]).toMatch(new RegExp(`^${registryAddress}/`));
  });
  test("one manager, and the edge node is the one whose port the host publishes", () => {
    expect(CLUSTER.nodes.filter((n) => n.manager)).toHaveLength(1);
    expect(CLUSTER.nodes.filter((n) => n.edge)).toHaveLength(1);
    expect(CLUSTER.nodes.length).toBeGreaterThanOrEqual(Number(c["flask-proxy:replicas"]));
  });
});

describe("cluster program", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram(CLUSTER_STACK, { overrides: { registryCaFile: "cluster/registry.yml" } });
  });
  const spec = (name: string) => (find(run, name).inputs as { taskSpec: TaskSpec }).taskSpec;

  test("images are pushed to the registry; the app service and the nginx container run them by the digest the push returned", () => {
    for (const [image, runs] of [
      ["flask-image", (d: string) => expect(spec("flask-service").containerSpec.image).toBe(d)],
      ["nginx-image", (d: string) => expect(find(run, "nginx-container").inputs.image).toBe(d)],
    ] as const) {
      const img = find(run, image);
      expect(img.inputs.imageName).toMatch(new RegExp(`^${registryAddress}/`));
      expect(img.inputs.skipPush).toBe(false);
      runs(String(img.outputs.repoDigest));
      expect(find(run, `${image}-manifest`).inputs.ref).toBe(img.outputs.repoDigest);
    }
  });

  test("the secret key is a swarm secret file, readable by the app's user alone, and not in the env", () => {
    expect(run.resources.filter((r) => r.type === "docker:index/secret:Secret").map((r) => r.name)).toEqual(["flask-secret"]);
    const app = spec("flask-service").containerSpec;
    expect(Object.keys(app.env)).not.toContain("FLASK_SECRET_KEY");
    expect(Object.keys(app.env)).toContain(SECRET_KEY_FILE_ENV);
    expect(app.secrets).toEqual([expect.objectContaining({ fileName: "flask-secret-key", fileUid: "10001", fileMode: 0o400 })]);
  });

  test("nginx is containers on the engine deployed through (the edge, checked live); the app is left to swarm's spread", () => {
    expect(run.resources.filter((r) => r.type === SERVICE).map((r) => r.name)).toEqual(["flask-service"]);
    expect(
      run.resources
        .filter((r) => r.type === "docker:index/container:Container")
        .map((r) => r.name)
        .sort(),
    ).toEqual(["nginx-container", "nginx-netns"]);
    expect(spec("flask-service").placement).toBeUndefined();
  });

  test("nginx's network namespace (its holder's) times keepalive probes so a lost node's connection fails after 3 s; the app's is left alone", () => {
    expect(find(run, "nginx-netns").inputs.sysctls).toEqual({
      "net.ipv4.tcp_keepalive_time": "1",
      "net.ipv4.tcp_keepalive_intvl": "1",
      "net.ipv4.tcp_keepalive_probes": "2",
      "net.ipv4.tcp_migrate_req": "1",
    });
    expect(spec("flask-service").containerSpec.sysctl).toBeUndefined();
  });
});

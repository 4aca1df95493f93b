import { policies } from "../../policy/policies";
import { checkContainer, checkImageRef, checkService, DEFAULT_STRICT_STACKS, stackOfUrn } from "../../policy/rules";
import { runProgram, stackNames, type Declared, type ProgramRun } from "../support/program";

type Inputs = Record<string, unknown>;

/** Every violation the rules find in a program run. */
function violations(run: ProgramRun, strict: boolean): string[] {
  return run.resources.flatMap((r: Declared) => {
    switch (r.type) {
      case "docker:index/container:Container":
        return checkContainer(r.name, r.inputs, { strict });
      case "docker:index/service:Service":
        return checkService(r.name, r.inputs, { strict });
      case "docker:index/remoteImage:RemoteImage":
        return checkImageRef(r.name, r.inputs.name as string);
      case "docker:index/image:Image":
        return checkImageRef(r.name, r.inputs.imageName as string);
      default:
        return [];
    }
  });
}

describe("policy pack", () => {
  const runs = new Map<string, ProgramRun>();
  beforeAll(async () => {
    for (const stack of stackNames()) runs.set(stack, await runProgram(stack));
  });

  test("every committed stack passes, at the strictness the pack gives it", () => {
    expect(stackNames()).toEqual(expect.arrayContaining(["dev", "prod", "swarm"]));
    for (const [stack, run] of runs) expect([stack, violations(run, DEFAULT_STRICT_STACKS.includes(stack))]).toEqual([stack, []]);
  });

  test("prod with each tls mode passes the strict rules: the stack CA's, the certificate agent's and its seed's containers too", async () => {
    const modes: Record<string, string>[] = [{ tls: "internal" }, { tls: "acme", domain: "app.example.com" }];
    for (const overrides of modes) {
      const run = await runProgram("prod", { overrides });
      expect([overrides.tls, run.outputs.error, violations(run, true)]).toEqual([overrides.tls, undefined, []]);
    }
  });

  test("dev would fail the production rules (so strictness is doing something)", () => {
    const found = violations(runs.get("dev")!, true);
    expect(found).toEqual(
      expect.arrayContaining([
        "container flask-container publishes the app port 5000 (on 127.0.0.1:8080); only nginx may be published",
        "container nginx-container needs readOnly: true (read-only root filesystem)",
      ]),
    );
  });

  // Each variant breaks one rule on the real prod declaration and must be caught with its message.
  const prodApp = () => structuredClone(runs.get("prod")!.resources.find((r) => r.name === "flask-container")!.inputs) as Inputs;
  test.each<[string, (c: Inputs) => void, string]>([
    ["privileged", (c) => (c.privileged = true), "container app is privileged"],
    [
      "latest tag",
      (c) => (c.image = "nginx:latest"),
      'container app uses "nginx:latest": pin the image to a tag other than latest',
    ],
    ["untagged image", (c) => (c.image = "nginx"), 'container app uses "nginx": pin the image to a tag other than latest'],
    [
      "app published on 0.0.0.0",
      (c) => (c.ports = [{ internal: 5000, external: 5000, ip: "0.0.0.0" }]),
      "container app publishes the app port 5000 (on 0.0.0.0:5000); only nginx may be published",
    ],
    ["writable root", (c) => (c.readOnly = false), "container app needs readOnly: true (read-only root filesystem)"],
    ["capabilities kept", (c) => (c.capabilities = { drops: ["NET_RAW"] }), 'container app needs capabilities.drops: ["ALL"]'],
    ["no no-new-privileges", (c) => (c.securityOpts = []), 'container app needs securityOpts: ["no-new-privileges:true"]'],
  ])("prod app with %s is refused", (_, breakIt, message) => {
    const c = prodApp();
    expect(checkContainer("app", c, { strict: true })).toEqual([]);
    breakIt(c);
    expect(checkContainer("app", c, { strict: true })).toContain(message);
  });

  test("outside strict stacks the app port may be published on loopback, never on 0.0.0.0", () => {
    const c = prodApp();
    c.ports = [{ internal: 5000, external: 8080, ip: "127.0.0.1" }];
    expect(checkContainer("app", c, { strict: false })).toEqual([]);
    c.ports = [{ internal: 5000, external: 8080 }];
    expect(checkContainer("app", c, { strict: false })).toEqual([
      "container app publishes the app port 5000 on every interface (0.0.0.0)",
    ]);
  });

  test("a swarm app service that publishes its port or runs writable is refused", () => {
    const s = structuredClone(runs.get("swarm")!.resources.find((r) => r.name === "flask-service")!.inputs) as {
      taskSpec: { containerSpec: Inputs };
      endpointSpec: { ports: { targetPort: number; publishedPort: number }[] };
    };
    s.endpointSpec.ports = [{ targetPort: 5000, publishedPort: 5000 }];
    s.taskSpec.containerSpec.readOnly = false;
    expect(checkService("app", s, { strict: true })).toEqual([
      "service app publishes the app port 5000 as 5000; only nginx may be published",
      "service app needs taskSpec.containerSpec.readOnly: true",
    ]);
  });

  test("image IDs and digests count as pinned", () => {
    expect(checkImageRef("x", `sha256:${"a".repeat(64)}`)).toEqual([]);
    expect(checkImageRef("x", `nginx@sha256:${"b".repeat(64)}`)).toEqual([]);
    expect(checkImageRef("x", "registry.example.com:5000/team/nginx:1.27.3")).toEqual([]);
    expect(checkImageRef("x", "registry.example.com:5000/team/nginx")).toHaveLength(1);
  });

  test("the pack declares its policies, and reads the stack from the URN", () => {
    expect(policies.map((p) => p.name)).toEqual(["containers-hardened", "services-hardened", "images-pinned"]);
    expect(stackOfUrn("urn:pulumi:prod::flask-proxy::docker:index/container:Container::flask-container")).toBe("prod");
  });
});

// certs/certAgent.ts under Pulumi's mocks: what the lead wires in declares the agent as the agent needs it.
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";

const declared = new Map<string, Record<string, unknown>>();
beforeAll(async () => {
  await pulumi.runtime.setMocks(
    {
      newResource: (args) => {
        declared.set(args.name, args.inputs as Record<string, unknown>);
        return {
          id: `${args.name}-id`,
          state: { ...args.inputs, name: args.inputs.name ?? args.name, repoDigest: "sha256:abc", imageId: "sha256:abc" },
        };
      },
      call: (args) => args.inputs,
    },
    "flask-proxy",
    "prod",
    false,
  );
});

test("agent: nginx's PID namespace by ID, no capability, the three volumes, the ACME settings", async () => {
  // Loaded after setMocks: resources declared at load time would go to no engine.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const certs = require("../../certs/certAgent") as typeof import("../../certs/certAgent");
  const labels = { "org.flask-proxy.stack": "prod" };
  const store = certs.declareCertStore("certs", {
    project: "flask-proxy",
    stack: "prod",
    labels,
    domains: ["app.example.com"],
    issuer: { kind: "acme", server: certs.LETS_ENCRYPT_DIRECTORY, email: "ops@example.com" },
  });
  const network = new docker.Network("net", { name: "n" });
  const nginx = new docker.Container("nginx-container", { image: "nginx", name: "flask-proxy-prod-nginx" });
  certs.declareCertAgent("cert-agent", {
    project: "flask-proxy",
    stack: "prod",
    labels,
    store,
    nginx,
    network,
    domains: ["app.example.com"],
  });
  await new Promise((r) => setTimeout(r, 200));
  const agent = declared.get("cert-agent")!;
  expect(agent).toMatchObject({
    name: "flask-proxy-prod-cert-agent",
    pidMode: "container:nginx-container-id",
    capabilities: { drops: ["ALL"] },
    readOnly: true,
    restart: "unless-stopped",
  });
  // `pulumi up` waits on the agent's own health command (certs/issuance.ts), not on the provider's wait.
  expect(agent).not.toHaveProperty("wait");
  expect(declared.get("cert-agent-issued")).toMatchObject({
    containerId: "cert-agent-id",
    domains: ["app.example.com"],
    timeoutS: 180,
  });
  expect(agent.envs).toEqual([
    `ACME_SERVER=${certs.LETS_ENCRYPT_DIRECTORY}`,
    "ACME_EMAIL=ops@example.com",
    "ACME_DOMAINS=app.example.com",
  ]);
  expect(agent.volumes).toEqual([
    { volumeName: "flask-proxy-prod-certs-data", containerPath: "/data" },
    { volumeName: "flask-proxy-prod-certs-certs", containerPath: "/certs" },
    { volumeName: "flask-proxy-prod-certs-webroot", containerPath: "/webroot" },
  ]);
  expect(declared.get("certs-seed")).toMatchObject({ command: ["seed"], attach: true, mustRun: false, networkMode: "none" });
  const nginxMounts = await new Promise((resolve) => pulumi.all(store.nginxVolumes.map((v) => v.volumeName)).apply(resolve));
  expect(nginxMounts).toEqual(["flask-proxy-prod-certs-certs", "flask-proxy-prod-certs-webroot"]);
});

test("the first-certificate gate reads agent.sh's health: issued, still under way, refused by the CA, or a renewal failing", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { issuanceState } = require("../../certs/issuance") as typeof import("../../certs/issuance");
  const loaded = "no certificate from the CA loaded yet: ";
  expect(issuanceState(0, "ok: certificate valid until Dec  2 10:00:00 2026 GMT, renewal due in 30 s")).toBe("issued");
  expect(issuanceState(1, `${loaded}starting: the first attempt is under way`)).toBe("pending");
  expect(issuanceState(1, "no status yet")).toBe("pending");
  const failing = (valid: string) =>
    `${loaded}failing since 2026-12-01T21:00:00Z (1 attempts); certificate: ${valid}; last error: acme: error: 403 :: unauthorized`;
  expect(issuanceState(1, failing("none yet"))).toBe("refused");
  expect(issuanceState(1, failing("none loaded yet, the stored one valid until Dec  2 10:00:00 2026 GMT"))).toBe("refused");
  expect(issuanceState(1, failing("the installed one, valid until Dec  2 10:00:00 2026 GMT"))).toBe("renewing");
  // The words the gate matches are agent.sh's own.
  const script = fs.readFileSync(path.join(__dirname, "../../certs/agent.sh"), "utf8");
  for (const words of [
    "failing since $since ($failures attempts); certificate: $valid",
    'valid="none yet"',
    'valid="none loaded yet, the stored one',
    'valid="the installed one',
  ])
    expect(script).toContain(words);
});

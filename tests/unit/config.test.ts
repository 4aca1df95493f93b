import { CONFIG_KEYS, ConfigError, isPinned, parseConfig, type RawConfig } from "../../infra/config";
import { hostAddress } from "../../infra/naming";
import { ProgramError, ROOT, runProgram, stackConfig } from "../support/program";

const parse = (stack: string, overrides: Record<string, string>) =>
  parseConfig(stackConfig(stack, overrides), { stack, root: ROOT });
function problems(stack: string, overrides: Record<string, string>): string[] {
  try {
    parse(stack, overrides);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

// At least one bad value for every key the program reads; each must be refused naming that key.
const BAD: Record<keyof RawConfig, string[]> = {
  nginxImage: ["", "Nginx:1.13", "nginx:has space"],
  pythonImage: ["", "python::3"],
  appImageRepository: ["flask:1", "", "UPPER"],
  appVersion: ["", "has space", "-leading-dash"],
  appKeepBuilds: ["0", "21", "two"],
  requirePinnedImages: ["yes", "1"],
  appAlias: ["Flask_App", "", "-x"],
  appPort: ["80", "70000", "abc", "5000.5"],
  appServer: ["uwsgi", ""],
  flaskReload: ["on"],
  gunicornWorkers: ["0", "65", "two"],
  gunicornThreads: ["0", "x"],
  appCodeMount: ["does/not/exist", "app/main.py"],
  appHostPort: ["-1", "65536", "http"],
  httpPort: ["0", "99999", "eighty", ""],
  tls: ["on", "ACME", "OFF", ""],
  domain: ["", "Example.com", "a..b", "-x.example", "exa mple.com"],
  httpsPort: ["0", "65536", "https"],
  tlsCertificate: ["-----BEGIN CERTIFICATE-----"],
  tlsPrivateKey: ["-----BEGIN PRIVATE KEY-----"],
  internalLeafLifetime: ["90", "1m", "826d", "0d", "12 h", "1.5h", ""],
  acmeServer: ["http://acme.example/directory", "acme.example/directory", ""],
  // Refused on their own (not an address, a profile name), or with tls other than acme: only applies there.
  acmeEmail: ["ops", "ops@example.com"],
  acmeCaFile: ["does/not/exist.pem", "app/main.py"],
  acmeProfile: ["Short Lived", "shortlived"],
  bindAddress: ["localhost", "256.0.0.1", ""],
  nginxConfigFile: ["does/not/exist.conf"],
  proxyHostHeader: [
    "",
    "two words",
    'x"; return 200; #',
    "example.com\\",
    "a$b",
    "$Host",
    "$nosuchvar",
    "$http_",
    "$flask_upstream",
  ],
  forwardedHeaders: ["maybe"],
  hardened: ["TRUE!"],
  nginxAccessLog: ["syslog"],
  nginxAccessLogFormat: ["JSON", "main", ""],
  nginxRequestId: ["yes"],
  gunicornAccessLog: ["1"],
  metricsPort: ["-1", "70000", "metrics"],
  nginxExporterImage: ["", "Nginx/Exporter:1"],
  nginxWorkerProcesses: ["-1", "65", "auto"],
  upstreamReadTimeout: ["0", "3s"],
  upstreamDeadPeerTimeout: ["1", "-1", "129", "3s"],
  upstreamKeepalive: ["-1", "5000"],
  upstreamTransport: ["udp", "UNIX", ""],
  networkSubnet: ["10.0.0.0", "10.0.0.0/8", "300.1.1.0/24"],
  restartPolicy: ["sometimes"],
  healthchecks: ["nope"],
  waitForHealthy: ["2"],
  appMemoryMb: ["-5", "lots"],
  nginxMemoryMb: ["1e3"],
  appCpus: ["-1", "many", "100"],
  nginxCpus: ["0.125", "0.05"],
  appMaxProcesses: ["-1"],
  replicas: ["0", "17"],
  target: ["kubernetes"],
  swarmEndpointMode: ["ipvs"],
  swarmPublishMode: ["mesh"],
  swarmEdgeLabel: ["Edge Node", "-x", "org.flask-proxy.edge"],
  swarmSecretKey: ["yes", "true"],
  registry: ["myuser", "https://registry.example", "registry.example/path"],
  registryCaFile: ["does/not/exist.pem", "cluster/registry.yml"],
  flaskSecretKey: ["too-short"],
};

describe("stack config validation", () => {
  test("the table covers every key", () => {
    expect(Object.keys(BAD).sort()).toEqual([...CONFIG_KEYS].sort());
  });

  // prod, except where prod's own settings would add a second, cross-key problem.
  const stackFor = (key: keyof RawConfig) => (key === "nginxConfigFile" || key === "appCodeMount" ? "dev" : "prod");
  test.each(CONFIG_KEYS.flatMap((key) => BAD[key].map((value) => [key, value] as const)))(
    "%s = %j is refused, naming the key",
    (key, value) => {
      const found = problems(stackFor(key), { [key]: value });
      expect(found.length).toBeGreaterThan(0);
      expect(found.every((p) => p.startsWith(`flask-proxy:${key}:`))).toBe(true);
    },
  );

  test.each([
    [
      "two containers on one host port",
      "dev",
      { appHostPort: "80" },
      "flask-proxy:appHostPort: host port 80 is already taken by httpPort",
    ],
    ["waiting without healthchecks", "prod", { healthchecks: "false" }, "flask-proxy:waitForHealthy: needs healthchecks: true"],
    ["reload with gunicorn", "prod", { flaskReload: "true" }, "flask-proxy:flaskReload: only applies to appServer: flask-dev"],
    [
      "keepalive over TCP without a subnet",
      "prod",
      { upstreamTransport: "tcp", upstreamKeepalive: "32" },
      "flask-proxy:upstreamKeepalive: needs networkSubnet",
    ],
    [
      "dead-peer probes without hardening",
      "dev",
      { upstreamDeadPeerTimeout: "3" },
      "flask-proxy:upstreamDeadPeerTimeout: needs hardened: true",
    ],
    [
      "dead-peer probes over unix sockets",
      "prod",
      { upstreamDeadPeerTimeout: "3" },
      "flask-proxy:upstreamDeadPeerTimeout: needs upstreamTransport: tcp",
    ],
    [
      "dead-peer probes as slow as the read timeout",
      "swarm",
      { upstreamDeadPeerTimeout: "30" },
      "flask-proxy:upstreamDeadPeerTimeout: must be less than upstreamReadTimeout (30)",
    ],
    [
      "unix sockets with the flask dev server",
      "dev",
      { upstreamTransport: "unix" },
      "flask-proxy:upstreamTransport: unix needs appServer: gunicorn",
    ],
    [
      "unix sockets on swarm",
      "swarm",
      { upstreamTransport: "unix" },
      "flask-proxy:upstreamTransport: unix shares a volume between containers on one host; not allowed with target: swarm",
    ],
    [
      "worker count with a mounted conf",
      "dev",
      { nginxWorkerProcesses: "2" },
      "flask-proxy:nginxWorkerProcesses: is baked into the nginx image",
    ],
    [
      "latest in prod",
      "prod",
      { nginxImage: "nginx:latest" },
      'flask-proxy:nginxImage: must be pinned to a tag other than latest when requirePinnedImages is true (got "nginx:latest")',
    ],
    ["untagged in prod", "prod", { pythonImage: "python" }, "flask-proxy:pythonImage: must be pinned"],
    [
      "a subnet too small for the pinned replicas",
      "prod",
      { networkSubnet: "10.9.0.0/28", replicas: "6" },
      "flask-proxy:networkSubnet: 10.9.0.0/28 is too small to pin 6 app address(es)",
    ],
    [
      "gunicorn's access log with flask run",
      "dev",
      { gunicornAccessLog: "true" },
      "flask-proxy:gunicornAccessLog: only applies to appServer: gunicorn",
    ],
    ["metrics with flask run", "dev", { metricsPort: "9145" }, "flask-proxy:metricsPort: needs appServer: gunicorn"],
    ["metrics with 2 replicas", "prod", { metricsPort: "9145", replicas: "2" }, "flask-proxy:metricsPort: needs replicas: 1"],
    ["metrics on nginx's port", "prod", { metricsPort: "8000" }, "flask-proxy:metricsPort: host port 8000 is already taken"],
    [
      "metrics on swarm",
      "swarm",
      { metricsPort: "9145", replicas: "1" },
      "flask-proxy:metricsPort: must be 0 with target: swarm",
    ],
    ["a typo'd key", "dev", { htpPort: "81" }, "flask-proxy:htpPort: unknown key (did you mean flask-proxy:httpPort?)"],
    [
      "a typo'd key",
      "prod",
      { gunicornWorker: "4" },
      "flask-proxy:gunicornWorker: unknown key (did you mean flask-proxy:gunicornWorkers?)",
    ],
  ])("cross-key rule: %s", (_, stack, overrides, message) => {
    expect(problems(stack, overrides).join("\n")).toContain(message);
  });

  test("a variable nginx does not define is refused before nginx -t, naming the key and the variable", () => {
    expect(problems("prod", { proxyHostHeader: "$nosuchvar" })).toEqual([
      "flask-proxy:proxyHostHeader: unknown nginx variable $nosuchvar (nginx would refuse the conf): use one of " +
        'nginx\'s http core, proxy or realip variables, such as $host, $http_host, $server_name or $proxy_host (got "$nosuchvar")',
    ]);
    // A value that is no variable name at all gets the one message that says what is allowed.
    expect(problems("prod", { proxyHostHeader: "$Host" })).toEqual([
      'flask-proxy:proxyHostHeader: must be a host name (optionally :port) or an nginx variable such as $host (got "$Host")',
    ]);
  });

  test("every bad key is reported at once, not just the first", () => {
    expect(problems("dev", { httpPort: "0", appPort: "x", restartPolicy: "never" }).map((p) => p.split(":")[1])).toEqual(
      expect.arrayContaining(["httpPort", "appPort", "restartPolicy"]),
    );
  });

  test("rules across keys and on the file system are judged in the same pass as type errors", () => {
    const found = problems("dev", { httpPort: "x", appCodeMount: "does/not/exist", appHostPort: "80", replicas: "2" });
    expect(found.map((p) => p.split(":")[1])).toEqual(["httpPort", "appCodeMount", "appHostPort"]);
    // appHostPort vs httpPort is not judged while httpPort itself is invalid; vs replicas it is.
    expect(found.filter((p) => p.includes("already taken by httpPort"))).toEqual([]);
    expect(found.join("\n")).toContain("cannot publish one host port for 2 replicas");
  });

  test.each<[string, string, Record<string, string>]>([
    ["latest where pinning is not required", "dev", { nginxImage: "nginx:latest" }],
    ["a registry with a port", "prod", { appImageRepository: "localhost:5000/team/flask" }],
    ["a host header with a port", "prod", { proxyHostHeader: "example.com:8443" }],
    ...[
      "$host",
      "$http_host",
      "$server_name",
      "$proxy_host",
      "$remote_addr",
      "$http_x_forwarded_host",
      "$realip_remote_addr",
    ].map((v): [string, string, Record<string, string>] => [`the nginx variable ${v}`, "prod", { proxyHostHeader: v }]),
    // Defined since nginx 1.23.2 (the stand-in's 1.22 refuses it: tests/e2e/reload.test.ts).
    ["a PROXY protocol TLV", "prod", { proxyHostHeader: "$proxy_protocol_tlv_authority" }],
    ["the largest replica count a /28 pins", "prod", { networkSubnet: "10.9.0.0/28", replicas: "5" }],
    ["keepalive over unix sockets, no subnet needed", "prod", { upstreamKeepalive: "16" }],
    [
      "keepalive over TCP with a subnet",
      "prod",
      { upstreamTransport: "tcp", upstreamKeepalive: "32", networkSubnet: "172.30.77.0/24" },
    ],
    ["dead-peer probes over TCP, shorter than the read timeout", "swarm", { upstreamDeadPeerTimeout: "29" }],
    ["keys of other namespaces (left to their providers)", "prod", { "docker:host": "ssh://deploy@example.com" }],
  ])("accepted: %s", (_, stack, overrides) => {
    expect(problems(stack, overrides)).toEqual([]);
  });

  test("a bad value stops the program before any resource is declared", async () => {
    const err = await runProgram("prod", { overrides: { httpPort: "99999" } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProgramError);
    expect((err as ProgramError).message).toContain('flask-proxy:httpPort: must be at most 65535 (got "99999")');
    expect((err as ProgramError).registered.filter((r) => r.custom)).toEqual([]);
  });

  test("helpers: pinned tags and subnet host addresses", () => {
    expect([isPinned("nginx"), isPinned("nginx:latest"), isPinned("nginx:1.27.3"), isPinned("host:5000/nginx")]).toEqual([
      false,
      false,
      true,
      false,
    ]);
    expect(hostAddress("172.30.77.0/24", 10)).toBe("172.30.77.10");
    expect(hostAddress("10.1.2.128/25", 3)).toBe("10.1.2.131");
    expect(() => hostAddress("10.0.0.0/28", 15)).toThrow();
  });
});

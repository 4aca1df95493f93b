// HTTPS at the edge: the certificate checks (before anything is declared), the TLS listener nginx renders for
// each version, and what the program declares for `certificate` and `internal`.
import { ConfigError, parseConfig } from "../../infra/config";
import { createRootCa, issue, leafNames, leafSubjectAltName, type CertifiedKey } from "../../infra/tls";
import {
  HSTS_MAX_AGE_S,
  nginxTls,
  nginxVersion,
  servingListens,
  stackNginxConf,
  TLS_CERT_FILE,
  TLS_DIR,
  TLS_KEY_FILE,
} from "../../nginx/conf";
import { HANDOVER_HEALTHCHECK } from "../../nginx/handover";
import { AGENT_DIRS, goDuration } from "../../certs/certAgent";
import { ACME_WEBROOT } from "../../nginx/conf";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { ROOT, runProgram, stackConfig, type ProgramRun } from "../support/program";

const DAY = 86_400_000;
let root: CertifiedKey;
let intermediate: CertifiedKey;
let leaf: CertifiedKey;
let otherKey: string;

beforeAll(async () => {
  root = await createRootCa({ commonName: "test root", days: 30 });
  intermediate = await issue(root, { commonName: "test intermediate", days: 30, dnsNames: [], ips: [], ca: true });
  leaf = await issue(intermediate, { commonName: "localhost", days: 10, ...leafNames("localhost") });
  otherKey = (await issue(intermediate, { commonName: "other", days: 10, ...leafNames("localhost") })).keyPem;
});

const chain = () => leaf.certPem + intermediate.certPem;
const withTls = (overrides: Record<string, string>, stack = "prod") =>
  stackConfig(stack, { tls: "certificate", tlsCertificate: chain(), tlsPrivateKey: leaf.keyPem, ...overrides });
function problems(overrides: Record<string, string>, stack = "prod"): string[] {
  try {
    parseConfig(withTls(overrides, stack), { stack, root: ROOT });
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  return [];
}

describe("tls: certificate is checked before anything is declared, each refusal naming its key", () => {
  test("a leaf and its chain for the domain, with its key, is accepted and served as a chain (two PEM blocks)", () => {
    expect(problems({})).toEqual([]);
    const cfg = parseConfig(withTls({}), { stack: "prod", root: ROOT });
    expect(cfg.nginx.tls?.certificate?.certPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(cfg.nginx.tls).toMatchObject({ mode: "certificate", domain: "localhost", httpsPort: 8443 });
  });

  test("a key that does not match the certificate", () => {
    expect(problems({ tlsPrivateKey: otherKey })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsPrivateKey: does not match tlsCertificate/),
    ]);
  });

  test("an expired certificate", async () => {
    const old = await issue(intermediate, {
      commonName: "old",
      days: 1,
      notBefore: new Date(Date.now() - 3 * DAY),
      ...leafNames("localhost"),
    });
    expect(problems({ tlsCertificate: old.certPem + intermediate.certPem, tlsPrivateKey: old.keyPem })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsCertificate: the certificate expired on /),
    ]);
  });

  test("a certificate not yet valid", async () => {
    const early = await issue(intermediate, {
      commonName: "x",
      days: 5,
      notBefore: new Date(Date.now() + DAY),
      ...leafNames("localhost"),
    });
    expect(problems({ tlsCertificate: early.certPem, tlsPrivateKey: early.keyPem })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsCertificate: the certificate is not valid before /),
    ]);
  });

  test("a certificate that does not cover the domain (names what it is for)", () => {
    expect(problems({ domain: "app.example.com" })).toEqual([
      'flask-proxy:tlsCertificate: does not cover domain "app.example.com" (it is for DNS:localhost, IP Address:127.0.0.1)',
    ]);
    // An IP domain is checked against the IP names.
    expect(problems({ domain: "127.0.0.1" })).toEqual([]);
    expect(problems({ domain: "127.0.0.2" })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsCertificate: does not cover domain "127.0.0.2"/),
    ]);
  });

  test("a chain out of order, text that is no PEM, a key that is no key", () => {
    expect(problems({ tlsCertificate: intermediate.certPem + leaf.certPem })).toEqual(
      expect.arrayContaining([expect.stringMatching(/^flask-proxy:tlsCertificate: certificate 2 did not issue certificate 1/)]),
    );
    expect(problems({ tlsCertificate: "hello" })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsCertificate: holds no PEM certificate/),
    ]);
    expect(problems({ tlsPrivateKey: "hello" })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsPrivateKey: is not a PEM private key/),
    ]);
  });

  test("neither value is ever echoed in a message", () => {
    const all = [
      ...problems({ tlsPrivateKey: "secret-key-text" }),
      ...problems({ tls: "off", tlsPrivateKey: "secret-key-text" }),
    ];
    expect(all.length).toBeGreaterThan(0);
    expect(all.join("\n")).not.toContain("secret-key-text");
    expect(all.join("\n")).not.toContain(leaf.certPem.split("\n")[1]);
  });

  test("certificate mode needs both; other modes take neither", () => {
    expect(problems({ tlsCertificate: "", tlsPrivateKey: "" })).toEqual([
      expect.stringMatching(/^flask-proxy:tlsCertificate: is required with tls: certificate/),
      expect.stringMatching(/^flask-proxy:tlsPrivateKey: is required with tls: certificate/),
    ]);
    expect(problems({ tls: "internal" })).toEqual([
      "flask-proxy:tlsCertificate: only applies to tls: certificate",
      "flask-proxy:tlsPrivateKey: only applies to tls: certificate",
    ]);
  });

  test("swarm (and so cluster) is accepted; TCP upstreams need gunicorn and no published app port; a taken port is refused", () => {
    expect(problems({ tls: "internal", tlsCertificate: "", tlsPrivateKey: "" }, "swarm")).toEqual([]);
    expect(problems({}, "swarm")).toEqual([]);
    expect(problems({ upstreamTransport: "tcp" })).toEqual([]);
    for (const tcp of [{ appHostPort: "8081" }, { appServer: "flask-dev" }] as Record<string, string>[]) {
      expect(problems({ upstreamTransport: "tcp", ...tcp })).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^flask-proxy:tls: with upstreamTransport: tcp needs appServer: gunicorn and appHostPort: 0/),
        ]),
      );
    }
    expect(problems({ httpsPort: "8000" })).toEqual([
      "flask-proxy:httpsPort: host port 8000 is already taken by httpPort, appHostPort or metricsPort",
    ]);
  });

  test("over TCP the app takes X-Forwarded-Proto from the stack's network, and only then", async () => {
    const env = async (overrides: Record<string, string>, stack = "prod") => {
      const run = await runProgram(stack, {
        overrides: { tls: "certificate", tlsCertificate: chain(), tlsPrivateKey: leaf.keyPem, ...overrides },
      });
      const app = run.resources.find((r) => r.name === "flask-container" || r.name === "flask-service")!;
      const c = app.inputs as { envs?: string[]; taskSpec?: { containerSpec: { env: Record<string, string> } } };
      return c.envs ?? Object.entries(c.taskSpec!.containerSpec.env).map(([k, v]) => `${k}=${v}`);
    };
    expect(await env({ upstreamTransport: "tcp" })).toContain("FORWARDED_ALLOW_IPS=*");
    expect(await env({}, "swarm")).toContain("FORWARDED_ALLOW_IPS=*");
    expect((await env({})).join(" ")).not.toContain("FORWARDED_ALLOW_IPS");
    expect((await env({ tls: "off", tlsCertificate: "", tlsPrivateKey: "", upstreamTransport: "tcp" })).join(" ")).not.toContain(
      "FORWARDED_ALLOW_IPS",
    );
  }, 120_000);
});

describe("tls: acme is checked before anything is declared", () => {
  const acme = { tls: "acme", tlsCertificate: "", tlsPrivateKey: "", domain: "app.example.com" };
  const caDir = fs.mkdtempSync(path.join(os.tmpdir(), "tls-unit-"));
  afterAll(() => fs.rmSync(caDir, { recursive: true, force: true }));

  test("the directory, the contact and a CA file for the ACME server's own HTTPS reach the typed config", () => {
    const caFile = path.join(caDir, "acme-ca.pem");
    fs.writeFileSync(caFile, root.certPem);
    const cfg = parseConfig(
      withTls({ ...acme, acmeServer: "https://acme.example/dir", acmeEmail: "ops@example.com", acmeCaFile: caFile }),
      { stack: "prod", root: ROOT },
    );
    expect(cfg.nginx.tls).toMatchObject({
      mode: "acme",
      domain: "app.example.com",
      acme: { server: "https://acme.example/dir", email: "ops@example.com", caPem: root.certPem },
    });
    // Let's Encrypt's production directory by default (Pulumi.yaml).
    expect(parseConfig(withTls(acme), { stack: "prod", root: ROOT }).nginx.tls?.acme).toEqual({
      server: "https://acme-v02.api.letsencrypt.org/directory",
    });
  });

  test("a domain no CA validates, a CA file without certificates, a plain-HTTP directory; acme's keys in other modes", () => {
    expect(problems({ ...acme, domain: "localhost" })).toEqual([
      expect.stringMatching(/^flask-proxy:domain: must be a DNS name an ACME CA can reach over HTTP-01 .*\(got localhost\)$/),
    ]);
    expect(problems({ ...acme, domain: "127.0.0.1" })).toEqual([
      expect.stringMatching(/^flask-proxy:domain: must be a DNS name/),
    ]);
    const notPem = path.join(caDir, "not.pem");
    fs.writeFileSync(notPem, "no certificate here\n");
    expect(problems({ ...acme, acmeCaFile: notPem })).toEqual([
      `flask-proxy:acmeCaFile: ${notPem} is not a readable file of PEM certificates`,
    ]);
    expect(problems({ ...acme, acmeServer: "http://acme.example/dir" })).toEqual([
      'flask-proxy:acmeServer: must be an https:// URL (the ACME directory) (got "http://acme.example/dir")',
    ]);
    expect(problems({ ...acme, acmeProfile: "shortlived" })).toEqual([]);
    expect(problems({ acmeEmail: "ops@example.com", acmeProfile: "shortlived" })).toEqual([
      "flask-proxy:acmeEmail: only applies to tls: acme",
      "flask-proxy:acmeProfile: only applies to tls: acme",
    ]);
    expect(problems({ ...acme }, "swarm")).toEqual([]);
  });
});

describe("the TLS listener nginx renders", () => {
  const parse = (overrides: Record<string, string>) =>
    parseConfig(stackConfig("prod", { tls: "internal", ...overrides }), { stack: "prod", root: ROOT });
  // Listen lines in the conf itself, as a nginx that never hands over (a mounted conf) reads them.
  const render = (overrides: Record<string, string>) => stackNginxConf(parse(overrides), undefined, undefined, false);
  /** What a handing-over nginx writes into its own listen file for the TLS server. */
  const httpsListen = (overrides: Record<string, string>, imageVersion?: string) => {
    const cfg = parse(overrides);
    return servingListens(nginxTls(cfg.nginx.baseImage, cfg.nginx.tls!, imageVersion)).https;
  };

  test("the version comes from the image tag; a tag without one is taken for a current nginx", () => {
    expect(nginxVersion("nginx:1.27.3")).toEqual([1, 27, 3]);
    expect(nginxVersion("nginx:1.25-alpine")).toEqual([1, 25, 0]);
    expect(nginxVersion("registry.example:5000/nginx:1.22.1")).toEqual([1, 22, 1]);
    expect(nginxVersion("nginx:latest")).toBeUndefined();
    expect(nginxVersion("nginx")).toBeUndefined();
  });

  test("the version the image declares (NGINX_VERSION) outranks its tag: a 1.22 under a 1.27.3 tag gets the listen parameter", () => {
    const cfg = parse({ nginxImage: "nginx:1.27.3" });
    expect(stackNginxConf(cfg, undefined, "1.22.1", false)).toContain("    listen 443 ssl http2;");
    expect(stackNginxConf(cfg, undefined, "1.22.1")).not.toContain("http2 on;");
    expect(stackNginxConf(cfg, undefined, "1.27.3")).toContain("    http2 on;");
    expect(httpsListen({ nginxImage: "nginx:1.27.3" }, "1.22.1")).toBe("listen 443 ssl http2 reuseport;");
    expect(httpsListen({ nginxImage: "nginx:1.27.3" }, "1.27.3")).toBe("listen 443 ssl reuseport;");
  });

  test("HTTP/2: `http2 on;` from 1.25.1 (and for unversioned tags), the listen parameter before", () => {
    expect(render({ nginxImage: "nginx:1.27.3" })).toMatch(/^ {4}listen 443 ssl;\n {4}http2 on;$/m);
    expect(render({ nginxImage: "nginx:1.25.1" })).toContain("    http2 on;");
    expect(render({ nginxImage: "nginx:stable" })).toContain("    http2 on;");
    const old = render({ nginxImage: "nginx:1.25.0" });
    expect(old).toContain("    listen 443 ssl http2;");
    expect(old).not.toContain("http2 on");
  });

  test("TLS 1.2 and 1.3 only (1.2 alone on 1.13.7's OpenSSL 1.1.0); intermediate ciphers; a shared session cache", () => {
    const conf = render({ nginxImage: "nginx:1.22.1" });
    expect(conf).toContain("    ssl_protocols TLSv1.2 TLSv1.3;");
    expect(render({ nginxImage: "nginx:1.13.7", requirePinnedImages: "false" })).toContain("    ssl_protocols TLSv1.2;");
    expect(conf).toMatch(/ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:[A-Z0-9:-]+;/);
    expect(conf).not.toMatch(/ssl_ciphers [^;]*(CBC|SHA1\b|RC4|3DES|[ :]AES|[ :]DHE-)/);
    expect(conf).toContain("    ssl_session_cache shared:MozSSL:10m;");
    expect(conf).toContain("    ssl_session_timeout 1d;");
    // Tickets: off where nginx never rotates their key (before 1.23.2), nginx's own rotation after.
    expect(conf).toContain("    ssl_session_tickets off;");
    expect(render({ nginxImage: "nginx:1.27.3" })).not.toContain("ssl_session_tickets");
    expect(conf).toContain(`    ssl_certificate ${TLS_DIR}/${TLS_CERT_FILE};`);
    expect(conf).toContain(`    ssl_certificate_key ${TLS_DIR}/${TLS_KEY_FILE};`);
  });

  test("HSTS of two years in certificate mode; none in internal mode", () => {
    const hsts = `add_header Strict-Transport-Security "max-age=${HSTS_MAX_AGE_S}" always;`;
    expect(HSTS_MAX_AGE_S).toBeGreaterThanOrEqual(365 * 86400);
    expect(render({})).not.toContain("Strict-Transport-Security");
    expect(stackNginxConf(parseConfig(withTls({}), { stack: "prod", root: ROOT }))).toContain(hsts);
  });

  test("plain HTTP redirects to the same path and query on the published HTTPS port, but for ACME and health", () => {
    const conf = render({});
    const plain = conf.slice(conf.indexOf("server {"), conf.indexOf("listen 443"));
    expect(plain).toContain("    listen 80;");
    expect(plain).toContain("        return 301 https://$host:8443$request_uri;");
    expect(plain).toMatch(/location = \/nginx-health \{[^}]*return 200/);
    expect(plain).toMatch(/location \^~ \/\.well-known\/acme-challenge\/ \{\n\s+alias \/etc\/nginx\/conf\.d\/acme-challenge\/;/);
    expect(plain).not.toContain("proxy_pass");
    expect(render({ httpsPort: "443" })).toContain("        return 301 https://$host$request_uri;");
  });

  test("acme: the same certificate files; HTTP-01 tokens from the agent's webroot, below the path certbot writes them to; HSTS", () => {
    const conf = render({ tls: "acme", domain: "app.example.com" });
    expect(conf).toContain(`    ssl_certificate ${TLS_DIR}/${TLS_CERT_FILE};`);
    expect(conf).toContain(`        alias ${ACME_WEBROOT}/.well-known/acme-challenge/;`);
    expect(conf).toContain("Strict-Transport-Security");
  });

  test("the app is told the scheme nginx was reached by, even without forwardedHeaders", () => {
    expect(render({ forwardedHeaders: "false" })).toContain("        proxy_set_header X-Forwarded-Proto $scheme;");
    expect(render({ tls: "off", forwardedHeaders: "false", tlsCertificate: "", tlsPrivateKey: "" })).not.toContain(
      "X-Forwarded-Proto",
    );
  });
});

test("the internal leaf's names, as openssl's subjectAltName: localhost with 127.0.0.1, a domain alone, an address alone", () => {
  expect(leafSubjectAltName("localhost")).toBe("DNS:localhost,IP:127.0.0.1");
  expect(leafSubjectAltName("app.example.com")).toBe("DNS:app.example.com");
  expect(leafSubjectAltName("10.0.0.7")).toBe("IP:10.0.0.7");
});

describe("the program", () => {
  let certRun: ProgramRun;
  let internalRun: ProgramRun;
  let acmeRun: ProgramRun;
  beforeAll(async () => {
    acmeRun = await runProgram("prod", {
      overrides: { tls: "acme", domain: "app.example.com", acmeEmail: "ops@example.com", acmeServer: "https://acme.example/dir" },
    });
    certRun = await runProgram("prod", {
      overrides: { tls: "certificate", tlsCertificate: chain(), tlsPrivateKey: leaf.keyPem },
    });
    internalRun = await runProgram("prod", { overrides: { tls: "internal" } });
  });
  const find = (run: ProgramRun, name: string) => {
    const r = run.resources.find((x) => x.name === name);
    if (!r) throw new Error(`${name} not declared`);
    return r;
  };

  test("nginx publishes 443 on httpsPort beside 80 (through its holder); the healthcheck stays plain HTTP", () => {
    const nginx = find(certRun, "nginx-container");
    expect(find(certRun, "nginx-netns").inputs.ports).toEqual([
      { internal: 80, external: 8000, ip: "127.0.0.1", protocol: "tcp" },
      { internal: 443, external: 8443, ip: "127.0.0.1", protocol: "tcp" },
    ]);
    expect(nginx.inputs.healthcheck).toMatchObject({ tests: ["CMD", ...HANDOVER_HEALTHCHECK] });
    expect(HANDOVER_HEALTHCHECK.at(-1)).toBe("http://localhost/nginx-health");
    expect(certRun.outputs.httpsUrl).toBe("https://127.0.0.1:8443/");
  });

  test("the certificate and key reach nginx through the conf file (a secret), and the reload sees only a digest", () => {
    const file = find(certRun, "nginx-conf-file");
    expect(file.secretInputs).toContain("tls");
    expect(file.inputs.tls).toEqual({ certPem: chain(), keyPem: leaf.keyPem });
    const reload = find(certRun, "nginx-conf-reload");
    expect(reload.inputs.tlsDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(reload.inputs)).not.toContain("PRIVATE KEY");
  });

  test("internal: a CA of the stack's own, written (its key a secret) into the agent's data volume, which destroy removes; the agent signs the leaf with no network", () => {
    expect(find(internalRun, "nginx-ca").inputs).toMatchObject({ commonName: "flask-proxy prod CA" });
    const caFiles = find(internalRun, "nginx-certs-ca-files");
    expect(caFiles.inputs).toMatchObject({ volumeName: "flask-proxy-prod-certs-data" });
    expect(caFiles.secretInputs).toContain("keyPem");
    // No certificate of its own in the conf volume: nginx reads the agent's.
    expect(find(internalRun, "nginx-conf-file").inputs.tls).toBeUndefined();
    const env = [
      "CERT_ISSUER=internal",
      "INTERNAL_LIFETIME_SECONDS=7776000",
      "INTERNAL_SANS=DNS:localhost,IP:127.0.0.1",
      "ACME_DOMAINS=localhost",
    ];
    // The seed signs the first leaf, after the CA is in the volume: nginx never starts with a placeholder.
    const seed = find(internalRun, "nginx-certs-seed");
    expect(seed.dependsOn).toContain("nginx-certs-ca-files");
    expect(seed.inputs.envs).toEqual(env);
    expect((seed.inputs.volumes as { containerPath: string }[]).map((v) => v.containerPath).sort()).toEqual(["/certs", "/data"]);
    const agent = find(internalRun, "nginx-cert-agent");
    expect(agent.dependsOn).toEqual(expect.arrayContaining(["nginx-container", "nginx-certs-seed"]));
    expect(agent.inputs.envs).toEqual(env);
    expect(agent.inputs).toMatchObject({ networkMode: "none" });
    expect(agent.inputs).not.toHaveProperty("networksAdvanced");
    expect([find(internalRun, "nginx-certs-data").retainOnDelete, find(acmeRun, "nginx-certs-data").retainOnDelete]).toEqual([
      false,
      true,
    ]);
    expect(certRun.outputs.caCertificate).toBe("(no stack CA: tls is not internal)");
  });

  test("acme: the agent's volumes over nginx's certificate and challenge folders, seeded first; the agent in nginx's PID namespace", () => {
    expect(acmeRun.outputs).not.toHaveProperty("error");
    const nginx = find(acmeRun, "nginx-container");
    const volumes = nginx.inputs.volumes as { volumeName: string; containerPath: string; readOnly?: boolean }[];
    expect(volumes).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ volumeName: "flask-proxy-prod-certs-certs", containerPath: TLS_DIR, readOnly: true }),
        expect.objectContaining({ volumeName: "flask-proxy-prod-certs-webroot", containerPath: ACME_WEBROOT, readOnly: true }),
      ]),
    );
    expect(nginx.dependsOn).toContain("nginx-certs-seed");
    expect(find(acmeRun, "nginx-conf-file").inputs.tls).toBeUndefined();
    const agent = find(acmeRun, "nginx-cert-agent");
    expect(agent.dependsOn).toEqual(expect.arrayContaining(["nginx-container", "nginx-certs-seed"]));
    expect(agent.inputs.pidMode).toBe(`container:${String(nginx.outputs.id ?? "nginx-container-id")}`);
    expect(agent.inputs.envs).toEqual(
      expect.arrayContaining([
        "ACME_SERVER=https://acme.example/dir",
        "ACME_EMAIL=ops@example.com",
        "ACME_DOMAINS=app.example.com",
      ]),
    );
    expect(agent.inputs).toMatchObject({ readOnly: true, capabilities: { drops: ["ALL"] } });
    expect(find(acmeRun, "nginx-cert-agent-issued").dependsOn).toEqual(["nginx-cert-agent"]);
    expect((agent.inputs.volumes as { containerPath: string }[]).map((v) => v.containerPath).sort()).toEqual(
      Object.values(AGENT_DIRS).sort(),
    );
    expect(certRun.resources.some((r) => r.name.startsWith("nginx-cert"))).toBe(false);
    // Its start period (the first issuance's time) as the provider reads it back, else every preview updates it.
    expect(agent.inputs.healthcheck).toMatchObject({ startPeriod: "3m0s" });
    expect([goDuration(10), goDuration(180), goDuration(3725)]).toEqual(["10s", "3m0s", "1h2m5s"]);
  });
});

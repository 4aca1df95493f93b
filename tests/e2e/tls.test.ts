// HTTPS at the edge on the prod shape, through the real CLI: one stack (its own name and ports), first with a
// certificate the test's own CA issued (root -> intermediate -> leaf; the leaf and intermediate served as a
// chain), then rotated under load, then switched to the stack's own CA (tls: internal), which testssl.sh scans,
// and whose leaf the agent beside nginx renews by itself under load.
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as tls from "tls";
import { LiveStack } from "../../harness/live-stack";
import { freePort } from "../../harness/ports";
import { findingsTable, judgeTestssl, runTestssl, TESTSSL_GROUPS } from "../../harness/testssl";
import { ROOT } from "../../infra/stack-files";
import { createRootCa, issue, leafNames, type CertifiedKey } from "../../infra/tls";
import { curlTrusting, docker, failures, fingerprint, HELD_PAST_RELOAD, logText, underLoad, within } from "./live";

// The stand-in behind every nginx tag here is Debian's nginx 1.22: a tag that says so renders what it accepts
// (`listen ... ssl http2`; 1.27.3's `http2 on;` is refused by it). scripts/build-standins.sh makes the tag.
const NGINX_IMAGE = "nginx:1.22.1";
const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };
const DAY = 86_400_000;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-tls-"));
const caFile = path.join(tmp, "root.pem");

function run(cmd: string, args: string[], input = ""): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { input, encoding: "utf8", timeout: 20_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** curl to 127.0.0.1 only, trusting `ca`; returns what `-w` writes after the body (or the headers, with -D -). */
const curl = (args: string[], ca = caFile) => curlTrusting(ca, args);

/** The certificates the TLS listener sends (leaf first). */
function servedChain(port: number): crypto.X509Certificate[] {
  const { out } = run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-servername", "localhost", "-showcerts"]);
  return (out.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map(
    (p) => new crypto.X509Certificate(p),
  );
}
/**
 * Whether a second connection resumes the first's session, with Node's TLS client (OpenSSL underneath), which,
 * unlike `s_client </dev/null`, waits for the session: TLS 1.3 sends it after the handshake.
 */
async function resumes(port: number, ca: string, version: "TLSv1.2" | "TLSv1.3"): Promise<boolean> {
  const options = { host: "127.0.0.1", port, ca: fs.readFileSync(ca), minVersion: version, maxVersion: version };
  const session = await new Promise<Buffer>((resolve, reject) => {
    const socket = tls.connect(options);
    const timer = setTimeout(() => socket.destroy(new Error(`no ${version} session from 127.0.0.1:${port} in 5 s`)), 5_000);
    socket.once("session", (s: Buffer) => {
      clearTimeout(timer);
      socket.end();
      resolve(s);
    });
    socket.once("error", reject);
  });
  return new Promise<boolean>((resolve, reject) => {
    const socket = tls.connect({ ...options, session }, () => {
      resolve(socket.isSessionReused());
      socket.end();
    });
    socket.once("error", reject);
  });
}
const servedLeaf = (port: number) => servedChain(port)[0]?.fingerprint256;

/** A handshake offering only `version`; TLS 1.1 needs the client's own security level lowered to be offered at all. */
function handshake(port: number, version: "tls1_1" | "tls1_2" | "tls1_3"): { ok: boolean; out: string } {
  const lower = version === "tls1_1" ? ["-cipher", "DEFAULT:@SECLEVEL=0"] : [];
  const r = run("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, `-${version}`, ...lower, "-brief"]);
  return {
    ok: r.status === 0 && /Protocol version: TLSv1\.[123]/.test(r.out),
    out: r.out.trim().split("\n").slice(0, 3).join(" | "),
  };
}

describe("prod: HTTPS at the edge (tls: certificate, then internal)", () => {
  let live: LiveStack;
  let httpPort: number;
  let httpsPort: number;
  let root: CertifiedKey;
  let intermediate: CertifiedKey;
  let leaf: CertifiedKey;
  let madeTag = false;
  const chainOf = (l: CertifiedKey) => l.certPem + intermediate.certPem;
  const newLeaf = (o: { domain?: string; notBefore?: Date; days?: number } = {}) =>
    issue(intermediate, {
      commonName: o.domain ?? "localhost",
      days: o.days ?? 30,
      notBefore: o.notBefore,
      ...leafNames(o.domain ?? "localhost"),
    });
  const nginx = () => live.container("nginx-container").inspect();
  const httpsUrl = () => `https://127.0.0.1:${httpsPort}/`;
  const stackCaFile = path.join(tmp, "stack-ca.pem");
  /** The stack's own CA (tls: internal), read with the CLI as a user reads it, into stackCaFile. */
  async function saveStackCa(): Promise<void> {
    const output = await live.run(["stack", "output", "caCertificate"]);
    const stackCa = output.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/)?.[0];
    if (!stackCa) throw new Error(`pulumi stack output caCertificate has no certificate: ${output}`);
    fs.writeFileSync(stackCaFile, `${stackCa}\n`);
  }

  /** Run on its own (jest -t), a test of tls: internal first switches the stack to it. */
  async function switchedToInternal(): Promise<void> {
    if (fs.existsSync(stackCaFile)) return;
    await live.up({ config: { tls: "internal", tlsCertificate: "", tlsPrivateKey: "" } });
    await saveStackCa();
  }

  beforeAll(async () => {
    const started = Date.now();
    madeTag = !(await docker
      .getImage(NGINX_IMAGE)
      .inspect()
      .then(
        () => true,
        () => false,
      ));
    const standin = spawnSync("bash", [path.join(ROOT, "scripts", "build-standins.sh"), NGINX_IMAGE], {
      encoding: "utf8",
      timeout: 300_000,
    });
    if (standin.status !== 0) throw new Error(`build-standins.sh ${NGINX_IMAGE}: ${standin.stderr}`);
    root = await createRootCa({ commonName: "tls.test root", days: 30 });
    intermediate = await issue(root, { commonName: "tls.test intermediate", days: 30, dnsNames: [], ips: [], ca: true });
    leaf = await newLeaf();
    fs.writeFileSync(caFile, root.certPem);
    httpPort = await freePort();
    httpsPort = await freePort();
    live = await LiveStack.create("prod", "tls");
    try {
      await live.configure({
        httpPort: String(httpPort),
        httpsPort: String(httpsPort),
        nginxImage: NGINX_IMAGE,
        tls: "certificate",
      });
      await live.configureSecrets({ tlsCertificate: chainOf(leaf), tlsPrivateKey: leaf.keyPem });
      await live.preview({ policyPack: true });
      await live.up();
    } catch (e) {
      await live.destroy().catch(() => undefined);
      throw e;
    }
    console.log(`tls: stack up in ${Math.round((Date.now() - started) / 1000)} s`);
  }, 900_000);
  afterAll(async () => {
    await live?.destroy();
    if (madeTag)
      await docker
        .getImage(NGINX_IMAGE)
        .remove()
        .catch(() => undefined);
    fs.rmSync(tmp, { recursive: true, force: true });
  }, 600_000);

  test("HTTPS serves Hello world! over HTTP/2, the chain verifying against the test root; HSTS; the app builds https:// URLs", () => {
    const hello = curl(["--http2", "-w", "\n%{http_version}", httpsUrl()]);
    expect(hello.out).toBe("Hello world!\n2");
    const chain = servedChain(httpsPort);
    expect(chain.map((c) => c.fingerprint256)).toEqual([fingerprint(leaf.certPem), fingerprint(intermediate.certPem)]);
    const headers = curl(["-D", "-", "-o", "/dev/null", httpsUrl()]).out;
    expect(headers).toMatch(/^strict-transport-security: max-age=63072000\r?$/im);
    const links = JSON.parse(curl([`${httpsUrl()}links`]).out) as { index: string };
    expect(links.index).toMatch(/^https:\/\//);
    // Another client's CA is not enough: the test root is what it verifies against.
    expect(curl([httpsUrl()], "/etc/ssl/certs/ca-certificates.crt").status).not.toBe(0);
  });

  test("plain HTTP redirects to the same path and query on httpsPort; health and ACME challenges are not redirected", () => {
    const where = run("curl", [
      "-sS",
      "-o",
      "/dev/null",
      "-w",
      "%{http_code} %{redirect_url}",
      `http://127.0.0.1:${httpPort}/some/path?a=1&b=two`,
    ]);
    expect(where.out).toBe(`301 https://127.0.0.1:${httpsPort}/some/path?a=1&b=two`);
    expect(run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${httpPort}/nginx-health`]).out).toBe(
      "200",
    );
    // Nothing there yet (the ACME work writes tokens): answered here, 404, not sent to HTTPS.
    expect(
      run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", `http://127.0.0.1:${httpPort}/.well-known/acme-challenge/x`])
        .out,
    ).toBe("404");
  });

  test("TLS 1.1 is refused (offered at the client's lowered security level), 1.2 and 1.3 are accepted", () => {
    const [v11, v12, v13] = (["tls1_1", "tls1_2", "tls1_3"] as const).map((v) => handshake(httpsPort, v));
    console.log(`tls: handshakes: 1.1 ${v11.out}; 1.2 ${v12.out}; 1.3 ${v13.out}`);
    expect([v11.ok, v12.ok, v13.ok]).toEqual([false, true, true]);
  });

  test("a mismatched key, an expired certificate or one for another domain fails pulumi up naming the key; nothing changes", async () => {
    const before = await nginx();
    const served = servedLeaf(httpsPort);
    const other = await newLeaf();
    const expired = await newLeaf({ notBefore: new Date(Date.now() - 3 * DAY), days: 1 });
    const foreign = await newLeaf({ domain: "app.example.com" });
    const cases: [string, Record<string, string>, RegExp][] = [
      [
        "mismatched key",
        { tlsCertificate: chainOf(leaf), tlsPrivateKey: other.keyPem },
        /flask-proxy:tlsPrivateKey: does not match tlsCertificate/,
      ],
      [
        "expired",
        { tlsCertificate: chainOf(expired), tlsPrivateKey: expired.keyPem },
        /flask-proxy:tlsCertificate: the certificate expired on/,
      ],
      [
        "wrong domain",
        { tlsCertificate: chainOf(foreign), tlsPrivateKey: foreign.keyPem },
        /flask-proxy:tlsCertificate: does not cover domain "localhost"/,
      ],
    ];
    for (const [what, config, says] of cases) {
      await live.configureSecrets(config);
      const error = await live.up().then(
        () => undefined,
        (e: Error) => e,
      );
      console.log(
        `tls: ${what}: ${error?.message.match(/flask-proxy:tls\w+: [^\n]*/)?.[0] ?? error?.message.match(/error: [^\n]*/)?.[0] ?? "pulumi up succeeded"}`,
      );
      expect([what, error?.message ?? "pulumi up succeeded"]).toEqual([what, expect.stringMatching(says)]);
      const after = await nginx();
      expect([what, after.Id, after.State.StartedAt]).toEqual([what, before.Id, before.State.StartedAt]);
      expect([what, servedLeaf(httpsPort)]).toEqual([what, served]);
    }
    await live.configureSecrets({ tlsCertificate: chainOf(leaf), tlsPrivateKey: leaf.keyPem });
  }, 600_000);

  test("rotation to a new certificate under HTTPS and plain HTTP load: 0 failed, the new one served, same container", async () => {
    const before = await nginx();
    const next = await newLeaf();
    await live.configureSecrets({ tlsCertificate: chainOf(next), tlsPrivateKey: next.keyPem });
    const { load: https, value } = await underLoad(
      httpsUrl(),
      () => underLoad(`http://127.0.0.1:${httpPort}/nginx-health`, () => live.up()),
      { ca: root.certPem },
    );
    const http = value?.load;
    console.log(
      `tls: rotation: https ${https.requests} responses, ${JSON.stringify(failures(https))}, ${https.retried} sent again`,
    );
    console.log(
      `tls: rotation: http ${http?.requests} responses, ${JSON.stringify(http && failures(http))}, ${http?.retried} sent again`,
    );
    expect(value?.error).toBeUndefined();
    expect(https.ok).toBeGreaterThan(100);
    expect(failures(https)).toEqual(NO_FAILURES);
    expect(http && http.ok).toBeGreaterThan(100);
    expect(http && failures(http)).toEqual(NO_FAILURES);
    expect(servedLeaf(httpsPort)).toBe(fingerprint(next.certPem));
    const after = await nginx();
    expect([after.Id, after.State.StartedAt]).toEqual([before.Id, before.State.StartedAt]);
    leaf = next;
    expect(await live.preview()).toEqual([]);
  }, 600_000);

  test("internal: the stack's own CA (caCertificate, read with the CLI) verifies; no HSTS; a second preview and refresh find nothing", async () => {
    await live.up({ config: { tls: "internal", tlsCertificate: "", tlsPrivateKey: "" } });
    await saveStackCa();
    expect(curl(["--http2", "-w", "\n%{http_version}", httpsUrl()], stackCaFile).out).toBe("Hello world!\n2");
    expect(curl([httpsUrl()]).status).not.toBe(0); // the test root no longer applies
    expect(curl(["-D", "-", "-o", "/dev/null", httpsUrl()], stackCaFile).out).not.toMatch(/strict-transport-security/i);
    const served = servedChain(httpsPort)[0];
    expect(served.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(served.checkHost("localhost")).toBe("localhost");
    // Signed by the seed before the new nginx started (nginx mounts the agent's volumes now: a handover), so
    // no placeholder was ever served; the agent found it current.
    const seedLog = await logText(live.container("nginx-certs-seed"));
    expect(seedLog).toMatch(/installed a certificate for localhost from the stack's CA/);
    expect(seedLog).not.toMatch(/placeholder/);
    expect(await live.preview()).toEqual([]);
    await live.refreshFindsNothing();
    // The CA's key, in the state twice (StackCa, and StackCaFiles, which writes it into the agent's volume), is a
    // secret: `pulumi stack export` (which shows secrets only when asked) has no key in the clear.
    const text = await live.run(["stack", "export"]);
    const exported = JSON.parse(text.slice(text.indexOf("{"), text.lastIndexOf("}") + 1)) as {
      deployment: { resources?: { urn: string; inputs?: object; outputs?: object }[] };
    };
    const inClear = (exported.deployment.resources ?? []).flatMap((r) =>
      (["inputs", "outputs"] as const).flatMap((part) =>
        Object.entries(r[part] ?? {})
          .filter(([, v]) => JSON.stringify(v).includes("PRIVATE KEY-----"))
          .map(([k]) => `${r.urn.split("::").pop()}.${part}.${k}`),
      ),
    );
    expect(inClear).toEqual([]);
  }, 600_000);

  test("testssl.sh on the HTTPS listener (tls: internal, the stack's CA added): nothing at MEDIUM or above but harness/testssl.ts's allow-list", async () => {
    await switchedToInternal();
    const scan = await runTestssl(httpsPort, stackCaFile);
    const verdict = judgeTestssl(scan.findings);
    const count = new Map<string, number>();
    for (const f of scan.findings) count.set(f.severity, (count.get(f.severity) ?? 0) + 1);
    const severities = [...count].map(([severity, n]) => `${n} ${severity}`).join(", ");
    console.log(
      [
        `tls: testssl ${TESTSSL_GROUPS.join(" ")}: ${scan.findings.length} findings in ${scan.seconds} s (${severities}); LOW and above:`,
        findingsTable(scan.findings),
        ...verdict.allowed.map((a) => `allowed: ${a.finding.id}: ${a.reason}`),
        ...verdict.unused.map((a) => `allow-list entry not needed by this scan: ${a.id}`),
      ].join("\n"),
    );
    const said = (id: string) => scan.findings.find((f) => f.id === id)?.finding;
    // The scan reached nginx and verified the chain against the stack's CA (else cert_chain_of_trust is CRITICAL).
    expect([said("TLS1_2"), said("TLS1_3"), said("cert_chain_of_trust")]).toEqual(["offered", "offered with final", "passed."]);
    expect(verdict.refused.map((r) => `${r.finding.severity} ${r.finding.id}: ${r.finding.finding} (${r.why})`)).toEqual([]);
    // Resumption, which testssl's ticket check can miss (the allow-list says why), checked with another client.
    expect([await resumes(httpsPort, stackCaFile, "TLSv1.2"), await resumes(httpsPort, stackCaFile, "TLSv1.3")]).toEqual([
      true,
      true,
    ]);
  }, 600_000);

  test("internal: the agent renews the leaf by itself, no `pulumi up` (2-minute leaves: due 30 s after issuance), a reload under HTTPS load with 0 failed", async () => {
    await switchedToInternal();
    // A new lifetime is a new agent, which signs a leaf of that lifetime at once.
    await live.up({ config: { internalLeafLifetime: "2m" } });
    const first = servedChain(httpsPort)[0];
    expect((Date.parse(first.validTo) - Date.parse(first.validFrom)) / 1000).toBe(180);
    const nginxBefore = await nginx();
    const stackCa = fs.readFileSync(stackCaFile, "utf8");
    const { load, value, error } = await underLoad(
      httpsUrl(),
      () =>
        within(
          90_000,
          async () => servedChain(httpsPort)[0]?.serialNumber !== first.serialNumber,
          "nginx serves a renewed leaf",
          HELD_PAST_RELOAD,
        ),
      { ca: stackCa, newConnections: 4 },
    );
    console.log(
      `tls: internal renewal: a new leaf after ${value} ms; ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} sent again`,
    );
    expect(error?.message).toBeUndefined();
    const renewed = servedChain(httpsPort)[0];
    expect(renewed.verify(new crypto.X509Certificate(stackCa).publicKey)).toBe(true);
    expect(Date.parse(renewed.validTo)).toBeGreaterThan(Date.parse(first.validTo));
    expect(load.ok).toBeGreaterThan(100);
    expect(failures(load)).toEqual(NO_FAILURES);
    const nginxAfter = await nginx();
    expect([nginxAfter.Id, nginxAfter.State.StartedAt, nginxAfter.RestartCount]).toEqual([
      nginxBefore.Id,
      nginxBefore.State.StartedAt,
      nginxBefore.RestartCount,
    ]);
    expect(await logText(live.container("nginx-cert-agent"))).toMatch(
      /renewing the certificate for localhost from the stack's CA/,
    );
    // Nothing for `pulumi up` to do: the renewal is the agent's, not the state's.
    expect(await live.preview()).toEqual([]);
  }, 600_000);
});

// certs/agent.sh's commands that need no CA and no engine, run on the host with sh and openssl.
import { spawn, spawnSync, type ChildProcess } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { createRootCa, issue } from "../../infra/tls";
import { acmeChallengeLocation, ACME_CHALLENGE_PATH, CERT_FILE, KEY_FILE, NGINX_WEBROOT } from "../../certs/certAgent";
import { issuanceState } from "../../certs/issuance";

const SCRIPT = path.join(__dirname, "..", "..", "certs", "agent.sh");

describe("certs/agent.sh", () => {
  let dir: string;
  const run = (cmd: string, env: Record<string, string> = {}, timeout = 10_000) =>
    spawnSync("sh", [SCRIPT, cmd], {
      encoding: "utf8",
      // `run` loops for ever once past its checks.
      timeout,
      env: {
        PATH: process.env.PATH,
        ACME_DATA_DIR: path.join(dir, "data"),
        ACME_CERTS_DIR: path.join(dir, "certs"),
        ACME_RUN_DIR: path.join(dir, "run"),
        ACME_DOMAINS: "app.example.test,www.example.test",
        ...env,
      },
    });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "cert-agent-unit-"));
    for (const d of ["data", "certs", "run"]) fs.mkdirSync(path.join(dir, d));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test("seed writes a placeholder for the first name, its key not world-readable, and keeps what is there", () => {
    expect(run("seed").status).toBe(0);
    const cert = path.join(dir, "certs", CERT_FILE);
    const key = path.join(dir, "certs", KEY_FILE);
    expect((fs.statSync(key).mode & 0o777).toString(8)).toBe("600");
    const subject = spawnSync("openssl", ["x509", "-noout", "-subject", "-in", cert], { encoding: "utf8" }).stdout;
    expect(subject).toMatch(/CN ?= ?app\.example\.test \(placeholder\)/);
    const before = fs.readFileSync(cert, "utf8");
    expect(run("seed").status).toBe(0);
    expect(fs.readFileSync(cert, "utf8")).toBe(before);
  });

  test("health: unhealthy until a CA's certificate is loaded, and while renewals fail", () => {
    const none = run("health");
    expect([none.status, none.stdout]).toEqual([1, expect.stringMatching(/^no certificate from the CA loaded yet/)]);
    fs.writeFileSync(path.join(dir, "run", "agent-loaded"), "AB:CD\n");
    fs.writeFileSync(path.join(dir, "data", "agent-status"), "ok: certificate valid until later\n");
    expect(run("health").status).toBe(0);
    fs.writeFileSync(
      path.join(dir, "data", "agent-status"),
      "failing since 2026-01-01T00:00:00Z (3 attempts); last error: refused\n",
    );
    const failing = run("health");
    expect([failing.status, failing.stdout]).toEqual([1, expect.stringMatching(/^failing since .*refused/)]);
  });

  // A stand-in for nginx's master with one "nginx: worker process". On SIGHUP one that reloads starts a new
  // worker and stops the old one, which is what the agent waits for; one that refuses (a conf it cannot load)
  // keeps its worker.
  const nginxMaster = (onHup: "reloads" | "refuses") =>
    spawn(
      "sh",
      [
        "-c",
        [
          `worker() { bash -c 'exec -a "nginx: worker process" sleep 60' & w=$!; }`,
          "worker",
          onHup === "reloads" ? `trap 'old=$w; worker; kill $old' HUP` : `trap '' HUP`,
          "while :; do sleep 1 & wait $!; done",
        ].join("\n"),
      ],
      { stdio: "ignore", detached: true },
    );
  const served = () => new crypto.X509Certificate(fs.readFileSync(path.join(dir, "certs", CERT_FILE)));
  /**
   * A certificate certbot stored earlier (the kept volume's lineage for app.example.test): 2 days long and
   * 36 h old, so due by the lifetime rule (half left), 12 h to go. Its PEM.
   */
  const storedDueCertificate = async (dnsNames: string[]) => {
    const ca = await createRootCa({ commonName: "unit ACME CA", days: 30 });
    const leaf = await issue(ca, {
      commonName: "app.example.test",
      days: 2,
      notBefore: new Date(Date.now() - 36 * 3600_000),
      dnsNames,
      ips: [],
    });
    const lineage = path.join(dir, "data", "certbot", "live", "app.example.test");
    fs.mkdirSync(lineage, { recursive: true });
    fs.writeFileSync(path.join(lineage, "fullchain.pem"), leaf.certPem);
    fs.writeFileSync(path.join(lineage, "privkey.pem"), leaf.keyPem);
    return leaf.certPem;
  };

  test("acme: a renewal the CA fails, by an agent that loaded nothing yet, loads the stored certificate still valid; the gate reads a failing renewal", async () => {
    const nginx = nginxMaster("reloads");
    try {
      const certPem = await storedDueCertificate(["app.example.test", "www.example.test"]);
      // What certbot says when the CA cannot be reached.
      const certbot = path.join(dir, "certbot");
      fs.writeFileSync(
        certbot,
        "#!/bin/sh\necho 'Processing renewal.conf'\necho 'Failed to renew certificate app.example.test with error: HTTPSConnectionPool: [Errno 111] Connection refused'\necho 'All renewals failed.'\nexit 1\n",
        { mode: 0o755 },
      );
      const r = run(
        "run",
        {
          CERTBOT: certbot,
          ACME_SERVER: "https://127.0.0.1:14000/dir",
          ACME_NGINX_PID: String(nginx.pid),
          ACME_WEBROOT: path.join(dir, "webroot"),
        },
        3_000,
      );
      expect(r.stdout).toMatch(/renewing the certificate for app\.example\.test,www\.example\.test/);
      expect(r.stdout).toMatch(/installed the certificate valid until .*reloaded nginx/);
      expect(r.stdout).toMatch(
        /attempt 1 failed, next in 30 s \(certificate: the installed one, valid until [^)]+\): Failed to renew certificate app\.example\.test with error: .*Connection refused $/m,
      );
      expect(served().fingerprint256).toBe(new crypto.X509Certificate(certPem).fingerprint256);
      const health = run("health");
      expect([health.status, issuanceState(health.status ?? -1, health.stdout)]).toEqual([1, "renewing"]);
    } finally {
      process.kill(-nginx.pid!, "SIGKILL");
    }
  });

  test("acme: due by its lifetime, but certbot keeps it (the CA's ARI window is later): asked once, then again after a quarter of what is left, not in a busy loop", async () => {
    const nginx = nginxMaster("reloads");
    try {
      await storedDueCertificate(["app.example.test"]);
      // certbot as it answers when ARI puts the renewal later: nothing renewed, success.
      const certbot = path.join(dir, "certbot");
      fs.writeFileSync(certbot, `#!/bin/sh\necho "$1" >> ${dir}/calls\necho 'Certificate not yet due for renewal'\n`, {
        mode: 0o755,
      });
      const r = run(
        "run",
        {
          CERTBOT: certbot,
          ACME_DOMAINS: "app.example.test",
          ACME_SERVER: "https://127.0.0.1:14000/dir",
          ACME_NGINX_PID: String(nginx.pid),
          ACME_WEBROOT: path.join(dir, "webroot"),
          ACME_CHECK_SECONDS: "7200",
        },
        3_000,
      );
      expect(fs.readFileSync(path.join(dir, "calls"), "utf8")).toBe("renew\n");
      // A quarter of the 12 h left is 3 h, capped at the 2 h check interval.
      expect(fs.readFileSync(path.join(dir, "data", "agent-status"), "utf8")).toMatch(
        /^ok: certificate valid until .*, due by its lifetime, kept as the CA's renewal window \(ARI\) is later; next check in 7200 s$/m,
      );
      expect(r.stdout).toMatch(/installed the certificate valid until .*reloaded nginx/);
    } finally {
      process.kill(-nginx.pid!, "SIGKILL");
    }
  });

  test("acme: the first certificate is asked of certbot for every name, by webroot, with the profile and the agent's folders", () => {
    // A certbot that writes down what it was asked and fails, so the agent stops at its first attempt.
    const certbot = path.join(dir, "certbot");
    fs.writeFileSync(
      certbot,
      `#!/bin/sh\nprintf '%s\\n' "$@" > ${dir}/args\necho 'An unexpected error occurred:'\necho 'no CA here'\nexit 1\n`,
      {
        mode: 0o755,
      },
    );
    const r = run(
      "run",
      {
        CERTBOT: certbot,
        ACME_SERVER: "https://127.0.0.1:14000/dir",
        ACME_PROFILE: "shortlived",
        ACME_WEBROOT: path.join(dir, "webroot"),
      },
      3_000,
    );
    expect(r.stdout).toMatch(/obtaining a certificate for app\.example\.test,www\.example\.test from .* \(profile shortlived\)/);
    expect(r.stdout).toMatch(
      /attempt 1 failed, next in 30 s \(certificate: none yet\): An unexpected error occurred: no CA here $/m,
    );
    const args = fs.readFileSync(path.join(dir, "args"), "utf8").trim().split("\n");
    const after = (flag: string) => args.filter((_, i) => args[i - 1] === flag);
    // The subcommand once, first (certbot refuses a second one).
    expect([args[0], args.lastIndexOf("certonly")]).toEqual(["certonly", 0]);
    expect([after("--server"), after("--preferred-profile"), after("--cert-name"), after("--domain")]).toEqual([
      ["https://127.0.0.1:14000/dir"],
      ["shortlived"],
      ["app.example.test"],
      ["app.example.test", "www.example.test"],
    ]);
    expect([after("--config-dir"), after("--webroot-path")]).toEqual([
      [path.join(dir, "data", "certbot")],
      [path.join(dir, "webroot")],
    ]);
    expect(args).toEqual(
      expect.arrayContaining(["--non-interactive", "--agree-tos", "--webroot", "--register-unsafely-without-email"]),
    );
  });

  describe("the internal issuer (tls: internal): openssl signs the leaf with the stack's CA", () => {
    let nginx: ChildProcess;
    const caDir = () => path.join(dir, "data", "internal-ca");
    // The CA as the stack makes it (infra/stack-ca.ts), into the folder StackCaFiles writes.
    const makeCa = async (name: string) => {
      const ca = await createRootCa({ commonName: name, days: 30 });
      fs.mkdirSync(caDir(), { recursive: true });
      fs.writeFileSync(path.join(caDir(), "ca.crt"), ca.certPem);
      fs.writeFileSync(path.join(caDir(), "ca.key"), ca.keyPem, { mode: 0o600 });
    };
    // One pass of `run` (it loops: stopped by SIGTERM, which it handles), reloading a stand-in master.
    const runOnce = (lifetimeS: number, timeoutMs = 3_000) =>
      run(
        "run",
        {
          ACME_DOMAINS: "localhost",
          CERT_ISSUER: "internal",
          INTERNAL_LIFETIME_SECONDS: String(lifetimeS),
          INTERNAL_SANS: "DNS:localhost,IP:127.0.0.1",
          ACME_NGINX_PID: String(nginx.pid),
          ACME_CHECK_SECONDS: "2",
          ACME_WEBROOT: path.join(dir, "webroot"),
        },
        timeoutMs,
      );
    beforeEach(() => {
      nginx = nginxMaster("reloads");
    });
    afterEach(() => process.kill(-nginx.pid!, "SIGKILL"));

    test("the leaf: from the CA, for localhost and 127.0.0.1, server auth only, the lifetime asked for (60 s backdated), its key 600; installed and nginx signalled", async () => {
      await makeCa("unit CA one");
      const r = runOnce(3600);
      // run seeds first: the seed signs the leaf, the loop finds it current and reloads nginx.
      expect(r.stdout).toMatch(/installed a certificate for localhost from the stack's CA/);
      expect(r.stdout).toMatch(/installed the certificate valid until .*reloaded nginx/);
      const leaf = served();
      const ca = new crypto.X509Certificate(fs.readFileSync(path.join(caDir(), "ca.crt")));
      expect(leaf.verify(ca.publicKey)).toBe(true);
      expect([leaf.subject, leaf.issuer, leaf.subjectAltName, leaf.ca]).toEqual([
        "CN=localhost",
        "CN=unit CA one",
        "DNS:localhost, IP Address:127.0.0.1",
        false,
      ]);
      expect(leaf.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]);
      expect((Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000).toBe(3660);
      expect(Math.abs(Date.parse(leaf.validFrom) - (Date.now() - 60_000))).toBeLessThan(10_000);
      expect((fs.statSync(path.join(dir, "certs", KEY_FILE)).mode & 0o777).toString(8)).toBe("600");
      expect(leaf.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(dir, "certs", KEY_FILE))))).toBe(true);
      expect(fs.readFileSync(path.join(dir, "data", "agent-status"), "utf8")).toMatch(/^ok: certificate valid until/);
    });

    test("kept while current; signed again for a new CA (a destroy and up) or a new lifetime", async () => {
      await makeCa("unit CA one");
      runOnce(3600);
      const first = served().fingerprint256;
      expect(runOnce(3600).stdout).not.toMatch(/issuing|renewing/);
      expect(served().fingerprint256).toBe(first);
      await makeCa("unit CA two");
      expect(runOnce(3600).stdout).toMatch(/issuing a certificate/);
      expect(served().issuer).toBe("CN=unit CA two");
      const second = served().fingerprint256;
      expect(second).not.toBe(first);
      expect(runOnce(7200).stdout).toMatch(/valid for 7200 s/);
      expect((Date.parse(served().validTo) - Date.parse(served().validFrom)) / 1000).toBe(7260);
    });

    test("seed: nginx starts with the CA's leaf, not a placeholder, when the CA is there; a placeholder when it is not", async () => {
      const seed = (env: Record<string, string> = {}) =>
        run("seed", {
          ACME_DOMAINS: "localhost",
          CERT_ISSUER: "internal",
          INTERNAL_LIFETIME_SECONDS: "3600",
          INTERNAL_SANS: "DNS:localhost,IP:127.0.0.1",
          ...env,
        });
      expect(seed().stdout).toMatch(/self-signed placeholder/);
      expect(served().subject).toBe("CN=localhost (placeholder)");
      fs.rmSync(path.join(dir, "certs"), { recursive: true });
      await makeCa("unit CA one");
      const r = seed();
      expect([r.status, r.stdout]).toEqual([
        0,
        expect.stringMatching(/installed a certificate for localhost from the stack's CA/),
      ]);
      expect(r.stdout).not.toMatch(/placeholder/);
      expect([served().subject, served().issuer]).toEqual(["CN=localhost", "CN=unit CA one"]);
      // The agent that follows finds the leaf current: it only reloads nginx.
      const agent = runOnce(3600);
      expect(agent.stdout).not.toMatch(/issuing|renewing/);
      expect(agent.stdout).toMatch(/reloaded nginx/);
    });

    test("a reload nginx refuses: the attempt fails naming nginx, nothing counts as loaded, and the gate reads refused", async () => {
      process.kill(-nginx.pid!, "SIGKILL");
      nginx = nginxMaster("refuses");
      await makeCa("unit CA one");
      // The agent waits 10 s for the old worker to go.
      const r = runOnce(3600, 14_000);
      expect(r.stdout).toMatch(
        /attempt 1 failed, next in 30 s \(certificate: none loaded yet, the stored one valid until [^)]+\): nginx \(pid \d+\) did not reload in 10 s: its workers \d+ still accept/,
      );
      expect(r.stdout).not.toMatch(/reloaded nginx/);
      const health = run("health");
      expect(health.stdout).toMatch(/^no certificate from the CA loaded yet: failing since .*did not reload/);
      expect(issuanceState(health.status ?? -1, health.stdout)).toBe("refused");
    }, 20_000);

    test("no CA in the volume: the attempt fails, saying where it looked, and the placeholder stays", () => {
      const r = runOnce(3600);
      expect(r.stdout).toMatch(/attempt 1 failed, next in 30 s \(certificate: none yet\): no CA in .*internal-ca/);
      expect(served().subject).toBe("CN=localhost (placeholder)");
      expect(fs.readFileSync(path.join(dir, "data", "agent-status"), "utf8")).toMatch(/^failing since .*certificate: none yet/);
    });
  });
});

test("nginx's challenge location serves the webroot", () => {
  expect(acmeChallengeLocation()).toBe(
    `location ^~ ${ACME_CHALLENGE_PATH} {\n    root ${NGINX_WEBROOT};\n    default_type text/plain;\n}`,
  );
});

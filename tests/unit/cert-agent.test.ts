// certs/agent.sh's commands that need no CA and no engine, run on the host with sh and openssl.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { acmeChallengeLocation, ACME_CHALLENGE_PATH, CERT_FILE, KEY_FILE, NGINX_WEBROOT } from "../../certs/certAgent";

const SCRIPT = path.join(__dirname, "..", "..", "certs", "agent.sh");

describe("certs/agent.sh", () => {
  let dir: string;
  const run = (cmd: string, env: Record<string, string> = {}) =>
    spawnSync("sh", [SCRIPT, cmd], {
      encoding: "utf8",
      // `run` loops for ever once past its checks.
      timeout: 10_000,
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

  test("run refuses a profile this lego cannot ask for, before any request", () => {
    const fakeLego = path.join(dir, "lego");
    fs.writeFileSync(fakeLego, '#!/bin/sh\ncase "$1" in --version) echo "lego version 4.9.1";; *) echo "--days value";; esac\n', {
      mode: 0o755,
    });
    const r = run("run", { LEGO: fakeLego, ACME_SERVER: "https://127.0.0.1:1/dir", ACME_PROFILE: "shortlived" });
    expect([r.status, r.stdout]).toEqual([
      2,
      expect.stringContaining("ACME_PROFILE=shortlived: this lego (lego version 4.9.1) cannot ask for a profile"),
    ]);
  });
});

test("nginx's challenge location serves the webroot", () => {
  expect(acmeChallengeLocation()).toBe(
    `location ^~ ${ACME_CHALLENGE_PATH} {\n    root ${NGINX_WEBROOT};\n    default_type text/plain;\n}`,
  );
});

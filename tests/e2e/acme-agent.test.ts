// The certificate agent (certs/) live, against a real Pebble on the host and the real engine, without pulumi
// (the program's wiring is tested through the CLI elsewhere): a network of the test's own, nginx (the
// nginx:1.27.3 stand-in, Debian's 1.22) with a small TLS conf serving the challenge webroot and the
// certificate volume, and the agent in nginx's PID namespace. The agent asks for Pebble's `shortlived`
// profile, 60-second certificates here (the default profile's are 90 days), so it renews every 30 s (half the
// lifetime, as for any certificate of 10 days or less).
import { spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import type Docker from "dockerode";
import {
  acmeChallengeLocation,
  AGENT_DIRS,
  CERTBOT_IMAGE,
  NGINX_CERT_PATH,
  NGINX_CERTS_DIR,
  NGINX_KEY_PATH,
  NGINX_WEBROOT,
} from "../../certs/certAgent";
import { AGENT_HEALTH } from "../../certs/issuance";
import { startPebble, type Pebble } from "../../harness/pebble";
import { freePort } from "../../harness/ports";
import { PROJECT } from "../../infra/config";
import { ignoreNotFound, leftovers, stackLabel } from "../../infra/engine-objects";
import { labelBuildArgs, objectName, stackLabels } from "../../infra/naming";
import { ROOT } from "../../infra/stack-files";
import { docker, execIn, failures, HELD_PAST_RELOAD, logText, runInProject, servedCertificate, underLoad, within } from "./live";

const STACK = "acme-agent";
const LABELS = stackLabels(PROJECT, STACK);
const DOMAIN = "app.acme.test";
const NGINX_IMAGE = "nginx:1.27.3";
const AGENT_IMAGE = `${PROJECT}-cert-agent:${STACK}`;
const LIFETIME_S = 60;
const DEFAULT_LIFETIME_S = 90 * 86_400;
const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };
const name = (service: string) => objectName(PROJECT, STACK, service);

const conf = `server {
    listen 80;
    ${acmeChallengeLocation().replace(/\n/g, "\n    ")}
    location / { return 308 https://$host$request_uri; }
}
server {
    listen 443 ssl;
    server_name ${DOMAIN};
    ssl_certificate ${NGINX_CERT_PATH};
    ssl_certificate_key ${NGINX_KEY_PATH};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 75s;
    keepalive_requests 100000;
    location / { default_type text/plain; return 200 "Hello world!"; }
}
`;

const served = (port: number, ca: string) => servedCertificate(port, DOMAIN, ca);

describe("certificate agent: certbot over HTTP-01 against Pebble, beside nginx", () => {
  let pebble: Pebble | undefined;
  let root = "";
  let httpsPort = 0;
  let nginx: Docker.Container;
  let agent: Docker.Container;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "acme-agent-"));

  const cleanup = async () => {
    const label = JSON.stringify({ label: [stackLabel(STACK)] });
    for (const c of await docker.listContainers({ all: true, filters: label }))
      await docker.getContainer(c.Id).remove({ force: true }).catch(ignoreNotFound);
    for (const v of (await docker.listVolumes({ filters: label })).Volumes ?? [])
      await docker.getVolume(v.Name).remove().catch(ignoreNotFound);
    for (const n of await docker.listNetworks({ filters: label })) await docker.getNetwork(n.Id).remove().catch(ignoreNotFound);
    for (const i of await docker.listImages({ filters: label }))
      await docker.getImage(i.Id).remove({ force: true }).catch(ignoreNotFound);
  };

  /**
   * An agent as certs/certAgent.ts declares it: on the test's network, in nginx's PID namespace, no capability,
   * a read-only root, /tmp in memory; its data and certificate volumes given, the challenge webroot nginx serves.
   */
  const createAgent = (service: string, env: string[], volumes: string[], healthcheck?: Docker.HealthConfig) =>
    docker.createContainer({
      name: name(service),
      Image: AGENT_IMAGE,
      Cmd: ["run"],
      Labels: LABELS,
      Env: env,
      Healthcheck: healthcheck,
      HostConfig: {
        NetworkMode: name("net"),
        PidMode: `container:${nginx.id}`,
        Binds: [...volumes, `${name("certs-webroot")}:${AGENT_DIRS.webroot}`],
        CapDrop: ["ALL"],
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": "rw,nosuid,nodev,size=8m" },
        SecurityOpt: ["no-new-privileges:true"],
      },
    });
  /** A certificate's lifetime in whole days. */
  const lifetimeDays = (cert: crypto.X509Certificate) =>
    Math.round((Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000);

  beforeAll(async () => {
    const started = Date.now();
    await cleanup(); // an interrupted run's
    runInProject("bash", ["scripts/setup-acme.sh"]);
    runInProject("bash", ["scripts/build-standins.sh", NGINX_IMAGE, CERTBOT_IMAGE]);
    const build = await docker.buildImage(
      { context: path.join(ROOT, "certs"), src: ["Dockerfile", "agent.sh"] },
      { t: AGENT_IMAGE, buildargs: { CERTBOT_IMAGE, ...labelBuildArgs(PROJECT, STACK) }, labels: LABELS },
    );
    await new Promise((resolve, reject) =>
      docker.modem.followProgress(build, (err: Error | null, out: { error?: string }[]) =>
        err || out.some((o) => o.error) ? reject(err ?? new Error(out.map((o) => o.error).join(""))) : resolve(out),
      ),
    );

    const network = await docker.createNetwork({ Name: name("net"), Labels: LABELS });
    const gateway = (await network.inspect()).IPAM?.Config?.[0]?.Gateway;
    if (!gateway) throw new Error(`network ${name("net")} has no gateway address`);
    const httpPort = await freePort();
    httpsPort = await freePort();
    // Pebble listens on the test network's gateway: the agent reaches it there, the test too.
    pebble = await startPebble({
      httpPort,
      listenHost: gateway,
      validitySeconds: DEFAULT_LIFETIME_S,
      profileValiditySeconds: { shortlived: LIFETIME_S },
    });
    root = await pebble.root();

    for (const v of ["data", "certs", "webroot"]) await docker.createVolume({ Name: name(`certs-${v}`), Labels: LABELS });
    const agentVolumes = [`${name("certs-data")}:${AGENT_DIRS.data}`, `${name("certs-certs")}:${AGENT_DIRS.certs}`];
    // The seed: a placeholder, so nginx starts before the first issuance.
    const seed = await docker.createContainer({
      Image: AGENT_IMAGE,
      Cmd: ["seed"],
      Env: [`ACME_DOMAINS=${DOMAIN}`],
      Labels: LABELS,
      HostConfig: { Binds: agentVolumes, NetworkMode: "none" },
    });
    await seed.start();
    expect(((await seed.wait()) as { StatusCode: number }).StatusCode).toBe(0);

    fs.writeFileSync(path.join(dir, "default.conf"), conf);
    nginx = await docker.createContainer({
      name: name("nginx"),
      Image: NGINX_IMAGE,
      Labels: LABELS,
      ExposedPorts: { "80/tcp": {}, "443/tcp": {} },
      HostConfig: {
        NetworkMode: name("net"),
        PortBindings: {
          "80/tcp": [{ HostIp: "127.0.0.1", HostPort: String(httpPort) }],
          "443/tcp": [{ HostIp: "127.0.0.1", HostPort: String(httpsPort) }],
        },
        Binds: [
          `${path.join(dir, "default.conf")}:/etc/nginx/conf.d/default.conf:ro`,
          `${name("certs-certs")}:${NGINX_CERTS_DIR}:ro`,
          `${name("certs-webroot")}:${NGINX_WEBROOT}:ro`,
        ],
        // As the prod stack's nginx: its root master reads the key (mode 600) without DAC_OVERRIDE.
        CapDrop: ["ALL"],
        CapAdd: ["CHOWN", "SETUID", "SETGID", "NET_BIND_SERVICE"],
      },
    });
    await nginx.start();

    agent = await createAgent(
      "cert-agent",
      [
        `ACME_SERVER=${pebble.directoryUrlAt(gateway)}`,
        `ACME_EMAIL=ops@example.com`,
        `ACME_DOMAINS=${DOMAIN}`,
        `ACME_CA_PEM=${pebble.listenerCa}`,
        "ACME_PROFILE=shortlived",
        "ACME_BACKOFF_MIN_SECONDS=2",
        "ACME_BACKOFF_MAX_SECONDS=8",
      ],
      agentVolumes,
      { Test: ["CMD", "/usr/local/bin/cert-agent", "health"], Interval: 2e9, Timeout: 5e9, Retries: 1 },
    );
    await agent.start();
    console.log(`acme-agent: setup (tools, stand-ins, image, Pebble, containers) ${Date.now() - started} ms`);
  }, 600_000);

  afterAll(async () => {
    if (agent) console.log(`cert agent's log:\n${(await logText(agent).catch((e: Error) => e.message)).slice(-6000)}`);
    await pebble?.stop();
    await cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
    expect(await leftovers(docker, stackLabel(STACK))).toEqual({
      services: [],
      containers: [],
      networks: [],
      volumes: [],
      images: [],
    });
  }, 120_000);

  const health = async () => (await agent.inspect()).State.Health?.Status;
  const fromPebble = async () => {
    const cert = await served(httpsPort, root);
    return String(cert.issuer.CN).startsWith("Pebble Intermediate") ? cert : undefined;
  };

  test("obtains a certificate over HTTP-01; once its health says so, the next connection gets it and its chain verifies against Pebble's root", async () => {
    // As the first-certificate gate of `pulumi up` asks (certs/issuance.ts): once the agent's health says issued,
    // the very next connection gets the CA's certificate, not the placeholder (the agent waits out nginx's reload).
    const ms = await within(
      90_000,
      async () => (await execIn(agent, AGENT_HEALTH)).exitCode === 0,
      "the agent's health says a certificate is in",
      { everyMs: 20 },
    );
    console.log(`acme-agent: first certificate in ${ms} ms after the test started waiting`);
    const cert = await served(httpsPort, root);
    expect(String(cert.issuer.CN)).toMatch(/^Pebble Intermediate/);
    expect(cert.subjectaltname).toBe(`DNS:${DOMAIN}`);
    // The profile asked for, as certbot keeps it for renewals; Pebble's default one's would last 90 days.
    expect(Math.round((Date.parse(cert.valid_to) - Date.parse(cert.valid_from)) / 1000)).toBeLessThanOrEqual(LIFETIME_S);
    const renewalConf = await execIn(agent, ["cat", `${AGENT_DIRS.data}/certbot/renewal/${DOMAIN}.conf`]);
    expect(renewalConf.stdout).toMatch(/^preferred_profile = shortlived$/m);
    // openssl too, as a user checks it.
    fs.writeFileSync(path.join(dir, "root.pem"), root);
    const s = spawnSync(
      "openssl",
      ["s_client", "-connect", `127.0.0.1:${httpsPort}`, "-servername", DOMAIN, "-CAfile", path.join(dir, "root.pem")].concat([
        "-verify_return_error",
        "-verify_hostname",
        DOMAIN,
      ]),
      { input: "", encoding: "utf8", timeout: 10_000 },
    );
    expect([s.status, s.stdout.match(/Verify return code: .*/)?.[0]]).toEqual([0, "Verify return code: 0 (ok)"]);
    // The key nginx reads is not world-readable; the agent's health says the certificate is in.
    const modes = await execIn(agent, [
      "stat",
      "-c",
      "%n %a",
      `${AGENT_DIRS.certs}/privkey.pem`,
      `${AGENT_DIRS.certs}/fullchain.pem`,
    ]);
    expect(modes.stdout.trim().split("\n")).toEqual([
      `${AGENT_DIRS.certs}/privkey.pem 600`,
      `${AGENT_DIRS.certs}/fullchain.pem 644`,
    ]);
    await within(10_000, async () => (await health()) === "healthy", "the agent reports healthy");
  });

  test("a renewal (60 s certificates: due after 30 s) replaces the served certificate by a reload, 0 failed under HTTPS load", async () => {
    const before = (await fromPebble())!;
    const nginxBefore = await nginx.inspect();
    const { load, value, error } = await underLoad(
      `https://127.0.0.1:${httpsPort}/`,
      () =>
        within(
          LIFETIME_S * 1000 + 30_000,
          async () => (await fromPebble())?.serialNumber !== before.serialNumber,
          "nginx serves a renewed certificate",
          HELD_PAST_RELOAD,
        ),
      { ca: root, servername: DOMAIN },
    );
    console.log(
      `acme-agent renewal: new certificate after ${value} ms; ` +
        `${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} sent again`,
    );
    expect(error?.message).toBeUndefined();
    const after = (await fromPebble())!;
    console.log(`acme-agent renewal: ${before.valid_to} -> ${after.valid_to}`);
    expect(new Date(after.valid_to).getTime()).toBeGreaterThan(new Date(before.valid_to).getTime());
    expect(load.ok).toBeGreaterThan(100);
    expect(failures(load)).toEqual(NO_FAILURES);
    // The same nginx, never restarted: the agent reloaded it.
    const nginxAfter = await nginx.inspect();
    expect([nginxAfter.Id, nginxAfter.State.StartedAt, nginxAfter.RestartCount]).toEqual([
      nginxBefore.Id,
      nginxBefore.State.StartedAt,
      nginxBefore.RestartCount,
    ]);
    expect(await logText(agent)).toMatch(/reloaded nginx \(pid 1\)/);
  }, 240_000);

  test("ARI: Pebble's renewal information says now for a 90-day certificate (the default profile): a second agent renews it at its next check, not with a third of its lifetime left", async () => {
    const ariDomain = "ari.acme.test";
    for (const v of ["data", "certs"]) await docker.createVolume({ Name: name(`ari-${v}`), Labels: LABELS });
    // Its own account and certificate; the challenge files where nginx serves them.
    const ari = await createAgent(
      "ari-agent",
      [
        // Pebble listens on the network's gateway: its directory URL is there.
        `ACME_SERVER=${pebble!.directoryUrl}`,
        `ACME_DOMAINS=${ariDomain}`,
        `ACME_CA_PEM=${pebble!.listenerCa}`,
        // Pebble picks a profile at random for an order that names none.
        "ACME_PROFILE=default",
        // A check every 10 s: what the CA says is heard within that.
        "ACME_CHECK_SECONDS=10",
      ],
      [`${name("ari-data")}:${AGENT_DIRS.data}`, `${name("ari-certs")}:${AGENT_DIRS.certs}`],
    );
    const held = async () => new crypto.X509Certificate((await execIn(ari, ["cat", `${AGENT_DIRS.certs}/fullchain.pem`])).stdout);
    await ari.start();
    try {
      await within(90_000, async () => (await execIn(ari, AGENT_HEALTH)).exitCode === 0, "the ARI agent's first certificate", {
        everyMs: 50,
      });
      const first = await held();
      expect(lifetimeDays(first)).toBe(DEFAULT_LIFETIME_S / 86_400);
      // Before the agent's next check (10 s after the first certificate), as a CA does for one it revokes.
      const now = Date.now();
      await pebble!.setRenewalWindow(first.toString(), { start: new Date(now - 3_600_000), end: new Date(now - 3_599_000) });
      const ms = await within(60_000, async () => (await held()).serialNumber !== first.serialNumber, "a renewed certificate", {
        everyMs: 500,
      });
      const log = await logText(ari);
      console.log(`acme-agent ARI: renewed ${ms} ms after the window was set; the agent's log:\n${log.slice(-3000)}`);
      expect(log).toMatch(
        /renewed the certificate for ari\.acme\.test before its lifetime said so: the CA's renewal information \(ARI\)/,
      );
      // certbot asked Pebble's renewal information for it (certbot 5.8 does not name the replaced one in its order).
      expect(pebble!.logs()).toMatch(/GET \/draft-ietf-acme-ari-\d+\/renewalInfo\//);
      // The renewal is a 90-day one too, still far from due: the agent keeps it.
      const second = await held();
      expect(lifetimeDays(second)).toBe(DEFAULT_LIFETIME_S / 86_400);
    } finally {
      await ari.remove({ force: true }).catch(ignoreNotFound);
    }
  }, 180_000);

  test("a reload nginx refuses (a conf it cannot load) is a failed attempt: the agent says so and turns unhealthy, nginx keeps its certificate; the conf fixed, the next attempt loads the new one", async () => {
    const kept = (await fromPebble())!;
    const confFile = path.join(dir, "default.conf");
    // Written in place (the same inode): a file bind-mounted into nginx.
    fs.writeFileSync(confFile, conf.replace("keepalive_timeout 75s;", "keepalive_timeout 75s;\n    no_such_directive on;"));
    try {
      // The next renewal is due within 30 s; the agent waits 10 s for nginx's workers to change.
      await within(
        LIFETIME_S * 1000,
        async () => /attempt \d+ failed.*did not reload in 10 s/.test(await logText(agent)),
        "the agent's log says nginx did not reload",
      );
      await within(10_000, async () => (await health()) === "unhealthy", "the agent reports unhealthy");
      expect((await served(httpsPort, root)).serialNumber).toBe(kept.serialNumber);
    } finally {
      fs.writeFileSync(confFile, conf);
    }
    // Attempts 2, 4, 8 s apart: the next one reloads the certificate already installed.
    await within(30_000, async () => (await health()) === "healthy", "the agent reports healthy again");
    expect((await served(httpsPort, root)).serialNumber).not.toBe(kept.serialNumber);
  }, 120_000);

  test("Pebble stopped: the agent keeps the valid certificate, logs the CA's error, backs off, turns unhealthy", async () => {
    const kept = (await fromPebble())!;
    const earlier = (await logText(agent)).length;
    const ownLog = async () => (await logText(agent)).slice(earlier);
    await pebble!.stop();
    pebble = undefined;
    // Renewal falls due within 30 s; attempts 2 s, 4 s, 8 s apart.
    await within(
      LIFETIME_S * 1000,
      async () => /attempt 3 failed/.test(await ownLog()),
      "three failed attempts in the agent's log",
    );
    const log = await ownLog();
    const attempts = [...log.matchAll(/attempt (\d+) failed, next in (\d+) s \(certificate: ([^)]*)\): (.*)/g)];
    console.log(`acme-agent, CA gone:\n${attempts.map((a) => a[0]).join("\n")}`);
    expect(attempts.slice(0, 3).map((a) => [a[1], a[2]])).toEqual([
      ["1", "2"],
      ["2", "4"],
      ["3", "8"],
    ]);
    // The CA's (here: the network's) error, as certbot reports it.
    expect(attempts[0][4]).toMatch(/Failed to renew certificate .*Connection refused/);
    expect(attempts[0][3]).toMatch(/^the installed one, valid until/);
    await within(10_000, async () => (await health()) === "unhealthy", "the agent reports unhealthy");
    const inspect = await agent.inspect();
    const lastCheck = inspect.State.Health?.Log?.slice(-1)[0]?.Output ?? "";
    expect(lastCheck).toMatch(/^failing since .*last error: .*Connection refused/);
    // nginx still serves the certificate it had.
    expect((await served(httpsPort, root)).serialNumber).toBe(kept.serialNumber);
  }, 120_000);
});

// tls: acme through the real CLI: the prod shape with a Pebble of its own (Let's Encrypt's ACME test server,
// host processes; scripts/setup-acme.sh) as the CA. Pebble listens on the default bridge's gateway, the
// host's address that the agent on the stack's network reaches, and validates HTTP-01 on 127.0.0.1:httpPort
// (challtestsrv answers every name with 127.0.0.1). The first Pebble issues 60-second certificates, so the
// agent renews every 30 s by itself (half the lifetime, as for any certificate of 10 days or less): no
// `pulumi up`. The second issues 90-day ones, for what a destroy and an up do with a certificate not yet due.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LiveStack } from "../../harness/live-stack";
import { startPebble, type Pebble } from "../../harness/pebble";
import { enterSwarm } from "../../harness/swarm-mode";
import { freePort } from "../../harness/ports";
import { CERTBOT_IMAGE } from "../../certs/certAgent";
import { ignoreNotFound, leftovers, stackLabel } from "../../infra/engine-objects";
import { objectName } from "../../infra/naming";
import { PROJECT } from "../../infra/config";
import {
  bridgeGateway,
  curlTrusting,
  docker,
  failures,
  HELD_PAST_RELOAD,
  logText,
  runInProject,
  servedCertificate,
  underLoad,
  within,
} from "./live";

const DOMAIN = "app.acme.test";
const LIFETIME_S = 60;
const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };

const served = (port: number, ca: string) => servedCertificate(port, DOMAIN, ca);

interface AcmeStack {
  pebble: Pebble;
  live: LiveStack;
  /** Pebble's root: what the served chain verifies against. */
  root: string;
  httpsPort: number;
}

const keptVolume = (stack: string) => objectName(PROJECT, stack, "certs-data");
const removeKeptVolume = (stack: string) => docker.getVolume(keptVolume(stack)).remove().catch(ignoreNotFound);

/** Destroys the stack (again, if a test did), removes the volume destroy keeps, stops Pebble. */
async function tearDown(stack: Pick<AcmeStack, "live" | "pebble"> | undefined, name: string): Promise<void> {
  try {
    await stack?.live.destroy();
  } finally {
    await removeKeptVolume(name);
    await stack?.pebble.stop();
  }
}

/**
 * A Pebble of its own issuing certificates of `validitySeconds`, and a stack `stack` of `stackFile` (prod, or
 * swarm on a swarm the caller joined) with tls: acme against it, up. On failure nothing of either is left.
 */
async function upAgainstPebble(stack: string, validitySeconds: number, stackFile = "prod"): Promise<AcmeStack> {
  const started = Date.now();
  runInProject("bash", ["scripts/setup-acme.sh"]);
  runInProject("bash", ["scripts/build-standins.sh", CERTBOT_IMAGE]);
  const gateway = await bridgeGateway();
  const httpPort = await freePort();
  const httpsPort = await freePort();
  const pebble = await startPebble({ httpPort, listenHost: gateway, validitySeconds });
  const live = await LiveStack.create(stackFile, stack);
  try {
    await live.configure({
      httpPort: String(httpPort),
      httpsPort: String(httpsPort),
      tls: "acme",
      domain: DOMAIN,
      acmeServer: pebble.directoryUrlAt(gateway),
      acmeEmail: "ops@example.com",
      acmeCaFile: pebble.listenerCaFile,
    });
    await live.up();
  } catch (e) {
    await tearDown({ live, pebble }, stack).catch(() => undefined);
    throw e;
  }
  console.log(`${stack}: Pebble and the stack up in ${Math.round((Date.now() - started) / 1000)} s`);
  return { pebble, live, root: await pebble.root(), httpsPort };
}

/** The agent renews by itself (60-second certificates) under HTTPS load: 0 failed, the same nginx serves on. */
async function renewsUnderLoad({ live, root, httpsPort }: AcmeStack, tag: string): Promise<void> {
  const nginxBefore = await live.container("nginx-container").inspect();
  const first = (await served(httpsPort, root)).fingerprint256;
  const { load, value, error } = await underLoad(
    `https://127.0.0.1:${httpsPort}/`,
    () =>
      within(
        LIFETIME_S * 1000 + 30_000,
        async () => (await served(httpsPort, root)).fingerprint256 !== first,
        "a renewed certificate served",
        HELD_PAST_RELOAD,
      ),
    { ca: root, servername: DOMAIN, newConnections: 8 },
  );
  console.log(
    `${tag}: renewal after ${value} ms: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} sent again`,
  );
  expect(error).toBeUndefined();
  expect(load.ok).toBeGreaterThan(100);
  expect(failures(load)).toEqual(NO_FAILURES);
  const nginxAfter = await live.container("nginx-container").inspect();
  expect([nginxAfter.Id, nginxAfter.State.StartedAt]).toEqual([nginxBefore.Id, nginxBefore.State.StartedAt]);
  expect(await live.preview()).toEqual([]);
}

/** curl to the stack's HTTPS port on 127.0.0.1 by the domain's name, trusting `rootFile`; `-D -` shows the headers. */
function curlDomain(httpsPort: number, rootFile: string, args: string[], urlPath = "/") {
  return curlTrusting(rootFile, [
    "--resolve",
    `${DOMAIN}:${httpsPort}:127.0.0.1`,
    ...args,
    `https://${DOMAIN}:${httpsPort}${urlPath}`,
  ]);
}

describe("prod: tls: acme against Pebble, through the CLI", () => {
  let pebble: Pebble;
  let live: LiveStack;
  let stack: AcmeStack | undefined;
  let root = "";
  let httpsPort = 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-acme-"));
  const rootFile = path.join(dir, "pebble-root.pem");
  const agent = () => live.container("nginx-cert-agent").inspect();
  // `up` waits on the agent's own health command; the engine's first check comes one interval (10 s) later.
  const agentHealthy = () =>
    within(30_000, async () => (await agent()).State.Health?.Status === "healthy", "the agent's healthcheck passing");

  beforeAll(async () => {
    stack = await upAgainstPebble("acme", LIFETIME_S);
    ({ pebble, live, root, httpsPort } = stack);
    fs.writeFileSync(rootFile, root);
  }, 900_000);

  afterAll(async () => {
    await tearDown(stack, "acme");
    fs.rmSync(dir, { recursive: true, force: true });
  }, 600_000);

  test("pulumi up returns with Pebble's certificate served: the chain verifies for the domain, HTTP/2, HSTS; the agent healthy", async () => {
    const cert = await served(httpsPort, root);
    expect([cert.subjectaltname, String(cert.issuer.CN)]).toEqual([
      `DNS:${DOMAIN}`,
      expect.stringMatching(/^Pebble Intermediate/),
    ]);
    const curl = curlDomain(httpsPort, rootFile, ["--http2", "-D", "-", "-w", "\n%{http_version}"]);
    expect(curl.status).toBe(0);
    expect(curl.out).toMatch(/^strict-transport-security: max-age=\d+/im);
    expect(curl.out.trimEnd().split("\n").slice(-2)).toEqual(["Hello world!", "2"]);
    await agentHealthy();
    expect(await live.preview()).toEqual([]);
    await live.refreshFindsNothing();
  }, 300_000);

  test("renewal by the agent alone, under HTTPS load (new connections and keep-alive ones): 0 failed, a new certificate served, nginx not restarted", async () => {
    await renewsUnderLoad(stack!, "acme");
  }, 300_000);

  test("a new nginx (workers 1 → 2) takes over under HTTPS load with 0 failed, serving the CA's certificate from the first request; a new agent joins it", async () => {
    const agentBefore = await agent();
    const nginxBefore = await live.container("nginx-container").inspect();
    const { load, error } = await underLoad(
      `https://127.0.0.1:${httpsPort}/`,
      () => live.up({ config: { nginxWorkerProcesses: "2" } }),
      {
        ca: root,
        servername: DOMAIN,
        newConnections: 8,
      },
    );
    console.log(`acme: handover: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} sent again`);
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(100);
    // Each new connection verified the chain against Pebble's root: the placeholder was never served.
    expect(failures(load)).toEqual(NO_FAILURES);
    const nginxAfter = await live.container("nginx-container").inspect();
    const agentAfter = await agent();
    expect(nginxAfter.Id).not.toBe(nginxBefore.Id);
    expect(agentAfter.Id).not.toBe(agentBefore.Id);
    expect(agentAfter.HostConfig.PidMode).toBe(`container:${nginxAfter.Id}`);
    await agentHealthy();
    expect(await live.preview()).toEqual([]);
  }, 600_000);

  test("a CA that refuses the challenge (a new domain): pulumi up fails at the first attempt with the CA's error, 0 failed meanwhile, the valid certificate serves on; the old domain goes through again", async () => {
    // challtestsrv sends Pebble's validation for this name to an address where nothing listens.
    const refused = "refused.acme.test";
    const added = await fetch(`http://127.0.0.1:${pebble.ports.challtestManagement}/add-a`, {
      method: "POST",
      body: JSON.stringify({ host: refused, addresses: ["127.0.0.2"] }),
    });
    expect(added.status).toBe(200);
    const started = Date.now();
    const { load, value } = await underLoad(
      `https://127.0.0.1:${httpsPort}/`,
      () =>
        live.up({ config: { domain: refused } }).then(
          () => undefined,
          (e: Error) => e,
        ),
      { ca: root, servername: DOMAIN, newConnections: 8 },
    );
    const seconds = Math.round((Date.now() - started) / 1000);
    const said = value?.message.match(/tls: acme: [^\n]*/)?.[0];
    console.log(`acme: refused after ${seconds} s: ${said}; ${load.requests} responses, ${JSON.stringify(failures(load))}`);
    expect(said).toMatch(
      new RegExp(
        `^tls: acme: no certificate for ${refused} from the CA: .*certificate: none yet; last error: .*Type: connection Detail: .*connection refused`,
      ),
    );
    // At the first attempt, not at the 180 s limit.
    expect(seconds).toBeLessThan(120);
    expect(failures(load)).toEqual(NO_FAILURES);
    // The old domain's certificate from Pebble (the agent may have renewed it meanwhile): never a placeholder.
    const after = await served(httpsPort, root);
    expect([after.subjectaltname, String(after.issuer.CN)]).toEqual([
      `DNS:${DOMAIN}`,
      expect.stringMatching(/^Pebble Intermediate/),
    ]);
    await live.up({ config: { domain: DOMAIN } });
    expect(String((await served(httpsPort, root)).issuer.CN)).toMatch(/^Pebble Intermediate/);
    expect(await live.preview()).toEqual([]);
  }, 600_000);

  test("pulumi destroy keeps certbot's account and certificates (one volume) and nothing else", async () => {
    await live.destroy();
    expect(await leftovers(docker, stackLabel("acme"))).toEqual({
      services: [],
      containers: [],
      networks: [],
      volumes: [keptVolume("acme")],
      images: [],
    });
  }, 600_000);
});

// Let's Encrypt issues 5 certificates a week for one set of names: a destroy and an up must not ask for one
// while the kept certificate is good. Pebble's 90-day certificates here, so the kept one is not due.
describe("prod: tls: acme, pulumi destroy then pulumi up", () => {
  let stack: AcmeStack | undefined;
  beforeAll(async () => {
    stack = await upAgainstPebble("acme-again", 90 * 86_400);
  }, 900_000);
  afterAll(() => tearDown(stack, "acme-again"), 600_000);

  test("the kept certificate serves again: the same one, no order at the CA (no obtain, no renewal in the agent's log)", async () => {
    const { live, root, httpsPort } = stack!;
    const before = await served(httpsPort, root);
    await live.destroyResources();
    expect((await leftovers(docker, stackLabel("acme-again"))).volumes).toEqual([keptVolume("acme-again")]);
    await live.up();
    const after = await served(httpsPort, root);
    const log = await logText(live.container("nginx-cert-agent"));
    console.log(`acme-again: the agent's log after destroy and up:\n${log.slice(-2000)}`);
    expect([after.fingerprint256, after.serialNumber]).toEqual([before.fingerprint256, before.serialNumber]);
    expect(log).not.toMatch(/obtaining a certificate|renewing the certificate|renewed the certificate|\[certbot\]/);
    expect(log).toMatch(/installed the certificate valid until .*; reloaded nginx/);
    expect(await live.preview()).toEqual([]);
  }, 600_000);
});

// The swarm stack: nginx, and the agent in its PID namespace, run as containers on the node the stack deploys
// through (the edge), on the overlay network, which the agent reaches Pebble from; the app is a service nginx
// reaches over TCP.
describe("swarm: tls: acme against Pebble, through the CLI", () => {
  let leaveSwarm: (() => Promise<void>) | undefined;
  let stack: AcmeStack | undefined;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-swarm-acme-"));
  const rootFile = path.join(dir, "pebble-root.pem");
  beforeAll(async () => {
    leaveSwarm = await enterSwarm(docker);
    stack = await upAgainstPebble("swarm-acme", LIFETIME_S, "swarm");
    fs.writeFileSync(rootFile, stack.root);
  }, 900_000);
  afterAll(async () => {
    try {
      await tearDown(stack, "swarm-acme");
    } finally {
      await leaveSwarm?.();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 600_000);

  test("pulumi up returns with Pebble's certificate served for the domain, over HTTP/2; the app builds https:// URLs", async () => {
    const { root, httpsPort } = stack!;
    const cert = await served(httpsPort, root);
    expect([cert.subjectaltname, String(cert.issuer.CN)]).toEqual([
      `DNS:${DOMAIN}`,
      expect.stringMatching(/^Pebble Intermediate/),
    ]);
    const hello = curlDomain(httpsPort, rootFile, ["--http2", "-w", "\n%{http_version}"]);
    expect([hello.status, hello.out]).toEqual([0, "Hello world!\n2"]);
    const links = curlDomain(httpsPort, rootFile, [], "/links");
    // (The swarm stack passes $host, without the port, as the Host header.)
    expect((JSON.parse(links.out) as { index: string }).index).toBe(`https://${DOMAIN}/`);
  }, 300_000);

  test("renewal by the agent alone, under HTTPS load: 0 failed, a new certificate served, nginx not restarted", async () => {
    await renewsUnderLoad(stack!, "swarm-acme");
  }, 300_000);
});

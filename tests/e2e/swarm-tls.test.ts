// HTTPS on the swarm stack, through the real CLI on a single-node swarm: nginx runs as containers on the node
// (the edge), the app as a service it reaches over TCP. tls: certificate with the test's own CA (a chain served),
// the scheme reaching the app over TCP, then a rotation and a new nginx, each under HTTPS load.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LiveStack } from "../../harness/live-stack";
import { leftovers, stackLabel } from "../../infra/engine-objects";
import { freePort } from "../../harness/ports";
import { enterSwarm } from "../../harness/swarm-mode";
import { createRootCa, issue, leafNames, type CertifiedKey } from "../../infra/tls";
import {
  containerGone,
  curlTrusting,
  docker,
  failures,
  fingerprint,
  nginxInHolder,
  nginxWorkers,
  servedCertificate,
  underLoad,
} from "./live";

const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };

describe("swarm: HTTPS at the edge (tls: certificate), the app reached over TCP", () => {
  let leaveSwarm: (() => Promise<void>) | undefined;
  let live: LiveStack | undefined;
  let root: CertifiedKey;
  let intermediate: CertifiedKey;
  let leaf: CertifiedKey;
  let httpPort = 0;
  let httpsPort = 0;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-swarm-tls-"));
  const caFile = path.join(tmp, "root.pem");
  const httpsUrl = () => `https://127.0.0.1:${httpsPort}/`;
  const newLeaf = () => issue(intermediate, { commonName: "localhost", days: 30, ...leafNames("localhost") });
  const servedLeaf = async () => (await servedCertificate(httpsPort, "localhost", root.certPem)).fingerprint256;
  /** curl to 127.0.0.1 only, trusting the test's root. */
  const curl = (args: string[]) => curlTrusting(caFile, args);
  const nginx = () => live!.container("nginx-container").inspect();

  beforeAll(async () => {
    leaveSwarm = await enterSwarm(docker);
    root = await createRootCa({ commonName: "swarm-tls.test root", days: 30 });
    intermediate = await issue(root, { commonName: "swarm-tls.test intermediate", days: 30, dnsNames: [], ips: [], ca: true });
    leaf = await newLeaf();
    fs.writeFileSync(caFile, root.certPem);
    [httpPort, httpsPort] = [await freePort(), await freePort()];
    live = await LiveStack.create("swarm", "swarm-tls");
    try {
      await live.configure({ httpPort: String(httpPort), httpsPort: String(httpsPort), tls: "certificate" });
      await live.configureSecrets({ tlsCertificate: leaf.certPem + intermediate.certPem, tlsPrivateKey: leaf.keyPem });
      await live.up();
    } catch (e) {
      await live.destroy().catch(() => undefined);
      throw e;
    }
  }, 900_000);
  afterAll(async () => {
    await live?.destroy();
    await leaveSwarm?.();
    fs.rmSync(tmp, { recursive: true, force: true });
  }, 600_000);

  test("HTTPS serves Hello world! over HTTP/2 with the chain; HSTS; the app builds https:// URLs, whatever a client claims", async () => {
    expect(curl(["--http2", "-w", "\n%{http_version}", httpsUrl()]).out).toBe("Hello world!\n2");
    expect(await servedLeaf()).toBe(fingerprint(leaf.certPem));
    expect(curl(["-D", "-", "-o", "/dev/null", httpsUrl()]).out).toMatch(/^strict-transport-security: max-age=63072000\r?$/im);
    // The scheme reaches the app over TCP; nginx sets it on every request, so a client's own header does not count.
    const links = JSON.parse(curl(["-H", "X-Forwarded-Proto: http", `${httpsUrl()}links`]).out) as { index: string };
    // (The swarm stack passes $host, without the port, as the Host header.)
    expect(links.index).toBe("https://127.0.0.1/");
    const redirect = curl(["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", `http://127.0.0.1:${httpPort}/links?a=1`]);
    expect(redirect.out).toBe(`301 https://127.0.0.1:${httpsPort}/links?a=1`);
  });

  test("rotation to a new certificate under HTTPS load: 0 failed, the new one served, the same nginx container", async () => {
    const before = await nginx();
    const next = await newLeaf();
    await live!.configureSecrets({ tlsCertificate: next.certPem + intermediate.certPem, tlsPrivateKey: next.keyPem });
    const { load, error } = await underLoad(httpsUrl(), () => live!.up(), { ca: root.certPem, newConnections: 8 });
    console.log(
      `swarm tls rotation under HTTPS load: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} retried`,
    );
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(200);
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await servedLeaf()).toBe(fingerprint(next.certPem));
    expect((await nginx()).Id).toBe(before.Id);
    leaf = next;
  });

  test("a new nginx (worker count) under HTTPS load: 0 failed, the new one alone serves the certificate", async () => {
    const before = await nginx();
    const { load, error } = await underLoad(httpsUrl(), () => live!.up({ config: { nginxWorkerProcesses: "2" } }), {
      ca: root.certPem,
      newConnections: 8,
    });
    console.log(
      `swarm tls nginx handover under HTTPS load: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} retried`,
    );
    expect(error).toBeUndefined();
    expect(load.ok).toBeGreaterThan(200);
    expect(failures(load)).toEqual(NO_FAILURES);
    const after = await nginx();
    expect([after.Id === before.Id, await containerGone(docker, before.Id)]).toEqual([false, true]);
    expect(await nginxInHolder(live!)).toEqual([after.Id]);
    expect(await nginxWorkers(docker.getContainer(after.Id))).toBe(2);
    expect(await servedLeaf()).toBe(fingerprint(leaf.certPem));
  });

  test("a second preview finds nothing; destroy leaves nothing of the stack", async () => {
    expect(await live!.preview()).toEqual([]);
    const name = live!.name;
    await live!.destroy();
    live = undefined;
    expect(await leftovers(docker, stackLabel(name))).toEqual({
      services: [],
      containers: [],
      networks: [],
      volumes: [],
      images: [],
    });
  });
});

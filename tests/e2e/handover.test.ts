// Replacing nginx itself on the prod shape, through the real CLI, under load on HTTPS and plain HTTP (16
// clients each, half of them a new connection per request): a new worker count, memory and CPU limits,
// metrics on another port, a new image, a new mount (a second app replica's socket), with 1 and 2 app
// replicas. Each must fail no request; afterwards the new nginx alone runs in the holder's namespace and the
// old one is gone. A new nginx that cannot start fails `pulumi up` with the reason while the old one serves
// (nginx/handover.ts).
import type Docker from "dockerode";
import { LiveStack } from "../../harness/live-stack";
import { freePort } from "../../harness/ports";
import { NGINX_HEALTH_PATH, NGINX_METRICS_PATH } from "../../nginx/conf";
import {
  buildTestImage,
  containerGone,
  docker,
  execIn,
  failures,
  get,
  nginxInHolder,
  nginxWorkers,
  underLoad,
  type LoadCount,
} from "./live";

const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };
/** prod's nginx image (a stand-in here: Debian's nginx 1.22, declaring NGINX_VERSION=1.22.1). */
const BASE = "nginx:1.27.3";
/** The routine update: one more layer on the same base, under a new tag. */
const NEXT = "nginx:1.27.3-handover";
/** An image whose nginx cannot start. */
const BROKEN = "nginx:1.27.3-broken";
const LAYER_FILE = "/etc/handover-test-layer";

describe("prod: a replaced nginx hands its ports over to the new one, failing no request", () => {
  let live: LiveStack;
  let ca: string;
  let httpsUrl: string;

  beforeAll(async () => {
    buildTestImage(NEXT, `FROM ${BASE}\nRUN echo next > ${LAYER_FILE}\n`);
    buildTestImage(BROKEN, `FROM ${BASE}\nRUN rm /usr/sbin/nginx\n`);
    const [httpPort, httpsPort] = [await freePort(), await freePort()];
    live = await LiveStack.create("prod", "handover");
    try {
      await live.up({ config: { httpPort: String(httpPort), httpsPort: String(httpsPort), tls: "internal" } });
    } catch (e) {
      await live.destroy().catch(() => undefined);
      throw e;
    }
    ca = String(live.outputs.caCertificate);
    httpsUrl = String(live.outputs.httpsUrl);
    if (!httpsUrl.startsWith("https://127.0.0.1:")) throw new Error(`not a loopback URL: ${httpsUrl}`);
  }, 600_000);
  afterAll(async () => {
    await live?.destroy();
    for (const tag of [NEXT, BROKEN])
      await docker
        .getImage(tag)
        .remove()
        .catch(() => undefined);
  });

  const nginx = () => live.container("nginx-container").inspect();
  const holder = () => live.container("nginx-netns").inspect();
  const joined = () => nginxInHolder(live);
  const gone = (id: string) => containerGone(docker, id);

  /** `pulumi up` with `config` under HTTPS load on the site and plain HTTP load on nginx's health path. */
  async function upUnderLoad(what: string, config: Record<string, string>) {
    const health = new URL(NGINX_HEALTH_PATH, live.url).toString();
    const https = await underLoad(httpsUrl, () => underLoad(health, () => live.up({ config }), { newConnections: 8 }), {
      ca,
      newConnections: 8,
    });
    const http = https.value!;
    const show = (l: LoadCount) => `${l.requests} answered, ${JSON.stringify(failures(l))}, ${l.retried} retried`;
    console.log(`${what}: HTTPS ${show(https.load)}; HTTP ${show(http.load)}`);
    return { https: https.load, http: http.load, error: http.error };
  }

  /**
   * A change under load: 0 failed on either port; then one nginx runs in the holder's namespace, with the
   * change (`took`): a new one, the old one gone (`replaced`), or the same one, updated in place.
   */
  async function changes(
    what: string,
    config: Record<string, string>,
    replaced: boolean,
    took: (n: Docker.ContainerInspectInfo) => Promise<void>,
  ) {
    const before = await nginx();
    const { https, http, error } = await upUnderLoad(what, config);
    expect(error).toBeUndefined();
    expect([https.ok, http.ok].every((n) => n > 200)).toBe(true);
    expect([failures(https), failures(http)]).toEqual([NO_FAILURES, NO_FAILURES]);
    const after = await nginx();
    expect([after.Id === before.Id, await gone(before.Id)]).toEqual(replaced ? [false, true] : [true, false]);
    expect(await joined()).toEqual([after.Id]);
    await took(after);
  }
  const handsOver = (what: string, config: Record<string, string>, took: (n: Docker.ContainerInspectInfo) => Promise<void>) =>
    changes(what, config, true, took);

  const workers = (n: Docker.ContainerInspectInfo) => nginxWorkers(docker.getContainer(n.Id));

  test("a new worker count", async () => {
    await handsOver("nginxWorkerProcesses 1 -> 2", { nginxWorkerProcesses: "2" }, async (n) => expect(await workers(n)).toBe(2));
  });

  // The provider updates a container's memory limit in place (docker update); a CPU limit replaces it.
  test("a new memory limit, applied to the running nginx; a new CPU limit, handed over", async () => {
    await changes("nginxMemoryMb 128 -> 160", { nginxMemoryMb: "160" }, false, async (n) =>
      expect(n.HostConfig.Memory).toBe(160 * 1024 * 1024),
    );
    await handsOver("nginxCpus 1 -> 1.5", { nginxCpus: "1.5" }, async (n) => expect(n.HostConfig.NanoCpus).toBe(1.5e9));
  });

  // metricsPort is the forwarder's port, not the holder's: turning metrics on reloads nginx's conf and adds the
  // forwarder, a new port replaces the forwarder alone, and off removes it; nginx and its holder stay throughout.
  test("metrics on, on another port, then off: nginx and its port holder stay, 0 failed", async () => {
    const holderId = (await holder()).Id;
    const metricsAt = (port: number) => `http://127.0.0.1:${port}${NGINX_METRICS_PATH}`;
    const [first, second] = [await freePort(), await freePort()];
    for (const [what, port] of [
      [`metricsPort 0 -> ${first}`, first],
      [`metricsPort ${first} -> ${second}`, second],
      [`metricsPort ${second} -> 0`, 0],
    ] as const) {
      await changes(what, { metricsPort: String(port) }, false, async () => undefined);
      expect((await holder()).Id).toBe(holderId);
      if (port) expect((await get(metricsAt(port))).body).toMatch(/^nginx_up 1$/m);
      // The port metrics left answers no more: the forwarder that held it is gone.
      for (const old of [first, second].filter((p) => p !== port)) {
        await expect(get(metricsAt(old), {}, 1000)).rejects.toThrow();
      }
    }
    expect(await live.unknownOnEngine()).toEqual([]);
  });

  test("a new nginx image", async () => {
    await handsOver(`nginxImage ${BASE} -> ${NEXT}`, { nginxImage: NEXT }, async (n) => {
      expect((await execIn(docker.getContainer(n.Id), ["cat", LAYER_FILE])).stdout.trim()).toBe("next");
    });
  });

  test("a new mount (a second app replica's socket), then a new worker count with 2 replicas", async () => {
    await handsOver("replicas 1 -> 2", { replicas: "2" }, async (n) =>
      expect(n.Mounts.map((m) => m.Destination)).toEqual(expect.arrayContaining(["/srv/sockets/1", "/srv/sockets/2"])),
    );
    await handsOver("2 replicas: nginxWorkerProcesses 2 -> 1", { nginxWorkerProcesses: "1" }, async (n) =>
      expect(await workers(n)).toBe(1),
    );
  });

  test("a new nginx that cannot start fails pulumi up with the reason; the old one serves throughout; the next good up goes through", async () => {
    const before = await nginx();
    const failed = await upUnderLoad(`nginxImage -> ${BROKEN}`, { nginxImage: BROKEN });
    expect(failed.error?.message).toMatch(
      /release of .*: the new container stopped \(exit code \d+\).*the old one keeps serving/,
    );
    expect([failures(failed.https), failures(failed.http)]).toEqual([NO_FAILURES, NO_FAILURES]);
    expect((await docker.getContainer(before.Id).inspect()).State.Running).toBe(true);
    await handsOver(`nginxImage ${BROKEN} -> ${NEXT} (after the failed one)`, { nginxImage: NEXT }, async (n) => {
      expect((await execIn(docker.getContainer(n.Id), ["cat", LAYER_FILE])).stdout.trim()).toBe("next");
    });
    // Nothing of the failed one left.
    expect(await gone(before.Id)).toBe(true);
    expect(await live.unknownOnEngine()).toEqual([]);
  });

  test("after the handovers: refresh finds nothing, and preview no change", async () => {
    expect(await live.refreshFindsNothing()).toEqual([]);
    expect(await live.preview()).toEqual([]);
  });
});

import type Docker from "dockerode";
import { LiveStack } from "../../harness/live-stack";
import { RemoteEngine } from "../../harness/remote-engine";
import { engineClient, type EngineSettings } from "../../infra/engine";
import { ignoreNotFound, labelledObjects, stackLabel, type EngineObject } from "../../infra/engine-objects";
import { LABEL } from "../../infra/naming";
import { stackConfig } from "../../infra/stack-files";
import { answersHello, docker, failures, get, recover, underLoad, versionsServing, within } from "./live";

// prod on an engine that is not the local one, through the real CLI: a nested dockerd (harness/remote-engine.ts)
// reached over TLS with a client certificate (docker:host tcp://…:2376 with docker:caMaterial/certMaterial/
// keyMaterial) and over ssh:// (an OpenSSH server in the same node, docker:sshOpts naming the key). Every
// dynamic resource (health gate and cutover, conf writer and reload, image tag), `npm run recover` and the
// harness must reach that engine, and the local one must not see the stack at all: the only object there with
// the stack's label is a decoy the test puts there, which a recover on the wrong engine would take for an
// orphan and remove.

/** Host ports the node forwards to its engine's published nginx, one per stack. */
const PORT = { tls: 8271, ssh: 8272 } as const;
const prod = stackConfig("prod");
const BASE_IMAGES = [prod["flask-proxy:nginxImage"], prod["flask-proxy:pythonImage"]];
const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };

const names = (objects: EngineObject[]) => objects.map((o) => `${o.kind} ${o.name}`).sort();

/** A stack on the remote engine, with a decoy of its label on the local one. */
class RemoteStack {
  private destroyed = false;

  private constructor(
    readonly live: LiveStack,
    /** The engine the harness reads from the stack's config, as recover does. */
    readonly engine: Docker,
    private readonly decoy: string,
  ) {}

  static async up(name: string, settings: EngineSettings, port: number): Promise<RemoteStack> {
    const live = await LiveStack.create("prod", name);
    await live.configureEngine(settings);
    const decoy = `${name}-local-decoy`;
    await docker.createVolume({ Name: decoy, Labels: { [LABEL.stack]: name } });
    const stack = new RemoteStack(live, await live.engine(), decoy);
    try {
      const t = Date.now();
      // Published on the node's every address; the node forwards the port from the host's loopback.
      await live.up({ config: { httpPort: String(port), bindAddress: "0.0.0.0" } });
      console.log(`${name}: pulumi up on the remote engine took ${((Date.now() - t) / 1000).toFixed(1)} s`);
    } catch (e) {
      await stack.cleanUp().catch(() => undefined);
      throw e;
    }
    return stack;
  }

  get name(): string {
    return this.live.name;
  }

  /** The stack's objects on the remote engine. */
  remote(): Promise<EngineObject[]> {
    return labelledObjects(this.engine, stackLabel(this.name));
  }

  /** What the local engine holds with the stack's label: the decoy and nothing else. */
  async expectLocalUntouched(): Promise<void> {
    expect(names(await labelledObjects(docker, stackLabel(this.name)))).toEqual([`volume ${this.decoy}`]);
  }

  /**
   * `npm run recover` after an object of the stack's label appeared on the remote engine behind the state's
   * back: it goes, the local decoy stays; `again`: a second run finds nothing to do.
   */
  async recoverRemovesRemoteOrphan(again = true): Promise<void> {
    const orphan = `${this.name}-orphan`;
    await this.engine.createVolume({ Name: orphan, Labels: { [LABEL.stack]: this.name } });
    const out = await recover(this.live);
    expect(out).toContain(`removed volume ${orphan}`);
    expect(out).not.toContain(this.decoy);
    expect(names(await this.remote())).not.toContain(`volume ${orphan}`);
    await this.expectLocalUntouched();
    if (again) expect(await recover(this.live)).toContain("nothing to recover");
  }

  /** `pulumi destroy` (once). */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.live.destroy();
  }

  /** Destroys the stack if that has not happened, and removes the decoy. */
  async cleanUp(): Promise<void> {
    try {
      await this.destroy();
    } finally {
      await docker.getVolume(this.decoy).remove().catch(ignoreNotFound);
    }
  }
}

describe("prod on a remote engine: TLS with client certificates, and ssh://", () => {
  let node: RemoteEngine;
  const started = Date.now();

  beforeAll(async () => {
    node = await RemoteEngine.start(Object.values(PORT));
    await node.load(BASE_IMAGES);
    console.log(
      `remote engine at ${node.ip} up, ${BASE_IMAGES.join(", ")} loaded, in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  });
  afterAll(async () => {
    await node?.stop();
    console.log(`remote suite: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  test("the engine answers only TLS with a certificate of the test's CA", async () => {
    await expect(engineClient({ host: node.tls.host }).ping()).rejects.toThrow();
    expect(String(await node.client("tls").ping())).toBe("OK");
  });

  describe("over TLS (docker:caMaterial/certMaterial/keyMaterial)", () => {
    let s: RemoteStack | undefined;
    afterAll(async () => {
      await s?.cleanUp();
    });

    test("pulumi up: every object on the remote engine, the key secret in the state, nothing local", async () => {
      s = await RemoteStack.up("remote-tls", node.tls, PORT.tls);
      await within(30_000, answersHello(s.live.url), "nginx on the remote engine answers through the node");
      const objects = names(await s.remote());
      for (const c of ["flask-container", "nginx-container"]) {
        expect(objects).toContain(`container ${String((await s.live.container(c).inspect()).Name).slice(1)}`);
      }
      expect(await s.live.unknownOnEngine()).toEqual([]);
      await s.expectLocalUntouched();
      // The dynamic resources hold the settings; the key only as a secret (`pulumi stack export` shows none).
      const key = node.tls.keyMaterial!.split("\n")[1];
      const exported = await s.live.run(["stack", "export"]);
      expect(exported).toContain('"engine":');
      expect(exported).not.toContain(key);
    });

    test("a release (new appVersion) under load: health-gated cutover on the remote engine, no request lost", async () => {
      const { load, error } = await underLoad(s!.live.url, () => s!.live.up({ config: { appVersion: "0.0.2" } }));
      console.log(`remote-tls release: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} resent`);
      expect(error).toBeUndefined();
      expect(failures(load)).toEqual(NO_FAILURES);
      expect(load.ok).toBeGreaterThan(100);
      expect(await versionsServing(s!.live.url)).toEqual(["0.0.2"]);
      expect(await s!.live.unknownOnEngine()).toEqual([]);
      await s!.expectLocalUntouched();
    });

    test("a conf change is written into the volume and reloaded in the running nginx on the remote engine", async () => {
      const nginx = s!.live.container("nginx-container");
      const before = await nginx.inspect();
      // A GET of / in either access log format (combined, or prod's json).
      const logged = async () =>
        (await nginx.logs({ stdout: true, stderr: true })).toString("latin1").match(/"GET \/ HTTP|"uri":"\/"/g)?.length ?? 0;
      await s!.live.up({ config: { nginxAccessLog: "on" } });
      const after = await nginx.inspect();
      expect([after.Id, after.State.StartedAt]).toEqual([before.Id, before.State.StartedAt]);
      // The reloaded conf serves: each request is logged at once (the buffered log would hold them).
      const lines = await logged();
      for (let i = 0; i < 5; i++) expect((await get(s!.live.url)).status).toBe(200);
      await within(2_000, async () => (await logged()) - lines >= 5, "the requests in nginx's unbuffered log");
      await s!.expectLocalUntouched();
    });

    test("npm run recover works on the remote engine: a remote orphan goes, the local decoy stays", async () => {
      await s!.recoverRemovesRemoteOrphan();
    });

    test("pulumi destroy removes everything from the remote engine", async () => {
      await s!.destroy();
      expect(await s!.remote()).toEqual([]);
      await s!.expectLocalUntouched();
    });
  });

  // The same client over another connection: the release and recover again, without the load and the reload
  // (their engine calls are the same ones as the cutover's and the conf writer's, which up and the release make).
  describe("over ssh:// (docker:sshOpts with the test's key and the node's host key)", () => {
    let s: RemoteStack | undefined;
    afterAll(async () => {
      await s?.cleanUp();
    });

    test("pulumi up, a release and recover over ssh, all on the remote engine; destroy leaves nothing", async () => {
      s = await RemoteStack.up("remote-ssh", node.ssh, PORT.ssh);
      await within(30_000, answersHello(s.live.url), "nginx on the remote engine answers through the node");
      expect(await s.live.unknownOnEngine()).toEqual([]);
      await s.expectLocalUntouched();

      await s.live.up({ config: { appVersion: "0.0.2" } });
      expect(await versionsServing(s.live.url)).toEqual(["0.0.2"]);
      expect(await s.live.unknownOnEngine()).toEqual([]);

      await s.recoverRemovesRemoteOrphan(false);

      await s.destroy();
      expect(await node.client("ssh").listContainers({ all: true })).toEqual([]);
      expect(await s.remote()).toEqual([]);
      await s.expectLocalUntouched();
    });
  });
});

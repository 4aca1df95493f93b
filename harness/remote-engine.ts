// A Docker Engine that is not the local one, for tests/e2e/remote.test.ts: a nested dockerd in a container on
// the local engine (the cluster's machine image and settings, tools/cluster.ts), on a network of its own. Its
// engine answers only TLS with a client certificate from the CA made here (tcp://<ip>:2376, dockerd
// --tlsverify), and an OpenSSH server in it takes the key made here (ssh://root@<ip>, `docker system
// dial-stdio` to the engine's socket). Ports its stacks publish on the node are forwarded to the same ports on
// the host's 127.0.0.1, as the cluster's edge node does. Every local object carries REMOTE.label; stop()
// removes them, the keys and certificates with them.
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import type Docker from "dockerode";
import { engineClient, type EngineSettings } from "../infra/engine";
import { ignoreNotFound } from "../infra/engine-objects";
import { ensureNodeImage, hostDocker, NESTED_ENGINE, removeCgroups } from "../tools/cluster";
import { within } from "./load";

const PREFIX = "flask-proxy-remote";
export const REMOTE = {
  label: { key: "org.flask-proxy.remote-test", value: PREFIX },
  image: `${PREFIX}-node:1`,
  node: `${PREFIX}-node`,
  network: `${PREFIX}-net`,
  engineVolume: `${PREFIX}-node-docker`,
  enginePort: 2376,
  /** The inner engine's address pools, apart from the node's network (see CLUSTER.localPool). */
  innerPool: "10.221.0.0/16",
} as const;

const labels = { [REMOTE.label.key]: REMOTE.label.value };
const labelFilter = JSON.stringify({ label: [`${REMOTE.label.key}=${REMOTE.label.value}`] });

function run(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.error?.message ?? r.stderr}`);
}

/**
 * A CA, a server certificate for `ip` (server-cert.pem, server-key.pem) and a client certificate under the
 * names docker:certPath reads (ca.pem, cert.pem, key.pem), all in `dir`.
 */
export function makeTlsCerts(dir: string, ip: string): void {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  fs.writeFileSync(path.join(dir, "server.ext"), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  fs.writeFileSync(path.join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
  run(
    "openssl",
    ["req", "-x509", ...ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=flask-proxy test CA"],
    dir,
  );
  for (const [who, out, key] of [
    ["server", "server-cert.pem", "server-key.pem"],
    ["client", "cert.pem", "key.pem"],
  ]) {
    run("openssl", ["req", ...ec, "-keyout", key, "-out", `${who}.csr`, "-subj", `/CN=${who}`], dir);
    run(
      "openssl",
      ["x509", "-req", "-in", `${who}.csr`, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial"].concat([
        "-out",
        out,
        "-days",
        "2",
        "-extfile",
        `${who}.ext`,
      ]),
      dir,
    );
  }
}

/** A client key (id_ed25519), the node's host key, its authorized_keys and a known_hosts entry for `ip`. */
function makeSshKeys(dir: string, ip: string): void {
  run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "flask-proxy test client", "-f", "id_ed25519"], dir);
  run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "flask-proxy test node", "-f", "host_ed25519"], dir);
  fs.copyFileSync(path.join(dir, "id_ed25519.pub"), path.join(dir, "authorized_keys"));
  const hostKey = fs.readFileSync(path.join(dir, "host_ed25519.pub"), "utf8").split(" ").slice(0, 2).join(" ");
  fs.writeFileSync(path.join(dir, "known_hosts"), `${ip} ${hostKey}\n`);
}

/** A network of its own with a subnet of its own (static addresses need one): the first free 10.220.N.0/24. */
async function createNetwork(): Promise<{ id: string; subnet: string }> {
  for (let n = 1; n < 255; n++) {
    const subnet = `10.220.${n}.0/24`;
    try {
      const net = await hostDocker.createNetwork({
        Name: REMOTE.network,
        Labels: labels,
        IPAM: { Config: [{ Subnet: subnet }] },
      });
      return { id: net.id, subnet };
    } catch (e) {
      if (!/overlap/i.test((e as Error).message)) throw e;
    }
  }
  throw new Error("no free 10.220.N.0/24 for the remote engine's network");
}

export class RemoteEngine {
  private constructor(
    /** The node's address on its network: the engine's and sshd's. */
    readonly ip: string,
    /** Certificates and keys (deleted by stop()). */
    readonly dir: string,
    private readonly builtImage: boolean,
  ) {}

  /** Starts the node (building its image if missing), `ports` forwarded from the host's 127.0.0.1. */
  static async start(ports: number[]): Promise<RemoteEngine> {
    await RemoteEngine.removeAll();
    const builtImage = await ensureNodeImage(REMOTE.image, REMOTE.label);
    const { subnet } = await createNetwork();
    const ip = subnet.replace(/\.0\/24$/, ".10");
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-pki-`));
    const remote = new RemoteEngine(ip, dir, builtImage);
    try {
      makeTlsCerts(dir, ip);
      makeSshKeys(dir, ip);
      const dockerd = [
        "-H",
        "unix:///var/run/docker.sock",
        "-H",
        `tcp://0.0.0.0:${REMOTE.enginePort}`,
        "--tlsverify",
        "--tlscacert=/pki/ca.pem",
        "--tlscert=/pki/server-cert.pem",
        "--tlskey=/pki/server-key.pem",
        "--default-address-pool",
        `base=${REMOTE.innerPool},size=24`,
        "--cgroup-parent",
        `/${REMOTE.node}`,
      ];
      // sshd with the test's host key and authorized key (copied: sshd wants them root's and private).
      const sshd =
        "install -d -m 700 /run/sshd /root/.ssh && install -m 600 /pki/authorized_keys /root/.ssh/ && " +
        "install -m 600 /pki/host_ed25519 /etc/ssh/ssh_host_ed25519_key && " +
        "/usr/sbin/sshd -h /etc/ssh/ssh_host_ed25519_key -o PasswordAuthentication=no";
      await hostDocker.createVolume({ Name: REMOTE.engineVolume, Labels: labels });
      await hostDocker.createContainer({
        name: REMOTE.node,
        Hostname: "remote-node",
        Image: REMOTE.image,
        Labels: labels,
        Entrypoint: ["sh", "-c", `${sshd} && exec node-entrypoint.sh "$@"`, "node"],
        Cmd: dockerd,
        ExposedPorts: Object.fromEntries(ports.map((p) => [`${p}/tcp`, {}])),
        HostConfig: {
          ...NESTED_ENGINE,
          Binds: [...(NESTED_ENGINE.Binds ?? []), `${dir}:/pki:ro`],
          Mounts: [{ Type: "volume", Source: REMOTE.engineVolume, Target: "/var/lib/docker" }],
          PortBindings: Object.fromEntries(ports.map((p) => [`${p}/tcp`, [{ HostIp: "127.0.0.1", HostPort: String(p) }]])),
        },
        NetworkingConfig: { EndpointsConfig: { [REMOTE.network]: { IPAMConfig: { IPv4Address: ip } } } },
      });
      await hostDocker.getContainer(REMOTE.node).start();
      const engine = remote.client("tls");
      await within(60_000, async () => Boolean(await engine.ping()), "the remote engine answers over TLS", { everyMs: 250 });
    } catch (e) {
      await remote.stop();
      throw e;
    }
    return remote;
  }

  /** docker:host with the client certificate as docker:caMaterial/certMaterial/keyMaterial. */
  get tls(): EngineSettings {
    const read = (f: string) => fs.readFileSync(path.join(this.dir, f), "utf8");
    return {
      host: `tcp://${this.ip}:${REMOTE.enginePort}`,
      caMaterial: read("ca.pem"),
      certMaterial: read("cert.pem"),
      keyMaterial: read("key.pem"),
    };
  }

  /** The same certificate as files in docker:certPath. */
  get tlsPath(): EngineSettings {
    return { host: `tcp://${this.ip}:${REMOTE.enginePort}`, certPath: this.dir };
  }

  /** ssh://root@<ip> with the test's key and the node's host key pinned; nothing of ~/.ssh is read. */
  get ssh(): EngineSettings {
    return {
      host: `ssh://root@${this.ip}`,
      sshOpts: [
        "-F",
        "/dev/null",
        "-i",
        path.join(this.dir, "id_ed25519"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        `UserKnownHostsFile=${path.join(this.dir, "known_hosts")}`,
        "-o",
        "StrictHostKeyChecking=yes",
      ],
    };
  }

  client(how: "tls" | "ssh"): Docker {
    return engineClient(how === "tls" ? this.tls : this.ssh);
  }

  /** Local images (the stand-ins) loaded into the remote engine: it has no registry to pull from either. */
  async load(refs: string[]): Promise<void> {
    const engine = this.client("tls");
    for (const ref of refs) {
      const stream = await engine.loadImage(await hostDocker.getImage(ref).get());
      await new Promise<void>((resolve, reject) => engine.modem.followProgress(stream, (err) => (err ? reject(err) : resolve())));
    }
  }

  /** Removes the node, its volume and network (and its image, if start() built it), keys and certificates. */
  async stop(): Promise<void> {
    await RemoteEngine.removeAll(this.builtImage);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Everything with REMOTE.label on the local engine (the image only if asked). */
  private static async removeAll(image = false): Promise<void> {
    for (const c of await hostDocker.listContainers({ all: true, filters: labelFilter }))
      await hostDocker.getContainer(c.Id).remove({ force: true, v: true }).catch(ignoreNotFound);
    for (const v of (await hostDocker.listVolumes({ filters: labelFilter })).Volumes ?? [])
      await hostDocker.getVolume(v.Name).remove().catch(ignoreNotFound);
    for (const n of await hostDocker.listNetworks({ filters: labelFilter }))
      await hostDocker.getNetwork(n.Id).remove().catch(ignoreNotFound);
    if (image)
      for (const i of await hostDocker.listImages({ filters: labelFilter }))
        await hostDocker.getImage(i.Id).remove({ force: true }).catch(ignoreNotFound);
    removeCgroups([REMOTE.node]);
  }
}

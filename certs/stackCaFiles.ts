// tls: internal: the stack's CA (infra/stack-ca.ts, its key a secret in the state) written into the agent's
// data volume, where agent.sh signs the leaf with it and signs it again before it runs out, with no `pulumi up`.
// Not in the volumes nginx mounts: a compromised nginx holds its leaf's key, never the CA's.
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { runToEnd, stackEngine, type EngineSettings } from "../infra/engine";

/** Where agent.sh reads the CA (its INTERNAL_CA), under the data volume's mount. */
export const INTERNAL_CA_DIR = "internal-ca";
const MOUNT = "/data";

interface CaFilesInputs {
  volumeName: string;
  /** An image with a shell to write from: the agent's. */
  image: string;
  labels: Record<string, string>;
  certPem: string;
  keyPem: string;
  engine: EngineSettings;
}

const dir = path.posix.join(MOUNT, INTERNAL_CA_DIR);
// The key created 0600 in a directory only root may enter, each file through a rename (the agent never reads half).
const WRITE = [
  "set -e",
  `mkdir -p ${dir}; chmod 0700 ${dir}`,
  `(umask 077; printf "%s" "$CA_KEY" > ${dir}/ca.key.next)`,
  `printf "%s" "$CA_CERT" > ${dir}/ca.crt.next`,
  `mv -f ${dir}/ca.key.next ${dir}/ca.key; mv -f ${dir}/ca.crt.next ${dir}/ca.crt`,
].join("\n");

/** Runs `script` in a short-lived container with the data volume mounted; `what` names it in an error. */
function inVolume(i: CaFilesInputs, what: string, script: string, env: string[] = []): Promise<void> {
  return runToEnd(i.engine, {
    image: i.image,
    script,
    env,
    binds: [`${i.volumeName}:${MOUNT}`],
    labels: i.labels,
    what: `${what} volume ${i.volumeName}`,
  });
}

const writeCa = (i: CaFilesInputs) =>
  inVolume(i, "writing the stack's CA into", WRITE, [`CA_CERT=${i.certPem}`, `CA_KEY=${i.keyPem}`]);

const caFilesProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: CaFilesInputs) {
    await writeCa(inputs);
    return { id: `${inputs.volumeName}/${INTERNAL_CA_DIR}`, outs: inputs };
  },
  async diff(_id: string, olds: CaFilesInputs, news: CaFilesInputs) {
    return {
      changes: olds.certPem !== news.certPem || olds.keyPem !== news.keyPem || olds.volumeName !== news.volumeName,
    };
  },
  async update(_id: string, _olds: CaFilesInputs, news: CaFilesInputs) {
    await writeCa(news);
    return { outs: news };
  },
  // A stack switched away from internal leaves no CA key behind in the volume.
  async delete(_id: string, olds: CaFilesInputs) {
    await inVolume(olds, "removing the stack's CA from", `rm -rf ${dir}`);
  },
};

/** The stack CA's certificate and key in the agent's data volume (the key a secret in the state). */
export class StackCaFiles extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    args: {
      volumeName: pulumi.Input<string>;
      image: pulumi.Input<string>;
      labels: Record<string, string>;
      certPem: pulumi.Input<string>;
      keyPem: pulumi.Input<string>;
    },
    opts: pulumi.CustomResourceOptions = {},
  ) {
    super(
      caFilesProvider,
      name,
      { ...args, keyPem: pulumi.secret(args.keyPem), engine: stackEngine() },
      {
        ...opts,
        additionalSecretOutputs: ["keyPem"],
      },
    );
  }
}

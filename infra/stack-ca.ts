// `tls: internal`: a CA of the stack's own, made on the first `pulumi up` and kept in the state (its key a
// secret). The certificate agent beside nginx signs the leaf with it, and signs a new one before it runs out,
// without a `pulumi up` (certs/stackCaFiles.ts, certs/agent.sh).
import * as pulumi from "@pulumi/pulumi";
import { createRootCa } from "./tls";

/** The root's lifetime: long, as mkcert's and Caddy's roots are; users trust it once. */
export const CA_DAYS = 3650;

interface CaInputs {
  commonName: string;
}

const caProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: CaInputs) {
    const ca = await createRootCa({ commonName: inputs.commonName, days: CA_DAYS });
    return { id: inputs.commonName, outs: { ...inputs, ...ca } };
  },
  // The CA never changes by itself: a new one would make every client's trust of the old one worthless.
  async diff(_id: string, olds: CaInputs, news: CaInputs) {
    return { changes: olds.commonName !== news.commonName, replaces: olds.commonName !== news.commonName ? ["commonName"] : [] };
  },
};

/** The stack's root CA: `certPem` (a stack output) and `keyPem` (a secret in the state). */
export class StackCa extends pulumi.dynamic.Resource {
  declare readonly certPem: pulumi.Output<string>;
  declare readonly keyPem: pulumi.Output<string>;
  constructor(name: string, args: { commonName: string }, opts?: pulumi.CustomResourceOptions) {
    super(caProvider, name, { ...args, certPem: undefined, keyPem: undefined }, { ...opts, additionalSecretOutputs: ["keyPem"] });
  }
}

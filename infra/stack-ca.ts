// `tls: internal`: a CA of the stack's own, made on the first `pulumi up` and kept in the state (its key a
// secret), and a leaf for the domain issued from it. The leaf is issued again by the `pulumi up` that finds a
// third or less of its lifetime left; nginx then reloads with it (nginx/reload.ts), without a replacement.
// Without a `pulumi up` nothing renews it (the on-engine renewal agent is the ACME work's).
import * as pulumi from "@pulumi/pulumi";
import { createRootCa, issue, leafNames, renewalDue, type CertifiedKey } from "./tls";

/** The root's lifetime: long, as mkcert's and Caddy's roots are; users trust it once. */
export const CA_DAYS = 3650;
/** The leaf's lifetime; renewed by a `pulumi up` in its last third (30 days). */
export const LEAF_DAYS = 90;

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

interface LeafInputs {
  domain: string;
  caCertPem: string;
  caKeyPem: string;
}

interface LeafOutputs extends LeafInputs, CertifiedKey {
  notBefore: string;
  notAfter: string;
}

async function issueLeaf(inputs: LeafInputs): Promise<LeafOutputs> {
  const leaf = await issue(
    { certPem: inputs.caCertPem, keyPem: inputs.caKeyPem },
    { commonName: inputs.domain, days: LEAF_DAYS, ...leafNames(inputs.domain) },
  );
  // Node's parser reads the validity back (the library's own dates are what was asked for, to the second).
  // Required here: this runs as a serialized closure in the dynamic-provider process (see infra/tls.ts).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { X509Certificate } = require("crypto") as typeof import("crypto");
  const cert = new X509Certificate(leaf.certPem);
  return {
    ...inputs,
    ...leaf,
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: new Date(cert.validTo).toISOString(),
  };
}

const leafProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: LeafInputs) {
    return { id: inputs.domain, outs: await issueLeaf(inputs) };
  },
  // An update (not a replacement) issues a new leaf: a new domain or CA, or a third of the lifetime left.
  async diff(_id: string, olds: LeafOutputs, news: LeafInputs) {
    const due = renewalDue(new Date(olds.notBefore), new Date(olds.notAfter));
    const changed = (["domain", "caCertPem"] as const).filter((k) => olds[k] !== news[k]);
    return { changes: due || changed.length > 0 };
  },
  async update(_id: string, _olds: LeafOutputs, news: LeafInputs) {
    return { outs: await issueLeaf(news) };
  },
};

/** A leaf for `domain` (and 127.0.0.1 with localhost) from the stack's CA. */
export class StackLeaf extends pulumi.dynamic.Resource {
  declare readonly certPem: pulumi.Output<string>;
  declare readonly keyPem: pulumi.Output<string>;
  declare readonly notAfter: pulumi.Output<string>;
  constructor(name: string, args: { domain: string; ca: StackCa }, opts?: pulumi.CustomResourceOptions) {
    super(
      leafProvider,
      name,
      {
        domain: args.domain,
        caCertPem: args.ca.certPem,
        caKeyPem: args.ca.keyPem,
        certPem: undefined,
        keyPem: undefined,
        notBefore: undefined,
        notAfter: undefined,
      },
      { ...opts, additionalSecretOutputs: ["keyPem", "caKeyPem"] },
    );
  }
}

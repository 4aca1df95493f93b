// The registry a stack pushes its images to (config `registry`): the Distribution HTTP API over TLS, and a
// resource that deletes the manifest a stack pushed when the stack no longer runs it (`pulumi destroy`, or a
// new build replacing it). docker.Image pushes but never deletes. Functions require their modules themselves:
// dynamic providers are serialized and run in a process of their own.
import * as pulumi from "@pulumi/pulumi";

export interface RegistryReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** Every manifest type the registry may hold for an image: asked for, so HEAD/GET answer by digest. */
export const MANIFEST_TYPES = [
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
].join(", ");

/** One HTTPS request to a registry (`host[:port]`), trusting `caPem` when given, else the system's CAs. */
export function registryRequest(address: string, method: string, urlPath: string, caPem?: string): Promise<RegistryReply> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const https = require("https") as typeof import("https");
  return new Promise((resolve, reject) => {
    const req = https.request(
      `https://${address}${urlPath}`,
      { method, ca: caPem || undefined, headers: { Accept: MANIFEST_TYPES }, timeout: 15_000 },
      (res) => {
        let body = "";
        res.on("data", (d: Buffer) => (body += d.toString("utf8")));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("timeout", () => req.destroy(new Error(`${method} https://${address}${urlPath}: no answer in 15 s`)));
    req.on("error", reject);
    req.end();
  });
}

/** `host[:port]/repo@sha256:…` split into the registry, the repository and the digest. */
export function parseDigestRef(ref: string): { address: string; repository: string; digest: string } {
  const at = ref.indexOf("@");
  const slash = ref.indexOf("/");
  if (at < 0 || slash < 0 || slash > at) throw new Error(`not a registry reference by digest: ${ref}`);
  return { address: ref.slice(0, slash), repository: ref.slice(slash + 1, at), digest: ref.slice(at + 1) };
}

interface ManifestInputs {
  /** `host[:port]/repo@sha256:…`, as docker.Image's repoDigest gives it after a push. */
  ref: string;
  caPem: string;
}

const manifestProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: ManifestInputs) {
    const { address, repository, digest } = parseDigestRef(inputs.ref);
    const r = await registryRequest(address, "HEAD", `/v2/${repository}/manifests/${digest}`, inputs.caPem).catch((e: Error) => {
      throw new Error(`${address}: ${e.message} (a registry with a private CA needs registryCaFile)`);
    });
    if (r.status !== 200) throw new Error(`${inputs.ref}: the registry answers ${r.status}, not the pushed manifest`);
    return { id: inputs.ref, outs: inputs };
  },
  async diff(_id: string, olds: ManifestInputs, news: ManifestInputs) {
    return { changes: olds.ref !== news.ref || olds.caPem !== news.caPem, replaces: olds.ref !== news.ref ? ["ref"] : [] };
  },
  async update(_id: string, _olds: ManifestInputs, news: ManifestInputs) {
    return { outs: news };
  },
  // Deleting a manifest by digest also removes the tags that point at it; its blobs go with the registry's
  // garbage collection. Already gone is fine.
  async delete(_id: string, props: ManifestInputs) {
    const { address, repository, digest } = parseDigestRef(props.ref);
    const r = await registryRequest(address, "DELETE", `/v2/${repository}/manifests/${digest}`, props.caPem);
    if (r.status !== 202 && r.status !== 404) throw new Error(`DELETE ${props.ref}: ${r.status} ${r.body.slice(0, 200)}`);
  },
};

/** A manifest this stack pushed: checked present when created, deleted from the registry when deleted. */
export class PushedManifest extends pulumi.dynamic.Resource {
  constructor(name: string, args: { ref: pulumi.Input<string>; caPem: string }, opts: pulumi.CustomResourceOptions) {
    super(manifestProvider, name, args, opts);
  }
}

// An image built on the engine from one of the project's folders, which `pulumi destroy` removes again.
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { RegistrySettings } from "./config";
import { engineClient, stackEngine, type EngineSettings } from "./engine";
import { labelBuildArgs } from "./naming";
import { PushedManifest } from "./registry";

export interface BuiltImage {
  image: docker.Image;
  /** The built image's ID: what containers run, so they go before the image on destroy. */
  id: pulumi.Output<string>;
  /**
   * What a workload runs: the image ID on the engine that built it or, with a registry, the pushed image by
   * digest (`host/repo@sha256:…`), so every node runs the same bytes.
   */
  ref: pulumi.Output<string>;
}

export function buildImage(
  name: string,
  args: {
    imageName: string;
    context: string;
    buildArgs: Record<string, pulumi.Input<string>>;
    project: string;
    stack: string;
    /** Push the build there (as `<address>/<imageName>`); absent: it stays on the engine. */
    registry?: RegistrySettings;
  },
  opts: pulumi.CustomResourceOptions,
): BuiltImage {
  const registry = args.registry;
  const image = new docker.Image(
    name,
    {
      imageName: registry ? `${registry.address}/${args.imageName}` : args.imageName,
      build: {
        context: args.context,
        dockerfile: path.join(args.context, "Dockerfile"),
        args: { ...args.buildArgs, ...labelBuildArgs(args.project, args.stack) },
      },
      skipPush: !registry,
    },
    opts,
  );
  // docker.Image never deletes what it built. A RemoteImage of the build's ID (found on the engine, never
  // pulled) does: on destroy, and for the previous build once a rebuild has replaced it. Without a push,
  // repoDigest is the image ID. Forced: swarm keeps its stopped tasks' containers, which would block the
  // removal; the engine still refuses while a running container uses the image. After a push, repoDigest is
  // the registry's digest, which names the pushed image on the engine too.
  const local = new docker.RemoteImage(`${name}-local`, { name: image.repoDigest, keepLocally: false, forceRemove: true }, opts);
  new ImageTag(`${name}-tag`, { imageId: local.imageId, tag: image.imageName }, opts);
  if (!registry) return { image, id: local.imageId, ref: local.imageId };
  // The registry keeps what was pushed until this goes: on destroy, or once a new build has replaced it.
  const manifest = new PushedManifest(`${name}-manifest`, { ref: image.repoDigest, caPem: registry.caPem }, opts);
  return { image, id: local.imageId, ref: pulumi.all([image.repoDigest, manifest.id]).apply(([ref]) => ref) };
}

interface TagInputs {
  imageId: string;
  /** repository:tag */
  tag: string;
  /** The engine that built the image: the docker provider's settings. */
  engine: EngineSettings;
}
interface TagState extends TagInputs {
  /** The image the tag pointed at when last read ("" when the tag was missing). */
  taggedId: string;
}

async function putTag(inputs: TagInputs): Promise<TagState> {
  const at = inputs.tag.lastIndexOf(":");
  await engineClient(inputs.engine)
    .getImage(inputs.imageId)
    .tag({ repo: inputs.tag.slice(0, at), tag: inputs.tag.slice(at + 1) });
  return { ...inputs, taggedId: inputs.imageId };
}

const tagProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: TagInputs) {
    return { id: inputs.tag, outs: await putTag(inputs) };
  },
  async read(id: string, props: TagState) {
    const found = await engineClient(props.engine)
      .getImage(props.tag)
      .inspect()
      .catch((e: { statusCode?: number }) => {
        if (e.statusCode === 404) return undefined;
        throw e;
      });
    return { id, props: { ...props, taggedId: found?.Id ?? "" } };
  },
  async diff(_id: string, olds: TagState, news: TagInputs) {
    return { changes: olds.imageId !== news.imageId || olds.tag !== news.tag || olds.taggedId !== news.imageId };
  },
  async update(_id: string, _olds: TagState, news: TagInputs) {
    return { outs: await putTag(news) };
  },
  // The image goes with its RemoteImage (all its tags with it).
};

/**
 * Keeps a build's tag on its image. docker.Image's read returns its state unchanged, so a tag removed behind
 * Pulumi's back (`docker rmi -f`) would never show; this one's read looks, and `pulumi up` tags again.
 */
class ImageTag extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    args: { imageId: pulumi.Input<string>; tag: pulumi.Input<string> },
    opts: pulumi.CustomResourceOptions,
  ) {
    super(tagProvider, name, { ...args, engine: stackEngine(), taggedId: undefined }, opts);
  }
}

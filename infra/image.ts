// An image built on the engine from one of the project's folders, which `pulumi destroy` removes again.
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import type { RegistrySettings } from "./config";
import { isNotFound, isRemovedMeanwhile } from "./builds";
import { engineClient, stackEngine, unlessMissing, type EngineSettings } from "./engine";
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

export interface BuildArgs {
  /** repository:tag (without the registry). */
  imageName: string;
  context: string;
  buildArgs: Record<string, pulumi.Input<string>>;
  project: string;
  stack: string;
  /** Push the build there (as `<address>/<imageName>`); absent: it stays on the engine. */
  registry?: RegistrySettings;
}

/** An image built from a folder, tagged `imageName`, held on the engine until `pulumi destroy` or a rebuild. */
export function buildImage(name: string, args: BuildArgs, opts: pulumi.CustomResourceOptions): BuiltImage {
  const image = newBuild(name, args, opts);
  const held = holdImage(name, image.repoDigest, args.registry, opts);
  new ImageTag(`${name}-tag`, { imageId: held.id, tag: image.imageName }, opts);
  return { image, ...held };
}

/** The build itself. docker.Image never deletes what it built: holdImage does. */
export function newBuild(name: string, args: BuildArgs, opts: pulumi.CustomResourceOptions): docker.Image {
  const registry = args.registry;
  // Relative to the project folder, the working directory of the program and of the provider that builds: the
  // state then says the same on every checkout, so a clone elsewhere (a teammate's, CI's) finds nothing to
  // rebuild. An absolute path in the state made it rebuild nginx and replace its container.
  const context = path.relative(process.cwd(), args.context) || ".";
  return new docker.Image(
    name,
    {
      imageName: registry ? `${registry.address}/${args.imageName}` : args.imageName,
      build: {
        context,
        dockerfile: path.join(context, "Dockerfile"),
        args: { ...args.buildArgs, ...labelBuildArgs(args.project, args.stack) },
      },
      skipPush: !registry,
    },
    opts,
  );
}

/**
 * Holds a built image on the engine (and, with a registry, its pushed manifest) until this goes: on destroy,
 * or once the program no longer declares it (after a rebuild, or a build dropped from the kept set). `ref`:
 * the build's repoDigest, which is the image ID without a push. Resource names `<name>-local` (and
 * `-manifest`).
 */
export function holdImage(
  name: string,
  ref: pulumi.Input<string>,
  registry: RegistrySettings | undefined,
  opts: pulumi.CustomResourceOptions,
): { id: pulumi.Output<string>; ref: pulumi.Output<string> } {
  // A RemoteImage of the build's ID (found on the engine, never pulled), and ImageRemoval, which deletes it
  // (docker.Image does not; the RemoteImage's own delete would fail a rebuild that comes out as the same
  // image, see ImageRemoval). After a push, ref is the registry's digest, which names the pushed image on the
  // engine too.
  const local = new docker.RemoteImage(`${name}-local`, { name: ref, keepLocally: true }, opts);
  // What containers run comes through the removal, so Pulumi deletes them before it.
  const removal = new ImageRemoval(`${name}-removal`, local.imageId, opts);
  if (!registry) return { id: removal.imageId, ref: removal.imageId };
  // The registry keeps what was pushed until this goes.
  const manifest = new PushedManifest(`${name}-manifest`, { ref, caPem: registry.caPem }, opts);
  return { id: removal.imageId, ref: pulumi.all([ref, manifest.id, removal.imageId]).apply(([r]) => r) };
}

/** The engine's 409 for an image a running container uses; its other 409 ("dependent child images") fails. */
const usedByRunningContainer = (e: unknown) =>
  (e as { statusCode?: number }).statusCode === 409 && /being used by running container/.test(String((e as Error).message));

interface RemovalInputs {
  imageId: string;
  engine: EngineSettings;
}

/**
 * Removes a built image when it is no longer declared: forced (swarm keeps its stopped tasks' containers,
 * which would block it). The engine refuses while a running container uses the image: then a later
 * declaration holds it, as when a failed update is undone (build A, then B, which fails, then A again: the
 * cache gives A's ID back, and the removal of the first A, still pending from the failed update, finds the
 * new nginx running it). That image goes with the removal that declares it now.
 */
const removalProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: RemovalInputs) {
    return { id: inputs.imageId, outs: inputs };
  },
  async diff(_id: string, olds: RemovalInputs, news: RemovalInputs) {
    const replaced = olds.imageId !== news.imageId;
    return { changes: replaced, replaces: replaced ? ["imageId"] : [] };
  },
  async delete(_id: string, props: RemovalInputs) {
    try {
      await engineClient(props.engine).getImage(props.imageId).remove({ force: true });
    } catch (e) {
      if (!isNotFound(e) && !isRemovedMeanwhile(e) && !usedByRunningContainer(e)) throw e;
    }
  },
};

class ImageRemoval extends pulumi.dynamic.Resource {
  declare readonly imageId: pulumi.Output<string>;
  constructor(name: string, imageId: pulumi.Input<string>, opts: pulumi.CustomResourceOptions) {
    super(removalProvider, name, { imageId, engine: stackEngine() }, opts);
  }
}

/** Keeps `tag` on the image `imageId` (see ImageTag). */
export function tagImage(
  name: string,
  imageId: pulumi.Input<string>,
  tag: pulumi.Input<string>,
  opts: pulumi.CustomResourceOptions,
) {
  return new ImageTag(name, { imageId, tag }, opts);
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
    const found = await unlessMissing(engineClient(props.engine).getImage(props.tag).inspect());
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

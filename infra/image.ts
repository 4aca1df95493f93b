// An image built on the engine from one of the project's folders, which `pulumi destroy` removes again.
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { labelBuildArgs } from "./naming";

export interface BuiltImage {
  image: docker.Image;
  /** The built image's ID: what containers run, so they go before the image on destroy. */
  id: pulumi.Output<string>;
}

export function buildImage(
  name: string,
  args: { imageName: string; context: string; buildArgs: Record<string, pulumi.Input<string>>; project: string; stack: string },
  opts: pulumi.CustomResourceOptions,
): BuiltImage {
  const image = new docker.Image(
    name,
    {
      imageName: args.imageName,
      build: {
        context: args.context,
        dockerfile: path.join(args.context, "Dockerfile"),
        args: { ...args.buildArgs, ...labelBuildArgs(args.project, args.stack) },
      },
      skipPush: true,
    },
    opts,
  );
  // docker.Image never deletes what it built. A RemoteImage of the build's ID (found on the engine, never
  // pulled) does: on destroy, and for the previous build once a rebuild has replaced it. Without a push,
  // repoDigest is the image ID. Forced: swarm keeps its stopped tasks' containers, which would block the
  // removal; the engine still refuses while a running container uses the image.
  const local = new docker.RemoteImage(`${name}-local`, { name: image.repoDigest, keepLocally: false, forceRemove: true }, opts);
  return { image, id: local.imageId };
}

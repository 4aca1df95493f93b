// A version names one build. Each app build carries labels with the appVersion it was built as and a hash of
// what it was built from (the Dockerfile, the files it copies, its build args), and the stack keeps its last
// `appKeepBuilds` builds on the engine, each held by a RemoteImage (so `pulumi destroy` removes them, and a
// build dropped from the kept set is removed once no container of the stack runs it). Before it declares
// anything, the program looks up the kept builds by label and plans the release:
//   - appVersion names a kept build: that image runs again, with no build, when app/ is what that build or
//     another kept one was made from (a rollback from the newest release, whose code app/ still holds);
//   - app/ holds code no kept build was made from, under a kept version's name: an error (a version names
//     one build), unless the code is bind-mounted (appCodeMount), where the image's copy never runs and it
//     is rebuilt;
//   - no kept build has that version: it is built from app/ as it is now (a new version for this stack).
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import * as pulumi from "@pulumi/pulumi";
import { engineClient, stackEngine, type EngineSettings } from "./engine";
import { LABEL } from "./naming";

export interface KeptBuild {
  version: string;
  /** The content hash the build was made from. */
  content: string;
  imageId: string;
  /** What a workload runs: the image ID, or with a registry the pushed image by digest. */
  ref: string;
  /** When it was built (Unix seconds). */
  created: number;
  /** A container of the stack runs it now. */
  running: boolean;
}

/** What a build is made from: the Dockerfile and `files` of `context`, and the build args, in one hash. */
export function contentHash(context: string, files: string[], buildArgs: Record<string, string>): string {
  const hash = crypto.createHash("sha256");
  for (const f of ["Dockerfile", ...files].sort()) {
    hash.update(`${f}\0`);
    hash.update(fs.readFileSync(path.join(context, f)));
    hash.update("\0");
  }
  for (const [k, v] of Object.entries(buildArgs).sort(([a], [b]) => (a < b ? -1 : 1))) hash.update(`${k}=${v}\0`);
  return hash.digest("hex");
}

/**
 * The stack's app builds on the engine, found by their labels. With a registry, a build is only usable by the
 * digest it was pushed as to `pushedAs` (`host/repository`); one never pushed there is left out.
 */
export async function findBuilds(settings: EngineSettings, stack: string, pushedAs?: string): Promise<KeptBuild[]> {
  const engine = engineClient(settings);
  const stackLabel = `${LABEL.stack}=${stack}`;
  const images = await engine.listImages({ filters: JSON.stringify({ label: [stackLabel, LABEL.appVersion] }) });
  const running = new Set(
    (await engine.listContainers({ filters: JSON.stringify({ label: [stackLabel] }) })).map((c) => c.ImageID),
  );
  return images.flatMap((i) => {
    const ref = pushedAs ? (i.RepoDigests ?? []).find((d) => d.startsWith(`${pushedAs}@`)) : i.Id;
    const labels = i.Labels ?? {};
    if (!ref) return [];
    return [
      {
        version: labels[LABEL.appVersion] ?? "",
        content: labels[LABEL.appContent] ?? "",
        imageId: i.Id,
        ref,
        created: i.Created,
        running: running.has(i.Id),
      },
    ];
  });
}

export interface ReleasePlan {
  /** The kept build appVersion names, run again without a build; absent: build it. */
  reuse?: KeptBuild;
  /** The other builds kept beside the released one, most worth keeping first. */
  others: KeptBuild[];
  /** Set when appVersion's kept build was made from other content and is rebuilt (appCodeMount). */
  rebuilds?: KeptBuild;
}

export interface Wanted {
  version: string;
  content: string;
  /** How many builds the stack keeps, the released one included. */
  keep: number;
  /** The image's name as the error names it, e.g. flask:0.0.1-prod. */
  imageName: string;
  /** A kept build of this version made from other content is rebuilt instead of refused. */
  rebuildOnConflict: boolean;
}

export class VersionConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VersionConflict";
  }
}

/**
 * Which build runs, and which are kept beside it: the ones running now first (a release's old generation,
 * which a rollback goes back to), then the newest.
 */
export function planRelease(kept: KeptBuild[], want: Wanted): ReleasePlan {
  const same = kept.filter((b) => b.version === want.version);
  const reuse = same.find((b) => b.content === want.content);
  const other = same.find((b) => b.content !== want.content);
  // app/ as a kept build was made from (say the newest release's, after a rollback to an older one) is
  // released code; only code no kept build was made from, under a kept version's name, is refused.
  const released = kept.some((b) => b.content === want.content);
  if (!reuse && other && (released || !want.rebuildOnConflict)) {
    if (released) return { reuse: other, others: keepBeside(kept, want), rebuilds: undefined };
    throw new VersionConflict(
      `appVersion ${want.version} names the kept build ${other.imageId.slice(0, 19)} (${want.imageName}), which was ` +
        `built from other code: app/ and its build args hash to ${want.content.slice(0, 12)} now, that build's to ` +
        `${other.content.slice(0, 12)}. A version names one build: set a new appVersion to release this code ` +
        `(\`pulumi config set appVersion <new version>\`), or put app/ back to released code (as a kept ` +
        `build was made from, e.g. with git stash) to run ${want.version} again. Nothing was changed.`,
    );
  }
  return { reuse, others: keepBeside(kept, want), rebuilds: reuse ? undefined : other };
}

/** The builds kept beside the released one: those running now first, then the newest. */
function keepBeside(kept: KeptBuild[], want: Wanted): KeptBuild[] {
  return kept
    .filter((b) => b.version !== want.version)
    .sort((a, b) => Number(b.running) - Number(a.running) || b.created - a.created)
    .slice(0, Math.max(0, want.keep - 1));
}

/** The kept versions, newest build first; `released` is the one this run releases (a new build is the newest). */
export function keptVersions(plan: ReleasePlan, released: string): string[] {
  const newest = Number.MAX_SAFE_INTEGER;
  return [{ version: released, created: plan.reuse?.created ?? newest }, ...plan.others]
    .sort((a, b) => b.created - a.created)
    .map((b) => b.version);
}

interface AppBuildInputs {
  version: string;
  content: string;
  /** repository:tag the build is tagged with. */
  tag: string;
  context: string;
  /** The files of `context` sent to the engine (the Dockerfile among them). */
  files: string[];
  buildArgs: Record<string, string>;
  stack: string;
  /** The engine the build runs on: the docker provider's settings. */
  engine: EngineSettings;
}
interface AppBuildState extends AppBuildInputs {
  imageId: string;
}

/**
 * The stack's image of this version and content if the engine has it (a build a killed `pulumi up` made, or
 * one kept from before): adopted, not built again; otherwise built from the context as it is now.
 */
async function buildOrAdopt(inputs: AppBuildInputs): Promise<string> {
  const engine = engineClient(inputs.engine);
  const labels = [
    `${LABEL.stack}=${inputs.stack}`,
    `${LABEL.appVersion}=${inputs.version}`,
    `${LABEL.appContent}=${inputs.content}`,
  ];
  const at = inputs.tag.lastIndexOf(":");
  const found = await engine.listImages({ filters: JSON.stringify({ label: labels }) });
  if (found.length > 0) {
    await engine.getImage(found[0].Id).tag({ repo: inputs.tag.slice(0, at), tag: inputs.tag.slice(at + 1) });
    return found[0].Id;
  }
  const stream = await engine.buildImage(
    { context: inputs.context, src: inputs.files },
    { t: inputs.tag, buildargs: inputs.buildArgs, rm: true, forcerm: true },
  );
  const progress = await new Promise<{ error?: string; stream?: string }[]>((resolve, reject) =>
    engine.modem.followProgress(stream, (err: Error | null, out: { error?: string; stream?: string }[]) =>
      err ? reject(err) : resolve(out),
    ),
  );
  const failed = progress.find((p) => p.error);
  if (failed) {
    const log = progress
      .flatMap((p) => (p.stream ? [p.stream] : []))
      .join("")
      .trim()
      .split("\n")
      .slice(-10)
      .join("\n");
    throw new Error(`build of ${inputs.tag} failed: ${failed.error}\n${log}`);
  }
  return (await engine.getImage(inputs.tag).inspect()).Id;
}

export const isNotFound = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;
// The engine's answer to a second removal of an image another removal is deleting at that moment.
export const isRemovedMeanwhile = (e: unknown) => /unrecognized image ID/.test(String((e as Error).message));
// The engine's answer when a child of the image is being removed at that moment. Two builds of one app/ share
// parent layers, which each removal prunes after its image; two at once sometimes meet so (CI's destroy in
// rollback.test; here 4 in 130 rounds of `docker rmi -f` on two such builds at once).
const isChildGoing = (e: unknown) =>
  (e as { statusCode?: number }).statusCode === 409 && /dependent child images/.test(String((e as Error).message));

/**
 * Removes a build's image, or only its tag `tag` when another tag holds the image. Pulumi deletes the
 * containers that run it first; a running container still blocks the removal. A destroy deletes the kept
 * builds at once, and two removals meet on one image: two builds may hold the same one (a build replaced for
 * a new tag only, appImageRepository, adopted it), and builds of one app/ share their parent layers, which a
 * removal prunes. The engine answers such a meeting 500 "unrecognized image ID" or 409 "dependent child
 * images"; the build is then looked up again and the removal repeated, so it ends once the image is gone. A
 * child that stays (an image someone built FROM the build) still fails it, after about a second.
 */
export async function removeBuild(settings: EngineSettings, id: string, tag: string): Promise<void> {
  const engine = engineClient(settings);
  for (let attempt = 1; ; attempt++) {
    try {
      const image = await engine.getImage(id).inspect();
      const tags = image.RepoTags ?? [];
      if (tags.some((t) => t !== tag)) {
        if (tags.includes(tag)) await engine.getImage(tag).remove();
        return;
      }
      await engine.getImage(id).remove({ force: true });
      return;
    } catch (e) {
      if (isNotFound(e)) return;
      if (!(isRemovedMeanwhile(e) || isChildGoing(e)) || attempt === 5) throw e;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

const appBuildProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: AppBuildInputs) {
    const imageId = await buildOrAdopt(inputs);
    return { id: imageId, outs: { ...inputs, imageId } };
  },
  // Only what the build is made from counts; the version is in the resource's name. The files on disk are
  // not looked at: a kept build stays what it was built from, whatever app/ holds now.
  async diff(_id: string, olds: AppBuildState, news: AppBuildInputs) {
    const replaces = (["version", "content", "tag"] as const).filter((k) => olds[k] !== news[k]);
    return { changes: replaces.length > 0, replaces };
  },
  async delete(id: string, props: AppBuildState) {
    await removeBuild(props.engine, id, props.tag);
  },
};

/**
 * One app build, named after its version: created by building (or adopting the engine's image of that
 * version and content), never rebuilt, and removed from the engine when deleted (destroy, or dropped from the
 * kept builds).
 */
export class AppBuild extends pulumi.dynamic.Resource {
  declare readonly imageId: pulumi.Output<string>;
  constructor(name: string, args: Omit<AppBuildInputs, "engine">, opts: pulumi.CustomResourceOptions) {
    super(appBuildProvider, name, { ...args, engine: stackEngine(), imageId: undefined }, opts);
  }
}

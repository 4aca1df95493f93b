// npm run rollback -- --stack <name> [--cwd <project folder>] [--version <kept version>]
//
// Goes back to the previous app version, Kamal style, in named steps:
//   1. find: the versions the stack keeps builds of (its `appVersions` output, newest build first) and the one
//      it runs (its appVersion);
//   2. config: appVersion set to the previous one, the next older kept build (or to --version, a kept one);
//   3. pulumi up: the kept image starts again, without a build, through the same health-gated release as any
//      other (the new container healthy and switched to before the old one drains).
// A version with no kept build is refused: rolling back never builds.
import * as path from "path";
import { parseArgs } from "util";
import { LocalWorkspace } from "@pulumi/pulumi/automation";
import { ROOT } from "../infra/stack-files";

const log = (s: string) => console.log(`[rollback] ${s}`);

/** The version before `current` among the kept ones (newest build first), or `wanted` if it is kept. */
export function rollbackTarget(kept: string[], current: string, wanted?: string): string {
  if (wanted !== undefined) {
    if (!kept.includes(wanted)) throw new Error(`no kept build of ${wanted} (kept: ${kept.join(", ")}); nothing was changed`);
    if (wanted === current) throw new Error(`${wanted} is the version the stack runs; nothing was changed`);
    return wanted;
  }
  const at = kept.indexOf(current);
  const previous = at >= 0 ? kept[at + 1] : undefined;
  if (!previous) {
    throw new Error(
      `no kept build older than ${current} (kept, newest first: ${kept.join(", ")}); name one with --version; nothing was changed`,
    );
  }
  return previous;
}

export async function rollback(stackName: string, workDir: string, wanted?: string): Promise<string> {
  const started = Date.now();
  const stack = await LocalWorkspace.selectStack({ stackName, workDir });
  const ns = (await stack.workspace.projectSettings()).name;

  log(`finding the kept builds of ${stackName}`);
  const kept = (await stack.outputs()).appVersions?.value as string[] | undefined;
  if (!kept?.length)
    throw new Error(`${stackName} has no appVersions output: run \`pulumi up\` once with this version of the project`);
  const current = (await stack.getConfig(`${ns}:appVersion`).catch(() => undefined))?.value ?? "";
  log(`running: ${current}; kept, newest first: ${kept.join(", ")}`);
  const target = rollbackTarget(kept, current, wanted);
  log(`previous version: ${target}`);

  log(`pulumi config set appVersion ${target}`);
  await stack.setConfig(`${ns}:appVersion`, { value: target });
  log("pulumi up (the kept image, no build)");
  try {
    await stack.up({ onOutput: (s) => process.stdout.write(s) });
  } catch (e) {
    // The release failed and the running version kept serving: the config says so again.
    await stack.setConfig(`${ns}:appVersion`, { value: current });
    log(`pulumi up failed; appVersion set back to ${current}`);
    throw e;
  }
  log(`${stackName} runs ${target} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return target;
}

if (require.main === module) {
  const { values } = parseArgs({
    options: { stack: { type: "string" }, cwd: { type: "string" }, version: { type: "string" } },
    strict: true,
  });
  if (!values.stack) {
    console.error("usage: npm run rollback -- --stack <name> [--cwd <project folder>] [--version <kept version>]");
    process.exit(2);
  }
  rollback(values.stack, path.resolve(values.cwd ?? ROOT), values.version).catch((e: Error) => {
    console.error(`[rollback] ${e.message}`);
    process.exit(1);
  });
}

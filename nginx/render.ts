// npm run render:nginx [-- <stack> ...] — writes the conf each named stack bind-mounts (its nginxConfigFile),
// rendered from that stack's config; every stack when none is named. A stack whose config is invalid is named
// with its problems; nothing is written for it.
import * as fs from "fs";
import * as path from "path";
import { ConfigError, parseConfig, PROJECT } from "../infra/config";
import { ROOT, StackFileError, stackConfig, stackNames } from "../infra/stack-files";
import { stackNginxConf } from "./conf";

/** A conf to write: the stack it is rendered from, and where, relative to the project. */
export interface RenderedConf {
  stack: string;
  file: string;
  text: string;
}

export class UnknownStackError extends Error {}

/**
 * The confs of `stacks` (every stack file's, when empty), in the order named; stacks that mount no file are
 * left out. Unknown names throw before anything is rendered; a stack with invalid config is reported to
 * `problem` and skipped.
 */
export function renderConfs(stacks: string[], problem: (stack: string, message: string) => void): RenderedConf[] {
  const known = stackNames();
  const unknown = stacks.filter((s) => !known.includes(s));
  if (unknown.length > 0) {
    throw new UnknownStackError(`no stack file for ${unknown.map((s) => `'${s}'`).join(", ")}; there are: ${known.join(", ")}`);
  }
  const out: RenderedConf[] = [];
  for (const stack of stacks.length > 0 ? [...new Set(stacks)] : known) {
    try {
      const all = stackConfig(stack);
      const key = `${PROJECT}:nginxConfigFile`;
      const file = all[key];
      if (!file) continue;
      // Parsed without the file: it is what is being regenerated, so it may be missing or stale.
      const cfg = parseConfig({ ...all, [key]: "" }, { stack, root: ROOT });
      // A mounted file is read by one nginx, which never hands its ports over.
      out.push({ stack, file, text: stackNginxConf(cfg, undefined, undefined, false) });
    } catch (e) {
      if (e instanceof ConfigError) {
        problem(stack, `Pulumi.${stack}.yaml has problems:\n${e.problems.map((p) => `  - ${p}`).join("\n")}`);
      } else if (e instanceof StackFileError) {
        problem(stack, e.message);
      } else {
        throw e;
      }
    }
  }
  return out;
}

function main(args: string[]): number {
  const options = args.filter((a) => a.startsWith("-"));
  if (options.length > 0) {
    console.error(`unknown option(s): ${options.join(" ")}\nusage: npm run render:nginx [-- <stack> ...]`);
    return 2;
  }
  const failed = new Set<string>();
  let confs: RenderedConf[];
  try {
    confs = renderConfs(args, (stack, message) => {
      console.error(`${stack}: not rendered: ${message}`);
      failed.add(stack);
    });
  } catch (e) {
    if (!(e instanceof UnknownStackError)) throw e;
    console.error(e.message);
    return 2;
  }
  for (const { stack, file, text } of confs) {
    const dest = path.resolve(ROOT, file);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, text);
    console.log(`${stack}: wrote ${path.relative(ROOT, dest)}`);
  }
  // A stack named on purpose that mounts nothing is said so, rather than passed over in silence.
  for (const stack of args.filter((s) => !failed.has(s) && !confs.some((c) => c.stack === s))) {
    console.log(`${stack}: mounts no nginx conf file (nginxConfigFile is empty); nothing to write`);
  }
  return failed.size > 0 ? 1 : 0;
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));

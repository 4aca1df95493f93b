// Reads Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI does, for code that runs without the CLI.
import * as fs from "fs";
import * as path from "path";
import { parse as parseYaml } from "yaml";

export const ROOT = path.resolve(__dirname, "..");

export interface ProjectFile {
  name: string;
  /** Where state lives unless PULUMI_BACKEND_URL says otherwise. */
  backend?: { url?: string };
  config?: Record<string, { type?: string; default?: unknown }>;
}

const asConfigString = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v));

/** A project or stack file that cannot be read as YAML; the message names the file. */
export class StackFileError extends Error {
  name = "StackFileError";
}

function readYaml(file: string): unknown {
  try {
    return parseYaml(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new StackFileError(`${path.relative(ROOT, file)}: ${(e as Error).message.split("\n")[0]}`);
  }
}

export function projectFile(): ProjectFile {
  return readYaml(path.join(ROOT, "Pulumi.yaml")) as ProjectFile;
}

export function stackNames(): string[] {
  return fs
    .readdirSync(ROOT)
    .flatMap((f) => /^Pulumi\.([^.]+)\.yaml$/.exec(f)?.[1] ?? [])
    .sort();
}

/** What Pulumi.<stack>.yaml itself sets, as written (not merged with the project's defaults). */
export function stackFileConfig(stack: string): Record<string, unknown> {
  const stackPath = path.join(ROOT, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(stackPath)) throw new StackFileError(`no stack file ${stackPath}`);
  return (readYaml(stackPath) as { config?: Record<string, unknown> } | null)?.config ?? {};
}

/** The config map the Pulumi CLI hands the program for a stack: project defaults, then the stack file. */
export function stackConfig(stack: string, overrides: Record<string, string> = {}): Record<string, string> {
  const project = projectFile();
  const qualify = (key: string) => (key.includes(":") ? key : `${project.name}:${key}`);
  const out: Record<string, string> = {};
  for (const [key, spec] of Object.entries(project.config ?? {})) {
    if (spec.default !== undefined) out[qualify(key)] = asConfigString(spec.default);
  }
  for (const [key, value] of Object.entries(stackFileConfig(stack))) out[key] = asConfigString(value);
  for (const [key, value] of Object.entries(overrides)) out[qualify(key)] = value;
  return out;
}

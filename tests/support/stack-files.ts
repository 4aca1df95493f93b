// Reads Pulumi.yaml and Pulumi.<stack>.yaml the way the Pulumi CLI does, for code that runs without the CLI.
import * as fs from "fs";
import * as path from "path";
import { parse as parseYaml } from "yaml";

export const ROOT = path.resolve(__dirname, "..", "..");

export interface ProjectFile {
  name: string;
  config?: Record<string, { type?: string; default?: unknown }>;
}

const asConfigString = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v));

export function projectFile(): ProjectFile {
  return parseYaml(fs.readFileSync(path.join(ROOT, "Pulumi.yaml"), "utf8")) as ProjectFile;
}

export function stackNames(): string[] {
  return fs.readdirSync(ROOT).flatMap((f) => /^Pulumi\.([^.]+)\.yaml$/.exec(f)?.[1] ?? []).sort();
}

/** The config map the Pulumi CLI hands the program for a stack: project defaults, then the stack file. */
export function stackConfig(stack: string, overrides: Record<string, string> = {}): Record<string, string> {
  const project = projectFile();
  const qualify = (key: string) => (key.includes(":") ? key : `${project.name}:${key}`);
  const out: Record<string, string> = {};
  for (const [key, spec] of Object.entries(project.config ?? {})) {
    if (spec.default !== undefined) out[qualify(key)] = asConfigString(spec.default);
  }
  const stackPath = path.join(ROOT, `Pulumi.${stack}.yaml`);
  if (!fs.existsSync(stackPath)) throw new Error(`no stack file ${stackPath}`);
  const file = parseYaml(fs.readFileSync(stackPath, "utf8")) as { config?: Record<string, unknown> } | null;
  for (const [key, value] of Object.entries(file?.config ?? {})) out[key] = asConfigString(value);
  for (const [key, value] of Object.entries(overrides)) out[qualify(key)] = value;
  return out;
}

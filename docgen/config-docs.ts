// Generates the configuration table (docs/configuration.md) from Pulumi.yaml (type, default, description) and
// the stack files, so the reference cannot drift from what the CLI applies. `--check` only compares (for tests/CI).
//   node -r ts-node/register docgen/config-docs.ts [--check]
import { parse as parseYaml } from "yaml";
// Secret keys: Pulumi.yaml declares them as plain strings with an empty default (no `secret: true`), so the
// table learns from the program which ones the program generates when unset.
import { GENERATED_KEYS, SECRET_KEYS } from "../infra/config";
import { DocRegion, markdownTable } from "./doc-region";
import { projectFile, stackFileConfig, stackNames } from "../infra/stack-files";

export const CONFIG_TABLE = new DocRegion("config-table", "docs/configuration.md");

interface Declaration {
  type?: string;
  default?: unknown;
  description?: unknown;
}

/** The project's own config keys as Pulumi.yaml declares them, in file order (values for other namespaces, such as pulumi:autonaming, aside). */
export function declarations(): [string, Declaration][] {
  const config: Record<string, Declaration> = projectFile().config ?? {};
  return Object.entries(config).filter(([key]) => !key.includes(":"));
}

/** What each stack file itself sets for the project's keys (not merged with the defaults). */
function stackSettings(project: string, declared: ReadonlySet<string>): Map<string, Map<string, unknown>> {
  const prefix = `${project}:`;
  const out = new Map<string, Map<string, unknown>>();
  for (const stack of stackNames()) {
    const values = new Map<string, unknown>();
    for (const [key, value] of Object.entries(stackFileConfig(stack))) {
      if (!key.startsWith(prefix)) continue; // provider keys (docker:host) are not the project's to document
      const short = key.slice(prefix.length);
      if (!declared.has(short)) throw new Error(`Pulumi.${stack}.yaml sets ${key}, which Pulumi.yaml does not declare`);
      values.set(short, value);
    }
    out.set(stack, values);
  }
  return out;
}

/** `text` as one markdown code span. */
export function code(text: string): string {
  // A value containing backticks needs a longer fence (and padding) to stay one code span.
  const longest = Math.max(0, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = "`".repeat(longest + 1);
  return longest > 0 ? `${fence} ${text} ${fence}` : `${fence}${text}${fence}`;
}

/** A config value as written in YAML: quoted where it would not read back as a string, e.g. `"0"`, `""`. */
function showValue(value: unknown, type: string | undefined): string {
  if (typeof value === "object" && value !== null && "secure" in value) return "encrypted";
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return code(type === "string" && !readsAsString(text) ? JSON.stringify(text) : text);
}

function readsAsString(text: string): boolean {
  try {
    return typeof parseYaml(text) === "string";
  } catch {
    return false;
  }
}

/** The markdown table that belongs between the markers (blank lines included, so both markers stay apart). */
export function renderConfigTable(): string {
  const decls = declarations();
  const stacks = stackSettings(projectFile().name, new Set(decls.map(([key]) => key)));
  const names = [...stacks.keys()];
  const header = ["key", "type", "default", ...names, "meaning"];
  const rows = decls.map(([key, decl]) => {
    const secret = SECRET_KEYS.has(key);
    const description = typeof decl.description === "string" ? decl.description.trim() : "";
    return [
      code(key),
      secret ? "secret" : (decl.type ?? ""),
      GENERATED_KEYS.has(key) ? "generated" : secret || decl.default === undefined ? "" : showValue(decl.default, decl.type),
      ...names.map((stack) => {
        const values = stacks.get(stack);
        return values?.has(key) ? showValue(values.get(key), decl.type) : "";
      }),
      description,
    ];
  });
  return markdownTable(header, rows);
}

/** The text between the markers, as the holding file (CONFIG_TABLE.file) has it now. */
export const currentTable = (): string => CONFIG_TABLE.current(CONFIG_TABLE.read());

function main(args: string[]): number {
  const check = args.includes("--check");
  const unknown = args.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    console.error(`unknown argument(s): ${unknown.join(" ")}\nusage: config-docs.ts [--check]`);
    return 2;
  }
  try {
    return CONFIG_TABLE.apply(renderConfigTable(), check, "npm run docs:config");
  } catch (e) {
    if (!(e instanceof Error)) throw e;
    console.error(e.message);
    return 1;
  }
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));

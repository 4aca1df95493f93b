// Generates the README's configuration table from Pulumi.yaml (type, default, description) and the stack
// files, so the reference cannot drift from what the CLI applies. `--check` only compares (for tests/CI).
//   node -r ts-node/register tools/config-docs.ts [--check]
import * as fs from "fs";
import * as path from "path";
import { parse as parseYaml } from "yaml";
// Secret keys: Pulumi.yaml declares them as plain strings with an empty default (no `secret: true`), so the
// table learns from the program which ones the program generates when unset.
import { SECRET_KEYS } from "../infra/config";
import { projectFile, ROOT, stackFileConfig, stackNames } from "./stack-files";

const TABLE_START = "<!-- config-table:start -->";
const TABLE_END = "<!-- config-table:end -->";
export const README_PATH = path.join(ROOT, "README.md");

interface Declaration {
  type?: string;
  default?: unknown;
  description?: unknown;
}

class MarkerError extends Error {}

/** Config keys as Pulumi.yaml declares them, in file order. */
export function declarations(): [string, Declaration][] {
  const config: Record<string, Declaration> = projectFile().config ?? {};
  return Object.entries(config);
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

const cell = (text: string): string => text.replace(/\|/g, "\\|");

function code(text: string): string {
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
      secret ? "generated" : decl.default === undefined ? "" : showValue(decl.default, decl.type),
      ...names.map((stack) => {
        const values = stacks.get(stack);
        return values?.has(key) ? showValue(values.get(key), decl.type) : "";
      }),
      description,
    ];
  });
  const line = (cells: string[]) => `|${cells.map((c) => (c === "" ? " " : ` ${cell(c)} `)).join("|")}|`;
  return ["", line(header), line(header.map(() => "---")), ...rows.map(line), ""].join("\n") + "\n";
}

function markerPositions(readme: string): { from: number; to: number } {
  const count = (marker: string) => readme.split(marker).length - 1;
  const start = readme.indexOf(`${TABLE_START}\n`);
  const end = readme.indexOf(TABLE_END);
  if (count(TABLE_START) !== 1 || count(TABLE_END) !== 1 || start < 0 || end < start) {
    throw new MarkerError(
      `README.md needs exactly one line ${TABLE_START} followed later by one line ${TABLE_END} around the config table`,
    );
  }
  return { from: start + TABLE_START.length + 1, to: end };
}

/** The text between the markers, as README.md has it now. */
export function currentTable(readme: string): string {
  const { from, to } = markerPositions(readme);
  return readme.slice(from, to);
}

/** README text with the region between the markers replaced by `table`. */
function spliceTable(readme: string, table: string): string {
  const { from, to } = markerPositions(readme);
  return readme.slice(0, from) + table + readme.slice(to);
}

/** "line N: ..." for the first line that differs, so a failing check points at the cell to regenerate. */
function firstDifference(readme: string, expected: string): string {
  const { from } = markerPositions(readme);
  const offset = readme.slice(0, from).split("\n").length;
  const have = currentTable(readme).split("\n");
  const want = expected.split("\n");
  const i = have.findIndex((l, n) => l !== want[n]);
  const at = i < 0 ? have.length : i;
  return [
    `  first difference, README.md line ${offset + at}:`,
    `    README.md: ${have[at] ?? "(end of table)"}`,
    `    generated: ${want[at] ?? "(end of table)"}`,
  ].join("\n");
}

function main(args: string[]): number {
  const check = args.includes("--check");
  const unknown = args.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    console.error(`unknown argument(s): ${unknown.join(" ")}\nusage: config-docs.ts [--check]`);
    return 2;
  }
  const readme = fs.readFileSync(README_PATH, "utf8");
  try {
    const table = renderConfigTable();
    const updated = spliceTable(readme, table);
    if (updated === readme) {
      console.log("README.md: config table already up to date");
      return 0;
    }
    if (check) {
      console.error("README.md's config table is out of date with Pulumi.yaml and the stack files: run npm run docs:config");
      console.error(firstDifference(readme, table));
      return 1;
    }
    fs.writeFileSync(README_PATH, updated);
    console.log("README.md: config table updated");
    return 0;
  } catch (e) {
    if (!(e instanceof Error)) throw e;
    console.error(e.message);
    return 1;
  }
}

if (require.main === module) process.exitCode = main(process.argv.slice(2));

// A generated region of README.md, between `<!-- NAME:start -->` and `<!-- NAME:end -->`: read, compared and
// replaced by the generators (docgen/config-docs.ts, docgen/change-docs.ts), so the README cannot drift from
// what they produce.
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../infra/stack-files";

export const README_PATH = path.join(ROOT, "README.md");

export class RegionError extends Error {}

export class ReadmeRegion {
  readonly start: string;
  readonly end: string;

  constructor(readonly name: string) {
    this.start = `<!-- ${name}:start -->`;
    this.end = `<!-- ${name}:end -->`;
  }

  private positions(readme: string): { from: number; to: number } {
    const count = (marker: string) => readme.split(marker).length - 1;
    const start = readme.indexOf(`${this.start}\n`);
    const end = readme.indexOf(this.end);
    if (count(this.start) !== 1 || count(this.end) !== 1 || start < 0 || end < start) {
      throw new RegionError(`README.md needs exactly one line ${this.start} followed later by one line ${this.end}`);
    }
    return { from: start + this.start.length + 1, to: end };
  }

  /** The text between the markers, as `readme` has it now. */
  current(readme: string): string {
    const { from, to } = this.positions(readme);
    return readme.slice(from, to);
  }

  /** `readme` with the region replaced by `text`. */
  splice(readme: string, text: string): string {
    const { from, to } = this.positions(readme);
    return readme.slice(0, from) + text + readme.slice(to);
  }

  /** "line N: ..." for the first line that differs, so a failing check points at what to regenerate. */
  firstDifference(readme: string, expected: string): string {
    const { from } = this.positions(readme);
    const offset = readme.slice(0, from).split("\n").length;
    const have = this.current(readme).split("\n");
    const want = expected.split("\n");
    const i = have.findIndex((l, n) => l !== want[n]);
    const at = i < 0 ? have.length : i;
    return [
      `  first difference, README.md line ${offset + at}:`,
      `    README.md: ${have[at] ?? "(end of region)"}`,
      `    generated: ${want[at] ?? "(end of region)"}`,
    ].join("\n");
  }

  /**
   * Writes `text` into README.md, or with `check` only compares; returns the exit code, having said what it
   * found (`fix` names the command that regenerates the region).
   */
  apply(text: string, check: boolean, fix: string): number {
    const readme = fs.readFileSync(README_PATH, "utf8");
    const updated = this.splice(readme, text);
    if (updated === readme) {
      console.log(`README.md: ${this.name} already up to date`);
      return 0;
    }
    if (check) {
      console.error(`README.md's ${this.name} is out of date: run ${fix}`);
      console.error(this.firstDifference(readme, text));
      return 1;
    }
    fs.writeFileSync(README_PATH, updated);
    console.log(`README.md: ${this.name} updated`);
    return 0;
  }
}

/** A markdown table: header, rule and rows, each cell escaped for a table. */
export function markdownTable(header: string[], rows: string[][]): string {
  const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
  const line = (cells: string[]) => `|${cells.map((c) => (c === "" ? " " : ` ${cell(c)} `)).join("|")}|`;
  return ["", line(header), line(header.map(() => "---")), ...rows.map(line), ""].join("\n") + "\n";
}

// A generated region of a markdown file (README.md or a page under docs/), between `<!-- NAME:start -->` and
// `<!-- NAME:end -->`: read, compared and replaced by the generators (docgen/config-docs.ts,
// docgen/change-docs.ts), so the docs cannot drift from what they produce. Each region names the file that
// holds it, in one place: moving a region to another page is a change to its declaration only.
import * as fs from "fs";
import * as path from "path";
import { ROOT } from "../infra/stack-files";

export class RegionError extends Error {}

export class DocRegion {
  readonly start: string;
  readonly end: string;
  /** Absolute path of the file that holds the region. */
  readonly path: string;

  /** `file`: the holding file, relative to the project root (e.g. `docs/configuration.md`). */
  constructor(
    readonly name: string,
    readonly file: string,
  ) {
    this.start = `<!-- ${name}:start -->`;
    this.end = `<!-- ${name}:end -->`;
    this.path = path.join(ROOT, file);
  }

  /** The holding file's text. */
  read(): string {
    return fs.readFileSync(this.path, "utf8");
  }

  private positions(doc: string): { from: number; to: number } {
    const count = (marker: string) => doc.split(marker).length - 1;
    const start = doc.indexOf(`${this.start}\n`);
    const end = doc.indexOf(this.end);
    if (count(this.start) !== 1 || count(this.end) !== 1 || start < 0 || end < start) {
      throw new RegionError(`${this.file} needs exactly one line ${this.start} followed later by one line ${this.end}`);
    }
    return { from: start + this.start.length + 1, to: end };
  }

  /** The text between the markers, as `doc` (the holding file's text) has it now. */
  current(doc: string): string {
    const { from, to } = this.positions(doc);
    return doc.slice(from, to);
  }

  /** `doc` with the region replaced by `text`. */
  splice(doc: string, text: string): string {
    const { from, to } = this.positions(doc);
    return doc.slice(0, from) + text + doc.slice(to);
  }

  /** "line N: ..." for the first line that differs, so a failing check points at what to regenerate. */
  firstDifference(doc: string, expected: string): string {
    const { from } = this.positions(doc);
    const offset = doc.slice(0, from).split("\n").length;
    const have = this.current(doc).split("\n");
    const want = expected.split("\n");
    const i = have.findIndex((l, n) => l !== want[n]);
    const at = i < 0 ? have.length : i;
    return [
      `  first difference, ${this.file} line ${offset + at}:`,
      `    ${this.file}: ${have[at] ?? "(end of region)"}`,
      `    generated: ${want[at] ?? "(end of region)"}`,
    ].join("\n");
  }

  /**
   * Writes `text` into the holding file, or with `check` only compares; returns the exit code, having said
   * what it found (`fix` names the command that regenerates the region).
   */
  apply(text: string, check: boolean, fix: string): number {
    const doc = this.read();
    const updated = this.splice(doc, text);
    if (updated === doc) {
      console.log(`${this.file}: ${this.name} already up to date`);
      return 0;
    }
    if (check) {
      console.error(`${this.file}'s ${this.name} is out of date: run ${fix}`);
      console.error(this.firstDifference(doc, text));
      return 1;
    }
    fs.writeFileSync(this.path, updated);
    console.log(`${this.file}: ${this.name} updated`);
    return 0;
  }
}

/** A markdown table: header, rule and rows, each cell escaped for a table. */
export function markdownTable(header: string[], rows: string[][]): string {
  const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
  const line = (cells: string[]) => `|${cells.map((c) => (c === "" ? " " : ` ${cell(c)} `)).join("|")}|`;
  return ["", line(header), line(header.map(() => "---")), ...rows.map(line), ""].join("\n") + "\n";
}

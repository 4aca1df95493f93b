// What a bench run has measured so far, written to disk after every step: a step that fails later (a port
// taken, a stack that does not come up) loses nothing measured before it. The file says which suites are
// complete, what the last one is missing, and which step failed.
import * as fs from "fs";
import * as path from "path";

/** A step's failure, carrying the step's name through the layers above it. */
export class StepError extends Error {
  constructor(
    readonly step: string,
    cause: unknown,
  ) {
    super(`${step}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** Runs `f` as the step `what`; a failure names it (the innermost step, when steps nest). */
export async function named<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw e instanceof StepError ? e : new StepError(what, e);
  }
}

export interface RunStatus {
  /** Suites whose every step ran. */
  complete: string[];
  /** Suites with figures but steps still to run (or that failed), with what they lack. */
  partial: Record<string, string>;
  failed?: { step: string; message: string; at: string };
}

type Figures = Record<string, unknown>;

export class RunResults {
  private readonly suites = new Map<string, { figures: Figures; missing?: string }>();
  private failed?: RunStatus["failed"];

  constructor(readonly file: string) {}

  /** A suite's figures so far; `missing` says what its remaining steps would add. Written at once. */
  progress(suite: string, figures: Figures, missing: string): void {
    this.suites.set(suite, { figures, missing });
    this.write();
  }

  /** A suite's final figures. */
  complete(suite: string, figures: Figures): void {
    this.suites.set(suite, { figures });
    this.write();
  }

  /** Records the step that failed; the figures stay. */
  fail(e: unknown, now = new Date()): void {
    const step = e instanceof StepError ? e.step : "(outside any step)";
    this.failed = { step, message: e instanceof Error ? e.message : String(e), at: now.toISOString() };
    this.write();
  }

  status(): RunStatus {
    const all = [...this.suites];
    return {
      complete: all.filter(([, s]) => s.missing === undefined).map(([name]) => name),
      partial: Object.fromEntries(all.flatMap(([name, s]) => (s.missing === undefined ? [] : [[name, s.missing]]))),
      ...(this.failed ? { failed: this.failed } : {}),
    };
  }

  /** The complete suites' figures, as `--record` keeps them (a partial suite is never recorded). */
  completeFigures(): Figures {
    return Object.assign({}, ...[...this.suites.values()].filter((s) => s.missing === undefined).map((s) => s.figures));
  }

  /** Every suite's figures and the run's status, replacing the file in one rename (never half written). */
  private write(): void {
    const all = Object.assign({}, ...[...this.suites.values()].map((s) => s.figures)) as Figures;
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, `${JSON.stringify({ ...all, run: this.status() }, null, 2)}\n`);
    fs.renameSync(tmp, this.file);
  }
}

export interface Suite {
  name: string;
  /** Runs the suite (saving its figures so far as it goes) and returns its final figures. */
  run: () => Promise<Record<string, unknown>>;
}

/**
 * Runs the suites in order; each one's figures are saved as soon as it completes. The first failure stops
 * the rest, is recorded with the step it names, and is returned (after `cleanup`, which runs either way).
 */
export async function runSuites(saved: RunResults, suites: Suite[], cleanup: () => Promise<void>): Promise<unknown> {
  try {
    for (const suite of suites) saved.complete(suite.name, await suite.run());
    return undefined;
  } catch (e) {
    saved.fail(e);
    return e;
  } finally {
    await cleanup();
  }
}

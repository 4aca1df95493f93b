// Medians over rounds, and ratios over pairs of rounds run forwards then backwards (A B … B A): the
// machine's speed drifts, and a ratio over such a pair cancels a steady drift between two measurements.
import type { Load } from "./wrk";

export interface Measured extends Load {
  name: string;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const inRound = (round: Measured[], name: string): Measured => {
  const found = round.find((s) => s.name === name);
  if (!found) throw new Error(`no scenario ${name} in a round`);
  return found;
};

/** One scenario over all rounds: median rps and latencies, errors summed. */
export function combine(name: string, rounds: Measured[][]): Measured {
  const runs = rounds.map((r) => inRound(r, name));
  return {
    name,
    rps: median(runs.map((r) => r.rps)),
    p50Ms: median(runs.map((r) => r.p50Ms)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    errors: runs.reduce((n, r) => n + r.errors, 0),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
  };
}

/** `name` relative to `to` for a metric: the ratio of sums over each pair of rounds, then the median. */
export function pairedRatio(rounds: Measured[][], name: string, to: string, metric: "rps" | "p99Ms"): number {
  const pairs = Array.from({ length: Math.ceil(rounds.length / 2) }, (_, i) => rounds.slice(2 * i, 2 * i + 2));
  return median(
    pairs.map((pair) => {
      const sum = (n: string) => pair.reduce((acc, r) => acc + inRound(r, n)[metric], 0);
      const base = sum(to);
      return base > 0 ? sum(name) / base : NaN;
    }),
  );
}

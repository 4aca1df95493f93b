// The control plane beside docker-compose: how long `pulumi up`, `preview` and `destroy` take on our stacks
// against `docker-compose up -d` and `down` on the tutorial's own files, in one run on one engine. Every
// command runs as a user runs it (the CLI in the project folder, compose in the tutorial's), timed from its
// start until it exits, or, for an `up`, until nginx answers 200 on the published port.
import { LiveStack } from "../harness/live-stack";
import { get, within } from "../harness/load";
import { freePort } from "../harness/ports";
import { named } from "./run-results";
import { prepareSeed, type ComposeSeed } from "./seed";
import { median } from "./stats";
import { traceBreakdown, type Breakdown } from "./trace";

export interface Timing {
  name: string;
  medianMs: number;
  minMs: number;
  maxMs: number;
  rounds: number;
}

export interface ControlPlaneResults {
  controlPlane: Timing[];
  /** Each target's ratio (median over the rounds of the per-round ratio) and its range over the rounds. */
  targets: { target: string; ratio: number; minRatio: number; maxRatio: number; limit: number; met: boolean }[];
  breakdown: Breakdown[];
}

const UP = ["up", "--yes", "--skip-preview"];
const DESTROY = ["destroy", "--yes", "--skip-preview"];

/** Targets: our command ÷ compose's, per round, in the same round. */
const TARGETS: { target: string; ours: string; compose: string; limit: number }[] = [
  { target: "dev `pulumi up` to first 200 ≤ 1.5 × compose up", ours: "pulumi-up-dev", compose: "compose-up", limit: 1.5 },
  { target: "prod `pulumi up` to first 200 ≤ 3 × compose up", ours: "pulumi-up-prod", compose: "compose-up", limit: 3 },
  {
    target: "no-change `pulumi preview` ≤ 2 × no-change compose up -d",
    ours: "pulumi-preview-noop",
    compose: "compose-noop",
    limit: 2,
  },
  { target: "`pulumi destroy` ≤ 2 × compose down", ours: "pulumi-destroy-dev", compose: "compose-down", limit: 2 },
];

/** Milliseconds from `t0` until the URL answers 200 (polled every 20 ms, at most 60 s). */
export const firstOk = (url: string, t0 = Date.now()): Promise<number> =>
  within(60_000, async () => (await get(url, {}, 1000)).status === 200, `${url} answering 200`, { since: t0, everyMs: 20 });

/** How long `f` takes; with `url`, until that answers 200 after `f` returned. */
async function timed(f: () => Promise<unknown>, url?: string): Promise<number> {
  const t0 = Date.now();
  await f();
  return url ? firstOk(url, t0) : Date.now() - t0;
}

class Samples {
  private readonly byName = new Map<string, number[]>();
  constructor(
    private readonly progress: (msg: string) => void,
    /** Called after every sample, to keep it on disk. */
    private readonly added: () => void,
  ) {}
  /** Times `f` (see `timed`) as the measurement `name`; a failure names the measurement. */
  async time(name: string, f: () => Promise<unknown>, url?: string): Promise<void> {
    const ms = await named(`control plane: ${name}`, () => timed(f, url));
    this.byName.set(name, [...(this.byName.get(name) ?? []), ms]);
    this.progress(`${name}: ${(ms / 1000).toFixed(2)} s`);
    this.added();
  }
  get(name: string): number[] {
    const xs = this.byName.get(name);
    if (!xs?.length) throw new Error(`no sample named ${name}`);
    return xs;
  }
  timings(): Timing[] {
    return [...this.byName].map(([name, xs]) => ({
      name,
      medianMs: Math.round(median(xs)),
      minMs: Math.round(Math.min(...xs)),
      maxMs: Math.round(Math.max(...xs)),
      rounds: xs.length,
    }));
  }
}

/** A stack of ours on free loopback ports: `port` is nginx's. */
interface OurStack {
  live: LiveStack;
  port: number;
  url: () => string;
}

async function ourStack(file: string, name: string, extra: Record<string, string>): Promise<OurStack> {
  const live = await LiveStack.create(file, name);
  const port = await freePort();
  await live.configure({ httpPort: String(port), ...extra });
  return { live, port, url: () => `http://127.0.0.1:${port}/` };
}

export async function controlPlane(opts: {
  rounds: number;
  scaling: number[];
  progress: (msg: string) => void;
  /** Called with each thing to remove at the end, also when a step fails. */
  teardown: (f: () => Promise<void>) => void;
  /** Called with the figures so far after every measurement, and what is still to come. */
  measured?: (sofar: Partial<ControlPlaneResults>, missing: string) => void;
}): Promise<ControlPlaneResults> {
  const { progress } = opts;
  const sofar: Partial<ControlPlaneResults> = {};
  let roundsDone = 0;
  let scalingDone = 0;
  const missing = () =>
    [
      roundsDone < opts.rounds ? `${opts.rounds - roundsDone} of ${opts.rounds} rounds, targets` : "",
      sofar.breakdown ? "" : "trace breakdown",
      scalingDone < opts.scaling.length ? `replicas ${opts.scaling.slice(scalingDone).join(", ")}` : "",
    ]
      .filter(Boolean)
      .join("; ");
  const report = () => opts.measured?.({ ...sofar, controlPlane: samples.timings() }, missing());
  const samples = new Samples(progress, report);

  const seed: ComposeSeed = await named("control plane: preparing the seed", () => prepareSeed());
  opts.teardown(() => seed.remove());
  // Builds the python:3 layers once, as a user who ran the tutorial has.
  await named("control plane: docker-compose build", () => seed.compose("build", "--quiet"));
  // Named as their stack files: dev mounts a conf rendered for the stack named dev.
  const dev = await named("control plane: creating the dev stack", async () =>
    ourStack("dev", "dev", { appHostPort: String(await freePort()) }),
  );
  opts.teardown(() => dev.live.destroy());
  const prod = await named("control plane: creating the prod stack", () => ourStack("prod", "prod", {}));
  opts.teardown(() => prod.live.destroy());
  // One untimed run each: plugins, the build cache and the page cache warm, as on a user's second day.
  for (const s of [dev, prod]) {
    await named(`control plane: warm-up up of ${s.live.name}`, () => s.live.run(UP));
    await named(`control plane: warm-up destroy of ${s.live.name}`, () => s.live.run(DESTROY));
  }

  const composeRound = async () => {
    await seed.compose("down", "--timeout", "1");
    await seed.removeImage();
    await samples.time("compose-up", () => seed.compose("up", "-d"), seed.url);
    await samples.time("compose-noop", () => seed.compose("up", "-d"));
    const moved = seed.moveNginx(await freePort());
    await samples.time("compose-change", () => seed.compose("up", "-d"), moved);
    await samples.time("compose-down", () => seed.compose("down"));
    seed.moveNginx(Number(new URL(seed.url).port));
    await samples.time("compose-up-cached", () => seed.compose("up", "-d"), seed.url);
    await seed.compose("down", "--timeout", "1");
  };
  // `pulumi destroy` removes the image it built, so every `up` here builds it (from the build cache).
  const devRound = async () => {
    await samples.time("pulumi-up-dev", () => dev.live.run(UP), dev.url());
    await samples.time("pulumi-up-noop", () => dev.live.run(UP));
    await samples.time("pulumi-preview-noop", () => dev.live.run(["preview"]));
    const moved = await freePort();
    await dev.live.configure({ httpPort: String(moved) });
    await samples.time("pulumi-change-dev", () => dev.live.run(UP), `http://127.0.0.1:${moved}/`);
    await samples.time("pulumi-destroy-dev", () => dev.live.run(DESTROY));
    await dev.live.configure({ httpPort: String(dev.port) });
  };
  const prodRound = async () => {
    await samples.time("pulumi-up-prod", () => prod.live.run(UP), prod.url());
    await samples.time("pulumi-preview-noop-prod", () => prod.live.run(["preview"]));
    await samples.time("pulumi-destroy-prod", () => prod.live.run(DESTROY));
  };
  const perRound: Record<string, number>[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    const order = [composeRound, devRound, prodRound];
    progress(`control plane: round ${round} of ${opts.rounds} (${round % 2 ? "compose first" : "compose last"})`);
    for (const f of round % 2 ? order : order.reverse()) await f();
    perRound.push(
      Object.fromEntries(TARGETS.map((t) => [t.target, samples.get(t.ours).at(-1)! / samples.get(t.compose).at(-1)!])),
    );
    roundsDone = round;
  }
  const targets = TARGETS.map((t) => {
    const ratios = perRound.map((r) => r[t.target]);
    const ratio = median(ratios);
    return {
      target: t.target,
      ratio,
      minRatio: Math.min(...ratios),
      maxRatio: Math.max(...ratios),
      limit: t.limit,
      met: ratio <= t.limit,
    };
  });

  sofar.targets = targets;
  report();

  // Where the time goes: Pulumi's own OpenTelemetry trace of one cold `up` and one no-change `preview`.
  const traced = (live: LiveStack, label: string, args: string[]) =>
    named(`control plane: trace of ${label}`, () => traceBreakdown(live, label, args));
  const breakdown = [
    await traced(dev.live, "dev: pulumi up (cold)", UP),
    await traced(dev.live, "dev: pulumi preview (no change)", ["preview"]),
  ];
  await named("control plane: destroying dev after its trace", () => dev.live.run(DESTROY));
  breakdown.push(await traced(prod.live, "prod: pulumi up (cold)", UP));
  breakdown.push(await traced(prod.live, "prod: pulumi preview (no change)", ["preview"]));
  await named("control plane: destroying prod after its trace", () => prod.live.run(DESTROY));
  sofar.breakdown = breakdown;
  report();

  await scalingCurve(opts.scaling, samples, progress, seed, () => scalingDone++);
  return { controlPlane: samples.timings(), targets, breakdown };
}

/**
 * How it grows with replicas: the prod stack with `replicas` N (create, no-change preview, a release of a new
 * app version, destroy) beside compose's `--scale flask=N` (up, no-change up, recreating every container as its
 * release, down), one round each.
 */
async function scalingCurve(
  counts: number[],
  samples: Samples,
  progress: (msg: string) => void,
  plain: ComposeSeed,
  countDone: () => void,
) {
  if (!counts.length) return;
  await plain.remove(); // the scalable variant uses the same compose project name
  const seed = await named("control plane: preparing the scalable seed", () => prepareSeed({ scalable: true }));
  try {
    for (const n of counts) {
      progress(`control plane: ${n} replica(s)`);
      const scale = ["--scale", `flask=${n}`];
      await samples.time(`compose-up-replicas-${n}`, () => seed.compose("up", "-d", ...scale), seed.url);
      await samples.time(`compose-noop-replicas-${n}`, () => seed.compose("up", "-d", ...scale));
      await samples.time(`compose-release-replicas-${n}`, () => seed.compose("up", "-d", "--force-recreate", ...scale), seed.url);
      await samples.time(`compose-down-replicas-${n}`, () => seed.compose("down"));

      const s = await named(`control plane: creating cp-scale-${n}`, () =>
        ourStack("prod", `cp-scale-${n}`, { replicas: String(n) }),
      );
      try {
        await samples.time(`pulumi-up-prod-replicas-${n}`, () => s.live.run(UP), s.url());
        await samples.time(`pulumi-preview-noop-replicas-${n}`, () => s.live.run(["preview"]));
        await s.live.configure({ appVersion: "0.0.2" });
        await samples.time(`pulumi-release-replicas-${n}`, () => s.live.run(UP));
        await samples.time(`pulumi-destroy-prod-replicas-${n}`, () => s.live.run(DESTROY));
      } finally {
        await s.live.destroy();
      }
      countDone();
    }
  } finally {
    await seed.remove();
  }
}

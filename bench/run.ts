// npm run bench: the tutorial's topology (run by docker-compose from its own files) against our stacks,
// measured side by side in one run on one engine. Not a test: it asserts no timings; it fails only when a
// step fails or a scenario saw errors. Writes bench/out/results.json after every step (a failing step keeps
// what was measured before it, and the file names that step) and each suite's chart when it completes;
// --record also copies the complete suites' figures and charts to bench/, which docs/benchmark.md shows.
//   npm run bench -- [--rounds 6] [--duration 10] [--warmup 2] [--connections 32] [--scaling 1,2,4]
//                    [--suites data,control,ops,https] [--record]
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { parseArgs } from "util";
import { NGINX_HEALTH_PATH } from "../nginx/conf";
import { docker, upStack } from "../harness/live-stack";
import { freePort } from "../harness/ports";
import { ROOT, stackConfig } from "../infra/stack-files";
import { svgChart } from "./chart";
import { controlPlane, firstOk, type ControlPlaneResults } from "./control-plane";
import { named, runSuites, RunResults, StepError, type Suite } from "./run-results";
import { prepareSeed, TUTORIAL_MAIN_PY, type ComposeSeed } from "./seed";
import { combine, pairedRatio, type Measured } from "./stats";
import { httpsSuite } from "./https";
import { wrk, type LoadSettings } from "./wrk";

/** The command line, checked before anything is created; a bad flag is named and the run stops. */
function readFlags() {
  const { values } = parseArgs({
    options: {
      rounds: { type: "string", default: "6" },
      duration: { type: "string", default: "10" },
      warmup: { type: "string", default: "2" },
      connections: { type: "string", default: "32" },
      scaling: { type: "string", default: "1,2,4" },
      suites: { type: "string", default: "data,control,ops,https" },
      "cp-rounds": { type: "string", default: "5" },
      "cp-scaling": { type: "string", default: "1,4,16" },
      record: { type: "boolean", default: false },
    },
  });
  const whole = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number ≥ ${min} (got ${JSON.stringify(v)})`);
    return n;
  };
  const wholeList = (name: string, v: string | undefined) =>
    (v ?? "")
      .split(",")
      .filter(Boolean)
      .map((r) => whole(name, r, 1));
  const suiteList = (v: string | undefined) => {
    const suites = (v ?? "").split(",").filter(Boolean);
    const known = ["data", "control", "ops", "https"];
    const unknown = suites.filter((x) => !known.includes(x));
    if (unknown.length || !suites.length) throw new Error(`--suites takes ${known.join(", ")} (got ${JSON.stringify(v)})`);
    return {
      data: suites.includes("data"),
      control: suites.includes("control"),
      ops: suites.includes("ops"),
      https: suites.includes("https"),
    };
  };
  return {
    rounds: whole("rounds", values.rounds, 1),
    durationS: whole("duration", values.duration, 1),
    warmupS: whole("warmup", values.warmup, 0),
    load: { connections: whole("connections", values.connections, 1), threads: 1 } satisfies LoadSettings,
    scaling: wholeList("scaling", values.scaling),
    suites: suiteList(values.suites),
    cpRounds: whole("cp-rounds", values["cp-rounds"], 1),
    cpScaling: wholeList("cp-scaling", values["cp-scaling"]),
    record: values.record === true,
  };
}
let flags: ReturnType<typeof readFlags>;
try {
  flags = readFlags();
} catch (e) {
  console.error(`[bench] ${(e as Error).message}`);
  process.exit(2);
}
const { rounds: ROUNDS, durationS: DURATION_S, warmupS: WARMUP_S, load: LOAD, scaling: SCALING } = flags;
const OUT = path.join(ROOT, "bench", "out");

const progress = (msg: string) => console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

function measure(name: string, url: string): Measured {
  let m: Measured;
  try {
    if (WARMUP_S > 0) wrk(url, WARMUP_S, LOAD); // discarded
    m = { name, ...wrk(url, DURATION_S, LOAD) };
  } catch (e) {
    throw new StepError(`${name}: measuring`, e);
  }
  progress(
    `${name}: ${m.rps.toFixed(0)} req/s, p50 ${m.p50Ms.toFixed(2)} ms, p99 ${m.p99Ms.toFixed(2)} ms, errors ${m.errors}, non-2xx ${m.non2xx}`,
  );
  return m;
}

/** Runs one step with a progress line; a failure names the step. */
function step<T>(what: string, f: () => Promise<T>): Promise<T> {
  progress(what);
  return named(what, f);
}

/** docker-proxy in the path (userland-proxy on) adds a userspace copy that clients on other hosts never take. */
function dockerProxyRunning(): boolean {
  return fs
    .readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p))
    .some((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/comm`, "utf8").trim() === "docker-proxy";
      } catch {
        return false; // the process exited meanwhile
      }
    });
}

const APP_DIRECT = "app-direct";
const TARGETS = {
  "prod ≥ 0.95 × app-direct req/s": (r: Ratios) => r.prodVsAppDirect >= 0.95,
  "prod ≥ 5 × seed req/s": (r: Ratios) => r.prodVsSeed >= 5,
  "prod p99 ≤ 1.2 × app-direct p99": (r: Ratios) => r.prodP99VsAppDirect <= 1.2,
};
interface Ratios {
  prodVsAppDirect: number;
  prodVsSeed: number;
  prodP99VsAppDirect: number;
  /** How much of prod/seed the stack gives with the tutorial's own code (no session fast path). */
  prodTutorialAppVsSeed: number;
  prodVsProdTutorialApp: number;
}

const teardown: (() => Promise<void>)[] = [];
const stop = async () => {
  for (let f = teardown.pop(); f; f = teardown.pop()) await f().catch((e: Error) => console.error(`teardown: ${e.message}`));
};

/** What a run was measured on. */
async function machine() {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    dockerVersion: (await docker.version()).Version,
    node: process.version,
  };
}

type Machine = Awaited<ReturnType<typeof machine>>;

/** One scenario's figures as results.json holds them. */
const scenarioFigures = ({ name, rps, p50Ms, p99Ms, errors, non2xx }: Measured) => ({
  name,
  rps: Math.round(rps),
  p50Ms,
  p99Ms,
  errors,
  non2xx,
});

/** What the data plane measured: scenario medians over the rounds so far, ratios, targets, scaling. */
interface DataPlaneRun {
  rounds: Measured[][];
  scaling: Measured[];
  firstOks: Record<string, number>;
  dockerProxy: boolean;
  machine: Machine;
}

function dataFigures(run: DataPlaneRun) {
  const { rounds, scaling, firstOks } = run;
  const scenarios = rounds[0].map(({ name }) => combine(name, rounds));
  const ratios: Ratios = {
    prodVsAppDirect: pairedRatio(rounds, "prod", APP_DIRECT, "rps"),
    prodVsSeed: pairedRatio(rounds, "prod", "seed", "rps"),
    prodP99VsAppDirect: pairedRatio(rounds, "prod", APP_DIRECT, "p99Ms"),
    prodTutorialAppVsSeed: pairedRatio(rounds, "prod-tutorial-app", "seed", "rps"),
    prodVsProdTutorialApp: pairedRatio(rounds, "prod", "prod-tutorial-app", "rps"),
  };
  const clean = [...scenarios, ...scaling].every((s) => s.errors === 0 && s.non2xx === 0);
  const targetsMet: Record<string, boolean> = {
    ...Object.fromEntries(Object.entries(TARGETS).map(([k, f]) => [k, f(ratios)])),
    "zero errors and non-2xx": clean,
  };
  const round3 = (n: number) => Math.round(n * 1000) / 1000;
  const results = {
    scenarios: scenarios.map((sc) => ({ ...scenarioFigures(sc), firstOkMs: firstOks[sc.name] })),
    scaling: {
      replicas: scaling.map((s, i) => ({
        replicas: SCALING[i],
        rps: Math.round(s.rps),
        p50Ms: s.p50Ms,
        p99Ms: s.p99Ms,
        errors: s.errors,
        non2xx: s.non2xx,
      })),
      note:
        "2 cores: nginx, every gunicorn worker and the load generator share them, so replicas beyond 1 add " +
        "processes, not CPU; expect a flat or falling curve here and a rising one on a larger host",
    },
    ratios: Object.fromEntries(Object.entries(ratios).map(([k, v]) => [k, round3(v)])),
    targetsMet,
    rounds: rounds.map((r) =>
      r.map(({ name, rps, p50Ms, p99Ms, errors, non2xx }) => ({ name, rps: Math.round(rps), p50Ms, p99Ms, errors, non2xx })),
    ),
    machine: {
      ...run.machine,
      // true: published ports went through docker-proxy (the engine's userland proxy) as well.
      dockerProxyInPath: run.dockerProxy,
    },
    settings: {
      generator: `wrk, ${LOAD.threads} thread`,
      connections: LOAD.connections,
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      rounds: rounds.length,
      seed: "docker-compose 1.29 with the tutorial's files, host ports on 127.0.0.1",
      prodConfig: Object.fromEntries(
        Object.entries(stackConfig("prod"))
          .filter(([k]) => k.startsWith("flask-proxy:"))
          .map(([k, v]) => [k.slice("flask-proxy:".length), v]),
      ),
      note:
        "prod and app-direct are the same containers: app-direct publishes the app port on 127.0.0.1 for the measurement. " +
        "prod-tutorial-app is the prod stack serving the tutorial's main.py unchanged (healthchecks off: it has no /healthz). " +
        "Rounds alternate forwards and backwards; scenario figures are medians over the rounds, ratios are taken " +
        "over each pair of rounds (sums of both), then the median over the pairs",
    },
    measuredAt: new Date().toISOString(),
  };
  return { results, scenarios, ratios, targetsMet, clean };
}

/**
 * The data plane: requests per second through each topology. Its figures so far go to `saved` after every
 * round and every replica count, so a later failure keeps them.
 */
async function dataPlane(saved: RunResults): Promise<{ results: Record<string, unknown>; svg: string; clean: boolean }> {
  const tutorialCode = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-tutorial-app-"));
  fs.chmodSync(tutorialCode, 0o755);
  fs.writeFileSync(path.join(tutorialCode, "main.py"), TUTORIAL_MAIN_PY, { mode: 0o644 });
  teardown.push(async () => fs.rmSync(tutorialCode, { recursive: true, force: true }));

  const run: DataPlaneRun = { rounds: [], scaling: [], firstOks: {}, dockerProxy: false, machine: await machine() };
  const { rounds, scaling, firstOks } = run;
  const save = () => {
    const left = [
      ...(rounds.length < ROUNDS ? [`${ROUNDS - rounds.length} of ${ROUNDS} rounds`] : []),
      ...(scaling.length < SCALING.length ? [`scaling ×${SCALING.slice(scaling.length).join(", ×")}`] : []),
    ];
    saved.progress("data", dataFigures(run).results, left.join("; "));
  };
  try {
    // Every topology runs at once (idle ones cost nothing), so rounds can alternate between them. "first
    // 200" counts from the moment each is created (and, where declared, health-waited) until nginx answers.
    const seed: ComposeSeed = await step("seed: preparing the tutorial's files", () => prepareSeed());
    teardown.push(() => seed.remove());
    await step("seed: docker-compose build (the tutorial's Dockerfile)", () => seed.compose("build", "--quiet"));
    await step("seed: docker-compose up -d", () => seed.compose("up", "-d"));
    firstOks.seed = await named("seed: first 200", () => firstOk(seed.url));

    const dev = await step("dev: creating the stack", () => upStack("dev"));
    teardown.push(() => dev.destroy());
    firstOks.dev = await named("dev: first 200", () => firstOk(dev.url));
    // prod with the app port published on loopback: app-direct hits the same containers, so the only
    // difference between `prod` and `app-direct` is the nginx hop.
    const appDirectPort = await freePort();
    const prod = await step("prod: creating the stack", () => upStack("prod", { appHostPort: String(appDirectPort) }));
    teardown.push(() => prod.destroy());
    firstOks.prod = await named("prod: first 200", () => firstOk(prod.url));
    // The prod stack serving the tutorial's main.py unchanged, mounted over the image's code. It has no
    // /healthz, so its healthchecks are off; nothing else of prod changes.
    const tutorial = await step("prod-tutorial-app: creating the stack", async () =>
      upStack(
        "prod",
        { httpPort: String(await freePort()), appCodeMount: tutorialCode, healthchecks: "false", waitForHealthy: "false" },
        "prod-tutorial-app",
      ),
    );
    teardown.push(() => tutorial.destroy());
    firstOks["prod-tutorial-app"] = await named("prod-tutorial-app: first 200", () => firstOk(tutorial.url));

    const targets: [string, string][] = [
      ["seed", seed.url],
      ["dev", dev.url],
      ["prod", prod.url],
      ["prod-tutorial-app", tutorial.url],
      [APP_DIRECT, `http://127.0.0.1:${appDirectPort}/`],
      ["nginx-static", new URL(NGINX_HEALTH_PATH, prod.url).toString()],
    ];
    run.dockerProxy = dockerProxyRunning();
    if (run.dockerProxy) {
      progress(
        "NOTE: this engine runs docker-proxy (userland-proxy on): every request also passes through it; see docs/benchmark.md.",
      );
    }
    for (let round = 1; round <= ROUNDS; round++) {
      progress(`round ${round} of ${ROUNDS} (${round % 2 === 1 ? "forwards" : "backwards"})`);
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      rounds.push(order.map(([name, url]) => measure(name, url)));
      save();
    }
    await step("tearing down the measured topologies", stop);

    // Scaling curve: the prod stack with more app replicas behind the one alias.
    for (const replicas of SCALING) {
      const d = await step(`prod ×${replicas}: creating the stack`, () => upStack("prod", { replicas: String(replicas) }));
      teardown.push(() => d.destroy());
      await named(`prod ×${replicas}: first 200`, () => firstOk(d.url));
      scaling.push(measure(`prod ×${replicas}`, d.url));
      save();
      await step(`prod ×${replicas}: destroying`, stop);
    }
  } finally {
    await stop();
  }

  const { results, scenarios, ratios, targetsMet, clean } = dataFigures(run);
  console.log(`\nmedians of ${ROUNDS} round(s); ratios over each pair of rounds (forwards, backwards), then the median`);
  console.table(
    scenarios.map((s) => ({
      scenario: s.name,
      "req/s": Math.round(s.rps),
      "p50 ms": s.p50Ms.toFixed(2),
      "p99 ms": s.p99Ms.toFixed(2),
      errors: s.errors,
      "non-2xx": s.non2xx,
      "× seed": pairedRatio(rounds, s.name, "seed", "rps").toFixed(2),
      "× app-direct": pairedRatio(rounds, s.name, APP_DIRECT, "rps").toFixed(2),
      "p99 ÷ app-direct": pairedRatio(rounds, s.name, APP_DIRECT, "p99Ms").toFixed(2),
      "first 200 ms": firstOks[s.name] ?? "",
    })),
  );
  console.table(Object.entries(ratios).map(([ratio, value]) => ({ ratio, value: value.toFixed(3) })));
  console.table(Object.entries(targetsMet).map(([target, met]) => ({ target, met: met ? "met" : "MISSED" })));
  if (scaling.length) {
    console.table(
      scaling.map((s, i) => ({
        replicas: SCALING[i],
        "req/s": Math.round(s.rps),
        "p99 ms": s.p99Ms.toFixed(2),
        errors: s.errors,
        "× 1 replica": (s.rps / scaling[0].rps).toFixed(2),
      })),
    );
  }

  const title = `Requests/s, ${LOAD.connections} connections, ${DURATION_S} s each, median of ${ROUNDS} (higher is better)`;
  const bars = scenarios.map((s) => ({
    label: s.name,
    value: s.rps,
    text: `${Math.round(s.rps)} req/s`,
    highlight: s.name === "prod",
  }));
  return { results, svg: svgChart(bars, title), clean };
}

/**
 * What operating the stack costs per request: prod as committed (request IDs, buffered JSON access log) beside
 * prod with each log and metrics setting changed, all up at once and measured in alternating rounds.
 */
const OPS_VARIANTS: [string, Record<string, string>][] = [
  ["prod", {}],
  ["log off", { nginxAccessLog: "off", nginxRequestId: "false" }],
  ["log combined, buffered, no IDs", { nginxAccessLogFormat: "combined", nginxRequestId: "false" }],
  ["log timed, buffered", { nginxAccessLogFormat: "timed" }],
  ["log json, a write per request", { nginxAccessLog: "on" }],
  ["+ gunicorn access log", { gunicornAccessLog: "true" }],
  ["+ metrics", { metricsPort: "" }],
];

async function opsSuite(): Promise<Record<string, unknown>> {
  const rounds: Measured[][] = [];
  const targets: [string, string][] = [];
  try {
    for (const [i, [name, config]] of OPS_VARIANTS.entries()) {
      const overrides = { ...config, httpPort: String(await freePort()) };
      if ("metricsPort" in overrides) overrides.metricsPort = String(await freePort());
      const live = await step(`ops ${name}: creating the stack`, () => upStack("prod", overrides, `ops-${i}`));
      teardown.push(() => live.destroy());
      await firstOk(live.url);
      targets.push([name, live.url]);
    }
    for (let round = 1; round <= ROUNDS; round++) {
      progress(`ops round ${round} of ${ROUNDS} (${round % 2 === 1 ? "forwards" : "backwards"})`);
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      rounds.push(order.map(([name, url]) => measure(name, url)));
    }
  } finally {
    await step("ops: destroying the stacks", stop);
  }
  const scenarios = rounds[0].map(({ name }) => combine(name, rounds));
  console.log(`\noperating costs: medians of ${ROUNDS} round(s); × prod over each pair of rounds`);
  console.table(
    scenarios.map((s) => ({
      scenario: s.name,
      "req/s": Math.round(s.rps),
      "p99 ms": s.p99Ms.toFixed(2),
      errors: s.errors,
      "× prod": pairedRatio(rounds, s.name, "prod", "rps").toFixed(3),
    })),
  );
  return {
    ops: {
      scenarios: scenarios.map((sc) => ({
        ...scenarioFigures(sc),
        vsProd: Math.round(pairedRatio(rounds, sc.name, "prod", "rps") * 1000) / 1000,
      })),
      settings: Object.fromEntries(OPS_VARIANTS),
      note: "Each scenario is the prod stack with the listed config changed; every stack is up during the rounds",
      measuredAt: new Date().toISOString(),
    },
  };
}

/** The control plane's figures (so far) as results.json holds them. */
const controlFigures = (cp: Partial<ControlPlaneResults>, host: Machine) => ({
  controlPlane: cp.controlPlane ?? [],
  controlPlaneTargets: cp.targets ?? [],
  controlPlaneBreakdown: cp.breakdown ?? [],
  controlPlaneSettings: {
    rounds: flags.cpRounds,
    replicas: flags.cpScaling,
    note:
      "Each command as a user runs it: `pulumi up --yes --skip-preview`, `pulumi preview`, `pulumi destroy --yes " +
      "--skip-preview` in the project folder; `docker-compose up -d` and `down` on the tutorial's files. An up is " +
      "timed until nginx answers 200. compose-up starts with the tutorial's app image removed; pulumi destroy " +
      "removes the image it built, so every pulumi-up-* builds it (from the engine's build cache). Ratios are " +
      "taken per round, then the median over the rounds",
  },
  controlPlaneMachine: host,
  controlPlaneMeasuredAt: new Date().toISOString(),
});

/**
 * The control plane beside docker-compose: tables, ratios, targets and where the time goes. Its figures so
 * far go to `saved` after every measurement.
 */
async function controlPlaneSuite(saved: RunResults): Promise<{ results: Record<string, unknown>; svg: string }> {
  const host = await machine();
  const cp = await controlPlane({
    rounds: flags.cpRounds,
    scaling: flags.cpScaling,
    progress,
    teardown: (f) => teardown.push(f),
    measured: (sofar, missing) => saved.progress("control", controlFigures(sofar, host), missing),
  });
  await step("control plane: removing what it made", stop);
  const byName = new Map(cp.controlPlane.map((t) => [t.name, t]));
  // What each of our measurements compares with: compose's command of the same kind (and replica count).
  const kinds: [RegExp, string][] = [
    [/^pulumi-(preview|up)-noop/, "noop"],
    [/^pulumi-destroy/, "down"],
    [/^pulumi-change/, "change"],
    [/^pulumi-release/, "release"],
    [/^pulumi-up/, "up"],
  ];
  const composeOf = (name: string) => {
    const kind = kinds.find(([re]) => re.test(name))?.[1];
    return kind ? byName.get(`compose-${kind}${/-replicas-\d+$/.exec(name)?.[0] ?? ""}`) : undefined;
  };
  console.log(`\ncontrol plane: medians of ${flags.cpRounds} round(s) (compose and our stacks alternating), seconds`);
  console.table(
    cp.controlPlane.map((t) => ({
      measurement: t.name,
      "median s": (t.medianMs / 1000).toFixed(2),
      "min s": (t.minMs / 1000).toFixed(2),
      "max s": (t.maxMs / 1000).toFixed(2),
      rounds: t.rounds,
      "× compose": composeOf(t.name) ? (t.medianMs / composeOf(t.name)!.medianMs).toFixed(2) : "",
    })),
  );
  console.table(
    cp.targets.map((t) => ({
      target: t.target,
      "ratio (median of rounds)": t.ratio.toFixed(2),
      range: `${t.minRatio.toFixed(2)}–${t.maxRatio.toFixed(2)}`,
      met: t.met ? "met" : `MISSED by ${(t.ratio - t.limit).toFixed(2)}`,
    })),
  );
  for (const b of cp.breakdown) {
    console.log(`\nwhere the time goes: ${b.label}, ${(b.totalMs / 1000).toFixed(2)} s (Pulumi's OpenTelemetry trace)`);
    console.table(b.phases);
    console.table(b.plugins.map((p) => ({ "plugin start": p.plugin, "at ms": p.atMs, ms: p.ms })));
    console.table(b.slowest.map((c) => ({ "slowest provider calls": c.call, "at ms": c.atMs, ms: c.ms })));
    console.log(`state writes: ${b.stateWrites.count}, ${b.stateWrites.ms} ms in all`);
  }
  const shown = ["compose-up", "pulumi-up-dev", "pulumi-up-prod", "compose-noop", "pulumi-up-noop", "pulumi-preview-noop"]
    .concat(["compose-change", "pulumi-change-dev", "compose-down", "pulumi-destroy-dev"])
    .flatMap((n) => byName.get(n) ?? []);
  const bars = shown.map((t) => ({
    label: t.name,
    value: t.medianMs / 1000,
    range: [t.minMs / 1000, t.maxMs / 1000] as [number, number],
    text: `${(t.medianMs / 1000).toFixed(2)} s`,
    highlight: t.name.startsWith("compose"),
  }));
  const title = `Seconds per command, median of ${flags.cpRounds} with range (lower is better; dark: docker-compose)`;
  return { results: controlFigures(cp, host), svg: svgChart(bars, title, 170) };
}

async function main(): Promise<void> {
  // Ctrl-C still removes what was created (the shell's trap destroys stacks left behind too); what was
  // measured is on disk already.
  process.once("SIGINT", () => void stop().finally(() => process.exit(130)));
  fs.mkdirSync(OUT, { recursive: true });
  const saved = new RunResults(path.join(OUT, "results.json"));
  const charts: string[] = [];
  let clean = true;
  const suites: Suite[] = [];
  if (flags.suites.data)
    suites.push({
      name: "data",
      run: async () => {
        const data = await dataPlane(saved);
        clean = data.clean;
        fs.writeFileSync(path.join(OUT, "results.svg"), data.svg);
        charts.push("results.svg");
        return data.results;
      },
    });
  if (flags.suites.ops) suites.push({ name: "ops", run: opsSuite });
  if (flags.suites.https)
    suites.push({
      name: "https",
      run: () => httpsSuite({ rounds: ROUNDS, durationS: DURATION_S, measure, step, progress, teardown, stop }),
    });
  if (flags.suites.control)
    suites.push({
      name: "control",
      run: async () => {
        const cp = await controlPlaneSuite(saved);
        fs.writeFileSync(path.join(OUT, "control-plane.svg"), cp.svg);
        charts.push("control-plane.svg");
        return cp.results;
      },
    });
  const failure = await runSuites(saved, suites, stop);
  const { complete, partial } = saved.status();
  const files = [saved.file, ...charts.map((f) => path.join(OUT, f))].map((f) => path.relative(ROOT, f));
  const missing = Object.entries(partial).map(([suite, what]) => `${suite} (missing ${what})`);
  progress(
    `wrote ${files.join(", ")}: complete ${complete.join(", ") || "none"}${missing.length ? `; partial ${missing.join(", ")}` : ""} ` +
      `(CPU: ${os.cpus()[0]?.model})`,
  );
  if (flags.record && complete.length) {
    // Only complete suites; a run of one suite keeps the other's recorded figures (each has its own measuredAt).
    const recorded = path.join(ROOT, "bench", "results.json");
    const before = fs.existsSync(recorded) ? (JSON.parse(fs.readFileSync(recorded, "utf8")) as Record<string, unknown>) : {};
    fs.writeFileSync(recorded, `${JSON.stringify({ ...before, ...saved.completeFigures() }, null, 2)}\n`);
    for (const f of charts) fs.copyFileSync(path.join(OUT, f), path.join(ROOT, "bench", f));
    progress(`recorded ${complete.join(" and ")} under bench/`);
  }
  if (failure) throw failure;
  if (!clean) throw new Error("a scenario saw errors or non-2xx answers (see the table)");
}

// A step's failure starts with the step's name (StepError); results.json's run.failed names it too.
main().catch((e: Error) => {
  console.error(`[bench] FAILED: ${e.message}`);
  process.exitCode = 1;
});

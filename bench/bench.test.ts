// `npm run bench`: the tutorial's topology against our stacks, measured side by side in one run on one
// engine. Not a test: it asserts no timings, only that every scenario ran without errors. Results go to
// bench/results.json and bench/results.svg. Load comes from wrk (C, so the generator takes less of the two
// cores than a Node one would); its Lua done() hook prints a JSON summary.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { upStack, docker, get } from "../tests/e2e/live";
import { ROOT, stackConfig, type Declared, type ProgramRun } from "../tests/support/program";
import { labelList, stackLabels } from "../infra/naming";
import { NGINX_HEALTH_PATH } from "../nginx/conf";
import { Realizer } from "../tests/support/realize";
import { removeByLabel } from "../tools/engine-objects";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const DURATION_S = Number(process.env.BENCH_DURATION ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP ?? 2);
// Every scenario once per round, rounds back to back, alternately forwards and backwards (A B … B A): the
// machine's speed drifts, and a ratio taken over such a pair of rounds cancels a steady drift between the
// two scenarios' measurements. Scenario figures are medians over all rounds; ratios, medians over pairs.
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 6);
const THREADS = 1; // one wrk thread: the generator should use as little of the 2 cores as it can
const SEED_PORT = 18080;
// Replica counts for the scaling curve (BENCH_SCALING="" skips it).
const SCALING = (process.env.BENCH_SCALING ?? "1,2,4").split(",").filter(Boolean).map(Number);
const APP_DIRECT_PORT = 18001;

interface Scenario {
  name: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
  firstOkMs?: number;
}

const REPORT_LUA = `done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"durationUs":%d,"errors":%d,"non2xx":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end`;

function wrk(url: string, seconds: number): Omit<Scenario, "name"> {
  if (new URL(url).hostname !== "127.0.0.1") throw new Error(`bench traffic goes to 127.0.0.1 only, not ${url}`);
  const script = path.join(os.tmpdir(), "flask-proxy-bench-report.lua");
  fs.writeFileSync(script, REPORT_LUA);
  const out = execFileSync(
    "wrk",
    ["-t", String(THREADS), "-c", String(CONNECTIONS), "-d", `${seconds}s`, "--timeout", "5s", "-s", script, url],
    { encoding: "utf8", timeout: (seconds + 30) * 1000 },
  );
  const json = out.split("\n").find((l) => l.startsWith("{"));
  if (!json) throw new Error(`wrk printed no summary:\n${out}`);
  const r = JSON.parse(json) as {
    requests: number;
    durationUs: number;
    errors: number;
    non2xx: number;
    p50Us: number;
    p99Us: number;
  };
  return {
    rps: r.requests / (r.durationUs / 1e6),
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
    errors: r.errors,
    non2xx: r.non2xx,
  };
}

function measure(name: string, url: string, firstOkMs?: number): Scenario {
  wrk(url, WARMUP_S); // warm-up, discarded
  const s = { name, ...wrk(url, DURATION_S), firstOkMs };
  console.log(
    `${name}: ${s.rps.toFixed(0)} req/s, p50 ${s.p50Ms.toFixed(2)} ms, p99 ${s.p99Ms.toFixed(2)} ms, errors ${s.errors}, non-2xx ${s.non2xx}`,
  );
  return s;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** One scenario over all rounds: median rps and latencies, errors summed. */
function combine(name: string, runs: Scenario[]): Scenario {
  return {
    name,
    rps: median(runs.map((r) => r.rps)),
    p50Ms: median(runs.map((r) => r.p50Ms)),
    p99Ms: median(runs.map((r) => r.p99Ms)),
    errors: runs.reduce((n, r) => n + r.errors, 0),
    non2xx: runs.reduce((n, r) => n + r.non2xx, 0),
    firstOkMs: runs[0].firstOkMs,
  };
}

/** Milliseconds from `since` until the URL answers 200 (bounded). */
async function firstOk(url: string, since: number): Promise<number> {
  while (Date.now() - since < 60_000) {
    const ok = await get(url, {}, 1000).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return Date.now() - since;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not answer 200 within 60 s`);
}

/**
 * The tutorial's compose file, verbatim but for the host port (loopback, not :80), declared as the
 * resources its services would be, and created by the same realizer as our stacks.
 */
function seedRun(dir: string): ProgramRun {
  fs.writeFileSync(path.join(dir, "Dockerfile"), "FROM python:3\nRUN pip install flask\n");
  fs.writeFileSync(
    path.join(dir, "main.py"),
    "from flask import Flask\napp = Flask(__name__)\n\n@app.route('/')\ndef index():\n    return 'Hello world!'\n",
  );
  fs.writeFileSync(
    path.join(dir, "nginx.conf"),
    'server {\n    listen 80;\n    server_name localhost;\n\n    location / {\n        proxy_pass http://flask-app:5000/;\n        proxy_set_header Host "localhost";\n    }\n}\n',
  );
  fs.chmodSync(dir, 0o755);
  const labels = labelList(stackLabels("flask-proxy", "bench-seed"));
  const r = (
    type: string,
    name: string,
    inputs: Record<string, unknown>,
    outputs: Record<string, unknown> = {},
    dependsOn: string[] = [],
  ): Declared => ({ type, name, custom: true, inputs, outputs: { ...inputs, ...outputs }, dependsOn, secretInputs: [] });
  const resources = [
    r("docker:index/network:Network", "my-network", { name: "flask-proxy-seed-my-network", labels }),
    r(
      "docker:index/image:Image",
      "flask-image",
      { imageName: "flask:0.0.1-seed", skipPush: true, build: { context: dir, dockerfile: path.join(dir, "Dockerfile") } },
      { repoDigest: "seed-flask-image-id" },
    ),
    r(
      "docker:index/remoteImage:RemoteImage",
      "nginx-image",
      { name: "nginx:1.13.7" },
      { imageId: "seed-nginx-image-id", repoDigest: "seed-nginx-digest" },
    ),
    r("docker:index/container:Container", "flask", {
      name: "flask-proxy-seed-flask",
      image: "seed-flask-image-id",
      labels,
      volumes: [{ hostPath: dir, containerPath: "/code" }],
      envs: ["FLASK_APP=/code/main.py"],
      command: ["flask", "run", "--host=0.0.0.0"],
      networksAdvanced: [{ name: "flask-proxy-seed-my-network", aliases: ["flask-app"] }],
      ports: [{ internal: 5000, external: 18081, ip: "127.0.0.1" }],
    }),
    r(
      "docker:index/container:Container",
      "nginx",
      {
        name: "flask-proxy-seed-nginx",
        image: "seed-nginx-image-id",
        labels,
        volumes: [{ hostPath: path.join(dir, "nginx.conf"), containerPath: "/etc/nginx/conf.d/default.conf" }],
        networksAdvanced: [{ name: "flask-proxy-seed-my-network" }],
        ports: [{ internal: 80, external: SEED_PORT, ip: "127.0.0.1" }],
      },
      {},
      ["flask"],
    ),
  ];
  return { stack: "seed", config: {}, resources, outputs: { url: `http://127.0.0.1:${SEED_PORT}/` } };
}

/**
 * Whether the engine runs docker-proxy for published ports. It then carries every loopback request (all of
 * the bench's) through a userspace copy that clients on other hosts never take; scripts/setup-engine.sh
 * starts the engine without it (CIS Docker 2.16). An engine started elsewhere may still use it.
 */
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

/** Runs one phase; a failure names the phase and keeps the original error (and its stack) as the cause. */
async function step<T>(what: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    console.error(`${what} failed:`, e);
    throw new Error(`${what}: ${(e as Error).message}`, { cause: e });
  }
}

const ratio = (a: number, b: number) => (b > 0 ? a / b : NaN);

function svgChart(scenarios: Scenario[]): string {
  const w = 640,
    barH = 28,
    gap = 12,
    left = 110,
    top = 40;
  const max = Math.max(...scenarios.map((s) => s.rps));
  const h = top + scenarios.length * (barH + gap) + 20;
  const bars = scenarios
    .map((s, i) => {
      const y = top + i * (barH + gap);
      const len = Math.max(1, ((w - left - 130) * s.rps) / max);
      return (
        `<text x="${left - 8}" y="${y + barH * 0.68}" text-anchor="end">${s.name}</text>` +
        `<rect x="${left}" y="${y}" width="${len.toFixed(1)}" height="${barH}" fill="${s.name === "prod" ? "#2b7bb9" : "#9bbbd4"}"/>` +
        `<text x="${(left + len + 6).toFixed(1)}" y="${y + barH * 0.68}">${Math.round(s.rps)} req/s</text>`
      );
    })
    .join("\n  ");
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="13">
  <text x="${left}" y="22" font-weight="bold">Requests/s, ${CONNECTIONS} connections, ${DURATION_S} s each (higher is better)</text>
  ${bars}
</svg>
`;
}

jest.setTimeout(30 * 60 * 1000);

test("bench: seed, dev, prod, app-direct, nginx-static", async () => {
  await removeByLabel(docker);
  const scenarios: Scenario[] = [];
  const scaling: Scenario[] = [];
  const rounds: Scenario[][] = [];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-seed-"));
  const up: { destroy(): Promise<void> }[] = [];
  let dockerProxy = false;
  try {
    // All three topologies run at once (idle ones cost nothing), so rounds can alternate between them.
    // First 200 is timed from the moment the realizer has created (and, where declared, health-waited) them.
    const firstOks: Record<string, number> = {};
    // seed: the tutorial exactly.
    const seedUrl = `http://127.0.0.1:${SEED_PORT}/`;
    const seed = new Realizer(docker, seedRun(tmp));
    up.push(seed); // destroyed even if up() fails halfway
    await seed.up();
    firstOks.seed = await firstOk(seedUrl, Date.now());
    const dev = await upStack("dev");
    up.push(dev);
    firstOks.dev = await firstOk(dev.url, Date.now());
    // prod, with the app port published on loopback for the app-direct ceiling: same containers, so the
    // only difference between `prod` and `app-direct` is the nginx hop.
    const prod = await upStack("prod", { appHostPort: String(APP_DIRECT_PORT) });
    up.push(prod);
    firstOks.prod = await firstOk(prod.url, Date.now());
    const targets: [string, string][] = [
      ["seed", seedUrl],
      ["dev", dev.url],
      ["prod", prod.url],
      ["app-direct", `http://127.0.0.1:${APP_DIRECT_PORT}/`],
      ["nginx-static", new URL(NGINX_HEALTH_PATH, prod.url).toString()],
    ];
    dockerProxy = dockerProxyRunning();
    if (dockerProxy) {
      console.warn(
        "NOTE: this engine runs docker-proxy (userland-proxy on): every request below also passes through it, " +
          "which lowers prod's numbers most. scripts/setup-engine.sh starts engines with --userland-proxy=false; see README.",
      );
    }
    for (let round = 1; round <= ROUNDS; round++) {
      console.log(`round ${round} of ${ROUNDS}`);
      const order = round % 2 === 1 ? targets : [...targets].reverse();
      rounds.push(order.map(([name, url]) => measure(name, url, firstOks[name])));
    }
    for (let d = up.pop(); d; d = up.pop()) {
      const stack = d;
      await step("tearing down the measured stacks", () => stack.destroy());
    }

    // Scaling curve: the prod stack with more app replicas behind the one alias.
    for (const replicas of SCALING) {
      const d = await step(`deploying prod ×${replicas}`, () => upStack("prod", { replicas: String(replicas) }));
      try {
        scaling.push(measure(`prod ×${replicas}`, d.url, await firstOk(d.url, Date.now())));
      } finally {
        await step(`destroying prod ×${replicas}`, () => d.destroy());
      }
    }
  } finally {
    for (const d of up.reverse()) await d.destroy();
    fs.rmSync(tmp, { recursive: true, force: true });
    await removeByLabel(docker);
  }

  const inRound = (r: Scenario[], name: string) => r.find((s) => s.name === name)!;
  for (const { name } of rounds[0])
    scenarios.push(
      combine(
        name,
        rounds.map((r) => inRound(r, name)),
      ),
    );
  // Ratios over each pair of rounds (forwards + backwards), then the median over the pairs.
  const pairs = Array.from({ length: Math.ceil(rounds.length / 2) }, (_, i) => rounds.slice(2 * i, 2 * i + 2));
  const relative = (name: string, to: string, metric: "rps" | "p99Ms") =>
    median(
      pairs.map((pair) => {
        const sum = (n: string) => pair.reduce((acc, r) => acc + inRound(r, n)[metric], 0);
        return ratio(sum(name), sum(to));
      }),
    );
  const ratios = {
    prodVsAppDirect: relative("prod", "app-direct", "rps"),
    prodVsSeed: relative("prod", "seed", "rps"),
    prodP99VsAppDirect: relative("prod", "app-direct", "p99Ms"),
  };
  const targetsMet = {
    "prod ≥ 0.95 × app-direct req/s": ratios.prodVsAppDirect >= 0.95,
    "prod ≥ 5 × seed req/s": ratios.prodVsSeed >= 5,
    "prod p99 ≤ 1.2 × app-direct p99": ratios.prodP99VsAppDirect <= 1.2,
    "zero errors and non-2xx": [...scenarios, ...scaling].every((s) => s.errors === 0 && s.non2xx === 0),
  };
  const rows = scenarios.map((s) => ({
    scenario: s.name,
    "req/s": Math.round(s.rps),
    "p50 ms": s.p50Ms.toFixed(2),
    "p99 ms": s.p99Ms.toFixed(2),
    errors: s.errors,
    "non-2xx": s.non2xx,
    "× seed": relative(s.name, "seed", "rps").toFixed(2),
    "× app-direct": relative(s.name, "app-direct", "rps").toFixed(2),
    "p99 ÷ app-direct": relative(s.name, "app-direct", "p99Ms").toFixed(2),
    "first 200 ms": s.firstOkMs ?? "",
  }));
  console.log(`medians of ${ROUNDS} round(s); ratios over each pair of rounds (forwards, backwards), then the median`);
  console.table(rows);
  console.table(Object.entries(targetsMet).map(([target, met]) => ({ target, met })));
  if (scaling.length) {
    console.table(
      scaling.map((s, i) => ({
        replicas: SCALING[i],
        "req/s": Math.round(s.rps),
        "p99 ms": s.p99Ms.toFixed(2),
        errors: s.errors,
        "× 1 replica": ratio(s.rps, scaling[0].rps).toFixed(2),
      })),
    );
  }

  const prodCfg = stackConfig("prod");
  const results = {
    scenarios: scenarios.map(({ name, rps, p50Ms, p99Ms, errors, non2xx, firstOkMs }) => ({
      name,
      rps: Math.round(rps),
      p50Ms,
      p99Ms,
      errors,
      non2xx,
      firstOkMs,
    })),
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
    ratios,
    targetsMet,
    rounds: rounds.map((r) =>
      r.map(({ name, rps, p50Ms, p99Ms, errors, non2xx }) => ({ name, rps: Math.round(rps), p50Ms, p99Ms, errors, non2xx })),
    ),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      dockerVersion: (await docker.version()).Version,
      // true: published ports went through docker-proxy (the engine's userland proxy) as well.
      dockerProxyInPath: dockerProxy,
      node: process.version,
    },
    settings: {
      generator: `wrk, ${THREADS} thread`,
      connections: CONNECTIONS,
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      rounds: ROUNDS,
      prodConfig: Object.fromEntries(
        Object.entries(prodCfg)
          .filter(([k]) => k.startsWith("flask-proxy:"))
          .map(([k, v]) => [k.slice(12), v]),
      ),
      note:
        "prod and app-direct are the same containers: app-direct publishes the app port on 127.0.0.1 for the measurement. " +
        "Rounds alternate forwards and backwards; scenario figures are medians over the rounds, ratios are taken " +
        "over each pair of rounds (sums of both), then the median over the pairs",
    },
    measuredAt: new Date().toISOString(),
  };
  fs.writeFileSync(path.join(ROOT, "bench", "results.json"), `${JSON.stringify(results, null, 2)}\n`);
  fs.writeFileSync(path.join(ROOT, "bench", "results.svg"), svgChart(scenarios));
  console.log(`wrote bench/results.json and bench/results.svg`);

  // A measurement, not a timing test: it only fails if a scenario did not run cleanly.
  expect(scenarios.map((s) => s.name)).toEqual(["seed", "dev", "prod", "app-direct", "nginx-static"]);
  for (const s of [...scenarios, ...scaling]) expect([s.name, s.errors, s.non2xx]).toEqual([s.name, 0, 0]);
});

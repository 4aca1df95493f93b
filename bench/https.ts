// npm run bench -- --suites https: HTTPS at the edge on the prod shape (tls: internal) beside plain HTTP on
// the same shape, and beside Caddy 2 as the reverse proxy in front of the same gunicorn, with the same
// certificate and the same limits as nginx (one CPU, 128 MB). All up at once, measured in alternating rounds:
//   keep-alive   wrk over HTTPS (HTTP/1.1, as wrk speaks), through the app;
//   handshakes   `openssl s_time`, a new connection per request, full handshakes (-new) and resumed ones
//                (-reuse), on a path the proxy answers itself, so the app's ceiling does not cap them.
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { SOCKET_FILE } from "../app/facts";
import { docker, upStack, type LiveStack } from "../harness/live-stack";
import { within } from "../harness/load";
import { freePort } from "../harness/ports";
import { PROJECT } from "../infra/config";
import { stackLabels } from "../infra/naming";
import { ROOT } from "../infra/stack-files";
import { NGINX_HEALTH_PATH, nginxSocketDir, TLS_DIR } from "../nginx/conf";
import { CERT_FILE, KEY_FILE } from "../certs/certAgent";
import { combine, median, pairedRatio, type Measured } from "./stats";

/** The stand-in tag (scripts/build-standins.sh) for the official image. */
export const CADDY_IMAGE = "caddy:2.11.9";
/** Parallel s_time clients: one alone waits on each round trip and measures latency, not the proxy's rate. */
const HANDSHAKE_CLIENTS = 4;

export interface BenchContext {
  rounds: number;
  durationS: number;
  measure(name: string, url: string): Measured;
  step<T>(what: string, f: () => Promise<T>): Promise<T>;
  progress(msg: string): void;
  /** Undone by `stop`, last first. */
  teardown: (() => Promise<void>)[];
  stop(): Promise<void>;
}

const HTTPS_TARGETS = {
  "HTTPS keep-alive ≥ 0.9 × plain HTTP req/s": (r: HttpsRatios) => r.httpsVsHttp >= 0.9,
  "HTTPS keep-alive req/s ≥ Caddy's": (r: HttpsRatios) => r.keepAliveVsCaddy >= 1,
  "full handshakes/s ≥ Caddy's": (r: HttpsRatios) => r.fullHandshakesVsCaddy >= 1,
  "resumed handshakes/s ≥ Caddy's": (r: HttpsRatios) => r.resumedHandshakesVsCaddy >= 1,
};

interface HttpsRatios {
  httpsVsHttp: number;
  keepAliveVsCaddy: number;
  fullHandshakesVsCaddy: number;
  resumedHandshakesVsCaddy: number;
}

const runFile = promisify(execFile);

/**
 * Connections per second over `seconds` from HANDSHAKE_CLIENTS `openssl s_time` clients at once, each a new
 * TCP connection and TLS handshake (resumed with `reuse`) and one GET. s_time prints `r` for each connection
 * that resumed a session and `*` (or the version) for a full one: both are counted, so a "resumed" figure
 * that resumed nothing is seen.
 */
async function handshakes(
  name: string,
  port: number,
  reuse: boolean,
  seconds: number,
): Promise<Measured & { resumedShare: number }> {
  const args = [
    "s_time",
    "-connect",
    `127.0.0.1:${port}`,
    reuse ? "-reuse" : "-new",
    "-time",
    String(seconds),
    "-www",
    NGINX_HEALTH_PATH,
  ];
  const outs = await Promise.all(
    Array.from({ length: HANDSHAKE_CLIENTS }, () =>
      runFile("openssl", args, { timeout: (seconds + 30) * 1000, maxBuffer: 64 * 1024 * 1024 }).then((r) => r.stdout),
    ),
  );
  let connections = 0;
  let resumed = 0;
  let full = 0;
  for (const out of outs) {
    const m = /(\d+) connections in (\d+) real seconds/.exec(out);
    if (!m) throw new Error(`${name}: s_time printed no count:\n${out.slice(-500)}`);
    connections += Number(m[1]) / Number(m[2]);
    // The progress characters: the lines between s_time's headings.
    const marks = out
      .split("\n")
      .filter((l) => /^[r*123]+$/.test(l.trim()))
      .join("");
    resumed += (marks.match(/r/g) ?? []).length;
    full += marks.length - (marks.match(/r/g) ?? []).length;
  }
  if (resumed + full === 0) throw new Error(`${name}: s_time printed no mark per connection, so what resumed is unknown`);
  return {
    name,
    rps: connections,
    p50Ms: NaN,
    p99Ms: NaN,
    errors: 0,
    non2xx: 0,
    resumedShare: resumed / (resumed + full),
  };
}

/** Caddy in front of the stack's gunicorn socket, with nginx's certificate files, limits and port mapping. */
async function caddyBeside(stack: LiveStack, port: number): Promise<() => Promise<void>> {
  const nginx = await stack.container("nginx-container").inspect();
  const mountOf = (dest: string) => {
    const m = nginx.Mounts.find((x) => x.Destination === dest);
    if (!m?.Name) throw new Error(`nginx has no volume at ${dest}`);
    return m.Name;
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-bench-caddy-"));
  // No admin endpoint, no ACME: the certificate is the stack CA's leaf nginx serves, by the same names.
  fs.writeFileSync(
    path.join(dir, "Caddyfile"),
    [
      "{",
      "\tadmin off",
      "\tpersist_config off",
      "\tauto_https off",
      "\tdefault_sni localhost",
      "}",
      "https://:443 {",
      `\ttls ${TLS_DIR}/${CERT_FILE} ${TLS_DIR}/${KEY_FILE}`,
      `\trespond ${NGINX_HEALTH_PATH} "ok" 200`,
      `\treverse_proxy unix/${nginxSocketDir(1)}/${SOCKET_FILE}`,
      "}",
      "",
    ].join("\n"),
    { mode: 0o644 },
  );
  fs.chmodSync(dir, 0o755);
  const container = await docker.createContainer({
    name: `${PROJECT}-bench-caddy`,
    Image: CADDY_IMAGE,
    Labels: stackLabels(PROJECT, "bench-caddy"),
    ExposedPorts: { "443/tcp": {} },
    HostConfig: {
      Binds: [
        `${path.join(dir, "Caddyfile")}:/etc/caddy/Caddyfile:ro`,
        `${mountOf(TLS_DIR)}:${TLS_DIR}:ro`,
        `${mountOf(nginxSocketDir(1))}:${nginxSocketDir(1)}:ro`,
      ],
      PortBindings: { "443/tcp": [{ HostIp: "127.0.0.1", HostPort: String(port) }] },
      // nginx's limits on the prod shape (nginxCpus, nginxMemoryMb): Go sizes GOMAXPROCS to the CPU quota.
      NanoCpus: (nginx.HostConfig.NanoCpus ?? 0) || 1e9,
      Memory: (nginx.HostConfig.Memory ?? 0) || 128 * 2 ** 20,
    },
  });
  const remove = async () => {
    await container.remove({ force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await container.start();
  } catch (e) {
    await remove();
    throw e;
  }
  return remove;
}

/** Polls (harness/load.ts's `within`) until `url` answers 200; the certificate is not checked here. */
const answersOk = (url: string) =>
  within(
    60_000,
    async () =>
      (await runFile("curl", ["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", url])).stdout === "200",
    `${url} answering 200`,
    { everyMs: 500 },
  );

export async function httpsSuite(ctx: BenchContext): Promise<Record<string, unknown>> {
  const rounds: Measured[][] = [];
  const resumedShares: Record<string, number[]> = {};
  try {
    await ctx.step(`https: the ${CADDY_IMAGE} image (a stand-in, built once)`, () =>
      runFile("bash", [path.join(ROOT, "scripts", "build-standins.sh"), CADDY_IMAGE], { timeout: 600_000 }),
    );
    const plain = await ctx.step("https: the prod stack, plain HTTP", async () =>
      upStack("prod", { httpPort: String(await freePort()) }, "prod-http"),
    );
    ctx.teardown.push(() => plain.destroy());
    const https = await ctx.step("https: the prod stack with tls: internal", async () =>
      upStack("prod", { tls: "internal", httpPort: String(await freePort()), httpsPort: String(await freePort()) }, "prod-https"),
    );
    ctx.teardown.push(() => https.destroy());
    const httpsPort = Number(new URL(String(https.outputs.httpsUrl)).port);
    const caddyPort = await freePort();
    ctx.teardown.push(
      await ctx.step("https: Caddy beside nginx, on the same socket and certificate", () => caddyBeside(https, caddyPort)),
    );
    await answersOk(`https://127.0.0.1:${caddyPort}/`);
    await answersOk(`https://127.0.0.1:${httpsPort}/`);

    const keepAlive: [string, string][] = [
      ["prod http", plain.url],
      ["prod https", `https://127.0.0.1:${httpsPort}/`],
      ["caddy https", `https://127.0.0.1:${caddyPort}/`],
    ];
    const shakes: [string, number, boolean][] = [
      ["prod full handshakes", httpsPort, false],
      ["caddy full handshakes", caddyPort, false],
      ["prod resumed handshakes", httpsPort, true],
      ["caddy resumed handshakes", caddyPort, true],
    ];
    for (let round = 1; round <= ctx.rounds; round++) {
      ctx.progress(`https round ${round} of ${ctx.rounds} (${round % 2 === 1 ? "forwards" : "backwards"})`);
      const forwards = round % 2 === 1;
      const measured: Measured[] = [];
      for (const [name, url] of forwards ? keepAlive : [...keepAlive].reverse()) measured.push(ctx.measure(name, url));
      for (const [name, port, reuse] of forwards ? shakes : [...shakes].reverse()) {
        const m = await handshakes(name, port, reuse, ctx.durationS);
        (resumedShares[name] ??= []).push(m.resumedShare);
        ctx.progress(`${name}: ${m.rps.toFixed(0)} connections/s, ${(m.resumedShare * 100).toFixed(0)}% resumed`);
        measured.push(m);
      }
      rounds.push(measured);
    }
  } finally {
    await ctx.step("https: destroying the stacks and Caddy", ctx.stop);
  }
  const ratios: HttpsRatios = {
    httpsVsHttp: pairedRatio(rounds, "prod https", "prod http", "rps"),
    keepAliveVsCaddy: pairedRatio(rounds, "prod https", "caddy https", "rps"),
    fullHandshakesVsCaddy: pairedRatio(rounds, "prod full handshakes", "caddy full handshakes", "rps"),
    resumedHandshakesVsCaddy: pairedRatio(rounds, "prod resumed handshakes", "caddy resumed handshakes", "rps"),
  };
  const scenarios = rounds[0].map(({ name }) => combine(name, rounds));
  const range = (name: string, to: string) => {
    const each = rounds.map((r) => r.find((s) => s.name === name)!.rps / r.find((s) => s.name === to)!.rps);
    return [Math.min(...each), Math.max(...each)].map((x) => Math.round(x * 1000) / 1000);
  };
  const targetsMet = Object.fromEntries(Object.entries(HTTPS_TARGETS).map(([k, f]) => [k, f(ratios)]));
  const clean = scenarios.every((s) => s.errors === 0 && s.non2xx === 0);
  console.log(`\nHTTPS: medians of ${ctx.rounds} round(s); ratios over each pair of rounds, then the median`);
  console.table(
    scenarios.map((s) => ({
      scenario: s.name,
      "per s": Math.round(s.rps),
      "p99 ms": Number.isNaN(s.p99Ms) ? "" : s.p99Ms.toFixed(2),
      errors: s.errors,
      "non-2xx": s.non2xx,
      resumed: resumedShares[s.name] ? `${Math.round(median(resumedShares[s.name]) * 100)}%` : "",
    })),
  );
  console.table(Object.entries(targetsMet).map(([target, met]) => ({ target, met: met ? "met" : "MISSED" })));
  if (!clean) throw new Error("https: a scenario saw errors or non-2xx answers (see the table)");
  const https = {
    scenarios: scenarios.map((s) => ({
      name: s.name,
      perSecond: Math.round(s.rps),
      ...(Number.isNaN(s.p99Ms) ? { resumedShare: median(resumedShares[s.name] ?? [0]) } : { p50Ms: s.p50Ms, p99Ms: s.p99Ms }),
      errors: s.errors,
      non2xx: s.non2xx,
    })),
    ratios,
    ranges: {
      httpsVsHttp: range("prod https", "prod http"),
      keepAliveVsCaddy: range("prod https", "caddy https"),
      fullHandshakesVsCaddy: range("prod full handshakes", "caddy full handshakes"),
      resumedHandshakesVsCaddy: range("prod resumed handshakes", "caddy resumed handshakes"),
    },
    targetsMet,
    rounds: rounds.map((r) => r.map(({ name, rps }) => ({ name, perSecond: Math.round(rps) }))),
    settings: {
      keepAlive: "wrk, 1 thread, HTTP/1.1 over TLS, through the app",
      handshakes:
        `${HANDSHAKE_CLIENTS} openssl s_time clients (TLS 1.3, OpenSSL 3 on the host), a GET of ${NGINX_HEALTH_PATH} ` +
        "(answered by the proxy) per connection; the clients' own handshakes share the 2 cores with the proxy",
      caddy: `${CADDY_IMAGE} (a stand-in: Caddy built from the Go module proxy), reverse_proxy to the same gunicorn socket, nginx's certificate, CPU and memory limits`,
      nginx: "the prod stack file with tls: internal (stand-in nginx: Debian's 1.22.1 with OpenSSL 3)",
    },
    measuredAt: new Date().toISOString(),
  };
  // Under its own key: results.json merges the suites' figures.
  return { https };
}

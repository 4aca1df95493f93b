// What changing each config key does to a running prod (and swarm) stack, read from real `pulumi preview`s, and
// what each kind of change costs in failed requests, measured with a real `pulumi up` under load: the change
// tables of docs/configuration.md. Needs the real CLI and a Docker Engine; brings up private stacks and destroys
// them afterwards.
//   npm run docs:changes             previews for every key, one measured `pulumi up` per kind; writes docs/configuration.md
//                                    (`-- --stack swarm` for one stack's table)
//   npm run docs:changes -- --check  previews only; fails if the tables are out of date
//   npm run docs:changes -- --keep-measured   previews for every key; measures only kinds the docs lack
import * as os from "os";
import { parseArgs } from "util";
import { CONFIG_KEYS, SECRET_KEYS, type RawConfig } from "../infra/config";
import { code } from "./config-docs";
import { docker, upStack, type LiveStack, type Previewer, type PreviewStep } from "../harness/live-stack";
import { failures, underLoad } from "../harness/load";
import { DocRegion, markdownTable } from "./doc-region";
import { projectFile, stackConfig } from "../infra/stack-files";
import { enterSwarm } from "../harness/swarm-mode";
import { removeObject } from "../infra/engine-objects";

/** The stacks the table is made for, each on a private copy brought up for it, and the region that holds it. */
export const CHANGE_TABLES = [
  { stack: "prod", region: new DocRegion("change-table", "docs/configuration.md") },
  { stack: "swarm", region: new DocRegion("swarm-change-table", "docs/configuration.md") },
];

/**
 * The value each key is changed to, from the stack's own: another valid value, or one the program refuses
 * (the table says why).
 */
export const ALTERNATIVES: Record<keyof RawConfig, string | ((current: string) => string)> = {
  nginxImage: "nginx:1.13.7",
  pythonImage: "python:3.12",
  appImageRepository: "registry.example:5000/flask",
  appVersion: "0.0.2",
  appKeepBuilds: "5",
  requirePinnedImages: (v) => String(v !== "true"),
  appAlias: "flask-web",
  appPort: "5001",
  appServer: "flask-dev",
  flaskReload: (v) => String(v !== "true"),
  gunicornWorkers: "3",
  gunicornThreads: "2",
  appCodeMount: "app",
  appHostPort: "8081",
  httpPort: "8001",
  tls: (v) => (v === "off" ? "internal" : "off"),
  domain: "app.example.com",
  httpsPort: "8444",
  // Refused unless tls is certificate (and then checked against each other): the table says which.
  tlsCertificate: "-----BEGIN CERTIFICATE-----",
  tlsPrivateKey: "-----BEGIN PRIVATE KEY-----",
  // tls: off ignores it.
  internalLeafLifetime: "12h",
  // Only for tls: acme, except the directory, which tls: off ignores.
  acmeServer: "https://acme-staging-v02.api.letsencrypt.org/directory",
  acmeEmail: "ops@example.com",
  acmeCaFile: "app/main.py",
  acmeProfile: "shortlived",
  bindAddress: (v) => (v === "0.0.0.0" ? "127.0.0.1" : "0.0.0.0"),
  nginxConfigFile: "nginx/dev.conf",
  proxyHostHeader: "localhost",
  forwardedHeaders: (v) => String(v !== "true"),
  hardened: (v) => String(v !== "true"),
  nginxAccessLog: "off",
  nginxAccessLogFormat: (v) => (v === "json" ? "timed" : "json"),
  nginxRequestId: (v) => String(v !== "true"),
  gunicornAccessLog: (v) => String(v !== "true"),
  metricsPort: (v) => (v === "0" ? "9146" : "0"),
  nginxExporterImage: "nginx/nginx-prometheus-exporter:1.4.1",
  nginxWorkerProcesses: "2",
  upstreamReadTimeout: "10",
  upstreamDeadPeerTimeout: "3",
  upstreamKeepalive: "32",
  upstreamTransport: (v) => (v === "unix" ? "tcp" : "unix"),
  networkSubnet: "172.30.77.0/24",
  restartPolicy: "always",
  healthchecks: (v) => String(v !== "true"),
  waitForHealthy: (v) => String(v !== "true"),
  appMemoryMb: "384",
  nginxMemoryMb: "192",
  appCpus: (v) => (v === "1" ? "2" : "1"),
  nginxCpus: "0.5",
  appMaxProcesses: "256",
  replicas: (v) => String(Number(v) + 1),
  target: (v) => (v === "swarm" ? "containers" : "swarm"),
  swarmEndpointMode: "vip",
  swarmPublishMode: "ingress",
  swarmEdgeLabel: "org.flask-proxy.edge",
  swarmSecretKey: (v) => String(v !== "true"),
  registry: "registry.example:5000",
  registryCaFile: ".cluster/ca.crt",
  flaskSecretKey: "k".repeat(48),
};

/**
 * Keys not measured under load: httpPort moves nginx's published address (a load run on the old one cannot
 * count), target moves the whole stack between backends, and once tls is on plain HTTP answers 301, which the
 * load would count as failures.
 */
const NOT_MEASURED = new Set<string>(["httpPort", "target", "tls"]);
/** Measured first where a kind has several keys: changes that need nothing this machine lacks (a base image). */
const MEASURE_FIRST = ["appVersion", "gunicornWorkers", "nginxAccessLog", "restartPolicy", "appMemoryMb", "nginxMemoryMb"];

/** The parts of the stack a change can touch, in the order the table names them. */
const ROLES: [RegExp, string][] = [
  [/^my-network$/, "network"],
  [/^flask-socket(-\d+)?$/, "socket volume"],
  [/^flask-secret-key$/, "generated secret key"],
  [/^flask-(image|build-.+)$/, "app image"],
  [/^flask-container(-\d+)?$/, "app container"],
  [/^nginx-base-image$/, "nginx base image"],
  [/^nginx-image$/, "nginx image"],
  [/^nginx-netns$/, "nginx port holder"],
  [/^nginx-container$/, "nginx container"],
  [/^nginx-conf-reload$/, "nginx conf"],
  [/^nginx-exporter-base-image$/, "exporter image"],
  [/^nginx-exporter-container$/, "exporter container"],
  [/^nginx-metrics-container$/, "metrics forwarder"],
  [/^flask-service$/, "app service"],
  [/^nginx-service$/, "nginx service"],
];

/** What a step does to which part of the stack; undefined for bookkeeping resources (cutover, tags, holds). */
const role = (name: string): string | undefined => ROLES.find(([re]) => re.test(name))?.[1];

/** The kind of change a preview shows, e.g. "app image rebuilt, app container replaced beside the old one". */
export function kindOf(steps: PreviewStep[]): string {
  const effects = new Map<string, string>();
  for (const [i, step] of steps.entries()) {
    const what = role(step.name);
    if (!what) continue;
    let verb: string;
    if (step.op === "create") verb = "created";
    else if (step.op === "delete") verb = "deleted";
    else if (step.op === "update")
      verb = what.endsWith("image")
        ? "rebuilt"
        : what === "nginx conf"
          ? "reloaded into the running nginx"
          : what.endsWith("service")
            ? "updated (a rolling update where its tasks change)"
            : "updated in place";
    else if (["replace", "create-replacement", "delete-replaced"].includes(step.op)) {
      // Create-before-delete announces the new one first; delete-before-replace the removal.
      const first = steps.find(
        (s, j) => j <= i && s.name === step.name && ["create-replacement", "delete-replaced"].includes(s.op),
      );
      verb = what.endsWith("container")
        ? first?.op === "delete-replaced"
          ? "replaced, the old one deleted first"
          : "replaced beside the old one"
        : "replaced";
    } else continue;
    if (!effects.has(what)) effects.set(what, verb);
  }
  // A new nginx container reads its conf when it starts: nothing is reloaded then.
  if (effects.has("nginx container")) effects.delete("nginx conf");
  // In a fixed order: the engine announces parallel steps in whatever order they start.
  const order = ROLES.map(([, r]) => r);
  return (
    [...effects]
      .sort(([a], [b]) => order.indexOf(a) - order.indexOf(b))
      .map(([what, verb]) => `${what} ${verb}`)
      .join(", ") || "nothing"
  );
}

interface KeyRow {
  key: string;
  from: string;
  to: string;
  /** The kind of change, or "refused: <reason>". */
  effect: string;
}

/** The first problem a refused preview reports (the program's config check, or the CLI's own error). */
function refusal(e: Error, projectDir: string): string {
  // Paths in messages are the private project copy's; the table shows them relative to the project.
  const lines = e.message
    .split(projectDir + "/")
    .join("")
    .split("\n")
    .map((l) => l.trim());
  const problem =
    lines.find((l) => l.startsWith("- flask-proxy:") || l.startsWith("- ")) ?? lines.find((l) => l.startsWith("error:"));
  // An image ID differs from run to run (each run builds anew), and a swarm node is named after the machine
  // (swarmEdgeLabel's check): the table names neither.
  const text = (problem ?? "preview failed").replace(/^- /, "").replace(/^error: /, "");
  const node = new RegExp(`\\b${os.hostname().replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\b`, "g");
  return `refused: ${text.replace(/sha256:[0-9a-f]{12,64}/g, "sha256:…").replace(node, "<node>")}`;
}

/**
 * Previews run side by side, each on its own copy of the stack's project (LiveStack.previewers). On two cores,
 * eight previews took 31–36 s one at a time, 27 s two at a time, 28 s three at a time; two took the change
 * tables' test from 17.8 to 13.0 min (docs/testing.md).
 */
const PREVIEWS_AT_ONCE = 2;

async function keyRows(live: LiveStack, stackFile: string): Promise<KeyRow[]> {
  const ns = projectFile().name;
  const current = stackConfig(stackFile);
  const rowOf = async (previewer: Previewer, key: keyof RawConfig): Promise<KeyRow> => {
    const from = current[`${ns}:${key}`] ?? "";
    const alt = ALTERNATIVES[key];
    const to = typeof alt === "function" ? alt(from) : alt;
    let effect: string;
    try {
      effect = kindOf(await previewer.previewSteps({ [key]: to }));
    } catch (e) {
      effect = refusal(e as Error, previewer.projectDir);
    }
    console.log(`[changes] ${stackFile} ${key}: ${SECRET_KEYS.has(key) ? "(secret)" : `${from} → ${to}`}: ${effect}`);
    return { key, from, to, effect };
  };
  // Each previewer takes the next key left; the rows keep CONFIG_KEYS' order.
  const rows: KeyRow[] = new Array<KeyRow>(CONFIG_KEYS.length);
  let next = 0;
  await Promise.all(
    (await live.previewers(PREVIEWS_AT_ONCE)).map(async (previewer) => {
      for (let i = next++; i < CONFIG_KEYS.length; i = next++) rows[i] = await rowOf(previewer, CONFIG_KEYS[i]);
    }),
  );
  return rows;
}

export interface Measured {
  kind: string;
  key: string;
  requests: number;
  failed: number;
}

/**
 * One real `pulumi up` under load per kind (then back), counting every response. A change that cannot be
 * applied here (a base image this machine lacks) is reverted, and the kind's next key is tried.
 */
async function measure(live: LiveStack, rows: KeyRow[], kept: Measured[] = []): Promise<Measured[]> {
  const out: Measured[] = [...kept];
  const rank = (key: string) => (MEASURE_FIRST.includes(key) ? MEASURE_FIRST.indexOf(key) : MEASURE_FIRST.length);
  const candidates = rows
    .filter((r) => r.effect !== "nothing" && !r.effect.startsWith("refused") && !NOT_MEASURED.has(r.key))
    .sort((a, b) => rank(a.key) - rank(b.key));
  for (const row of candidates) {
    if (out.some((m) => m.kind === row.effect)) continue;
    const { load, error } = await underLoad(live.url, () => live.up({ config: { [row.key]: row.to } }));
    if (error) {
      console.log(
        `[changes] ${row.key} cannot be applied here (${error.message
          .split("\n")
          .find((l) => /error:/.test(l))
          ?.trim()}); reverting`,
      );
      await live.up({ config: { [row.key]: row.from } });
      // What the failed up left that the state does not know (a build whose push failed), as `npm run recover`
      // removes it.
      for (const o of await live.unknownOnEngine()) await removeObject(await live.engine(), o);
      continue;
    }
    const f = failures(load);
    const failed = f.non2xx + f.errors + f.timeouts;
    // Every request sent: answered (any status), refused or reset, or timed out.
    const requests = load.requests + f.errors + f.timeouts;
    console.log(
      `[changes] measured ${row.key} (${row.effect}): ${load.requests} responses, ${JSON.stringify(f)}, ${load.retried} retried`,
    );
    out.push({ kind: row.effect, key: row.key, requests, failed });
    await live.up({ config: { [row.key]: row.from } });
  }
  return out;
}

const shown = (key: string, value: string) => (SECRET_KEYS.has(key) ? "(a secret)" : code(value === "" ? '""' : value));

export function renderChangeTable(stackFile: string, rows: KeyRow[], measured: Measured[]): string {
  const byKey = markdownTable(
    ["key", `${stackFile} value`, "changed to", "what `pulumi up` does"],
    rows.map((r) => [code(r.key), shown(r.key, r.from), shown(r.key, r.to), r.effect]),
  );
  const kinds = [...new Set(rows.map((r) => r.effect).filter((k) => k !== "nothing" && !k.startsWith("refused")))];
  const byKind = markdownTable(
    ["kind of change", "measured with", "requests during `pulumi up`", "failed"],
    kinds.map((kind) => {
      const m = measured.find((x) => x.kind === kind);
      if (!m)
        return [kind, "not measured (moves nginx's published port or the stack's backend, or cannot be applied here)", "", ""];
      return [kind, code(m.key), String(m.requests), String(m.failed)];
    }),
  );
  return `${byKey.trimEnd()}\n${byKind}`;
}

/** The measured rows as the docs have them (for --check, which measures nothing): the table after the first. */
export function measuredInDocs(region: DocRegion, doc: string): Measured[] {
  const lines = region.current(doc).split("\n");
  const header = lines.findIndex((l) => l.startsWith("| kind of change |"));
  if (header < 0) return [];
  return lines.slice(header + 2).flatMap((l) => {
    const cells = l
      .split("|")
      .slice(1, -1)
      .map((c) => c.trim());
    const key = /^`(.*)`$/.exec(cells[1] ?? "")?.[1];
    return key ? [{ kind: cells[0], key, requests: Number(cells[2]), failed: Number(cells[3]) }] : [];
  });
}

/** Runs `fn` on a private copy of `stackFile`, brought up for it (on a single-node swarm for swarm stacks). */
async function onStack<T>(stackFile: string, fn: (live: LiveStack) => Promise<T>): Promise<T> {
  const leaveSwarm = stackConfig(stackFile)["flask-proxy:target"] === "swarm" ? await enterSwarm(docker) : undefined;
  try {
    const live = await upStack(stackFile, {}, `changes-${stackFile}`);
    try {
      return await fn(live);
    } finally {
      await live.destroy();
    }
  } finally {
    await leaveSwarm?.();
  }
}

/**
 * A stack's change table as previews give it now (measured rows taken from the docs) against the docs' own: ""
 * when they agree, otherwise where they first differ. Previews only: what the live suite runs.
 */
export async function changeTableDifference(stack: string): Promise<string> {
  const table = CHANGE_TABLES.find((t) => t.stack === stack);
  if (!table) throw new Error(`no change table for stack ${stack}`);
  const doc = table.region.read();
  const rendered = await onStack(stack, async (live) =>
    renderChangeTable(stack, await keyRows(live, stack), measuredInDocs(table.region, doc)),
  );
  return table.region.current(doc) === rendered ? "" : `${table.region.name}:\n${table.region.firstDifference(doc, rendered)}`;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      check: { type: "boolean", default: false },
      "keep-measured": { type: "boolean", default: false },
      stack: { type: "string", multiple: true },
    },
    strict: true,
  });
  const unknown = (values.stack ?? []).filter((name) => !CHANGE_TABLES.some((t) => t.stack === name));
  if (unknown.length > 0) {
    console.error(
      `[changes] no change table for stack(s) ${unknown.join(", ")}; there are: ${CHANGE_TABLES.map((t) => t.stack).join(", ")}`,
    );
    return 2;
  }
  const chosen = CHANGE_TABLES.filter((t) => !values.stack || values.stack.includes(t.stack));
  if (values.check) {
    let difference = "";
    for (const { stack } of chosen) difference += await changeTableDifference(stack);
    if (difference) console.error(`the change tables are out of date: run npm run docs:changes\n${difference}`);
    else console.log("change tables up to date");
    return difference ? 1 : 0;
  }
  let code = 0;
  for (const { stack, region } of chosen) {
    const table = await onStack(stack, async (live) => {
      const rows = await keyRows(live, stack);
      // --keep-measured: a kind the docs already measured keeps its figures; only new kinds are measured.
      const kept = values["keep-measured"] ? measuredInDocs(region, region.read()) : [];
      return renderChangeTable(stack, rows, await measure(live, rows, kept));
    });
    code ||= region.apply(table, false, "npm run docs:changes");
  }
  return code;
}

if (require.main === module) {
  main().then(
    (code) => (process.exitCode = code),
    (e: Error) => {
      console.error(`[changes] ${e.message}`);
      process.exitCode = 1;
    },
  );
}

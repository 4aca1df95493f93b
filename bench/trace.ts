// Where the time of one CLI command goes, read from Pulumi's own OpenTelemetry trace (`--otel-traces
// file://…`: the CLI, the language host, the Node.js SDK and the providers each report their spans).
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import type { LiveStack } from "../harness/live-stack";

export interface Breakdown {
  label: string;
  totalMs: number;
  /** Consecutive phases of the run, from the CLI's start to its exit. */
  phases: { phase: string; ms: number }[];
  /** Each provider plugin's start (they overlap the program and each other). */
  plugins: { plugin: string; atMs: number; ms: number }[];
  /** The slowest provider calls (Create, Diff, ...): what the steps after the program spend their time on. */
  slowest: { call: string; atMs: number; ms: number }[];
  /** The state backend's writes (file:// here): how many, and their summed time. */
  stateWrites: { count: number; ms: number };
}

interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string; boolValue?: boolean };
}
interface OtlpSpan {
  spanId: string;
  parentSpanId?: string;
  name: string;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: OtlpAttribute[];
}
interface OtlpLine {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}
interface Span {
  id: string;
  parent?: string;
  service: string;
  name: string;
  start: number;
  end: number;
  attrs: Map<string, string>;
}

const attrMap = (a: OtlpAttribute[] | undefined) =>
  new Map((a ?? []).map((x) => [x.key, String(x.value.stringValue ?? x.value.intValue ?? x.value.boolValue ?? "")]));

export function readTrace(file: string): Span[] {
  const spans: Span[] = [];
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    for (const rs of (JSON.parse(line) as OtlpLine).resourceSpans) {
      const service = attrMap(rs.resource.attributes).get("service.name") ?? "?";
      for (const ss of rs.scopeSpans)
        for (const s of ss.spans)
          spans.push({
            id: s.spanId,
            parent: s.parentSpanId || undefined,
            service,
            name: s.name,
            start: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1000,
            end: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1000,
            attrs: attrMap(s.attributes),
          });
    }
  }
  return spans;
}

const PROVIDER_CALLS = /^pulumirpc\.ResourceProvider\/(Create|Update|Delete|Diff|Read|Check)$/;

export function breakdownOf(label: string, spans: Span[]): Breakdown {
  const one = (service: string, name: string) => {
    const s = spans.find((x) => x.service === service && x.name === name);
    if (!s) throw new Error(`${label}: the trace has no ${service} span "${name}"`);
    return s;
  };
  const cli = one("pulumi-cli", "pulumi");
  const exec = one("pulumi-language-nodejs", "execRuntime");
  const run = one("pulumi-sdk-nodejs", "language-runtime.run");
  const program = one("pulumi-sdk-nodejs", "language-runtime.runProgram");
  const langRun = one("pulumi-cli", "pulumirpc.LanguageRuntime/Run");
  const at = (t: number) => Math.round(t - cli.start);
  const ms = (a: number, b: number) => Math.round(b - a);

  const children = new Map<string, Span[]>();
  for (const s of spans) if (s.parent) children.set(s.parent, [...(children.get(s.parent) ?? []), s]);
  /** The first span under `s` that names a resource, and the service that answered. */
  const answeredBy = (s: Span): { urn?: string; service?: string; build: boolean } => {
    const queue = [...(children.get(s.id) ?? [])];
    let service: string | undefined;
    let build = false;
    for (let c = queue.shift(); c; c = queue.shift()) {
      service ??= c.service;
      build ||= / \/v[\d.]+\/build$/.test(c.name);
      const urn = c.attrs.get("urn");
      if (urn) return { urn, service: c.service, build };
      queue.push(...(children.get(c.id) ?? []));
    }
    return { service, build };
  };
  const slowest = spans
    .filter((s) => s.service === "pulumi-cli" && PROVIDER_CALLS.test(s.name))
    .map((s) => {
      const { urn, service, build } = answeredBy(s);
      // The dynamic provider (a Node.js process of its own) reports no spans: its calls name no resource;
      // nor does pulumi-docker's own Image resource, whose build shows as the engine's /build call.
      const what = urn
        ? urn.slice(urn.lastIndexOf("::") + 2)
        : build
          ? "(an image build)"
          : service
            ? `(a ${service} resource)`
            : "(a dynamic resource)";
      return { call: `${s.name.slice(s.name.indexOf("/") + 1)} ${what}`, atMs: at(s.start), ms: ms(s.start, s.end) };
    })
    .sort((a, b) => b.ms - a.ms)
    .slice(0, 8);
  const writes = spans.filter((s) => s.service === "pulumi-cli" && /^gocloud\.dev\/blob\.(NewWriter|Copy|Delete)$/.test(s.name));
  return {
    label,
    totalMs: ms(cli.start, cli.end),
    phases: [
      { phase: "CLI start, project and stack, language host start", ms: ms(cli.start, exec.start) },
      { phase: "Node.js start, Pulumi SDK load", ms: ms(exec.start, run.start) },
      { phase: "TypeScript setup (ts-node with swc)", ms: ms(run.start, program.start) },
      { phase: "program: modules loaded and transpiled, resources declared", ms: ms(program.start, program.end) },
      { phase: "steps still running when the program returned", ms: ms(program.end, langRun.end) },
      { phase: "last steps, final state write, CLI exit", ms: ms(langRun.end, cli.end) },
    ],
    plugins: spans
      .filter((s) => s.service === "pulumi-cli" && s.name === "newPlugin" && s.attrs.get("kind") === "resource")
      .map((s) => ({
        plugin: (s.attrs.get("prefix") ?? "?").replace(/ \(resource\)$/, ""),
        atMs: at(s.start),
        ms: ms(s.start, s.end),
      })),
    slowest,
    stateWrites: { count: writes.length, ms: Math.round(writes.reduce((sum, s) => sum + (s.end - s.start), 0)) },
  };
}

/** Runs `pulumi <args>` on the stack with tracing on, and reads where its time went. */
export async function traceBreakdown(live: LiveStack, label: string, args: string[]): Promise<Breakdown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-trace-"));
  try {
    const file = path.join(dir, "trace.json");
    await live.run([...args, "--otel-traces", `file://${file}`]);
    return breakdownOf(label, readTrace(file));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

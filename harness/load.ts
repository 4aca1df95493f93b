// Steady HTTP load through nginx while something happens to the stack (a release, an interruption, a config
// change), with every response counted: what the live tests and `npm run docs:changes` measure a change's
// cost with. Traffic goes to 127.0.0.1 only, bounded in count and time.
//
// The client is Node's own http module with a keep-alive agent, because it behaves as HTTP clients do where
// autocannon does not: it honours `Connection: close` (nginx sends it on connections a reloading or exiting
// worker is done with; autocannon writes its next request into that closing connection and counts the reset
// as a failure), and a request whose connection the server closed before any byte of a response (an idle
// keep-alive connection a reloading nginx closes) is sent once more on a new connection, as browsers do
// (RFC 9112 §9.3.1). Those resends are counted apart; a refused connection, a second reset, a reset
// mid-response, a timeout or a non-2xx status is a failure.
import * as http from "http";
import * as https from "https";

/** Every response of a load run, counted. */
export interface LoadCount {
  /** Requests answered (any status). */
  requests: number;
  ok: number;
  non2xx: number;
  /** Connection errors: refused, reset mid-request on a fresh connection, or during a response. */
  errors: number;
  timeouts: number;
  /** Requests sent once more on a new connection because the server closed theirs before answering. */
  retried: number;
}

export interface Reply {
  status: number;
  body: string;
  headers: Headers;
}

/** GET on a loopback URL with a hard timeout. */
export async function get(url: string, init: RequestInit = {}, timeoutMs = 3000): Promise<Reply> {
  if (new URL(url).hostname !== "127.0.0.1") throw new Error(`not a loopback URL: ${url}`);
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

const CONNECTIONS = 16;
const MAX_REQUESTS = 600_000;
const MAX_SECONDS = 180;
const TIMEOUT_MS = 10_000;

type Outcome = { status: number } | { error: "timeout" | "error" | "stale"; message: string };

/** For an https:// URL: the CA (PEM) the server's chain is verified against, as a client that trusts it would. */
export interface LoadTls {
  ca?: string;
  /** The name sent as SNI and the certificate is verified for, when it is not the URL's host (127.0.0.1). */
  servername?: string;
}

/** One GET; `agent: false` opens a connection of its own. */
function once(agent: http.Agent | false, url: URL, tls: LoadTls): Promise<Outcome> {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (o: Outcome) => {
      if (!settled) resolve(o);
      settled = true;
    };
    const options = { agent, timeout: TIMEOUT_MS };
    const onResponse = (res: http.IncomingMessage) => {
      res.on("data", () => undefined);
      res.on("end", () => settle({ status: res.statusCode ?? 0 }));
      // Cut off mid-response: the request was answered in part, so it is lost, not retried.
      res.on("close", () => settle({ error: "error", message: "connection closed mid-response" }));
    };
    const req =
      url.protocol === "https:"
        ? https.get(url, { ...options, ca: tls.ca, servername: tls.servername }, onResponse)
        : http.get(url, options, onResponse);
    req.on("timeout", () => {
      req.destroy();
      settle({ error: "timeout", message: "no response in time" });
    });
    req.on("error", (e: NodeJS.ErrnoException) => {
      // Closed by the server before any byte of a response (an idle keep-alive connection, or one a stopping
      // nginx worker had accepted but not read): nothing of this request was answered.
      const stale = ["ECONNRESET", "EPIPE"].includes(e.code ?? "");
      settle({ error: stale ? "stale" : "error", message: e.message });
    });
  });
}

export interface LoadOptions extends LoadTls {
  /**
   * How many of the 16 clients open a new connection for every request (a handshake each, as many clients and
   * every TLS handshake benchmark do); the others keep theirs alive. On a new connection a reset is a failure:
   * no byte was ever answered on it, and no client resends on a connection it just opened.
   */
  newConnections?: number;
}

/**
 * Steady load through nginx (16 connections, over TLS for an https:// URL; bounded at 600,000 requests and
 * 180 s) while `during` runs, and one more second after it; returns every response counted, and what
 * `during` returned or threw.
 */
export async function underLoad<T>(
  url: string,
  during: () => Promise<T>,
  tls: LoadOptions = {},
): Promise<{ load: LoadCount; value?: T; error?: Error }> {
  const target = new URL(url);
  if (target.hostname !== "127.0.0.1") throw new Error(`not a loopback URL: ${url}`);
  const agentOptions = { keepAlive: true, maxSockets: CONNECTIONS };
  const agent =
    target.protocol === "https:"
      ? new https.Agent({ ...agentOptions, ca: tls.ca, servername: tls.servername })
      : new http.Agent(agentOptions);
  const load: LoadCount = { requests: 0, ok: 0, non2xx: 0, errors: 0, timeouts: 0, retried: 0 };
  const deadline = Date.now() + MAX_SECONDS * 1000;
  let stop = false;
  let sent = 0;
  const worker = async (_: unknown, i: number) => {
    const fresh = i < (tls.newConnections ?? 0);
    while (!stop && sent < MAX_REQUESTS && Date.now() < deadline) {
      sent++;
      let outcome = await once(fresh ? false : agent, target, tls);
      if ("error" in outcome && outcome.error === "stale" && fresh) outcome = { error: "error", message: outcome.message };
      if ("error" in outcome && outcome.error === "stale") {
        // Once, on a new connection: another idle one from the pool may be closing too.
        load.retried++;
        outcome = await once(false, target, tls);
        if ("error" in outcome && outcome.error === "stale") outcome = { error: "error", message: outcome.message };
      }
      if ("status" in outcome) {
        load.requests++;
        if (outcome.status >= 200 && outcome.status < 300) load.ok++;
        else load.non2xx++;
      } else if (outcome.error === "timeout") load.timeouts++;
      else load.errors++;
    }
  };
  const workers = Array.from({ length: CONNECTIONS }, worker);
  await new Promise((r) => setTimeout(r, 1000));
  let value: T | undefined;
  let error: Error | undefined;
  try {
    value = await during();
  } catch (e) {
    error = e as Error;
  }
  await new Promise((r) => setTimeout(r, 1000));
  stop = true;
  await Promise.all(workers);
  agent.destroy();
  return { load, value, error };
}

/** The kinds of failure a load run counts; all zero means no request was lost. */
export function failures(l: LoadCount): Pick<LoadCount, "non2xx" | "errors" | "timeouts"> {
  return { non2xx: l.non2xx, errors: l.errors, timeouts: l.timeouts };
}

/**
 * Polls until `probe` resolves truthy (a probe that throws counts as not yet) or `ms` have passed since
 * `since` (default: now); returns the milliseconds from `since` to the first truthy answer. With `holdMs`,
 * the probe must also stay truthy on every poll for that long (a false answer starts the wait for it again).
 */
export async function within(
  ms: number,
  probe: () => Promise<boolean>,
  what: string,
  opts: { since?: number; everyMs?: number; holdMs?: number } = {},
): Promise<number> {
  const start = opts.since ?? Date.now();
  let last = "";
  let heldSince: number | undefined;
  while (Date.now() - start < ms) {
    let ok = false;
    try {
      ok = await probe();
    } catch (e) {
      last = (e as Error).message;
    }
    if (!ok) heldSince = undefined;
    else {
      heldSince ??= Date.now();
      if (Date.now() - heldSince >= (opts.holdMs ?? 0)) return heldSince - start;
    }
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 100));
  }
  throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${last})` : ""}`);
}

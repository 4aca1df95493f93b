// Steady HTTP load through nginx while something happens to the stack (a release, an interruption), with
// every response counted: what the live tests and `npm run docs:changes` measure a change's cost with.
// Traffic goes to 127.0.0.1 only, bounded in count and time.
import autocannon from "autocannon";

/** Every response of a load run, counted. */
export interface LoadCount {
  sent: number;
  /** Responses received. */
  requests: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  resets: number;
}

/**
 * Steady load through nginx (16 connections, bounded at 600,000 requests and 180 s) while `during` runs, and
 * one more second after it; returns every response counted, and what `during` returned or threw.
 */
export async function underLoad<T>(
  url: string,
  during: () => Promise<T>,
): Promise<{ load: LoadCount; value?: T; error?: Error }> {
  if (new URL(url).hostname !== "127.0.0.1") throw new Error(`not a loopback URL: ${url}`);
  // nginx closes a client connection after keepalive_requests (1000) with "Connection: close", and autocannon
  // writes its next request without waiting for that: reopening every 500 requests is what a client that
  // honours the header does.
  const run = autocannon({ url, connections: 16, amount: 600_000, duration: 180, timeout: 10, reconnectRate: 500 });
  await new Promise((r) => setTimeout(r, 1000));
  let value: T | undefined;
  let error: Error | undefined;
  try {
    value = await during();
  } catch (e) {
    error = e as Error;
  }
  await new Promise((r) => setTimeout(r, 1000));
  (run as unknown as { stop(): void }).stop();
  const r = await run;
  const load = {
    sent: r.requests.sent,
    requests: r.requests.total,
    ok: r["2xx"],
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    resets: r.resets,
  };
  return { load, value, error };
}

/** The kinds of failure a load run counts; all zero means no request was lost. */
export function failures(l: LoadCount): Pick<LoadCount, "non2xx" | "errors" | "timeouts" | "resets"> {
  return { non2xx: l.non2xx, errors: l.errors, timeouts: l.timeouts, resets: l.resets };
}

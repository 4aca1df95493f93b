// Load from wrk (C, so the generator takes less of the two cores than a Node one would); its Lua done()
// hook prints a JSON summary. Traffic goes to 127.0.0.1 only, for a bounded time.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

export interface LoadSettings {
  connections: number;
  /** One thread: the generator should use as little of the 2 cores as it can. */
  threads: number;
}

export interface Load {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  non2xx: number;
}

const REPORT_LUA = `done = function(summary, latency, requests)
  io.write(string.format('{"requests":%d,"durationUs":%d,"errors":%d,"non2xx":%d,"p50Us":%d,"p99Us":%d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end`;

export function wrk(url: string, seconds: number, s: LoadSettings): Load {
  if (new URL(url).hostname !== "127.0.0.1") throw new Error(`bench traffic goes to 127.0.0.1 only, not ${url}`);
  const script = path.join(os.tmpdir(), "flask-proxy-bench-report.lua");
  fs.writeFileSync(script, REPORT_LUA);
  const out = execFileSync(
    "wrk",
    ["-t", String(s.threads), "-c", String(s.connections), "-d", `${seconds}s`, "--timeout", "5s", "-s", script, url],
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

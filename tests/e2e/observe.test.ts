import { freePort } from "../../harness/ports";
import { APP_METRICS_PATH, NGINX_METRICS_PATH, NGINX_METRICS_PORT, STUB_STATUS_PATH } from "../../nginx/conf";
import { at, get, logsOf, portOf, raw, upStack, within, type LiveStack } from "./live";
import { Prometheus } from "./prometheus";

/** nginx's JSON access log line (nginxAccessLogFormat: json). */
interface NginxLine {
  request_id: string;
  status: number;
  uri: string;
  request_time: number;
  upstream_addr: string;
  upstream_status: string;
  upstream_response_time: string;
  user_agent: string;
}

const GENERATED_ID = /^[0-9a-f]{32}$/;

// Operating the prod stack: every request carries an ID from nginx to the app's log and back to the client,
// and the stack's metrics reach a real Prometheus server on the host only.
describe("prod stack: follow a request, and metrics through Prometheus", () => {
  let live: LiveStack;
  let metricsPort: number;

  beforeAll(async () => {
    metricsPort = await freePort();
    // prod's own settings (request IDs, buffered JSON access log), plus gunicorn's access log and metrics.
    live = await upStack(
      "prod",
      { httpPort: String(await freePort()), metricsPort: String(metricsPort), gunicornAccessLog: "true" },
      "observe",
    );
  });
  afterAll(async () => {
    await live?.destroy();
  });

  /** Every line nginx wrote to its access log so far, each parsed (a line that does not parse fails here). */
  async function nginxLines(): Promise<NginxLine[]> {
    const { stdout } = await logsOf(live.container("nginx-container"));
    return stdout
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => {
        try {
          return JSON.parse(l) as NginxLine;
        } catch {
          throw new Error(`an nginx access log line is not JSON: ${JSON.stringify(l.slice(0, 300))}`);
        }
      });
  }
  /** nginx's line for `id`, once its buffered log is flushed (every 5 s). */
  async function nginxLineOf(id: string): Promise<NginxLine> {
    let found: NginxLine | undefined;
    await within(15_000, async () => !!(found = (await nginxLines()).find((l) => l.request_id === id)), `nginx logs ${id}`);
    return found!;
  }
  const appLinesOf = async (id: string) =>
    (await logsOf(live.container("flask-container"))).stdout.split("\n").filter((l) => l.endsWith(` request_id=${id}`));

  test("a request's ID is in the response, nginx's line (with its timings and upstream) and the app's line", async () => {
    const r = await get(live.url);
    expect(r.status).toBe(200);
    const id = r.headers.get("x-request-id") ?? "";
    expect(id).toMatch(GENERATED_ID);
    const line = await nginxLineOf(id);
    expect([line.status, line.uri, line.upstream_status]).toEqual([200, "/", "200"]);
    expect(line.upstream_addr).toBe("unix:/srv/sockets/1/gunicorn.sock");
    expect(typeof line.request_time).toBe("number");
    expect(Number(line.upstream_response_time)).toBeGreaterThanOrEqual(0);
    expect(await appLinesOf(id)).toEqual([expect.stringMatching(/"GET \/ HTTP\/1\.0" 200 12 \d+us request_id=/)]);
  });

  test("a well-formed ID the client sends is kept end to end", async () => {
    const id = `trace-${Date.now()}.a_B`;
    const r = await get(live.url, { headers: { "X-Request-ID": id } });
    expect(r.headers.get("x-request-id")).toBe(id);
    expect((await nginxLineOf(id)).status).toBe(200);
    expect(await appLinesOf(id)).toHaveLength(1);
  });

  test("a hostile ID (quotes, escapes, a forged line, 65 or 3,000 or 10,000 bytes) is replaced; every JSON line parses", async () => {
    const port = portOf(live.url);
    const forged = '"}\n{"request_id":"forged","status":200}';
    const hostile = [
      { label: "65 characters", value: "a".repeat(65) },
      { label: "quotes, backslashes, terminal escapes, 3,000 bytes", value: `"\\\x1b[31m{"x":"${forged}`.padEnd(3000, '"\\') },
      { label: "10,000 bytes", value: `"\\${forged}`.padEnd(10_000, "x") },
    ];
    for (const { label, value } of hostile) {
      const header = value.replace(/\n/g, "\\n"); // a raw LF would end the header line (tried below)
      const res = await raw(
        port,
        `GET /?${label.length} HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: ${header}\r\nConnection: close\r\n\r\n`,
      );
      const id = /\r\nX-Request-ID: ([^\r]*)\r\n/i.exec(res.text)?.[1] ?? "";
      expect([label, GENERATED_ID.test(id)]).toEqual([label, true]);
      const line = await nginxLineOf(id);
      // 10 KB exceeds the hardened header limit: nginx refuses it (400) without asking the app.
      expect([label, line.status]).toEqual([label, value.length > 4096 ? 400 : 200]);
    }
    // A LF inside the value ends the header line there: the rest is an invalid header line nginx ignores, and
    // what remains of the ID is kept only if it is well-formed by itself.
    const split = await raw(
      port,
      `GET / HTTP/1.1\r\nHost: localhost\r\nX-Request-ID: ok-1\n{"request_id":"forged"}\r\nConnection: close\r\n\r\n`,
    );
    const splitId = /\r\nX-Request-ID: ([^\r]*)\r\n/i.exec(split.text)?.[1];
    expect(splitId === "ok-1" || GENERATED_ID.test(splitId ?? "")).toBe(true);
    const lines = await nginxLines(); // parses every line, or fails naming the first that does not
    expect(lines.filter((l) => l.request_id === "forged" || !/^[A-Za-z0-9._-]{1,64}$/.test(l.request_id))).toEqual([]);
  });

  test("metrics are on the host-only listener (127.0.0.1), never on the public port", async () => {
    for (const p of [APP_METRICS_PATH, NGINX_METRICS_PATH, STUB_STATUS_PATH]) {
      expect([p, (await get(at(live.url, p))).status]).toEqual([p, 404]);
    }
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    expect(String(live.outputs.metricsUrl)).toBe(`${metricsUrl}/`);
    const app = await get(at(metricsUrl, APP_METRICS_PATH));
    expect(app.status).toBe(200);
    expect(app.body).toContain("# TYPE app_http_request_duration_seconds histogram");
    const nginx = await get(at(metricsUrl, NGINX_METRICS_PATH));
    expect(nginx.body).toMatch(/^nginx_up 1$/m);
    // Published by the forwarder alone, on the loopback; nginx's holder publishes the public port only.
    const published = async (name: string) =>
      Object.entries((await live.container(name).inspect()).NetworkSettings.Ports ?? {})
        .filter(([, b]) => b?.length)
        .map(([port, b]) => [port, b.map((x) => `${x.HostIp}:${x.HostPort}`)]);
    expect(await published("nginx-metrics-container")).toEqual([[`${NGINX_METRICS_PORT}/tcp`, [`127.0.0.1:${metricsPort}`]]]);
    expect(await published("nginx-netns")).toEqual([["80/tcp", [`127.0.0.1:${portOf(live.url)}`]]]);
  });

  test("Prometheus scrapes the stack and reads back known traffic: 50 requests, 7 of them 404", async () => {
    const target = `127.0.0.1:${metricsPort}`;
    const prom = await Prometheus.start([
      { job: "app", target, metricsPath: APP_METRICS_PATH },
      { job: "nginx", target, metricsPath: NGINX_METRICS_PATH },
    ]);
    try {
      await within(30_000, async () => (await prom.value('sum(up{job=~"app|nginx"})')) === 2, "both targets are up");
      const queries = {
        index2xx: 'sum(app_http_requests_total{route="index",status_class="2xx"})',
        all4xx: 'sum(app_http_requests_total{status_class="4xx"})',
        timed: "sum(app_http_request_duration_seconds_count)",
        upstreamTimed: "sum(app_http_upstream_duration_seconds_count)",
        nginxRequests: "sum(nginx_http_requests_total)",
      };
      const read = async () =>
        Object.fromEntries(await Promise.all(Object.entries(queries).map(async ([k, q]) => [k, await prom.value(q)] as const)));
      await new Promise((r) => setTimeout(r, 2500)); // two scrapes past the tests above
      const before = await read();
      const statuses: number[] = [];
      for (let i = 0; i < 50; i++) statuses.push((await get(at(live.url, i % 7 === 3 ? `/missing-${i}` : "/"))).status);
      expect([statuses.filter((s) => s === 200).length, statuses.filter((s) => s === 404).length]).toEqual([43, 7]);
      let after = before;
      const increase = () => Object.fromEntries(Object.keys(queries).map((k) => [k, after[k] - before[k]]));
      await within(
        20_000,
        async () => {
          after = await read();
          return after.index2xx - before.index2xx >= 43 && after.all4xx - before.all4xx >= 7 && after.timed - before.timed >= 50;
        },
        "Prometheus sees the traffic",
      );
      await new Promise((r) => setTimeout(r, 2500)); // and no more than it
      after = await read();
      const seen = increase();
      console.log(`prometheus: increases after 50 requests: ${JSON.stringify(seen)}`);
      expect({ index2xx: seen.index2xx, all4xx: seen.all4xx, timed: seen.timed, upstreamTimed: seen.upstreamTimed }).toEqual({
        index2xx: 43,
        all4xx: 7,
        timed: 50,
        upstreamTimed: 50,
      });
      expect(seen.nginxRequests).toBeGreaterThanOrEqual(50); // nginx also counts its scrapes and healthchecks
      expect(await prom.value("nginx_connections_active")).toBeGreaterThanOrEqual(1);
      expect(
        await prom.value("histogram_quantile(0.99, sum(rate(app_http_upstream_duration_seconds_bucket[1m])) by (le))"),
      ).toBeGreaterThan(0);
      const roles = (await prom.series("gunicorn_process_resident_memory_bytes")).map((s) => s.metric.role).sort();
      expect(roles).toEqual(["master", "worker", "worker"]);
    } finally {
      await prom.stop();
    }
  });
});

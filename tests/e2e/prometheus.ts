// A real Prometheus server (Debian's `prometheus` package) for the metrics test: on 127.0.0.1, with a
// temporary config and storage folder that stop() removes again, scraping every second.
import { spawn, type ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { stringify as stringifyYaml } from "yaml";
import { freePort } from "../../harness/ports";
import { get, within } from "../../harness/load";

export interface ScrapeJob {
  job: string;
  /** host:port, on 127.0.0.1. */
  target: string;
  metricsPath: string;
}

interface QueryReply {
  status: string;
  error?: string;
  data?: { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
}

export class Prometheus {
  private constructor(
    private readonly child: ChildProcess,
    private readonly dir: string,
    readonly url: string,
    private readonly output: () => string,
  ) {}

  /** Starts it and waits until it is ready; fails (and cleans up) if it is not within 30 s. */
  static async start(jobs: ScrapeJob[]): Promise<Prometheus> {
    for (const j of jobs)
      if (!j.target.startsWith("127.0.0.1:")) throw new Error(`scrape targets on 127.0.0.1 only: ${j.target}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-prometheus-"));
    const config = {
      global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
      scrape_configs: jobs.map((j) => ({
        job_name: j.job,
        metrics_path: j.metricsPath,
        static_configs: [{ targets: [j.target] }],
      })),
    };
    fs.writeFileSync(path.join(dir, "prometheus.yml"), stringifyYaml(config));
    const port = await freePort();
    const child = spawn(
      "prometheus",
      [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stdout?.on("data", (d: Buffer) => (output += d.toString("utf8")));
    child.stderr?.on("data", (d: Buffer) => (output += d.toString("utf8")));
    const started = new Prometheus(child, dir, `http://127.0.0.1:${port}`, () => output);
    try {
      await new Promise<void>((resolve, reject) => {
        child.once("error", reject); // no such binary
        child.once("spawn", () => resolve());
      });
      await within(30_000, async () => (await get(`${started.url}/-/ready`)).status === 200, "prometheus is ready");
    } catch (e) {
      await started.stop();
      throw new Error(`${(e as Error).message}\nprometheus said:\n${output.slice(-2000)}`);
    }
    return started;
  }

  /** An instant query through /api/v1/query; the first series' value, 0 when no series matches. */
  async value(query: string): Promise<number> {
    const r = await get(`${this.url}/api/v1/query?query=${encodeURIComponent(query)}`);
    const reply = JSON.parse(r.body) as QueryReply;
    if (reply.status !== "success" || !reply.data) throw new Error(`${query}: ${reply.error ?? r.body}`);
    if (reply.data.result.length === 0) return 0;
    return Number(reply.data.result[0].value[1]);
  }

  /** Every series of an instant query, with its labels. */
  async series(query: string): Promise<{ metric: Record<string, string>; value: number }[]> {
    const r = await get(`${this.url}/api/v1/query?query=${encodeURIComponent(query)}`);
    const reply = JSON.parse(r.body) as QueryReply;
    if (reply.status !== "success" || !reply.data) throw new Error(`${query}: ${reply.error ?? r.body}`);
    return reply.data.result.map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
  }

  /** Ends the server (SIGTERM, then SIGKILL after 10 s) and removes its folder. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid !== undefined) {
      const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  get log(): string {
    return this.output();
  }
}

import * as net from "net";
import { CONF_PATH } from "../../nginx/conf";
import { reloadNginx } from "../../nginx/reload";
import { execIn, failures, get, underLoad, upStack, type LiveStack } from "./live";

const NO_FAILURES = { non2xx: 0, errors: 0, timeouts: 0 };
// Passes the config validation (nginx defines it since 1.23.2), but the stand-in's nginx 1.22 refuses it, as
// any nginx older than the variable does: a refusal only `nginx -t` can find.
const REFUSED = "$proxy_protocol_tlv_authority";
const NGINX_SAYS = 'unknown "proxy_protocol_tlv_authority" variable';

/** A port nothing listens on now: prod's 8000 may be another stack's on a shared engine. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

// A conf the running nginx refuses, on the prod shape: every `pulumi up` fails with nginx's message until the
// config changes, the state and `preview` keep the change pending, and nginx serves its old conf throughout.
describe("prod: a conf nginx refuses", () => {
  let live: LiveStack;

  beforeAll(async () => {
    live = await upStack("prod", { httpPort: String(await freePort()) }, "reload");
  }, 600_000);
  afterAll(async () => {
    await live?.destroy();
  });

  const nginx = () => live.container("nginx-container");
  /** The Host line of the conf nginx would load (`nginx -T` reads the files it runs from). */
  const hostLine = async () => {
    const dump = await execIn(nginx(), ["nginx", "-T"]);
    if (dump.exitCode !== 0) return `nginx -T refuses the conf on disk: ${dump.stderr.trim()}`;
    return dump.stdout.match(/proxy_set_header Host [^;]*;/)?.[0];
  };
  /** nginx's worker pids: a reload starts new workers, so unchanged pids mean the running conf is unchanged. */
  const workers = async () =>
    // The bracket keeps grep and the shell from matching their own command lines.
    (await execIn(nginx(), ["sh", "-c", "grep -ls 'nginx: worke[r]' /proc/[0-9]*/cmdline"])).stdout
      .split("\n")
      .filter(Boolean)
      .sort();
  const upUnderLoad = async (config: Record<string, string>, what: string) => {
    const { load, error } = await underLoad(live.url, () => live.up({ config }));
    console.log(`reload, ${what}: ${load.requests} responses, ${JSON.stringify(failures(load))}, ${load.retried} sent again`);
    return { load, error };
  };

  test("every pulumi up fails with nginx's message until the config changes; the old conf serves; a good value goes through", async () => {
    const good = "proxy_set_header Host $host;";
    expect(await hostLine()).toBe(good);
    const before = await workers();
    expect(before.length).toBeGreaterThan(0);

    for (const attempt of ["first", "second"]) {
      const { load, error } = await upUnderLoad({ proxyHostHeader: REFUSED }, `${attempt} up of a refused conf`);
      expect([attempt, error?.message ?? "pulumi up succeeded"]).toEqual([attempt, expect.stringContaining(NGINX_SAYS)]);
      console.log(`reload, ${attempt} up: ${error?.message.match(/nginx refused[^\n]*/)?.[0]}`);
      expect(load.ok).toBeGreaterThan(100);
      expect(failures(load)).toEqual(NO_FAILURES);
      // The file is the old one again, and nginx was not reloaded: it runs the old conf.
      expect(await hostLine()).toBe(good);
      expect(await workers()).toEqual(before);
    }
    // The state records only what nginx accepted.
    await live.readState();
    expect(live.resource("nginx-conf-file").outputs?.conf).toContain(good);

    // The change stays pending: preview shows it, and `--expect-no-changes` fails.
    expect(await live.preview()).toEqual(expect.arrayContaining([expect.stringMatching(/^nginx-conf-file: update/)]));
    await expect(live.run(["preview", "--expect-no-changes"])).rejects.toThrow(/nginx-conf-file/);
    expect((await get(live.url)).status).toBe(200);

    // A value nginx accepts goes through, reloads the running nginx, and leaves nothing pending.
    const { load, error } = await upUnderLoad({ proxyHostHeader: "$http_host" }, "up of a good value");
    expect(error).toBeUndefined();
    expect(failures(load)).toEqual(NO_FAILURES);
    expect(await hostLine()).toBe("proxy_set_header Host $http_host;");
    expect(await workers()).not.toEqual(before);
    const { stdout: file } = await execIn(nginx(), ["cat", CONF_PATH]);
    expect(file).toBe(live.resource("nginx-conf-file").outputs?.conf);
    expect((await get(live.url)).status).toBe(200);
    await live.run(["preview", "--expect-no-changes"]);
  }, 900_000);

  // `nginx -s reload` only signals the master, which leaves the old workers accepting for 100 ms after the new
  // ones start: nginx/reload.ts returns once none of them does, so the next connection gets the new conf.
  test("a reload returns once no old worker accepts connections (nginx/reload.ts reloadNginx), three times", async () => {
    const accepting = async () => {
      const top = (await nginx().top({ ps_args: "-eo pid,args" })) as { Titles: string[]; Processes: string[][] };
      const [pid, args] = [top.Titles.indexOf("PID"), top.Titles.indexOf("COMMAND")];
      return top.Processes.filter((p) => p[args].trim() === "nginx: worker process").map((p) => p[pid]);
    };
    for (const round of [1, 2, 3]) {
      const before = await accepting();
      expect(before.length).toBeGreaterThan(0);
      await reloadNginx(nginx());
      const after = await accepting();
      expect([round, after.filter((w) => before.includes(w))]).toEqual([round, []]);
      expect(after.length).toBe(before.length);
    }
  }, 120_000);
});

// nginx's conf.d/default.conf is rendered from the same config as the app's network alias and port.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { SOCKET_FILE } from "../../app/facts";
import { parseConfig, type StackConfig } from "../../infra/config";
import {
  checkMountedConf,
  deadPeerSysctls,
  handsOver,
  listenFile,
  NGINX_HEALTH_PATH,
  nginxSocketDir,
  servingListens,
  stackNginxConf,
} from "../../nginx/conf";
import { renderConfs, UnknownStackError } from "../../nginx/render";
import { ROOT, stackConfig, stackNames } from "../../infra/stack-files";

const parse = (stack: string, overrides: Record<string, string> = {}): StackConfig =>
  parseConfig(stackConfig(stack, overrides), { stack, root: ROOT });
/** Renders without a mounted file, so alias and port can be changed freely. */
const renderFree = (stack: string, overrides: Record<string, string> = {}) =>
  stackNginxConf(parse(stack, { nginxConfigFile: "", ...overrides }));

/** Where `location /` sends requests: through `set $var host:port`, an `upstream` block, or proxy_pass itself. */
function upstreamTargets(conf: string): string[] {
  const passes = [...conf.matchAll(/^\s*proxy_pass http:\/\/([^/;\s]+)\/?;/gm)].map((m) => m[1]);
  if (passes.length !== 1) throw new Error(`expected one proxy_pass, found ${passes.length}`);
  const pass = passes[0];
  if (pass.startsWith("$")) {
    const sets = [...conf.matchAll(new RegExp(`^\\s*set \\${pass} ([^;\\s]+);`, "gm"))].map((m) => m[1]);
    if (sets.length !== 1) throw new Error(`expected one "set ${pass}", found ${sets.length}`);
    return sets;
  }
  const block = new RegExp(`^upstream ${pass} \\{([^}]*)\\}`, "m").exec(conf);
  if (!block) return [pass];
  return [...block[1].matchAll(/^\s*server ([^;\s]+);/gm)].map((m) => m[1]);
}

test("nginx/dev.conf in the repo is exactly what dev's config renders", () => {
  expect(fs.readFileSync(path.join(ROOT, "nginx", "dev.conf"), "utf8")).toBe(stackNginxConf(parse("dev")));
});

test("a mounted conf that differs from the render is refused, naming the key and the fix", () => {
  const stale = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "nginx-conf-")), "dev.conf");
  fs.writeFileSync(stale, stackNginxConf(parse("dev")).replace("flask-app:5000", "flask-app:5001"));
  try {
    const cfg = parse("dev", { nginxConfigFile: stale });
    expect(checkMountedConf(cfg)).toEqual([
      expect.stringMatching(/^flask-proxy:nginxConfigFile: .* differs .*npm run render:nginx/),
    ]);
    expect(checkMountedConf(parse("dev"))).toEqual([]);
  } finally {
    fs.rmSync(path.dirname(stale), { recursive: true, force: true });
  }
});

describe("npm run render:nginx -- <stack>", () => {
  const noProblem = (stack: string, message: string) => {
    throw new Error(`${stack}: ${message}`);
  };
  const rendered = (stacks: string[]) => renderConfs(stacks, noProblem).map((c) => [c.stack, c.file]);

  test("renders only the stacks named: prod mounts no conf file, so naming it writes nothing", () => {
    expect(rendered(["prod"])).toEqual([]);
    expect(rendered(["dev"])).toEqual([["dev", "nginx/dev.conf"]]);
    expect(renderConfs(["dev"], noProblem)[0].text).toBe(stackNginxConf(parse("dev")));
  });

  test("renders every stack that mounts a conf file when none is named", () => {
    const mounting = stackNames().filter((s) => stackConfig(s)["flask-proxy:nginxConfigFile"]);
    expect(mounting).toContain("dev");
    expect(rendered([]).map(([stack]) => stack)).toEqual(mounting);
  });

  test("an unknown stack name is an error naming it and the stacks there are, before anything is rendered", () => {
    const call = () => renderConfs(["dev", "nosuch"], noProblem);
    expect(call).toThrow(UnknownStackError);
    expect(call).toThrow(`no stack file for 'nosuch'; there are: ${stackNames().join(", ")}`);
  });
});

describe.each(stackNames())("%s", (stack) => {
  const cfg = parse(stack);
  const conf = stackNginxConf(cfg);

  test("proxies to the app's alias and port, or to each replica's socket", () => {
    const expected =
      cfg.app.transport === "unix"
        ? Array.from({ length: cfg.app.replicas }, (_, i) => `unix:${nginxSocketDir(i + 1)}/${SOCKET_FILE}`)
        : // Over TCP the alias names every replica once.
          [`${cfg.app.alias}:${cfg.app.port}`];
    expect(upstreamTargets(conf)).toEqual(expected);
  });

  test("listens on port 80 (the container port the program publishes), and serves the health path when checked", () => {
    // A nginx that hands over reads its listen lines from a file of its own: the port, shared (reuseport).
    if (handsOver(cfg)) {
      expect(conf).toContain(`    include ${listenFile("http")};`);
      expect(conf).not.toMatch(/^\s*listen /m);
      expect(servingListens(undefined).http).toMatch(/^listen 80 reuseport; listen unix:\S+;$/);
    } else {
      expect(conf).toMatch(/^\s*listen 80;$/m);
    }
    expect(conf.includes(`location = ${NGINX_HEALTH_PATH} {`)).toBe(cfg.healthchecks || cfg.hardened);
  });

  test("hardened: connects that time out are retried, a try that waited out the read timeout is not", () => {
    const directive = (name: string) => [...conf.matchAll(new RegExp(`^\\s*${name} ([^;]+);$`, "gm"))].map((m) => m[1]);
    if (!cfg.hardened) {
      expect(directive("proxy_next_upstream(_timeout)?")).toEqual([]);
      return;
    }
    expect(directive("proxy_next_upstream")).toEqual(["error timeout http_502 http_503"]);
    expect(directive("proxy_read_timeout")).toEqual([`${cfg.nginx.readTimeoutS}s`]);
    // nginx stops retrying once this long has passed since the first try began, which a read timeout always has.
    expect(directive("proxy_next_upstream_timeout")).toEqual([`${cfg.nginx.readTimeoutS}s`]);
    expect(Number(directive("proxy_connect_timeout")[0].replace("s", "")) * 2).toBeLessThan(cfg.nginx.readTimeoutS);
    // Keepalive probes where a lost node is to be noticed, and only there (1.15.6 or later).
    expect(directive("proxy_socket_keepalive")).toEqual(cfg.nginx.deadPeerTimeoutS ? ["on"] : []);
  });

  test.each([
    [{ appAlias: "web" }, "web:%port"],
    [{ appPort: "8001" }, "%alias:8001"],
    [{ appAlias: "api-v2", appPort: "9000" }, "api-v2:9000"],
  ])("over TCP, overriding %j changes the upstream accordingly", (overrides, expected) => {
    const target = expected.replace("%port", String(cfg.app.port)).replace("%alias", cfg.app.alias);
    const tcp = { upstreamTransport: "tcp", upstreamKeepalive: "0" };
    const changed = parse(stack, { nginxConfigFile: "", ...tcp, ...overrides });
    expect(upstreamTargets(stackNginxConf(changed))).toEqual([target]);
    expect(`${changed.app.alias}:${changed.app.port}`).toBe(target);
    expect(upstreamTargets(renderFree(stack, tcp))).not.toEqual([target]);
  });
});

test("over unix sockets: one server per replica, each on its own mount; keepalive only when asked", () => {
  const three = renderFree("prod", { upstreamTransport: "unix", replicas: "3", upstreamKeepalive: "0" });
  expect(upstreamTargets(three)).toEqual([1, 2, 3].map((n) => `unix:/srv/sockets/${n}/${SOCKET_FILE}`));
  expect(three).not.toContain("keepalive ");
  expect(three).not.toContain("resolver");
  const kept = renderFree("prod", { upstreamTransport: "unix", upstreamKeepalive: "8" });
  expect(kept).toMatch(/keepalive 8;[\s\S]*proxy_http_version 1\.1;[\s\S]*proxy_set_header Connection "";/);
});

test("cluster: a lost node is noticed by keepalive probes after 3 s; a slow request waits the 30 s read timeout", () => {
  const cfg = parse("cluster");
  expect({ read: cfg.nginx.readTimeoutS, deadPeer: cfg.nginx.deadPeerTimeoutS }).toEqual({ read: 30, deadPeer: 3 });
  expect(stackNginxConf(cfg)).toContain("proxy_socket_keepalive on;");
  // The first probe after 1 s of silence, one a second after it; the probes left unanswered end it at 3 s.
  const k = deadPeerSysctls(3);
  const failsAfterS =
    Number(k["net.ipv4.tcp_keepalive_time"]) +
    Number(k["net.ipv4.tcp_keepalive_intvl"]) * Number(k["net.ipv4.tcp_keepalive_probes"]);
  expect(failsAfterS).toBe(3);
  expect(deadPeerSysctls(10)["net.ipv4.tcp_keepalive_probes"]).toBe("9");
});

test("keepalive probes are not rendered over unix sockets, which have no node to lose", () => {
  const prod = parse("prod");
  const unix = stackNginxConf({ ...prod, nginx: { ...prod.nginx, deadPeerTimeoutS: 3 } });
  expect(unix).not.toContain("proxy_socket_keepalive");
  expect(renderFree("swarm", { upstreamDeadPeerTimeout: "5" })).toContain("proxy_socket_keepalive on;");
});

describe("request IDs, access log formats and the metrics listener", () => {
  /** The text of one `log_format <name> ...;` directive, its quoted pieces joined as nginx joins them. */
  function logFormatBody(conf: string, name: string): string {
    const m = new RegExp(`^log_format ${name}(?: escape=json)? ((?:'[^']*'\\s*)+);`, "m").exec(conf);
    if (!m) throw new Error(`no log_format ${name}`);
    return [...m[1].matchAll(/'([^']*)'/g)].map((p) => p[1]).join("");
  }

  test("off by default: dev renders as before, with no ID, no log format and no metrics listener", () => {
    const dev = stackNginxConf(parse("dev"));
    for (const absent of ["map ", "log_format", "X-Request-ID", "X-Request-Start", "stub_status", "listen 8080"]) {
      expect([absent, dev.includes(absent)]).toEqual([absent, false]);
    }
  });

  test("an ID the client sends is kept only when it matches 1-64 of A-Za-z0-9._-; it goes to the app and the client", () => {
    const conf = renderFree("prod", { nginxRequestId: "true" });
    const map = /^map \$http_x_request_id \$req_id \{\n {4}default \$request_id;\n {4}"~(.+)" \$http_x_request_id;\n\}$/m.exec(
      conf,
    );
    expect(map).not.toBeNull();
    const kept = new RegExp(map![1]);
    for (const ok of ["abc", "A-1_b.c", "x".repeat(64), "0123456789abcdef0123456789abcdef"])
      expect([ok, kept.test(ok)]).toEqual([ok, true]);
    for (const bad of ["", "x".repeat(65), 'a"b', "a b", "a\nb", "a\\b", "{}", "é", "a%0ab", "a;b"]) {
      expect([bad, kept.test(bad)]).toEqual([bad, false]);
    }
    expect(conf).toContain("        proxy_set_header X-Request-ID $req_id;");
    // `always`: error responses (nginx's own 4xx/5xx) carry it too.
    expect(conf).toMatch(/^ {4}add_header X-Request-ID \$req_id always;$/m);
  });

  test("json: every field present, and the line parses whatever (escaped) values nginx puts in", () => {
    const conf = renderFree("prod", { nginxRequestId: "true", nginxAccessLogFormat: "json" });
    expect(conf).toMatch(/^log_format json escape=json /m);
    expect(conf).toContain("    access_log /var/log/nginx/access.log json buffer=64k flush=5s;");
    const body = logFormatBody(conf, "json");
    // nginx's escape=json writes a value as JSON string content; the numeric fields are numbers always.
    const numeric = new Set(["$status", "$body_bytes_sent", "$request_time"]);
    const hostile = 'a"b\\c\n{"forged":1}\u0000\u001b[31m';
    const line = body.replace(/\$[a-z_0-9]+/g, (v) => (numeric.has(v) ? "404" : JSON.stringify(hostile).slice(1, -1)));
    const parsed = JSON.parse(line) as Record<string, unknown>;
    expect(Object.keys(parsed).sort()).toEqual(
      [
        "time",
        "remote_addr",
        "request_id",
        "method",
        "uri",
        "protocol",
        "status",
        "body_bytes_sent",
        "request_time",
        "upstream_addr",
        "upstream_status",
        "upstream_response_time",
        "referer",
        "user_agent",
      ].sort(),
    );
    expect(parsed.user_agent).toBe(hostile);
    expect(body).toContain('"request_id":"$req_id"');
  });

  test("timed: combined's fields, then request time, upstream address, status and time, and the ID", () => {
    const conf = renderFree("prod", { nginxRequestId: "true", nginxAccessLogFormat: "timed", nginxAccessLog: "on" });
    const body = logFormatBody(conf, "timed");
    expect(body.startsWith('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent')).toBe(true);
    expect(body).toMatch(
      /rt=\$request_time ua="\$upstream_addr" us="\$upstream_status" ut="\$upstream_response_time" id=\$req_id$/,
    );
    expect(conf).toContain("    access_log /var/log/nginx/access.log timed;");
    // Without request IDs, the log still names nginx's own.
    expect(logFormatBody(renderFree("prod", { nginxAccessLogFormat: "timed", nginxRequestId: "false" }), "timed")).toMatch(
      /id=\$request_id$/,
    );
  });

  test("metrics: a listener of its own with stub_status and the two exporters, and nothing of it on port 80", () => {
    const conf = renderFree("prod", { metricsPort: "9145" });
    const [main, metrics] = conf.split("\n# Metrics:");
    expect(metrics).toContain(`    include ${listenFile("metrics")};`);
    expect(servingListens(undefined).metrics).toBe("listen 8080 reuseport;");
    expect(metrics).toContain("location = /stub_status {\n        stub_status;");
    expect(metrics).toContain("set $app_metrics flask-app:9200;");
    expect(metrics).toContain("set $nginx_exporter nginx-exporter:9113;");
    expect(metrics).toMatch(/location \/ \{\n\s*return 404;/);
    expect(main).not.toMatch(/stub_status|\/metrics|listen 8080|metrics\.listen/);
    expect(main).toContain('proxy_set_header X-Request-Start "t=${msec}";');
    expect(renderFree("prod")).not.toContain("# Metrics:");
  });
});

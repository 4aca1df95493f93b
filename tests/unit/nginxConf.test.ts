// nginx's conf.d/default.conf is rendered from the same config as the app's network alias and port.
import * as fs from "fs";
import * as path from "path";
import { parseConfig, SOCKET_FILE, type StackConfig } from "../../infra/config";
import { NGINX_HEALTH_PATH } from "../../infra/nginxConf";
import { ROOT, stackConfig, stackNames } from "../support/program";

const render = (stack: string, overrides: Record<string, string> = {}): StackConfig =>
  parseConfig(stackConfig(stack, overrides), { stack, root: ROOT });
/** Renders without checking a mounted file, so alias and port can be changed freely. */
const renderFree = (stack: string, overrides: Record<string, string> = {}) => render(stack, { nginxConfigFile: "", ...overrides });

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
  expect(fs.readFileSync(path.join(ROOT, "nginx", "dev.conf"), "utf8")).toBe(render("dev").nginx.conf);
});

describe.each(stackNames())("%s", (stack) => {
  const cfg = render(stack);

  test("proxies to the app's alias and port, or to each replica's socket", () => {
    const expected = cfg.app.replicas.map((r) => (r.socket ? `unix:${r.socket.nginxDir}/${SOCKET_FILE}` : `${cfg.app.alias}:${cfg.app.port}`));
    // Over TCP the alias names every replica once; over sockets each replica has its own.
    expect(upstreamTargets(cfg.nginx.conf)).toEqual(cfg.app.replicas[0].socket ? expected : [expected[0]]);
  });

  test("listens on port 80 (the container port the program publishes), and serves the health path when checked", () => {
    expect(cfg.nginx.conf).toMatch(/^\s*listen 80;$/m);
    expect(cfg.nginx.conf.includes(`location = ${NGINX_HEALTH_PATH} {`)).toBe(cfg.healthchecks || cfg.hardened);
  });

  test.each([
    [{ appAlias: "web" }, "web:%port"],
    [{ appPort: "8001" }, "%alias:8001"],
    [{ appAlias: "api-v2", appPort: "9000" }, "api-v2:9000"],
  ])("over TCP, overriding %j changes the upstream accordingly", (overrides, expected) => {
    const target = expected.replace("%port", String(cfg.app.port)).replace("%alias", cfg.app.alias);
    const tcp = { upstreamTransport: "tcp", upstreamKeepalive: "0" };
    const changed = renderFree(stack, { ...tcp, ...overrides });
    expect(upstreamTargets(changed.nginx.conf)).toEqual([target]);
    expect(`${changed.app.alias}:${changed.app.port}`).toBe(target);
    expect(upstreamTargets(renderFree(stack, tcp).nginx.conf)).not.toEqual([target]);
  });
});

test("over unix sockets: one server per replica, each on its own mount; keepalive only when asked", () => {
  const three = renderFree("prod", { upstreamTransport: "unix", replicas: "3", upstreamKeepalive: "0" });
  expect(upstreamTargets(three.nginx.conf)).toEqual([1, 2, 3].map((n) => `unix:/srv/sockets/${n}/${SOCKET_FILE}`));
  expect(new Set(three.app.replicas.map((r) => r.socket?.volumeName)).size).toBe(3);
  expect(three.nginx.conf).not.toContain("keepalive ");
  expect(three.nginx.conf).not.toContain("resolver");
  const kept = renderFree("prod", { upstreamTransport: "unix", upstreamKeepalive: "8" }).nginx.conf;
  expect(kept).toMatch(/keepalive 8;[\s\S]*proxy_http_version 1\.1;[\s\S]*proxy_set_header Connection "";/);
});

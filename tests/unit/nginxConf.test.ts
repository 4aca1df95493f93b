// nginx's conf.d/default.conf is rendered from the same config as the app's network alias and port.
import * as fs from "fs";
import * as path from "path";
import { parseConfig, type StackConfig } from "../../infra/config";
import { NGINX_HEALTH_PATH } from "../../infra/nginxConf";
import { ROOT, stackConfig, stackNames } from "../support/program";

const render = (stack: string, overrides: Record<string, string> = {}): StackConfig =>
  parseConfig(stackConfig(stack, overrides), { stack, root: ROOT });
/** Renders without checking a mounted file, so alias and port can be changed freely. */
const renderFree = (stack: string, overrides: Record<string, string> = {}) => render(stack, { nginxConfigFile: "", ...overrides });

/** Where `location /` sends requests: through `set $var host:port`, an `upstream` block, or proxy_pass itself. */
function upstreamTarget(conf: string): string {
  const passes = [...conf.matchAll(/^\s*proxy_pass http:\/\/([^/;\s]+)\/?;/gm)].map((m) => m[1]);
  if (passes.length !== 1) throw new Error(`expected one proxy_pass, found ${passes.length}`);
  const pass = passes[0];
  if (pass.startsWith("$")) {
    const sets = [...conf.matchAll(new RegExp(`^\\s*set \\${pass} ([^;\\s]+);`, "gm"))].map((m) => m[1]);
    if (sets.length !== 1) throw new Error(`expected one "set ${pass}", found ${sets.length}`);
    return sets[0];
  }
  const block = new RegExp(`^upstream ${pass} \\{([^}]*)\\}`, "m").exec(conf);
  if (!block) return pass;
  const servers = [...block[1].matchAll(/^\s*server ([^;\s]+);/gm)].map((m) => m[1]);
  if (servers.length !== 1) throw new Error(`expected one server in upstream ${pass}, found ${servers.length}`);
  return servers[0];
}

test("nginx/dev.conf in the repo is exactly what dev's config renders", () => {
  expect(fs.readFileSync(path.join(ROOT, "nginx", "dev.conf"), "utf8")).toBe(render("dev").nginx.conf);
});

describe.each(stackNames())("%s", (stack) => {
  const cfg = render(stack);

  test("proxies to the app's alias and port", () => {
    expect(upstreamTarget(cfg.nginx.conf)).toBe(`${cfg.app.alias}:${cfg.app.port}`);
  });

  test("listens on port 80 (the container port the program publishes), and serves the health path when checked", () => {
    expect(cfg.nginx.conf).toMatch(/^\s*listen 80;$/m);
    expect(cfg.nginx.conf.includes(`location = ${NGINX_HEALTH_PATH} {`)).toBe(cfg.healthchecks || cfg.hardened);
  });

  test.each([
    [{ appAlias: "web" }, "web:%port"],
    [{ appPort: "8001" }, "%alias:8001"],
    [{ appAlias: "api-v2", appPort: "9000" }, "api-v2:9000"],
  ])("overriding %j changes the upstream accordingly", (overrides, expected) => {
    const target = expected.replace("%port", String(cfg.app.port)).replace("%alias", cfg.app.alias);
    const changed = renderFree(stack, overrides);
    expect(upstreamTarget(changed.nginx.conf)).toBe(target);
    expect(`${changed.app.alias}:${changed.app.port}`).toBe(target);
    expect(upstreamTarget(renderFree(stack).nginx.conf)).not.toBe(target);
  });
});

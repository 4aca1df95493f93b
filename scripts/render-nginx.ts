// Writes the nginx config each stack bind-mounts (its nginxConfigFile), rendered from that stack's config.
// Usage: npm run render:nginx
import * as fs from "fs";
import * as path from "path";
import { parseConfig } from "../infra/config";
import { ROOT, stackConfig, stackNames } from "../tests/support/stack-files";

for (const stack of stackNames()) {
  const all = stackConfig(stack);
  const target = all["flask-proxy:nginxConfigFile"];
  if (!target) continue;
  const dest = path.resolve(ROOT, target);
  // Render with the check disabled: the file is what is being regenerated.
  const cfg = parseConfig({ ...all, "flask-proxy:nginxConfigFile": "" }, { stack, root: ROOT });
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.writeFileSync(dest, cfg.nginx.conf);
  console.log(`${stack}: wrote ${path.relative(ROOT, dest)}`);
}

// npm run render:nginx — writes the conf each stack bind-mounts (its nginxConfigFile), rendered from that
// stack's config. A stack whose config is invalid is named with its problems; nothing is written for it.
import * as fs from "fs";
import * as path from "path";
import { ConfigError, parseConfig, PROJECT } from "../infra/config";
import { ROOT, StackFileError, stackConfig, stackNames } from "../infra/stack-files";
import { stackNginxConf } from "./conf";

let failed = false;
for (const stack of stackNames()) {
  try {
    const all = stackConfig(stack);
    const key = `${PROJECT}:nginxConfigFile`;
    const target = all[key];
    if (!target) continue;
    const dest = path.resolve(ROOT, target);
    // Parsed without the file: it is what is being regenerated, so it may be missing or stale.
    const cfg = parseConfig({ ...all, [key]: "" }, { stack, root: ROOT });
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.writeFileSync(dest, stackNginxConf(cfg));
    console.log(`${stack}: wrote ${path.relative(ROOT, dest)}`);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(
        `${stack}: not rendered, Pulumi.${stack}.yaml has problems:\n${e.problems.map((p) => `  - ${p}`).join("\n")}`,
      );
    } else if (e instanceof StackFileError) {
      console.error(`${stack}: not rendered: ${e.message}`);
    } else {
      throw e;
    }
    failed = true;
  }
}
process.exitCode = failed ? 1 : 0;

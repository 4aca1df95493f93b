// Prints the public image names the committed stacks use, one per line: the stand-ins the live tests need.
import { parseConfig } from "../infra/config";
import { ROOT, stackConfig, stackNames } from "../tests/support/stack-files";

const tags = new Set<string>();
for (const stack of stackNames()) {
  const cfg = parseConfig(stackConfig(stack), { stack, root: ROOT });
  tags.add(cfg.nginx.image).add(cfg.app.baseImage);
}
console.log([...tags].join("\n"));

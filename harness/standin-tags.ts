// Prints the public image names the committed stacks use, one per line: the stand-ins the live tests and
// the bench need (scripts/build-standins.sh builds them when no registry can be reached).
import { CERTBOT_IMAGE } from "../certs/certAgent";
import { parseConfig, PROJECT } from "../infra/config";
import { ROOT, stackConfig, stackNames } from "../infra/stack-files";

const tags = new Set<string>();
for (const stack of stackNames()) {
  const cfg = parseConfig(stackConfig(stack), { stack, root: ROOT });
  // A stack with a registry pulls its base images from there (`npm run cluster:up` pushes the other stacks'
  // stand-ins to it), never from the host engine.
  if (cfg.registry) continue;
  tags.add(cfg.nginx.baseImage).add(cfg.app.baseImage);
  // Listed whether or not the stack file turns metrics on: the live tests turn them on (metricsPort).
  tags.add(stackConfig(stack)[`${PROJECT}:nginxExporterImage`]);
}
// The cert agent's base (tls: internal or acme), which no stack file names: the live tests and the bench turn
// tls on.
tags.add(CERTBOT_IMAGE);
console.log([...tags].join("\n"));

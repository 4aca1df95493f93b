// The pack's policies, kept apart from index.ts: constructing a PolicyPack starts its server.
import * as docker from "@pulumi/docker";
import { type ResourceValidationArgs, type ResourceValidationPolicy, validateResourceOfType } from "@pulumi/policy";
import { checkContainer, checkImageRef, checkService, DEFAULT_STRICT_STACKS, stackOfUrn } from "./rules";

interface PackConfig {
  strictStacks: string[];
}
const strictStacksSchema = {
  properties: { strictStacks: { type: "array" as const, items: { type: "string" as const }, default: DEFAULT_STRICT_STACKS } },
};
const strictness = (args: ResourceValidationArgs) => ({
  strict: args.getConfig<PackConfig>().strictStacks.includes(stackOfUrn(args.urn)),
});

export const policies: ResourceValidationPolicy[] = [
  {
    name: "containers-hardened",
    description:
      "No privileged containers or unpinned images; the app port never on 0.0.0.0; in strict stacks " +
      "(prod) the app is not published at all and every container has a read-only root, cap_drop ALL and no-new-privileges.",
    configSchema: strictStacksSchema,
    validateResource: validateResourceOfType(docker.Container, (c, args, report) => {
      for (const v of checkContainer(args.name, c as Parameters<typeof checkContainer>[1], strictness(args))) report(v);
    }),
  },
  {
    name: "services-hardened",
    description:
      "Swarm services: pinned images; in strict stacks the app is not published and tasks run read-only with cap_drop ALL.",
    configSchema: strictStacksSchema,
    validateResource: validateResourceOfType(docker.Service, (s, args, report) => {
      for (const v of checkService(args.name, s as Parameters<typeof checkService>[1], strictness(args))) report(v);
    }),
  },
  {
    name: "images-pinned",
    description: "Images are referenced by a tag other than latest.",
    validateResource: [
      validateResourceOfType(docker.RemoteImage, (img, args, report) => {
        for (const v of checkImageRef(`remote image ${args.name}`, img.name)) report(v);
      }),
      validateResourceOfType(docker.Image, (img, args, report) => {
        for (const v of checkImageRef(`image ${args.name}`, img.imageName)) report(v);
      }),
    ],
  },
];

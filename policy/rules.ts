// The guardrails as plain functions over a resource's inputs, so the pack (index.ts) and the unit tests
// share them. Each returns the violations found, as messages that say what is wrong.
import { isPinned } from "../infra/config";

/** Stacks that must be production-hardened unless the pack's config says otherwise. */
export const DEFAULT_STRICT_STACKS = ["prod", "swarm"];

export interface Strictness {
  strict: boolean;
}

interface Port {
  internal?: number;
  external?: number;
  ip?: string;
}
interface ContainerInputs {
  image?: string;
  privileged?: boolean;
  readOnly?: boolean;
  securityOpts?: string[];
  capabilities?: { adds?: string[]; drops?: string[] };
  ports?: Port[];
  networksAdvanced?: { aliases?: string[] }[];
}
interface ServiceInputs {
  taskSpec?: {
    containerSpec?: { image?: string; readOnly?: boolean; capDrops?: string[] };
    networksAdvanceds?: { aliases?: string[] }[];
  };
  endpointSpec?: { ports?: { targetPort?: number; publishedPort?: number }[] };
}

/** An image reference must name a tag other than latest, or be an image ID / digest. */
export function checkImageRef(what: string, ref: string | undefined): string[] {
  if (ref === undefined || ref === "") return [`${what} has no image`];
  if (/^sha256:[a-f0-9]{64}$/.test(ref)) return [];
  return isPinned(ref) ? [] : [`${what} uses "${ref}": pin the image to a tag other than latest`];
}

// The app is the workload with a network alias (that is what nginx proxies to); nginx has none.
const isApp = (aliases: { aliases?: string[] }[] | undefined) => (aliases ?? []).some((n) => (n.aliases ?? []).length > 0);

export function checkContainer(name: string, c: ContainerInputs, { strict }: Strictness): string[] {
  const out = checkImageRef(`container ${name}`, c.image);
  if (c.privileged) out.push(`container ${name} is privileged`);
  const app = isApp(c.networksAdvanced);
  for (const p of c.ports ?? []) {
    const ip = p.ip ?? "0.0.0.0";
    if (app && strict)
      out.push(`container ${name} publishes the app port ${p.internal} (on ${ip}:${p.external}); only nginx may be published`);
    else if (app && ip === "0.0.0.0")
      out.push(`container ${name} publishes the app port ${p.internal} on every interface (0.0.0.0)`);
  }
  if (strict) {
    if (c.readOnly !== true) out.push(`container ${name} needs readOnly: true (read-only root filesystem)`);
    if (!(c.capabilities?.drops ?? []).includes("ALL")) out.push(`container ${name} needs capabilities.drops: ["ALL"]`);
    if (!(c.securityOpts ?? []).includes("no-new-privileges:true"))
      out.push(`container ${name} needs securityOpts: ["no-new-privileges:true"]`);
  }
  return out;
}

export function checkService(name: string, s: ServiceInputs, { strict }: Strictness): string[] {
  const spec = s.taskSpec?.containerSpec;
  const out = checkImageRef(`service ${name}`, spec?.image);
  const app = isApp(s.taskSpec?.networksAdvanceds);
  if (app && strict) {
    for (const p of s.endpointSpec?.ports ?? []) {
      out.push(`service ${name} publishes the app port ${p.targetPort} as ${p.publishedPort}; only nginx may be published`);
    }
  }
  if (strict) {
    if (spec?.readOnly !== true) out.push(`service ${name} needs taskSpec.containerSpec.readOnly: true`);
    if (!(spec?.capDrops ?? []).includes("ALL")) out.push(`service ${name} needs taskSpec.containerSpec.capDrops: ["ALL"]`);
  }
  return out;
}

/** The stack a resource belongs to, from its URN (urn:pulumi:<stack>::<project>::<type>::<name>). */
export function stackOfUrn(urn: string): string {
  return urn.split(":")[2]?.split("::")[0] ?? "";
}

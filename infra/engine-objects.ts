// What the engine holds of a project or a stack, found by label, and what of it a stack's state does not know:
// after `pulumi destroy` nothing may be left, and after any `pulumi up` (or `npm run recover`) nothing may be
// on the engine that the state does not know.
import Docker from "dockerode";
import { LABEL } from "./naming";

/** For removals where only "already gone" is fine (404); anything else, "in use" included, is an error. */
export function ignoreNotFound(e: { statusCode?: number }): void {
  if (e.statusCode !== 404) throw e;
}

/** Services can only be listed on a swarm manager. */
async function isSwarmManager(docker: Docker): Promise<boolean> {
  const info = (await docker.info()) as { Swarm?: { ControlAvailable?: boolean } };
  return info.Swarm?.ControlAvailable === true;
}

export type EngineKind = "service" | "container" | "network" | "volume" | "image";

export interface EngineObject {
  kind: EngineKind;
  id: string;
  name: string;
}

/** Every object on the engine with `label` (`key` or `key=value`), services first, images last. */
export async function labelledObjects(docker: Docker, label: string): Promise<EngineObject[]> {
  const filters = JSON.stringify({ label: [label] });
  const services = (await isSwarmManager(docker)) ? await docker.listServices({ filters }) : [];
  return [
    ...services.map((s): EngineObject => ({ kind: "service", id: s.ID, name: s.Spec?.Name ?? s.ID })),
    ...(await docker.listContainers({ all: true, filters })).map((c): EngineObject => ({
      kind: "container",
      id: c.Id,
      name: c.Names.map((n) => n.replace(/^\//, "")).join(","),
    })),
    ...(await docker.listNetworks({ filters })).map((n): EngineObject => ({ kind: "network", id: n.Id, name: n.Name })),
    ...((await docker.listVolumes({ filters })).Volumes ?? []).map((v): EngineObject => ({
      kind: "volume",
      id: v.Name,
      name: v.Name,
    })),
    ...(await docker.listImages({ filters })).map((i): EngineObject => ({
      kind: "image",
      id: i.Id,
      name: (i.RepoTags ?? []).join(",") || i.Id,
    })),
  ];
}

/** What the engine still holds with a label, by kind (names). */
export async function leftovers(docker: Docker, label: string): Promise<Record<string, string[]>> {
  const found = await labelledObjects(docker, label);
  const names = (kind: EngineKind) => found.filter((o) => o.kind === kind).map((o) => o.name);
  return {
    services: names("service"),
    containers: names("container"),
    networks: names("network"),
    volumes: names("volume"),
    images: names("image"),
  };
}

/** The label every object of one stack carries. */
export const stackLabel = (stack: string) => `${LABEL.stack}=${stack}`;

/** One resource of a stack's state, as `pulumi stack export` shows it. */
export interface StateResource {
  urn: string;
  type: string;
  id?: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  /** A replaced resource whose delete has not happened yet. */
  delete?: boolean;
  /** `pulumi destroy` leaves its object on the engine. */
  retainOnDelete?: boolean;
}

/** Every engine ID a state refers to: resource IDs, and the image IDs that built and remote images carry. */
export function idsInState(resources: StateResource[]): Set<string> {
  const ids = new Set<string>();
  for (const r of resources) {
    if (r.id) ids.add(r.id);
    for (const key of ["imageId", "repoDigest"]) {
      const v = r.outputs?.[key];
      if (typeof v === "string" && v.startsWith("sha256:")) ids.add(v);
    }
  }
  return ids;
}

/** The stack's labelled objects on the engine that its state does not know. */
export async function unknownToState(docker: Docker, stack: string, resources: StateResource[]): Promise<EngineObject[]> {
  const known = idsInState(resources);
  return (await labelledObjects(docker, stackLabel(stack))).filter((o) => !known.has(o.id));
}

/** Removes one engine object (a container by force, keeping its volumes); one already gone is fine. */
export async function removeObject(docker: Docker, o: EngineObject): Promise<void> {
  const removal: Record<EngineKind, () => Promise<unknown>> = {
    service: () => docker.getService(o.id).remove(),
    container: () => docker.getContainer(o.id).remove({ force: true, v: false }),
    network: () => docker.getNetwork(o.id).remove(),
    volume: () => docker.getVolume(o.id).remove(),
    image: () => docker.getImage(o.id).remove({ force: true }),
  };
  await removal[o.kind]().catch(ignoreNotFound);
}

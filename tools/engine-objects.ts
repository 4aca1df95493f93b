// What the live tests, the bench and the cleanup tool find on the engine by label, and remove: shared by
// tests/, bench/ and tools/cleanup.ts, so none of them reaches into another's folder.
import Docker from "dockerode";
import { LABEL } from "../infra/naming";

/** For removals where "already gone" (404) or "being removed" (409) is fine. */
export function ignoreMissing(e: { statusCode?: number }): void {
  if (e.statusCode !== 404 && e.statusCode !== 409) throw e;
}

/** For removals where only "already gone" is fine (404); anything else, "in use" included, is an error. */
export function ignoreNotFound(e: { statusCode?: number }): void {
  if (e.statusCode !== 404) throw e;
}

/** Removes a service and waits for its task containers to go, so its network can be removed next. */
export async function removeService(docker: Docker, id: string): Promise<void> {
  await docker.getService(id).remove().catch(ignoreMissing);
  const filters = JSON.stringify({ label: [`com.docker.swarm.service.id=${id}`] });
  for (let i = 0; i < 120 && (await docker.listContainers({ all: true, filters })).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Services can only be listed on a swarm manager. */
async function isSwarmManager(docker: Docker): Promise<boolean> {
  const info = (await docker.info()) as { Swarm?: { ControlAvailable?: boolean } };
  return info.Swarm?.ControlAvailable === true;
}

/** Removes everything carrying a label (default: the e2e one): services, containers, networks, volumes, images. */
export async function removeByLabel(docker: Docker, label: string = LABEL.e2e): Promise<number> {
  const filters = JSON.stringify({ label: [label] });
  let removed = 0;
  for (const s of (await isSwarmManager(docker)) ? await docker.listServices({ filters }) : []) {
    await removeService(docker, s.ID);
    removed++;
  }
  for (const c of await docker.listContainers({ all: true, filters })) {
    await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(ignoreMissing);
    removed++;
  }
  for (const n of await docker.listNetworks({ filters })) {
    await docker.getNetwork(n.Id).remove().catch(ignoreMissing);
    removed++;
  }
  for (const v of (await docker.listVolumes({ filters })).Volumes ?? []) {
    await docker.getVolume(v.Name).remove().catch(ignoreMissing);
    removed++;
  }
  for (const img of await docker.listImages({ filters })) {
    await docker.getImage(img.Id).remove({ force: true }).catch(ignoreMissing);
    removed++;
  }
  return removed;
}

/** What the engine still holds with a label, by kind. */
export async function leftovers(docker: Docker, label: string): Promise<Record<string, string[]>> {
  const filters = JSON.stringify({ label: [label] });
  return {
    services: (await isSwarmManager(docker)) ? (await docker.listServices({ filters })).map((s) => s.Spec?.Name ?? s.ID) : [],
    containers: (await docker.listContainers({ all: true, filters })).map((c) => c.Names.join(",")),
    networks: (await docker.listNetworks({ filters })).map((n) => n.Name),
    volumes: ((await docker.listVolumes({ filters })).Volumes ?? []).map((v) => v.Name),
    images: (await docker.listImages({ filters })).map((i) => (i.RepoTags ?? []).join(",") || i.Id),
  };
}

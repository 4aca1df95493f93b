// What the live tests find on the engine by label: after `pulumi destroy`, nothing of the project may be left.
import Docker from "dockerode";

/** For removals where only "already gone" is fine (404); anything else, "in use" included, is an error. */
export function ignoreNotFound(e: { statusCode?: number }): void {
  if (e.statusCode !== 404) throw e;
}

/** Services can only be listed on a swarm manager. */
async function isSwarmManager(docker: Docker): Promise<boolean> {
  const info = (await docker.info()) as { Swarm?: { ControlAvailable?: boolean } };
  return info.Swarm?.ControlAvailable === true;
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

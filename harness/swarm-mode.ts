// A single-node Docker Swarm on this engine for as long as a caller needs one (the swarm test, the swarm change
// table), left again afterwards with what joining created, unless the engine was in a swarm already.
import type Docker from "dockerode";
import { ignoreNotFound } from "../infra/engine-objects";

/** Joins a swarm if the engine is in none; returns what undoes exactly that. */
export async function enterSwarm(docker: Docker): Promise<() => Promise<void>> {
  const info = await docker.info();
  if (info.Swarm?.LocalNodeState === "active") return async () => undefined;
  const hadGwBridge = (await docker.listNetworks({ filters: JSON.stringify({ name: ["docker_gwbridge"] }) })).length > 0;
  await docker.swarmInit({ ListenAddr: "127.0.0.1:2377", AdvertiseAddr: "127.0.0.1" });
  return async () => {
    await docker.swarmLeave({ force: true });
    // swarm init creates docker_gwbridge and leaving keeps it: remove it when this call brought it.
    if (!hadGwBridge) await docker.getNetwork("docker_gwbridge").remove().catch(ignoreNotFound);
  };
}

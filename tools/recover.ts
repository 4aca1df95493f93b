// npm run recover -- --stack <name> [--cwd <project folder>]
//
// After a `pulumi up` that was killed (SIGKILL, a lost terminal, an OOM), puts the stack's state back in line
// with its Docker Engine (the one its docker provider settings name: docker:host with its certificates or ssh
// options, or the local engine), asking nothing:
//   1. lock: a lock left by a `pulumi` process that no longer runs is removed (`pulumi cancel`); one held by a
//      running process stops the recovery;
//   2. pending creates: each object the killed run was creating is looked up on the engine by name and the
//      stack's label and removed (it never served: a new app container serves only after its cutover, which
//      needs its create to have finished), and `pulumi refresh --clear-pending-creates` drops the pending
//      operations and reads every other resource back from the engine;
//   3. orphans: any object labelled with the stack that the state does not know (an image the killed build
//      made, say) is removed.
// Then `pulumi up` converges. On a healthy stack it changes nothing and says so. File backends only (the
// project's default): other backends hold their locks themselves.
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { fileURLToPath } from "url";
import { parseArgs } from "util";
import type Docker from "dockerode";
import { LocalWorkspace, type Stack } from "@pulumi/pulumi/automation";
import { engineClient, stackEngineSettings } from "../infra/engine";
import { removeObject, stackLabel, unknownToState, type EngineObject, type StateResource } from "../infra/engine-objects";
import { ROOT } from "../infra/stack-files";

interface PendingOperation {
  resource: StateResource;
  type: "creating" | "updating" | "deleting" | "reading";
}

interface Lock {
  file: string;
  pid: number;
  hostname: string;
}

const log = (s: string) => console.log(`[recover] ${s}`);

/** Lock files of the stack in a file:// backend (project-scoped layout, and the legacy one). */
function locks(backendUrl: string, project: string, stack: string): Lock[] {
  if (!backendUrl.startsWith("file://")) return [];
  const root = path.join(fileURLToPath(backendUrl.replace(/^file:\/\/~/, `file://${os.homedir()}`)), ".pulumi", "locks");
  const dirs = [path.join(root, "organization", project, stack), path.join(root, stack)];
  return dirs.flatMap((dir) =>
    (fs.existsSync(dir) ? fs.readdirSync(dir) : [])
      .filter((f) => f.endsWith(".json"))
      .map((f) => {
        const file = path.join(dir, f);
        const content = JSON.parse(fs.readFileSync(file, "utf8")) as { pid: number; hostname: string };
        return { file, pid: content.pid, hostname: content.hostname };
      }),
  );
}

/** A lock's process still runs here (a `pulumi` one: a reused pid of another program does not count). */
function holderRuns(lock: Lock): boolean {
  if (lock.hostname !== os.hostname()) return true; // another machine's process: cannot tell, so assume it runs
  try {
    return fs.readFileSync(`/proc/${lock.pid}/cmdline`, "utf8").includes("pulumi");
  } catch {
    return false;
  }
}

/** The engine object a pending create made, if any: by the name it was given and the stack's label. */
async function createdBy(docker: Docker, stack: string, op: PendingOperation): Promise<EngineObject | undefined> {
  const name = op.resource.inputs?.name;
  if (typeof name !== "string") return undefined;
  const filters = (extra: Record<string, string[]>) => JSON.stringify({ label: [stackLabel(stack)], ...extra });
  switch (op.resource.type) {
    case "docker:index/container:Container": {
      const found = await docker.listContainers({ all: true, filters: filters({ name: [`^/${name}$`] }) });
      return found[0] && { kind: "container", id: found[0].Id, name };
    }
    case "docker:index/network:Network": {
      const found = (await docker.listNetworks({ filters: filters({ name: [name] }) })).filter((n) => n.Name === name);
      return found[0] && { kind: "network", id: found[0].Id, name };
    }
    case "docker:index/volume:Volume": {
      const found = ((await docker.listVolumes({ filters: filters({ name: [name] }) })).Volumes ?? []).filter(
        (v) => v.Name === name,
      );
      return found[0] && { kind: "volume", id: name, name };
    }
    case "docker:index/service:Service": {
      const found = (await docker.listServices({ filters: filters({ name: [name] }) })).filter((s) => s.Spec?.Name === name);
      return found[0] && { kind: "service", id: found[0].ID, name };
    }
    default:
      return undefined; // images are found as orphans by their labels; the rest holds nothing on the engine
  }
}

async function remove(docker: Docker, o: EngineObject): Promise<void> {
  await removeObject(docker, o);
  log(`removed ${o.kind} ${o.name}`);
}

/** Swarm's task containers carry the service's labels; they belong to their service, not to the state. */
const isTask = async (docker: Docker, o: EngineObject) =>
  o.kind === "container" && (await docker.getContainer(o.id).inspect()).Config.Labels?.["com.docker.swarm.task.id"] !== undefined;

async function orphans(docker: Docker, stack: Stack): Promise<EngineObject[]> {
  const deployment = (await stack.exportStack()).deployment as { resources?: StateResource[] };
  const unknown = await unknownToState(docker, stack.name, deployment.resources ?? []);
  const out: EngineObject[] = [];
  for (const o of unknown) if (!(await isTask(docker, o))) out.push(o);
  return out;
}

/** Recovers `stackName` on the engine its docker provider settings name (docker:host, certificates, ssh). */
export async function recover(stackName: string, workDir: string): Promise<{ changed: boolean }> {
  const stack = await LocalWorkspace.selectStack({ stackName, workDir });
  const docker = engineClient(await stackEngineSettings(stack));
  const project = (await stack.workspace.projectSettings()).name;
  const backend = (await stack.workspace.whoAmI()).url ?? "";
  let changed = false;

  // 1. A lock whose process is gone.
  const held = locks(backend, project, stackName);
  const running = held.filter(holderRuns);
  if (running.length > 0) {
    throw new Error(
      `an update of ${stackName} is running (${running.map((l) => `pid ${l.pid} on ${l.hostname}`).join(", ")}): ` +
        "wait for it to end; nothing was changed",
    );
  }
  if (held.length > 0) {
    log(`lock left by pid ${held.map((l) => l.pid).join(", ")}, which no longer runs: pulumi cancel`);
    await stack.cancel();
    changed = true;
  }

  // 2. Pending operations of the killed run.
  const deployment = (await stack.exportStack()).deployment as { pending_operations?: PendingOperation[] };
  const pending = deployment.pending_operations ?? [];
  for (const op of pending) {
    const found = op.type === "creating" ? await createdBy(docker, stackName, op) : undefined;
    log(`pending ${op.type} of ${op.resource.urn.split("::").at(-1)}${found ? `: found on the engine as ${found.name}` : ""}`);
    if (found) await remove(docker, found);
  }
  if (pending.length > 0) {
    log("pulumi refresh --clear-pending-creates");
    await stack.refresh({ clearPendingCreates: true, onOutput: (s) => process.stdout.write(s) });
    changed = true;
  }

  // 3. Whatever carries the stack's label and is still unknown to the state.
  const left = await orphans(docker, stack);
  for (const o of left) await remove(docker, o);
  changed ||= left.length > 0;

  log(
    changed
      ? `${stackName}: state and engine agree again; run \`pulumi up --stack ${stackName}\` to converge`
      : `${stackName}: nothing to recover (no lock, no pending operation, nothing on the engine the state does not know); nothing changed`,
  );
  return { changed };
}

if (require.main === module) {
  const { values } = parseArgs({ options: { stack: { type: "string" }, cwd: { type: "string" } }, strict: true });
  if (!values.stack) {
    console.error("usage: npm run recover -- --stack <name> [--cwd <project folder>]");
    process.exit(2);
  }
  recover(values.stack, path.resolve(values.cwd ?? ROOT)).catch((e: Error) => {
    console.error(`[recover] ${e.message}`);
    process.exit(1);
  });
}

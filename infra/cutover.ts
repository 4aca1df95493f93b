// The middle of a zero-downtime release on plain containers. A release boots the new container under a new
// name beside the old one (create-before-delete), then this resource, per replica:
//   1. health-gate: waits until the new container's healthcheck passes, and fails `pulumi up` with the last
//      healthcheck output if it turns unhealthy, exits or is not healthy in time (the old one keeps serving).
//      Docker runs the first check only one interval after the start (the provider's API version has no
//      start interval), so while it reports "starting" the gate runs the same check command itself;
//   2. switch: runs the switch command in it (e.g. moves nginx's socket link to the new container's socket);
//   3. settle: waits while a proxy that resolves names by DNS picks up the new address.
//   4. drain: runs the drain command in the old container, if any, and waits (nginx/handover.ts).
// Only then does Pulumi delete the replaced container, which drains it (SIGTERM, in-flight requests finish,
// see destroyGraceSeconds in infra/workload.ts). Each step shows in `pulumi up` as this resource's update.
import * as pulumi from "@pulumi/pulumi";
import type * as docker from "@pulumi/docker";
import type Dockerode from "dockerode";
import { engineClient, execIn, stackEngine, unlessMissing, type EngineSettings } from "./engine";

/** As the healthcheck's own timeout (infra/workload.ts). */
const CHECK_TIMEOUT_MS = 3000;

export interface CutoverSpec {
  /** Whether the container has a healthcheck to gate on; without one, running is enough. */
  healthGate: boolean;
  /** Run in the new container once it is healthy, to switch traffic to it. */
  switchCommand?: string[];
  /** Seconds to wait after the switch before the old container may go. */
  settleS: number;
  /** Whether a replaced generation keeps serving while this one starts (side-by-side releases). */
  oldServes: boolean;
  timeoutS: number;
  /** Run in the replaced container once this one has taken over (nginx/handover.ts: stop listening). */
  drainCommand?: string[];
  /** Seconds to wait after the drain before the old container may go. */
  drainS: number;
}

interface CutoverInputs extends CutoverSpec {
  containerId: string;
  /** The engine the container runs on: the docker provider's settings. */
  engine: EngineSettings;
}

async function cutover(inputs: CutoverInputs): Promise<void> {
  const client = engineClient(inputs.engine);
  const container = client.getContainer(inputs.containerId);
  const deadline = Date.now() + inputs.timeoutS * 1000;
  for (;;) {
    const info = await container.inspect();
    const name = info.Name.replace(/^\//, "");
    const health = info.State.Health;
    // The last line of the last check's output: the error, without the traceback above it.
    const lastCheck = health?.Log?.at(-1)?.Output?.trim().split("\n").at(-1);
    const why = lastCheck ? ` (last healthcheck: ${lastCheck})` : "";
    // A release's failure leaves the old generation serving; a first start has none.
    const fail = (what: string) =>
      new Error(
        inputs.oldServes
          ? `release of ${name}: the new container ${what}${why}; the old one keeps serving`
          : `${name}: the container ${what}${why}`,
      );
    if (!info.State.Running || info.RestartCount > 0) throw fail(`stopped (exit code ${info.State.ExitCode})`);
    if (health?.Status === "unhealthy") throw fail("is unhealthy");
    if (!inputs.healthGate || health?.Status === "healthy") break;
    if (health?.Status === "starting" && (await passesCheck(container, info.Config.Healthcheck?.Test))) break;
    if (Date.now() > deadline) throw fail(`is not healthy after ${inputs.timeoutS} s`);
    await new Promise((r) => setTimeout(r, 250));
  }
  if (inputs.switchCommand) {
    const r = await execIn(container, inputs.switchCommand);
    if (r.exitCode !== 0) {
      throw new Error(
        `release: switching traffic to ${inputs.containerId.slice(0, 12)} failed (exit ${r.exitCode}): ${r.stderr.trim()}`,
      );
    }
  }
  await new Promise((r) => setTimeout(r, inputs.settleS * 1000));
}

/**
 * 4. drain: the old container (if it still runs) stops taking new work, and gets `drainS` to finish what it
 * has. A drain that fails fails `pulumi up` with both running: the next `up` deletes the old one.
 */
async function drain(inputs: CutoverInputs, oldId: string): Promise<void> {
  const old = engineClient(inputs.engine).getContainer(oldId);
  const running = (await unlessMissing(old.inspect()))?.State.Running ?? false;
  if (!running || !inputs.drainCommand) return;
  const r = await execIn(old, inputs.drainCommand);
  if (r.exitCode !== 0) {
    throw new Error(`release: draining the old container ${oldId.slice(0, 12)} failed (exit ${r.exitCode}): ${r.stderr.trim()}`);
  }
  await new Promise((r) => setTimeout(r, inputs.drainS * 1000));
}

/** Whether the container's own healthcheck command (["CMD", ...] or ["CMD-SHELL", "..."]) exits 0 now. */
async function passesCheck(container: Dockerode.Container, test: string[] | undefined): Promise<boolean> {
  const cmd = test?.[0] === "CMD" ? test.slice(1) : test?.[0] === "CMD-SHELL" ? ["/bin/sh", "-c", test[1]] : undefined;
  if (!cmd?.length) return false;
  const r = await execIn(container, cmd, undefined, CHECK_TIMEOUT_MS).catch(() => undefined);
  return r?.exitCode === 0;
}

const cutoverProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: CutoverInputs) {
    // No old container to wait for: settling is for replacements.
    await cutover({ ...inputs, settleS: 0 });
    return { id: inputs.containerId, outs: inputs };
  },
  async diff(_id: string, olds: CutoverInputs, news: CutoverInputs) {
    const changes =
      olds.containerId !== news.containerId || JSON.stringify(olds.switchCommand) !== JSON.stringify(news.switchCommand);
    return { changes };
  },
  async update(_id: string, olds: CutoverInputs, news: CutoverInputs) {
    await cutover(news);
    if (news.drainCommand && olds.containerId !== news.containerId) await drain(news, olds.containerId);
    return { outs: news };
  },
};

/** Gates on `container`'s health and switches traffic to it; runs again whenever the container is replaced. */
export class Cutover extends pulumi.dynamic.Resource {
  constructor(name: string, container: docker.Container, spec: CutoverSpec, opts: pulumi.CustomResourceOptions) {
    super(
      cutoverProvider,
      name,
      { containerId: container.id, engine: stackEngine(), ...spec },
      { ...opts, dependsOn: [container] },
    );
  }
}

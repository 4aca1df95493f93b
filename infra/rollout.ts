// Makes `pulumi up` wait until a swarm service's rolling update has finished. The provider's converge
// counts running tasks only, so it reports success while old tasks are still being replaced: the update
// went on for about half a minute after `pulumi up` returned, still serving the old version.
import * as crypto from "crypto";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { engineClient, stackEngine, type EngineSettings } from "./engine";

interface RolloutInputs {
  serviceId: string;
  /** A digest of the service's spec: the wait runs again whenever the spec changes. */
  specDigest: string;
  /** The swarm manager's engine: the docker provider's settings. */
  engine: EngineSettings;
  timeoutS: number;
}

/** Polls the engine until every task of the service runs the service's current spec. */
async function waitForRollout({ serviceId, engine, timeoutS }: RolloutInputs): Promise<void> {
  const client = engineClient(engine);
  const deadline = Date.now() + timeoutS * 1000;
  let last = "";
  for (;;) {
    const svc = await client.getService(serviceId).inspect();
    const name: string = svc.Spec?.Name ?? serviceId;
    const update = svc.UpdateStatus as { State?: string; Message?: string } | undefined;
    if (update?.State && ["rollback_started", "rollback_completed", "paused", "rollback_paused"].includes(update.State)) {
      throw new Error(`service ${name}: the rolling update ended in ${update.State}: ${update.Message ?? ""}`);
    }
    const want = svc.Spec?.Mode?.Replicated?.Replicas ?? 0;
    const spec = JSON.stringify(svc.Spec?.TaskTemplate?.ContainerSpec);
    const tasks = (await client.listTasks({
      filters: JSON.stringify({ service: [serviceId], "desired-state": ["running"] }),
    })) as { Status?: { State?: string }; Spec?: { ContainerSpec?: unknown } }[];
    const current = tasks.filter((t) => t.Status?.State === "running" && JSON.stringify(t.Spec?.ContainerSpec) === spec);
    if ((update?.State ?? "completed") === "completed" && tasks.length === want && current.length === want) return;
    last = `update ${update?.State ?? "none"}, ${current.length} of ${want} tasks on the current spec (${tasks.length} desired running)`;
    if (Date.now() > deadline) throw new Error(`service ${name}: rollout not finished after ${timeoutS} s: ${last}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const rolloutProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: RolloutInputs) {
    await waitForRollout(inputs);
    return { id: inputs.serviceId, outs: inputs };
  },
  async diff(_id: string, olds: RolloutInputs, news: RolloutInputs) {
    const changes = olds.serviceId !== news.serviceId || olds.specDigest !== news.specDigest;
    return { changes, replaces: olds.serviceId !== news.serviceId ? ["serviceId"] : [] };
  },
  async update(_id: string, _olds: RolloutInputs, news: RolloutInputs) {
    await waitForRollout(news);
    return { outs: news };
  },
};

/** Completes once `service`'s tasks all run its current spec; `pulumi up` fails if they do not in time. */
export class ServiceRollout extends pulumi.dynamic.Resource {
  constructor(name: string, service: docker.Service, timeoutS: number, opts: pulumi.CustomResourceOptions) {
    const specDigest = pulumi
      .all([service.taskSpec, service.mode])
      .apply((spec) => crypto.createHash("sha256").update(JSON.stringify(spec)).digest("hex"));
    super(
      rolloutProvider,
      name,
      {
        serviceId: service.id,
        // Only the digest is kept: the spec holds the app's secret key.
        specDigest: pulumi.unsecret(specDigest),
        engine: stackEngine(),
        timeoutS,
      },
      { ...opts, dependsOn: [service] },
    );
  }
}

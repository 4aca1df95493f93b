// Creates on a real Docker Engine, through its API, exactly the resources the program declared (as captured
// by runProgram under mocks). Every input of every resource must be mapped here: an input the realizer does
// not know fails the run, so nothing declared goes unchecked. Everything it creates carries LABEL.e2e and is
// removed by label afterwards.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { Readable } from "stream";
import Docker from "dockerode";
import dockerignore from "@balena/dockerignore";
import * as tar from "tar-stream";
import { LABEL } from "../../infra/naming";
import { ignoreMissing, ignoreNotFound, removeService } from "../../tools/engine-objects";
import type { Declared, ProgramRun } from "./program";

export class UnmappedInputError extends Error {}

/** Reads a resource's inputs, remembering which keys were used, so leftovers can be refused. */
class Inputs {
  private readonly used = new Set<string>();
  constructor(
    private readonly owner: string,
    private readonly values: Record<string, unknown>,
    private readonly at = "",
  ) {}

  get<T>(key: string): T | undefined {
    this.used.add(key);
    return this.values[key] as T | undefined;
  }
  /** Keys whose value has no effect on what is created (provider-side behaviour flags). */
  ignore(...keys: string[]): void {
    keys.forEach((k) => this.used.add(k));
  }
  nested(key: string): Inputs | undefined {
    const v = this.get<Record<string, unknown>>(key);
    return v === undefined ? undefined : new Inputs(this.owner, v, `${this.at}${key}.`);
  }
  list(key: string): Inputs[] {
    return (this.get<Record<string, unknown>[]>(key) ?? []).map((v, i) => new Inputs(this.owner, v, `${this.at}${key}[${i}].`));
  }
  /** Throws if any input key was never read. */
  done(): void {
    const left = Object.keys(this.values).filter((k) => !this.used.has(k) && this.values[k] !== undefined);
    if (left.length) {
      throw new UnmappedInputError(`realizer does not map input(s) ${left.map((k) => this.at + k).join(", ")} of ${this.owner}`);
    }
  }
}

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/;
function nanos(d: string | undefined): number | undefined {
  if (d === undefined) return undefined;
  const m = DURATION.exec(d);
  if (!m) throw new Error(`cannot read duration "${d}"`);
  const unit = { ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2] as "ms" | "s" | "m" | "h"];
  return Math.round(Number(m[1]) * unit);
}

export interface Realized {
  /** Container IDs by declared resource name. */
  containers: Map<string, string>;
  networks: Map<string, string>;
  volumes: Map<string, string>;
  services: Map<string, string>;
  /** Every image ID the realizer built (rebuilds included), removed on destroy. */
  built: Set<string>;
}

export class Realizer {
  readonly realized: Realized = {
    containers: new Map(),
    networks: new Map(),
    volumes: new Map(),
    services: new Map(),
    built: new Set(),
  };
  /** Mock output value → real value (image IDs), for inputs that reference other resources. */
  private readonly refs = new Map<string, string>();
  private readonly createOptions = new Map<string, Docker.ContainerCreateOptions>();
  private readonly waits = new Map<string, number>();

  constructor(
    readonly docker: Docker,
    public run: ProgramRun,
    private readonly log: (m: string) => void = () => undefined,
  ) {}

  /** Resources in an order that honours explicit dependsOn and references between inputs. */
  order(): Declared[] {
    const custom = this.run.resources.filter((r) => r.custom);
    const producers = new Map<string, string>();
    for (const r of custom) {
      for (const key of ["repoDigest", "imageId", "result"]) {
        const v = r.outputs[key];
        if (typeof v === "string") producers.set(v, r.name);
      }
      if (r.type === "docker:index/network:Network" || r.type === "docker:index/volume:Volume")
        producers.set(String(r.inputs.name), r.name);
    }
    const deps = new Map<string, Set<string>>();
    for (const r of custom) {
      const d = new Set(r.dependsOn);
      walkStrings(r.inputs, (s) => {
        for (const [value, p] of producers) if (p !== r.name && s.includes(value)) d.add(p);
      });
      deps.set(r.name, d);
    }
    const out: Declared[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (r: Declared) => {
      if (state.get(r.name) === "done") return;
      if (state.get(r.name) === "visiting") throw new Error(`dependency cycle at ${r.name}`);
      state.set(r.name, "visiting");
      for (const d of deps.get(r.name) ?? []) {
        const dep = custom.find((c) => c.name === d);
        if (!dep) throw new Error(`${r.name} depends on ${d}, which was not declared`);
        visit(dep);
      }
      state.set(r.name, "done");
      out.push(r);
    };
    custom.forEach(visit);
    return out;
  }

  async up(): Promise<Realized> {
    for (const r of this.order()) {
      this.log(`create ${r.type} ${r.name}`);
      try {
        await this.create(r);
      } catch (e) {
        // Name the resource: errors from the Docker API (EPIPE, 409, …) do not say which call failed.
        if (e instanceof Error && !(e instanceof UnmappedInputError)) e.message = `creating ${r.type} "${r.name}": ${e.message}`;
        throw e;
      }
    }
    return this.realized;
  }

  private async create(r: Declared): Promise<void> {
    const inputs = new Inputs(`${r.type} "${r.name}"`, this.resolve(r.inputs) as Record<string, unknown>);
    switch (r.type) {
      case "docker:index/network:Network":
        return this.createNetwork(r, inputs);
      case "docker:index/volume:Volume":
        return this.createVolume(r, inputs);
      case "docker:index/remoteImage:RemoteImage":
        return this.ensureRemoteImage(r, inputs);
      case "docker:index/image:Image":
        return this.buildImage(r, inputs);
      case "docker:index/container:Container":
        return this.createContainer(r, inputs);
      case "random:index/randomPassword:RandomPassword":
        return this.generatePassword(r, inputs);
      case "docker:index/service:Service":
        return this.createService(r, inputs);
      default:
        throw new UnmappedInputError(`realizer does not map resource type ${r.type} ("${r.name}")`);
    }
  }

  private resolve(v: unknown): unknown {
    if (typeof v === "string") {
      let out = v;
      for (const [mock, real] of this.refs) if (out.includes(mock)) out = out.split(mock).join(real);
      return out;
    }
    if (Array.isArray(v)) return v.map((x) => this.resolve(x));
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, this.resolve(x)]));
    return v;
  }

  /** What the random provider does: a fresh value, known only to the resources that reference it. */
  private generatePassword(r: Declared, i: Inputs): void {
    const length = i.get<number>("length") ?? 16;
    const special = i.get<boolean>("special");
    i.done();
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + (special ? "!#$%&*()-_=+[]{}<>:?" : "");
    const bytes = crypto.randomBytes(length);
    const value = Array.from(bytes, (b) => alphabet[b % alphabet.length]).join("");
    this.refs.set(String(r.outputs.result), value);
  }

  private async createNetwork(r: Declared, i: Inputs): Promise<void> {
    const name = i.get<string>("name") ?? r.name;
    const labels = labelMap(i.get("labels"));
    const ipam = i.list("ipamConfigs").map((c) => {
      const cfg = { Subnet: c.get<string>("subnet"), Gateway: c.get<string>("gateway"), IPRange: c.get<string>("ipRange") };
      c.done();
      return cfg;
    });
    const driver = i.get<string>("driver");
    const attachable = i.get<boolean>("attachable");
    i.done();
    const net = await this.docker.createNetwork({
      Name: name,
      CheckDuplicate: true,
      Driver: driver ?? "bridge",
      Attachable: attachable,
      Labels: { ...labels, [LABEL.e2e]: "true" },
      IPAM: ipam.length ? { Driver: "default", Config: ipam } : undefined,
    });
    this.realized.networks.set(r.name, net.id);
  }

  private async createVolume(r: Declared, i: Inputs): Promise<void> {
    const name = i.get<string>("name") ?? r.name;
    const labels = labelMap(i.get("labels"));
    i.done();
    await this.docker.createVolume({ Name: name, Labels: { ...labels, [LABEL.e2e]: "true" } });
    this.realized.volumes.set(r.name, name);
  }

  private async ensureRemoteImage(r: Declared, i: Inputs): Promise<void> {
    const name = i.get<string>("name");
    // keepLocally only decides whether destroy removes the image; the realizer never removes base images.
    i.ignore("keepLocally");
    i.done();
    if (!name) throw new Error(`${r.name}: no image name`);
    let info: Docker.ImageInspectInfo;
    try {
      info = await this.docker.getImage(name).inspect();
    } catch {
      throw new Error(`image ${name} is not on the engine and no registry is reachable: run scripts/build-standins.sh ${name}`);
    }
    this.refs.set(String(r.outputs.imageId), info.Id);
    this.refs.set(String(r.outputs.repoDigest), info.Id);
  }

  private async buildImage(r: Declared, i: Inputs): Promise<void> {
    const imageName = i.get<string>("imageName");
    const skipPush = i.get<boolean>("skipPush");
    // Preview-time behaviour only.
    i.ignore("buildOnPreview");
    const b = i.nested("build");
    if (!imageName || !b) throw new Error(`${r.name}: imageName and build are required`);
    if (skipPush !== true) throw new Error(`${r.name}: would push to a registry; the realizer only builds locally`);
    const context = b.get<string>("context");
    const dockerfile = b.get<string>("dockerfile") ?? "Dockerfile";
    const args = b.get<Record<string, string>>("args") ?? {};
    const platform = b.get<string>("platform");
    const target = b.get<string>("target");
    b.done();
    i.done();
    if (!context) throw new Error(`${r.name}: no build context`);
    const stream = await this.docker.buildImage(contextTar(context, contextFiles(context, dockerfile)), {
      t: imageName,
      dockerfile: path.relative(context, path.resolve(context, dockerfile)),
      buildargs: args,
      platform,
      target,
      labels: { [LABEL.e2e]: "true" },
      rm: true,
      forcerm: true,
    });
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(stream, (err: Error | null, events: { error?: string }[]) => {
        const failed = err?.message ?? events.find((e) => e.error)?.error;
        if (failed) reject(new Error(`building ${imageName} from ${context} failed: ${failed}`));
        else resolve();
      });
    });
    const info = await this.docker.getImage(imageName).inspect();
    this.refs.set(String(r.outputs.repoDigest), info.Id);
    this.realized.built.add(info.Id);
  }

  private containerOptions(r: Declared, i: Inputs): Docker.ContainerCreateOptions {
    const name = i.get<string>("name") ?? r.name;
    const image = i.get<string>("image");
    if (!image) throw new Error(`${r.name}: no image`);

    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostIp?: string; HostPort?: string }[]> = {};
    for (const p of i.list("ports")) {
      const key = `${p.get<number>("internal")}/${p.get<string>("protocol") ?? "tcp"}`;
      const external = p.get<number>("external");
      const ip = p.get<string>("ip");
      p.done();
      exposed[key] = {};
      (bindings[key] ??= []).push({ HostIp: ip ?? "0.0.0.0", HostPort: external === undefined ? "" : String(external) });
    }

    const networks = i.list("networksAdvanced").map((n) => {
      const net = {
        name: n.get<string>("name") ?? "",
        endpoint: {
          Aliases: n.get<string[]>("aliases"),
          IPAMConfig: n.get<string>("ipv4Address") ? { IPv4Address: n.get<string>("ipv4Address") } : undefined,
        },
      };
      n.done();
      return net;
    });
    if (networks.length > 1) throw new UnmappedInputError(`${r.name}: more than one network is not mapped`);

    const binds = i.list("volumes").map((v) => {
      const source = v.get<string>("hostPath") ?? v.get<string>("volumeName");
      const target = v.get<string>("containerPath");
      const ro = v.get<boolean>("readOnly");
      v.done();
      if (!source || !target) throw new Error(`${r.name}: volume needs a source and a containerPath`);
      return `${source}:${target}${ro ? ":ro" : ""}`;
    });

    const hc = i.nested("healthcheck");
    const healthcheck = hc
      ? {
          Test: hc.get<string[]>("tests"),
          Interval: nanos(hc.get("interval")),
          Timeout: nanos(hc.get("timeout")),
          Retries: hc.get<number>("retries"),
          StartPeriod: nanos(hc.get("startPeriod")),
        }
      : undefined;
    hc?.done();

    const caps = i.nested("capabilities");
    const capAdd = caps?.get<string[]>("adds");
    const capDrop = caps?.get<string[]>("drops");
    caps?.done();

    const ulimits = i.list("ulimits").map((u) => {
      const l = { Name: u.get<string>("name") ?? "", Soft: u.get<number>("soft") ?? 0, Hard: u.get<number>("hard") ?? 0 };
      u.done();
      return l;
    });

    const memoryMb = i.get<number>("memory");
    const cpus = i.get<string>("cpus");
    const restart = i.get<string>("restart");
    const wait = i.get<boolean>("wait");
    const waitTimeout = i.get<number>("waitTimeout");
    if (wait) this.waits.set(r.name, waitTimeout ?? 60);
    const logDriver = i.get<string>("logDriver");
    const logOpts = i.get<Record<string, string>>("logOpts");

    const opts: Docker.ContainerCreateOptions = {
      name,
      Image: image,
      Cmd: i.get<string[]>("command"),
      Entrypoint: i.get<string[]>("entrypoints"),
      Env: i.get<string[]>("envs"),
      User: i.get<string>("user"),
      Labels: { ...labelMap(i.get("labels")), [LABEL.e2e]: "true" },
      ExposedPorts: exposed,
      HostConfig: {
        PortBindings: bindings,
        Binds: binds,
        NetworkMode: networks[0]?.name,
        RestartPolicy: { Name: restart ?? "no", MaximumRetryCount: i.get<number>("maxRetryCount") },
        Memory: memoryMb === undefined ? undefined : memoryMb * 1024 * 1024,
        NanoCpus: cpus === undefined ? undefined : Math.round(Number(cpus) * 1e9),
        ReadonlyRootfs: i.get<boolean>("readOnly"),
        SecurityOpt: i.get<string[]>("securityOpts"),
        CapAdd: capAdd,
        CapDrop: capDrop,
        Tmpfs: i.get<Record<string, string>>("tmpfs"),
        Ulimits: ulimits.length ? ulimits : undefined,
        Privileged: i.get<boolean>("privileged"),
        LogConfig: logDriver ? { Type: logDriver, Config: logOpts ?? {} } : undefined,
      },
      Healthcheck: healthcheck,
      NetworkingConfig: networks[0] ? { EndpointsConfig: { [networks[0].name]: networks[0].endpoint } } : undefined,
    };
    i.done();
    return opts;
  }

  private async createContainer(r: Declared, i: Inputs): Promise<void> {
    const opts = this.containerOptions(r, i);
    this.createOptions.set(r.name, opts);
    await this.startContainer(r.name);
  }

  /** Creates and starts a declared container from its mapped options; waits for health when declared. */
  async startContainer(name: string): Promise<string> {
    const opts = this.createOptions.get(name);
    if (!opts) throw new Error(`container ${name} was not realized`);
    const c = await this.docker.createContainer(opts);
    this.realized.containers.set(name, c.id);
    await c.start();
    const waitFor = this.waits.get(name);
    if (waitFor !== undefined) await waitHealthy(c, waitFor);
    return c.id;
  }

  /** Removes a declared container and creates it again from the same declaration (a redeploy or reschedule). */
  async recreate(name: string): Promise<string> {
    const id = this.realized.containers.get(name);
    if (id) await this.docker.getContainer(id).remove({ force: true, v: true });
    return this.startContainer(name);
  }

  container(name: string): Docker.Container {
    const id = this.realized.containers.get(name);
    if (!id) throw new Error(`container ${name} was not realized`);
    return this.docker.getContainer(id);
  }

  /** The destroy step: containers, then networks and volumes, then the images it built (reverse creation order). */
  async destroy(): Promise<void> {
    for (const id of [...this.realized.services.values()].reverse()) await removeService(this.docker, id);
    for (const id of [...this.realized.containers.values()].reverse()) {
      await this.docker.getContainer(id).remove({ force: true, v: true }).catch(ignoreMissing);
    }
    for (const id of this.realized.networks.values()) await this.docker.getNetwork(id).remove().catch(ignoreMissing);
    // A volume still in use (409) means a container was left behind: that fails the destroy.
    for (const name of this.realized.volumes.values()) await this.docker.getVolume(name).remove().catch(ignoreNotFound);
    for (const id of this.realized.built) await this.docker.getImage(id).remove({ force: true }).catch(ignoreMissing);
    for (const m of [this.realized.services, this.realized.containers, this.realized.networks, this.realized.volumes]) m.clear();
    this.realized.built.clear();
  }

  /**
   * A second `pulumi up`: realizes `next` (the program run again with changed config) against what exists.
   * Unchanged resources stay; images are rebuilt, services updated in place (rolling), containers replaced.
   */
  async update(next: ProgramRun): Promise<void> {
    const before = new Map(this.run.resources.map((r) => [r.name, r]));
    this.run = next;
    for (const r of this.order()) {
      const old = before.get(r.name);
      before.delete(r.name);
      if (old && JSON.stringify(old.inputs) === JSON.stringify(r.inputs)) continue;
      this.log(`${old ? "update" : "create"} ${r.type} ${r.name}`);
      if (!old || r.type === "docker:index/image:Image") {
        await this.create(r);
      } else if (r.type === "docker:index/service:Service") {
        await this.updateService(r, new Inputs(`${r.type} "${r.name}"`, this.resolve(r.inputs) as Record<string, unknown>));
      } else if (r.type === "docker:index/container:Container") {
        await this.docker
          .getContainer(this.realized.containers.get(r.name) ?? r.name)
          .remove({ force: true, v: true })
          .catch(ignoreMissing);
        await this.create(r);
      } else {
        throw new UnmappedInputError(`realizer cannot update ${r.type} "${r.name}" in place`);
      }
    }
    for (const gone of before.values()) {
      if (!gone.custom) continue;
      throw new UnmappedInputError(`realizer cannot delete ${gone.type} "${gone.name}" during an update`);
    }
  }

  service(name: string): Docker.Service {
    const id = this.realized.services.get(name);
    if (!id) throw new Error(`service ${name} was not realized`);
    return this.docker.getService(id);
  }

  private serviceSpec(
    r: Declared,
    i: Inputs,
  ): { spec: Docker.CreateServiceOptions; converge?: number; image: string; replicas: number } {
    const ts = i.nested("taskSpec");
    const cs = ts?.nested("containerSpec");
    if (!ts || !cs) throw new Error(`${r.name}: taskSpec.containerSpec is required`);
    const hc = cs.nested("healthcheck");
    const health = hc
      ? {
          Test: hc.get<string[]>("tests"),
          Interval: nanos(hc.get("interval")),
          Timeout: nanos(hc.get("timeout")),
          Retries: hc.get<number>("retries"),
          StartPeriod: nanos(hc.get("startPeriod")),
        }
      : undefined;
    hc?.done();
    const mounts = cs.list("mounts").map((m) => {
      const tmpfs = m.nested("tmpfsOptions");
      const mount = {
        Type: m.get<"bind" | "tmpfs" | "volume">("type") ?? "volume",
        Source: m.get<string>("source") ?? "",
        Target: m.get<string>("target") ?? "",
        ReadOnly: m.get<boolean>("readOnly"),
        // Docker's defaults where unset: no size limit, mode 1777.
        TmpfsOptions: tmpfs
          ? { SizeBytes: tmpfs.get<number>("sizeBytes") ?? 0, Mode: tmpfs.get<number>("mode") ?? 0o1777 }
          : undefined,
      };
      tmpfs?.done();
      m.done();
      return mount;
    });
    const env = cs.get<Record<string, string>>("env") ?? {};
    const containerSpec: Docker.ContainerSpec = {
      Image: cs.get<string>("image"),
      Args: cs.get<string[]>("args"),
      Command: cs.get<string[]>("commands"),
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      User: cs.get<string>("user"),
      Labels: { ...labelMap(cs.get("labels")), [LABEL.e2e]: "true" },
      ReadOnly: cs.get<boolean>("readOnly"),
      CapabilityAdd: cs.get<string[]>("capAdds"),
      CapabilityDrop: cs.get<string[]>("capDrops"),
      Mounts: mounts,
      HealthCheck: health,
      StopGracePeriod: nanos(cs.get("stopGracePeriod")),
    };
    cs.done();
    const networks = ts.list("networksAdvanceds").map((n) => {
      const net = { Target: n.get<string>("name") ?? "", Aliases: n.get<string[]>("aliases") };
      n.done();
      return net;
    });
    const res = ts.nested("resources");
    const lim = res?.nested("limits");
    const limits = lim ? { MemoryBytes: lim.get<number>("memoryBytes"), NanoCPUs: lim.get<number>("nanoCpus") } : undefined;
    lim?.done();
    res?.done();
    const rp = ts.nested("restartPolicy");
    const restart = rp
      ? {
          Condition: rp.get<string>("condition"),
          Delay: nanos(rp.get("delay")),
          MaxAttempts: rp.get<number>("maxAttempts"),
          Window: nanos(rp.get("window")),
        }
      : undefined;
    rp?.done();
    const ld = ts.nested("logDriver");
    const logDriver = ld
      ? { Name: ld.get<string>("name") ?? "json-file", Options: ld.get<Record<string, string>>("options") }
      : undefined;
    ld?.done();
    ts.done();

    const mode = i.nested("mode");
    const replicated = mode?.nested("replicated");
    const replicas = replicated?.get<number>("replicas") ?? 1;
    replicated?.done();
    mode?.done();
    const rolling = (key: string) => {
      const u = i.nested(key);
      if (!u) return undefined;
      const cfg = {
        Parallelism: u.get<number>("parallelism") ?? 1,
        Delay: nanos(u.get("delay")),
        FailureAction: u.get<string>("failureAction"),
        Monitor: nanos(u.get("monitor")),
        Order: u.get<string>("order") ?? "stop-first",
        MaxFailureRatio: u.get<string>("maxFailureRatio") === undefined ? undefined : Number(u.get<string>("maxFailureRatio")),
      };
      u.done();
      return cfg;
    };
    const es = i.nested("endpointSpec");
    const endpoint = es
      ? {
          Mode: es.get<string>("mode"),
          Ports: es.list("ports").map((p) => {
            const port = {
              TargetPort: p.get<number>("targetPort"),
              PublishedPort: p.get<number>("publishedPort"),
              PublishMode: p.get<"host" | "ingress">("publishMode"),
              Protocol: p.get<"tcp" | "udp">("protocol"),
            };
            p.done();
            return port;
          }),
        }
      : undefined;
    es?.done();
    const cc = i.nested("convergeConfig");
    const converge = cc ? (nanos(cc.get("timeout")) ?? 180e9) / 1e9 : undefined;
    cc?.ignore("delay"); // the provider's polling interval
    cc?.done();
    const spec: Docker.CreateServiceOptions = {
      Name: i.get<string>("name") ?? r.name,
      Labels: { ...labelMap(i.get("labels")), [LABEL.e2e]: "true" },
      TaskTemplate: {
        ContainerSpec: containerSpec,
        Networks: networks,
        Resources: { Limits: limits },
        RestartPolicy: restart,
        LogDriver: logDriver,
      },
      Mode: { Replicated: { Replicas: replicas } },
      UpdateConfig: rolling("updateConfig"),
      RollbackConfig: rolling("rollbackConfig"),
      EndpointSpec: endpoint,
    };
    i.done();
    return { spec, converge, image: containerSpec.Image ?? "", replicas };
  }

  private async createService(r: Declared, i: Inputs): Promise<void> {
    const { spec, converge, image, replicas } = this.serviceSpec(r, i);
    const svc = await this.docker.createService(spec);
    this.realized.services.set(r.name, svc.id);
    await waitConverged(this.docker, svc.id, replicas, image, converge ?? 120);
  }

  private async updateService(r: Declared, i: Inputs): Promise<void> {
    const { spec, converge, image, replicas } = this.serviceSpec(r, i);
    const svc = this.service(r.name);
    const info = await svc.inspect();
    await svc.update({ ...spec, version: info.Version.Index });
    await waitConverged(this.docker, svc.id, replicas, image, converge ?? 180);
  }
}

/**
 * Waits until a service runs exactly `replicas` tasks, all of the current spec's image (so a rolling update
 * has finished; tasks of a healthchecked service only count as running once healthy), and no update or
 * rollback is in progress.
 */
async function waitConverged(docker: Docker, id: string, replicas: number, image: string, timeoutS: number): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const info = await docker.getService(id).inspect();
    const update = (info as { UpdateStatus?: { State?: string; Message?: string } }).UpdateStatus;
    if (update?.State && /rollback|paused/.test(update.State))
      throw new Error(`service ${info.Spec.Name}: update ${update.State}: ${update.Message}`);
    type Task = { Status?: { State?: string }; Spec?: { ContainerSpec?: { Image?: string } } };
    const tasks = (await docker.listTasks({
      filters: JSON.stringify({ service: [id], "desired-state": ["running"] }),
    })) as Task[];
    const current = tasks.filter((t) => t.Status?.State === "running" && (t.Spec?.ContainerSpec?.Image ?? "").startsWith(image));
    if (current.length === replicas && tasks.length === replicas && update?.State !== "updating") return;
    if (Date.now() > deadline) {
      throw new Error(
        `service ${info.Spec.Name} not converged after ${timeoutS} s: ${current.length}/${replicas} current tasks running, update ${update?.State}`,
      );
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function waitHealthy(c: Docker.Container, timeoutS: number): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  for (;;) {
    const info = await c.inspect();
    const status = info.State.Health?.Status;
    if (status === "healthy") return;
    if (!info.State.Running && info.State.Restarting === false) {
      throw new Error(`container ${info.Name} exited (code ${info.State.ExitCode}) while waiting for it to become healthy`);
    }
    if (Date.now() > deadline) throw new Error(`container ${info.Name} not healthy after ${timeoutS} s (status ${status})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function labelMap(list: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of (list as { label: string; value: string }[] | undefined) ?? []) out[l.label] = l.value;
  return out;
}

function walkStrings(v: unknown, f: (s: string) => void): void {
  if (typeof v === "string") f(v);
  else if (Array.isArray(v)) v.forEach((x) => walkStrings(x, f));
  else if (v && typeof v === "object") Object.values(v).forEach((x) => walkStrings(x, f));
}

/**
 * Files of a build context, minus what its .dockerignore excludes: what `docker build` sends, which always
 * includes the Dockerfile and .dockerignore themselves.
 */
function contextFiles(context: string, dockerfile: string): string[] {
  const all: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(context, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else all.push(rel);
    }
  };
  walk("");
  const ignoreFile = path.join(context, ".dockerignore");
  if (!fs.existsSync(ignoreFile)) return all;
  const ig = dockerignore().add(
    fs
      .readFileSync(ignoreFile, "utf8")
      .split("\n")
      .filter((l) => l.trim() && !l.startsWith("#")),
  );
  const always = [path.relative(context, path.resolve(context, dockerfile)), ".dockerignore"];
  return [...new Set([...ig.filter(all), ...always])];
}

/** A tar stream of the given context files (dockerode's own packing would drop an ignored Dockerfile). */
function contextTar(context: string, files: string[]): NodeJS.ReadableStream {
  const pack = tar.pack();
  for (const f of files) {
    const full = path.join(context, f);
    pack.entry({ name: f, mode: fs.statSync(full).mode }, fs.readFileSync(full));
  }
  pack.finalize();
  return Readable.from(pack as AsyncIterable<Buffer>);
}

// A stack brought up by the real `pulumi` CLI and providers (Automation API), for the live tests and the
// bench. Nothing here creates a Docker object itself: every container, network, volume and image comes from
// `pulumi up`, and goes with `pulumi destroy`. Where the toolchain is missing, `pulumiCli()` fails with the
// reason `npm run setup:pulumi` gives.
import { spawn, spawnSync, type ChildProcess } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import Docker from "dockerode";
import {
  LocalWorkspace,
  PulumiCommand,
  type EngineEvent,
  type LocalWorkspaceOptions,
  type Stack,
} from "@pulumi/pulumi/automation";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { engineClient, stackEngineSettings, type EngineSettings } from "../infra/engine";
import { removeObject, unknownToState, type EngineObject, type StateResource } from "../infra/engine-objects";
import { projectFile, ROOT } from "../infra/stack-files";

/**
 * The local engine (DOCKER_HOST or the local socket): where the tests' own stand-ins are. A stack's objects are
 * on the engine its docker provider settings name: see LiveStack.engine.
 */
export const docker = engineClient();

const PULUMI_HOME = process.env.PULUMI_HOME ?? path.join(os.homedir(), ".pulumi");

/** Prefix of the temporary folders holding a live stack's project copy and state. */
const WORK_PREFIX = "flask-proxy-live-";

let cli: Promise<PulumiCommand> | undefined;

/** The real CLI, once setup-pulumi.sh reports the whole toolchain ready; otherwise an error saying why not. */
export function pulumiCli(): Promise<PulumiCommand> {
  cli ??= (async () => {
    const setup = spawnSync("bash", [path.join(ROOT, "scripts", "setup-pulumi.sh")], { encoding: "utf8", timeout: 120_000 });
    if (setup.status !== 0) {
      const why = (setup.stderr ?? "").split("\n").filter((l) => /ERROR|^\[setup-pulumi\] {3}- /.test(l));
      throw new Error(
        "no live test runs without the real Pulumi toolchain, and `npm run setup:pulumi` could not provide it:\n" +
          (why.join("\n") || `setup-pulumi.sh ${setup.error ? setup.error.message : `exited ${setup.status}`}`),
      );
    }
    return PulumiCommand.get({ root: PULUMI_HOME });
  })();
  return cli;
}

/**
 * The CLI, its state in the stack's own folder, and nothing asked of the network. PULUMI_BACKEND_URL ranks
 * above Pulumi.yaml's `backend.url` (tests/e2e/backend.test.ts shows it), so the pin does not apply here.
 */
function workspaceOptions(pulumi: PulumiCommand, workDir: string): LocalWorkspaceOptions {
  return {
    pulumiCommand: pulumi,
    envVars: {
      PULUMI_BACKEND_URL: `file://${path.join(workDir, "state")}`,
      PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "flask-proxy-live-tests",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      // A plugin that is not installed fails the run instead of a download attempt.
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
    },
  };
}

/** One step of a preview, in the order the engine announced it. */
export interface PreviewStep {
  name: string;
  op: string;
  diffs: string[];
}

/** How a `pulumi up` run as its own process ended (see LiveStack.interruptedUp). */
export interface InterruptedUp {
  code: number | null;
  output: string;
}

export interface UpOptions {
  /** Config values set on the stack first, without the `flask-proxy:` namespace. */
  config?: Record<string, string>;
  /** Resources (by name) `pulumi up --replace` replaces even when unchanged. */
  replace?: string[];
  /** `pulumi up --refresh`: read the engine's objects first. */
  refresh?: boolean;
}

/** E2E_VERBOSE=1 streams the CLI's output; otherwise it shows only in the error of a step that failed. */
const verbose = (tag: string) => (process.env.E2E_VERBOSE ? (s: string) => process.stdout.write(`[${tag}] ${s}`) : undefined);

export class LiveStack {
  outputs: Record<string, unknown> = {};
  private state = new Map<string, StateResource>();
  /** The engine of the stack's docker provider settings, read from its config once (see engine()). */
  private cachedEngine?: Docker;
  /** Destroyed (or found without its state folder and swept): nothing more to do. */
  private destroyed = false;

  private constructor(
    /** The Pulumi stack name, which also scopes its Docker objects' names. */
    readonly name: string,
    private readonly stack: Stack,
    private readonly workDir: string,
  ) {}

  /**
   * A new stack in a private copy of the project (the CLI writes its encryption salt into the stack file)
   * with its state in a temporary `file://` backend, so nothing of the user's Pulumi setup is touched.
   */
  static async create(file: string, name = file): Promise<LiveStack> {
    const pulumi = await pulumiCli();
    const workDir = fs.mkdtempSync(path.join(os.tmpdir(), WORK_PREFIX));
    const project = path.join(workDir, "project");
    fs.cpSync(ROOT, project, {
      recursive: true,
      filter: (src) => !/\/(node_modules|\.git|coverage|bench\/out)(\/|$)/.test(src.slice(ROOT.length)),
    });
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(project, "node_modules"));
    if (name !== file) fs.copyFileSync(path.join(project, `Pulumi.${file}.yaml`), path.join(project, `Pulumi.${name}.yaml`));
    fs.mkdirSync(path.join(workDir, "state"));
    const stack = await LocalWorkspace.createStack({ stackName: name, workDir: project }, workspaceOptions(pulumi, workDir));
    return new LiveStack(name, stack, workDir);
  }

  /** Stacks an interrupted run left behind (their temporary folders still exist), to destroy them. */
  static async leftBehind(): Promise<LiveStack[]> {
    const dirs = fs
      .readdirSync(os.tmpdir())
      .filter((d) => d.startsWith(WORK_PREFIX))
      .map((d) => path.join(os.tmpdir(), d));
    if (dirs.length === 0) return [];
    const pulumi = await pulumiCli();
    const found: LiveStack[] = [];
    for (const workDir of dirs) {
      const project = path.join(workDir, "project");
      // A folder is removed only when its state answers and holds no stack: one that cannot be read is kept
      // (and named), since its stack may still own objects on the engine.
      let names: string[];
      try {
        const ws = await LocalWorkspace.create({ workDir: project, ...workspaceOptions(pulumi, workDir) });
        names = (await ws.listStacks()).map((s) => s.name);
      } catch (e) {
        console.error(`[cleanup] ${workDir}: its stacks cannot be listed, so it is kept: ${(e as Error).message}`);
        continue;
      }
      if (names.length === 0) fs.rmSync(workDir, { recursive: true, force: true });
      for (const name of names) {
        const stack = await LocalWorkspace.selectStack({ stackName: name, workDir: project }, workspaceOptions(pulumi, workDir));
        found.push(new LiveStack(name, stack, workDir));
      }
    }
    return found;
  }

  /**
   * Sets the docker provider's settings on the stack (docker:host, …; the key material as a secret), as a user
   * does with `pulumi config set [--secret] [--path]`.
   */
  async configureEngine(settings: EngineSettings): Promise<void> {
    const { sshOpts, ...rest } = settings;
    const values = Object.entries(rest).flatMap(([k, value]) =>
      value === undefined ? [] : [[`docker:${k}`, { value, secret: k.endsWith("Material") }] as const],
    );
    const opts = (sshOpts ?? []).map((value, i) => [`docker:sshOpts[${i}]`, { value }] as const);
    await this.stack.setAllConfig(Object.fromEntries([...values, ...opts]), true);
    this.cachedEngine = undefined;
  }

  /** The engine the stack's objects are on: the one its docker provider settings name, as `recover` reads them. */
  async engine(): Promise<Docker> {
    this.cachedEngine ??= engineClient(await stackEngineSettings(this.stack));
    return this.cachedEngine;
  }

  /** Sets config values (without the `flask-proxy:` namespace) on the stack. */
  async configure(config: Record<string, string>): Promise<void> {
    const ns = projectFile().name;
    const entries = Object.entries(config).map(([k, value]) => [`${ns}:${k}`, { value }]);
    if (entries.length) await this.stack.setAllConfig(Object.fromEntries(entries));
  }

  /** Sets config values as secrets (encrypted in the stack file), as `pulumi config set --secret` does. */
  async configureSecrets(config: Record<string, string>): Promise<void> {
    const ns = projectFile().name;
    const entries = Object.entries(config).map(([k, value]) => [`${ns}:${k}`, { value, secret: true }]);
    if (entries.length) await this.stack.setAllConfig(Object.fromEntries(entries));
  }

  private urns(names: string[]): string[] {
    return names.map((n) => this.resource(n).urn);
  }

  /**
   * `pulumi preview` (with the project's policy pack, or `--refresh`, if asked); returns what it would change
   * (see `changes`).
   */
  async preview(opts: { config?: Record<string, string>; policyPack?: boolean; refresh?: boolean } = {}): Promise<string[]> {
    await this.configure(opts.config ?? {});
    const events: EngineEvent[] = [];
    await this.stack.preview({
      policyPacks: opts.policyPack ? [path.join(this.stack.workspace.workDir, "policy")] : undefined,
      refresh: opts.refresh,
      onEvent: (e) => events.push(e),
      onOutput: verbose(`${this.name} preview`),
    });
    return changes(events);
  }

  /** `pulumi up`; then reads the stack's outputs and state. */
  async up(opts: UpOptions = {}): Promise<void> {
    await this.configure(opts.config ?? {});
    const result = await this.stack.up({
      replace: opts.replace ? this.urns(opts.replace) : undefined,
      refresh: opts.refresh,
      onOutput: verbose(`${this.name} up`),
    });
    this.outputs = Object.fromEntries(Object.entries(result.outputs).map(([k, o]) => [k, o.value]));
    await this.readState();
  }

  /** The state as `pulumi stack export` gives it; resources by name (replaced ones awaiting delete aside). */
  async readState(): Promise<StateResource[]> {
    const exported = (await this.stack.exportStack()).deployment as { resources?: StateResource[] };
    const resources = exported.resources ?? [];
    this.state = new Map(resources.filter((r) => !r.delete).map((r) => [nameOf(r.urn), r]));
    await this.engine();
    return resources;
  }

  /** The CLI's environment for this stack, for commands run outside the Automation API (`npm run recover`). */
  async cliEnv(): Promise<NodeJS.ProcessEnv> {
    const pulumi = await pulumiCli();
    return {
      ...process.env,
      ...workspaceOptions(pulumi, this.workDir).envVars,
      PATH: `${path.dirname(pulumi.command)}:${process.env.PATH ?? ""}`,
    };
  }

  /** The stack's copy of the project. */
  get projectDir(): string {
    return this.stack.workspace.workDir;
  }

  /**
   * `pulumi up` as a process of its own (as a user runs it), sent `signal` `delayMs` after its output matches
   * `at`, and awaited until it exits (and 5 s more, while its plugins finish). The CLI alone gets the signal,
   * as from `kill`.
   */
  async interruptedUp(
    config: Record<string, string>,
    at: RegExp,
    signal: NodeJS.Signals,
    delayMs = 0,
    timeoutMs = 240_000,
  ): Promise<InterruptedUp> {
    await this.configure(config);
    let signalled = false;
    // Its own process group, so that the plugins it leaves running can be ended afterwards.
    const { code, output, pid } = await this.spawnCli(["up", "--yes", "--skip-preview"], timeoutMs, {
      detached: true,
      watch: (soFar, child) => {
        if (!signalled && at.test(soFar)) {
          signalled = true;
          setTimeout(() => child.kill(signal), delayMs);
        }
      },
    });
    // The plugins outlive a killed CLI and finish the call they were in (so objects appear that the state does
    // not know, as for a user); then they are ended, as the test's own processes.
    await new Promise((r) => setTimeout(r, 5000));
    try {
      if (pid) process.kill(-pid, "SIGKILL");
    } catch {
      // the group is gone already
    }
    if (!signalled) throw new Error(`pulumi up exited ${code} before its output matched ${at}:\n${output.slice(-4000)}`);
    return { code, output };
  }

  /**
   * The CLI run as a user runs it (`pulumi <args> --stack <name>` in the project, no Automation API in
   * between), for timing. Resolves when the process exits 0; otherwise fails with its output.
   */
  async run(args: string[], timeoutMs = 600_000): Promise<string> {
    const { code, output } = await this.spawnCli(args, timeoutMs);
    if (code !== 0) throw new Error(`pulumi ${args.join(" ")} (stack ${this.name}) exited ${code}:\n${output.slice(-4000)}`);
    return output;
  }

  /**
   * `pulumi <args> --non-interactive --stack <name>` as a process of its own in the project, killed after
   * `timeoutMs`; `watch` sees the output so far (stdout and stderr) as it grows. Resolves when it exits.
   */
  private async spawnCli(
    args: string[],
    timeoutMs: number,
    opts: { detached?: boolean; watch?: (output: string, child: ChildProcess) => void } = {},
  ): Promise<{ code: number | null; output: string; pid?: number }> {
    const pulumi = await pulumiCli();
    const child = spawn(pulumi.command, [...args, "--non-interactive", "--stack", this.name], {
      cwd: this.projectDir,
      env: await this.cliEnv(),
      stdio: ["ignore", "pipe", "pipe"],
      detached: opts.detached,
    });
    let output = "";
    const onData = (d: Buffer) => {
      output += d.toString("utf8");
      opts.watch?.(output, child);
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    clearTimeout(timer);
    return { code, output, pid: child.pid };
  }

  /** The stack's labelled objects on the engine that its state does not know (none, after a good `up`). */
  async unknownOnEngine(): Promise<EngineObject[]> {
    const resources = await this.readState();
    return unknownToState(await this.engine(), this.name, resources);
  }

  /**
   * The steps `pulumi preview` would take with `config` set (every step but "same"). For many previews in a
   * row: the config goes straight into the stack file (no CLI call to set and restore it). The stack file is
   * put back byte for byte afterwards, whether the preview succeeds or not.
   */
  previewSteps(config: Record<string, string>): Promise<PreviewStep[]> {
    return previewStepsIn(this.stack, config);
  }

  /**
   * `n` previewers of this stack's state side by side: this stack, and copies of its project folder on the
   * same backend, each with its own stack file, so each one's edits stay its own. A preview writes no state, so
   * they do not disturb one another; the copies go with this stack's folder.
   */
  async previewers(n: number): Promise<Previewer[]> {
    const pulumi = await pulumiCli();
    const twins: Previewer[] = [];
    for (let i = 1; i < n; i++) {
      const dir = path.join(this.workDir, `project-${i}`);
      fs.rmSync(dir, { recursive: true, force: true });
      fs.cpSync(this.projectDir, dir, { recursive: true, verbatimSymlinks: true });
      const stack = await LocalWorkspace.selectStack(
        { stackName: this.name, workDir: dir },
        workspaceOptions(pulumi, this.workDir),
      );
      twins.push({ projectDir: dir, previewSteps: (config) => previewStepsIn(stack, config) });
    }
    return [this, ...twins];
  }

  /**
   * `pulumi refresh --expect-no-changes`: fails, naming each resource and property, if what the engine holds
   * differs from the state.
   */
  async refreshFindsNothing(): Promise<string[]> {
    const events: EngineEvent[] = [];
    try {
      await this.stack.refresh({
        expectNoChanges: true,
        onEvent: (e) => events.push(e),
        onOutput: verbose(`${this.name} refresh`),
      });
    } catch (e) {
      throw new Error(`${this.name}: pulumi refresh found changes: ${refreshed(events).join("; ") || (e as Error).message}`);
    }
    return refreshed(events);
  }

  /** nginx's published address (the `url` output), refused unless it is on 127.0.0.1. */
  get url(): string {
    const url = String(this.outputs.url);
    if (!url.startsWith("http://127.0.0.1:")) throw new Error(`${this.name}: refusing to send traffic to ${url}: only 127.0.0.1`);
    return url;
  }

  /** A resource of the state by its Pulumi name, e.g. "flask-container". */
  resource(name: string): StateResource {
    const r = this.state.get(name);
    if (!r)
      throw new Error(`${this.name}: no resource named ${name} in the stack's state (has: ${[...this.state.keys()].join(", ")})`);
    return r;
  }

  /** A container of the state, on the stack's engine (known once the state has been read). */
  container(name: string): Docker.Container {
    return this.knownEngine().getContainer(this.idOf(name));
  }

  service(name: string): Docker.Service {
    return this.knownEngine().getService(this.idOf(name));
  }

  private knownEngine(): Docker {
    if (!this.cachedEngine) throw new Error(`${this.name}: its engine is read with the state (after pulumi up)`);
    return this.cachedEngine;
  }

  private idOf(name: string): string {
    const id = this.resource(name).id;
    if (!id) throw new Error(`${this.name}: ${name} has no id in the state`);
    return id;
  }

  /** `pulumi destroy` alone: the stack and its folder stay, so an `up` can follow. */
  async destroyResources(): Promise<void> {
    await this.stack.destroy({ onOutput: verbose(`${this.name} destroy`) });
  }

  /**
   * `pulumi destroy`, then the stack and its folder removed; once removed, nothing more. A failed destroy keeps
   * the folder: the test run's exit (harness/cleanup.ts) destroys the stack again from that state. Whatever
   * still carries the stack's label afterwards, or after a failed destroy (but what the state kept on purpose),
   * is removed, and the destroy fails naming it: a stack that lost track of its objects must not leave them
   * holding the ports and names the next suite's stack needs.
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    if (!fs.existsSync(this.workDir)) {
      const left = await this.removeLabelled([]);
      throw new Error(`${this.name}: its state folder ${this.workDir} was removed before pulumi destroy; removed: ${left}`);
    }
    const kept = (await this.readState().catch(() => [])).filter((r) => r.retainOnDelete);
    try {
      await this.destroyResources();
    } catch (e) {
      // The folder stays for harness/cleanup.ts; the engine is cleared now all the same.
      const left = await this.removeLabelled(kept);
      throw new Error(`${(e as Error).message}\n${this.name}: after the failed destroy, removed by its label: ${left}`);
    }
    await this.stack.workspace.removeStack(this.name);
    fs.rmSync(this.workDir, { recursive: true, force: true });
    const left = await this.removeLabelled(kept);
    if (left !== "nothing")
      throw new Error(`${this.name}: pulumi destroy left ${left} on the engine, unknown to the state (removed now)`);
  }

  /** Removes what the engine holds with the stack's label but the `kept` resources' objects, and says what that was. */
  private async removeLabelled(kept: StateResource[]): Promise<string> {
    this.destroyed = true;
    const engine = await this.engine();
    const left = await unknownToState(engine, this.name, kept);
    for (const o of left) await removeObject(engine, o);
    return left.map((o) => `${o.kind} ${o.name}`).join(", ") || "nothing";
  }
}

/** A resource's name: the last part of its URN. */
const nameOf = (urn: string) => urn.slice(urn.lastIndexOf("::") + 2);

/** What previews a stack with config changed: a LiveStack, or a copy of its project (LiveStack.previewers). */
export interface Previewer {
  readonly projectDir: string;
  previewSteps(config: Record<string, string>): Promise<PreviewStep[]>;
}

async function previewStepsIn(stack: Stack, config: Record<string, string>): Promise<PreviewStep[]> {
  const file = path.join(stack.workspace.workDir, `Pulumi.${stack.name}.yaml`);
  const original = fs.readFileSync(file, "utf8");
  try {
    const doc = (parseYaml(original) as { config?: Record<string, unknown> } | null) ?? {};
    const ns = projectFile().name;
    doc.config = { ...doc.config, ...Object.fromEntries(Object.entries(config).map(([k, v]) => [`${ns}:${k}`, v])) };
    fs.writeFileSync(file, stringifyYaml(doc));
    const events: EngineEvent[] = [];
    await stack.preview({ onEvent: (e) => events.push(e) });
    return stepsOf(events);
  } finally {
    fs.writeFileSync(file, original);
  }
}

/** The steps a preview announced, in order, but "same" ones and the reads `--refresh` does first. */
function stepsOf(events: EngineEvent[]): PreviewStep[] {
  return events.flatMap((e) => {
    const m = e.resourcePreEvent?.metadata;
    if (!m || m.op === "same" || m.op === "refresh" || m.type === "pulumi:pulumi:Stack") return [];
    return [{ name: nameOf(m.urn), op: m.op, diffs: m.diffs ?? [] }];
  });
}

/** "<name>: <op> (<properties>)". */
const shownStep = (s: PreviewStep) => `${s.name}: ${s.op}${s.diffs.length ? ` (${s.diffs.join(", ")})` : ""}`;

/** "<name>: <op> (<properties>)" for each step of a preview that is not "same". */
const changes = (events: EngineEvent[]): string[] => stepsOf(events).map(shownStep);

/** "<name>: <op> (<properties>)" for each resource a refresh found different on the engine. */
function refreshed(events: EngineEvent[]): string[] {
  return events.flatMap((e) => {
    const m = e.resOutputsEvent?.metadata;
    if (!m || m.type === "pulumi:pulumi:Stack" || ((m.op === "same" || m.op === "refresh") && !m.diffs?.length)) return [];
    return [shownStep({ name: nameOf(m.urn), op: m.op, diffs: m.diffs ?? [] })];
  });
}

/**
 * Creates a stack from its stack file (under `name`, if given) with `config` set, then `pulumi preview` with
 * the policy pack (a violation fails here) and `pulumi up`. `edit` changes the stack's project copy first (a
 * test's own route in the app, never the repo's).
 */
export async function upStack(
  file: string,
  config: Record<string, string> = {},
  name?: string,
  opts: { edit?: (projectDir: string) => void } = {},
): Promise<LiveStack> {
  const live = await LiveStack.create(file, name);
  try {
    opts.edit?.(live.projectDir);
    await live.preview({ config, policyPack: true });
    await live.up();
  } catch (e) {
    await live.destroy().catch(() => undefined);
    throw e;
  }
  return live;
}

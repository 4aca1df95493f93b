// Runs the real Pulumi program (index.ts) under pulumi.runtime.setMocks with the config the CLI would give
// it: Pulumi.yaml's project defaults merged with Pulumi.<stack>.yaml. Returns every resource the program
// registered, with its inputs, parent and explicit dependsOn, for the unit tests.
import * as crypto from "crypto";
import * as path from "path";
import type * as PulumiModule from "@pulumi/pulumi";
import type { KeptBuild } from "../../infra/builds";
import { projectFile, ROOT, stackConfig, stackNames } from "../../infra/stack-files";

export { ROOT, stackConfig, stackNames };

export interface Declared {
  type: string;
  name: string;
  custom: boolean;
  inputs: Record<string, unknown>;
  /** Mock state handed back to the program (computed outputs included). */
  outputs: Record<string, unknown>;
  parent?: string;
  dependsOn: string[];
  /** Top-level inputs the program passed as Pulumi secrets. */
  secretInputs: string[];
  /** The retainOnDelete option: `pulumi destroy` leaves the object on the engine. */
  retainOnDelete: boolean;
}

export interface ProgramRun {
  stack: string;
  config: Record<string, string>;
  resources: Declared[];
  /** The stack's exported outputs, or the error the program stopped with. */
  outputs: Record<string, unknown>;
}

const fakeDigest = (seed: string) => `sha256:${crypto.createHash("sha256").update(seed).digest("hex")}`;

/** Outputs the provider computes; everything else echoes the inputs, as the real provider does. */
function computedOutputs(type: string, name: string, inputs: Record<string, unknown>): Record<string, unknown> {
  switch (type) {
    case "docker:index/image:Image":
      return { repoDigest: fakeDigest(`image:${name}:${String(inputs.imageName)}`) };
    case "docker:index/remoteImage:RemoteImage":
      return {
        imageId: fakeDigest(`remote:${String(inputs.name)}`),
        repoDigest: `${String(inputs.name)}@${fakeDigest(String(inputs.name))}`,
      };
    case "pulumi-nodejs:dynamic:Resource":
      // An app build's image ID (infra/builds.ts AppBuild).
      return "content" in inputs ? { imageId: fakeDigest(`build:${name}:${String(inputs.content)}`) } : {};
    case "random:index/randomPassword:RandomPassword":
      return { result: `mock-${name}` };
    default:
      return {};
  }
}

/** The program stopped with an error; `registered` is what it had declared by then. */
export class ProgramError extends Error {
  constructor(
    readonly cause: Error,
    readonly registered: Declared[],
  ) {
    super(cause.message);
    this.name = "ProgramError";
  }
}

const BUILDS = path.join(ROOT, "infra", "builds");
const NGINX_PROXY = path.join(ROOT, "nginx", "nginxProxy");

export interface RunOptions {
  /** The app builds the engine is said to keep for the stack (none by default). */
  keptBuilds?: KeptBuild[];
  overrides?: Record<string, string>;
  preview?: boolean;
  /** Run the stack file's config under another stack name (its own names), e.g. a second prod beside prod. */
  stackName?: string;
}

/** Loads index.ts in a fresh module registry for `stack` and captures what it declares. */
export async function runProgram(stack: string, opts: RunOptions = {}): Promise<ProgramRun> {
  const config = stackConfig(stack, opts.overrides);
  const resources: Declared[] = [];
  const byName = new Map<string, Declared>();
  let outputs: Record<string, unknown> = {};

  // Each fresh @pulumi/pulumi adds a process "exit" listener (its leak detector); the instance is dropped
  // after this run, so its listener goes too, instead of piling up past Node's limit of 10.
  const exitListeners = new Set(process.listeners("exit"));
  let pulumi!: typeof PulumiModule;
  isolated(() => {
    // require, not import: loaded fresh for each run (see isolated).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    pulumi = require("@pulumi/pulumi") as typeof PulumiModule;
  });
  pulumi.runtime.setAllConfig(config);
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const secretInputs: string[] = [];
        const inputs = Object.fromEntries(
          Object.entries(args.inputs as Record<string, unknown>).map(([k, v]) => {
            const plain = unwrapSecrets(v);
            if (plain.secret) secretInputs.push(k);
            return [k, plain.value];
          }),
        );
        const state = opts.preview ? { ...inputs } : { ...inputs, ...computedOutputs(args.type, args.name, inputs) };
        const declared = byName.get(args.name);
        if (declared) {
          declared.inputs = inputs;
          declared.secretInputs = secretInputs;
          declared.outputs = state;
        }
        return { id: opts.preview ? undefined : `${args.name}-id`, state };
      },
      call: (args) => args.inputs,
    },
    projectFile().name,
    opts.stackName ?? stack,
    opts.preview ?? false,
  );

  const names = new Map<PulumiModule.Resource, string>();
  let programError: Error | undefined;
  outputs =
    ((await pulumi.runtime.runInPulumiStack(async () => {
      pulumi.runtime.registerStackTransformation((t) => {
        names.set(t.resource, t.name);
        const deps = Array.isArray(t.opts.dependsOn) ? t.opts.dependsOn : t.opts.dependsOn ? [t.opts.dependsOn] : [];
        const entry: Declared = {
          type: t.type,
          name: t.name,
          custom: t.resource instanceof pulumi.CustomResource,
          inputs: {},
          outputs: {},
          parent: t.opts.parent ? names.get(t.opts.parent) : undefined,
          dependsOn: deps.map((d) => names.get(d as PulumiModule.Resource) ?? "<unknown>"),
          secretInputs: [],
          retainOnDelete: (t.opts as PulumiModule.CustomResourceOptions).retainOnDelete === true,
        };

        resources.push(entry);
        byName.set(t.name, entry);
        return undefined;
      });
      try {
        // The whole run in isolation: the providers' SDKs load each resource class on first use, which for
        // an async program is after its first await.
        return await isolatedRun(
          async () => {
            // eslint-disable-next-line @typescript-eslint/no-require-imports
            const program = require(path.join(ROOT, "index.ts")) as () => Promise<Record<string, unknown>>;
            return await program();
          },
          pulumi,
          opts.keptBuilds ?? [],
        );
      } catch (e) {
        programError = e as Error;
        return {};
      }
    })) as Record<string, unknown>) ?? {};
  await settle();
  for (const l of process.listeners("exit")) if (!exitListeners.has(l)) process.removeListener("exit", l);
  if (programError) throw new ProgramError(programError, resources);
  return { stack: opts.stackName ?? stack, config, resources, outputs };
}

// The program must run against the pulumi instance the mocks were set on, and be loaded afresh each time.
// Under jest that is an isolated registry; in a plain Node process (the bench) the require cache is cleared
// of Pulumi and the project's files instead, after which the program finds the instance just loaded.
function isolated(fn: () => void): void {
  if (typeof jest === "undefined") {
    const fresh = (k: string) =>
      k.includes(`${path.sep}node_modules${path.sep}@pulumi${path.sep}`) || !k.includes("node_modules");
    for (const k of Object.keys(require.cache)) if (k.startsWith(ROOT) && fresh(k)) delete require.cache[k];
    fn();
    return;
  }
  jest.isolateModules(fn);
}

/** Runs the program against `pulumi` (isolated as above), with the engine's kept builds said to be `keptBuilds`. */
async function isolatedRun<T>(fn: () => Promise<T>, pulumi: typeof PulumiModule, keptBuilds: KeptBuild[]): Promise<T> {
  if (typeof jest === "undefined") return fn();
  try {
    let result!: T;
    await jest.isolateModulesAsync(async () => {
      jest.doMock("@pulumi/pulumi", () => pulumi);
      // The unit tests never ask the engine.
      jest.doMock(BUILDS, () => ({ ...jest.requireActual<object>(BUILDS), findBuilds: async () => keptBuilds }));
      // No engine: no nginx from before the handover, no image to say its nginx version (the tag's is rendered),
      // no swarm node to check the edge label of (swarm.test.ts does, on a real one).
      jest.doMock(NGINX_PROXY, () => ({
        ...jest.requireActual<object>(NGINX_PROXY),
        imageNginxVersion: async () => undefined,
        nginxBeforeHandover: async () => undefined,
        edgeNodeProblem: async () => undefined,
      }));
      result = await fn();
    });
    return result;
  } finally {
    jest.dontMock("@pulumi/pulumi");
    jest.dontMock(BUILDS);
  }
}

// How secret values reach the mock monitor: wrapped with Pulumi's secret signature.
const SIG_KEY = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

function unwrapSecrets(v: unknown): { value: unknown; secret: boolean } {
  if (Array.isArray(v)) {
    const parts = v.map(unwrapSecrets);
    return { value: parts.map((p) => p.value), secret: parts.some((p) => p.secret) };
  }
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SIG_KEY] === SECRET_SIG) return { value: unwrapSecrets(o.value).value, secret: true };
    const parts = Object.entries(o).map(([k, x]) => [k, unwrapSecrets(x)] as const);
    return { value: Object.fromEntries(parts.map(([k, p]) => [k, p.value])), secret: parts.some(([, p]) => p.secret) };
  }
  return { value: v, secret: false };
}

/** Lets pending registrations reach the mocks. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

const byType = (run: ProgramRun, type: string) => run.resources.filter((r) => r.type === type);
export const one = (run: ProgramRun, type: string, name?: string): Declared => {
  const found = byType(run, type).filter((r) => name === undefined || r.name === name);
  if (found.length !== 1) throw new Error(`expected one ${type}${name ? ` named ${name}` : ""}, found ${found.length}`);
  return found[0];
};

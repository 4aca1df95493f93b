import { parseConfig, ConfigError } from "../../infra/config";
import { ROOT, runProgram, stackConfig } from "../support/program";

const container = (run: Awaited<ReturnType<typeof runProgram>>, name: string) => {
  const c = run.resources.find((r) => r.name === name);
  if (!c) throw new Error(`no ${name}`);
  return c;
};

describe("the Flask secret key", () => {
  test.each(["dev", "prod"])(
    "%s: generated with @pulumi/random when not configured, and secret in the container env",
    async (stack) => {
      const run = await runProgram(stack);
      const generator = run.resources.filter((r) => r.type === "random:index/randomPassword:RandomPassword");
      expect(generator.map((g) => g.name)).toEqual(["flask-secret-key"]);
      const app = container(run, "flask-container");
      expect(app.secretInputs).toContain("envs");
      const env = (app.inputs.envs as string[]).find((e) => e.startsWith("FLASK_SECRET_KEY="));
      expect(env).toBe(`FLASK_SECRET_KEY=${String(generator[0].outputs.result)}`);
      expect(container(run, "nginx-container").secretInputs).toEqual([]);
    },
  );

  test("from secret config: used as given, still secret, and nothing is generated", async () => {
    const key = "k".repeat(40);
    const run = await runProgram("prod", { overrides: { flaskSecretKey: key } });
    expect(run.resources.some((r) => r.type.startsWith("random:"))).toBe(false);
    const app = container(run, "flask-container");
    expect(app.secretInputs).toContain("envs");
    expect(app.inputs.envs).toContain(`FLASK_SECRET_KEY=${key}`);
    // Never in outputs.
    expect(JSON.stringify(run.outputs)).not.toContain(key);
  });

  test("a too-short key is refused without echoing it", () => {
    const secret = "short-secret-value";
    const all = stackConfig("prod", { flaskSecretKey: secret });
    let err: unknown;
    try {
      parseConfig(all, { stack: "prod", root: ROOT });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).message).toContain("flask-proxy:flaskSecretKey: must be at least 32 characters");
    expect((err as ConfigError).message).not.toContain(secret);
  });
});

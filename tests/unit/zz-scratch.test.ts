import { ConfigError, parseConfig } from "../../infra/config";
import { ProgramError, ROOT, runProgram, stackConfig } from "../support/program";
test("explore", async () => {
  const p = await runProgram("prod", { preview: true });
  for (const r of p.resources) console.log(r.type, r.name, r.parent, JSON.stringify(r.inputs.image), JSON.stringify(r.outputs.repoDigest));
  const f = await runProgram("dev");
  for (const r of f.resources) console.log(r.type, r.name, r.parent, r.dependsOn, JSON.stringify(r.inputs.image));
  const tryit = (stack: string, o: Record<string, string>) => { try { parseConfig(stackConfig(stack, o), { stack, root: ROOT }); return "ok"; } catch (e) { return e instanceof ConfigError ? "ConfigError " + e.problems.join("|") : "OTHER " + String(e); } };
  console.log(tryit("prod", { networkSubnet: "10.9.0.0/28", replicas: "6" }));
  console.log(tryit("prod", { appImageRepository: "localhost:5000/flask" }));
  console.log(tryit("prod", { proxyHostHeader: "example.com\\" }));
  console.log(tryit("prod", { proxyHostHeader: "a$b" }));
  const e = await runProgram("prod", { overrides: { networkSubnet: "10.9.0.0/28", replicas: "6" } }).catch((x: unknown) => x);
  console.log(e instanceof ProgramError, (e as Error).message, (e as ProgramError).registered?.map((r) => r.name));
});

// The real `pulumi up` / `destroy` through the Automation API, wherever a Pulumi CLI is installed.
// Machines without the CLI report this test as skipped, with the reason, instead of passing it.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalWorkspace } from "@pulumi/pulumi/automation";
import { ROOT } from "../support/program";
import { answersHello, within } from "./live";

function pulumiCli(): string | undefined {
  try {
    return execFileSync("pulumi", ["version"], { encoding: "utf8" }).trim();
  } catch {
    return undefined;
  }
}

const cli = pulumiCli();
if (!cli) {
  console.warn("SKIPPED automation API test: no `pulumi` CLI on PATH (install it to run pulumi preview/up/destroy for real)");
}

const title = cli
  ? `Automation API with pulumi CLI ${cli}: preview, up, destroy`
  : "Automation API: SKIPPED, no `pulumi` CLI on PATH";
(cli ? describe : describe.skip)(title, () => {
  test("prod stack: up serves Hello world! through nginx, destroy removes it", async () => {
    const state = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-state-"));
    // A copy of the project, so the CLI's stack bookkeeping (encryptionsalt) never edits the repo's files.
    const work = path.join(state, "project");
    fs.cpSync(ROOT, work, { recursive: true, filter: (src) => !/\/(node_modules|\.git)(\/|$)/.test(src) });
    fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(work, "node_modules"));
    const stack = await LocalWorkspace.createOrSelectStack(
      { stackName: "prod", workDir: work },
      {
        envVars: { PULUMI_BACKEND_URL: `file://${state}`, PULUMI_CONFIG_PASSPHRASE: process.env.PULUMI_CONFIG_PASSPHRASE ?? "e2e" },
      },
    );
    try {
      await stack.preview();
      const up = await stack.up();
      const url = String(up.outputs.url.value);
      await within(30_000, answersHello(url), "pulumi up result answers");
    } finally {
      await stack.destroy();
      await stack.workspace.removeStack("prod");
      fs.rmSync(state, { recursive: true, force: true });
    }
  });
});

import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { pulumiCli } from "../../harness/live-stack";
import { projectFile, ROOT } from "../../infra/stack-files";

// Where a stack's state goes, through the real CLI as a user runs it (`pulumi stack init` creates the state
// file; no program runs, no Docker object is made). The CLI resolves `file://~` to the account's home from
// /etc/passwd, not $HOME: to keep the real ~/.pulumi untouched, as root the CLI runs as an account with no
// passwd entry (whose ~ is then $HOME, a temporary folder); otherwise the test's stacks are removed from ~.
describe("state backend: where `pulumi stack init` puts a stack", () => {
  const project = projectFile().name;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-backend-"));
  fs.chmodSync(tmp, 0o755);
  const isolated = process.getuid?.() === 0;
  /** A uid without a passwd entry (checked in beforeAll). */
  const UID = 64_917;
  const home = isolated ? path.join(tmp, "home") : os.userInfo().homedir;
  const suffix = path
    .basename(tmp)
    .slice(-6)
    .toLowerCase()
    .replace(/[^a-z0-9]/g, "x");
  const made: string[] = [];
  let bin: string;

  /** A folder the CLI's account can write. */
  const dir = (name: string) => {
    const d = path.join(tmp, name);
    fs.mkdirSync(d, { recursive: true });
    if (isolated) fs.chownSync(d, UID, UID);
    return d;
  };
  /** `<root>/.pulumi/stacks/flask-proxy/<stack>.json`: a file backend's project-scoped layout. */
  const stateFile = (root: string, stack: string) => path.join(root, ".pulumi", "stacks", project, `${stack}.json`);
  const stackName = (what: string) => {
    const name = `backend-${what}-${suffix}`;
    made.push(name);
    return name;
  };

  /** The CLI in a fresh copy of the project (only Pulumi.yaml: nothing here runs the program). */
  const user = (name: string, env: Record<string, string> = {}) => {
    const cwd = dir(`${name}-project`);
    fs.copyFileSync(path.join(ROOT, "Pulumi.yaml"), path.join(cwd, "Pulumi.yaml"));
    if (isolated) fs.chownSync(path.join(cwd, "Pulumi.yaml"), UID, UID);
    return (...args: string[]) => {
      const r = spawnSync(bin, [...args, "--non-interactive"], {
        cwd,
        encoding: "utf8",
        timeout: 60_000,
        uid: isolated ? UID : undefined,
        gid: isolated ? UID : undefined,
        // Only what a user's shell would carry for Pulumi, so the test's own environment cannot leak in.
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: home,
          USER: isolated ? "flask-proxy-backend-test" : os.userInfo().username,
          PULUMI_HOME: dir(`${name}-pulumi-home`),
          PULUMI_CONFIG_PASSPHRASE: "backend-test",
          PULUMI_SKIP_UPDATE_CHECK: "true",
          ...env,
        },
      });
      if (r.status !== 0) throw new Error(`pulumi ${args.join(" ")} exited ${r.status}: ${r.stdout}${r.stderr}`);
      return r.stdout;
    };
  };

  beforeAll(async () => {
    const pulumi = await pulumiCli();
    bin = pulumi.command;
    if (isolated) {
      expect(fs.readFileSync("/etc/passwd", "utf8")).not.toMatch(new RegExp(`^[^:]*:[^:]*:${UID}:`, "m"));
      fs.mkdirSync(home);
      fs.chownSync(home, UID, UID);
      // The CLI lives under /root (mode 700): a hard link (a copy across file systems) lets the account run it.
      bin = path.join(dir("bin"), "pulumi");
      try {
        fs.linkSync(pulumi.command, bin);
      } catch {
        fs.copyFileSync(pulumi.command, bin);
        fs.chmodSync(bin, 0o755);
      }
    }
  });
  afterAll(() => {
    if (!isolated) {
      // Only this test's stacks, by their exact names.
      for (const name of made) {
        for (const sub of ["stacks", "history", "backups", "locks/organization"]) {
          const base = path.join(home, ".pulumi", sub, project);
          for (const f of fs.existsSync(base) ? fs.readdirSync(base) : []) {
            if (f === name || f.startsWith(`${name}.`) || f.startsWith(`${name}-`))
              fs.rmSync(path.join(base, f), { recursive: true, force: true });
          }
        }
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test("Pulumi.yaml says what the tests below show: PULUMI_BACKEND_URL moves the state, `pulumi login` does not", () => {
    const text = fs.readFileSync(path.join(ROOT, "Pulumi.yaml"), "utf8");
    const comment = text.slice(0, text.indexOf("\nbackend:"));
    expect(projectFile().backend?.url).toBe("file://~");
    expect(comment).toContain("PULUMI_BACKEND_URL=");
    expect(comment).toMatch(/`pulumi login <url>` does not move/);
  });

  test("with nothing set (the quick start: no account, no login), the state lands under ~/.pulumi", () => {
    const stack = stackName("default");
    user("default")("stack", "init", stack);
    expect(fs.existsSync(stateFile(home, stack))).toBe(true);
  });

  test("PULUMI_BACKEND_URL=file://<team folder>: the state lands there, not under ~, and a teammate finds it", () => {
    const team = dir("team-bucket");
    const url = `file://${team}`;
    const stack = stackName("team");
    const alice = user("alice", { PULUMI_BACKEND_URL: url });
    alice("stack", "init", stack);
    alice("config", "set", "appVersion", "0.0.7", "--stack", stack);
    expect({ team: fs.existsSync(stateFile(team, stack)), home: fs.existsSync(stateFile(home, stack)) }).toEqual({
      team: true,
      home: false,
    });
    // Another clone (its own PULUMI_HOME, no stack file) with the same variable sees the same stack.
    const bob = user("bob", { PULUMI_BACKEND_URL: url });
    const listed = JSON.parse(bob("stack", "ls", "--json")) as { name: string; url?: string }[];
    expect(listed.map((s) => s.name)).toContain(stack);
    expect(bob("whoami", "--verbose")).toContain(`Backend URL: ${url}`);
  });

  test("`pulumi login <url>` is stored but not used: the project's backend.url ranks above a stored login", () => {
    const elsewhere = dir("login-bucket");
    const stack = stackName("login");
    const carol = user("carol");
    carol("login", `file://${elsewhere}`);
    carol("stack", "init", stack);
    expect({ login: fs.existsSync(stateFile(elsewhere, stack)), home: fs.existsSync(stateFile(home, stack)) }).toEqual({
      login: false,
      home: true,
    });
  });
});

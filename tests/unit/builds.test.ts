import * as fs from "fs";
import * as path from "path";
import { IMAGE_FILES } from "../../app/facts";
import { contentHash, keptVersions, planRelease, VersionConflict, type KeptBuild } from "../../infra/builds";
import { rollbackTarget } from "../../tools/rollback";
import { ProgramError, ROOT, runProgram } from "../support/program";

const build = (version: string, content: string, created: number, running = false): KeptBuild => ({
  version,
  content,
  imageId: `sha256:${version.replace(/\./g, "")}${"0".repeat(60)}`,
  ref: `sha256:${version}`,
  created,
  running,
});
const want = (version: string, content: string, keep = 3, rebuildOnConflict = false) => ({
  version,
  content,
  keep,
  imageName: `flask:${version}-prod`,
  rebuildOnConflict,
});

describe("a version names one build", () => {
  const v1 = build("0.0.1", "c1", 100);
  const v2 = build("0.0.2", "c2", 200, true);
  const v3 = build("0.0.3", "c3", 300);

  test("a kept version made from app/ as it is runs again, no build", () => {
    expect(planRelease([v1, v2], want("0.0.1", "c1"))).toEqual({ reuse: v1, others: [v2], rebuilds: undefined });
  });
  test("rolling back with the newest release's code in app/ reuses the old build", () => {
    expect(planRelease([v1, v2], want("0.0.1", "c2")).reuse).toBe(v1);
  });
  test("code no kept build was made from, under a kept version's name, is refused, naming the version and what to do", () => {
    expect(() => planRelease([v1, v2], want("0.0.1", "c9"))).toThrow(VersionConflict);
    expect(() => planRelease([v1, v2], want("0.0.1", "c9"))).toThrow(
      /appVersion 0\.0\.1 names the kept build sha256:001000000000 \(flask:0\.0\.1-prod\).*set a new appVersion/,
    );
  });
  test("bind-mounted code: rebuilt instead", () => {
    expect(planRelease([v1, v2], want("0.0.1", "c9", 3, true))).toMatchObject({ reuse: undefined, rebuilds: v1 });
  });
  test("a version with no kept build is built; the running one is kept before newer ones, up to appKeepBuilds", () => {
    const plan = planRelease([v1, v2, v3], want("0.0.4", "c4", 3));
    expect(plan.reuse).toBeUndefined();
    expect(plan.others).toEqual([v2, v3]);
    expect(keptVersions(plan, "0.0.4")).toEqual(["0.0.4", "0.0.3", "0.0.2"]);
    expect(planRelease([v1, v2, v3], want("0.0.4", "c4", 1)).others).toEqual([]);
  });
  test("the content hash covers the Dockerfile, each image file and the build args", () => {
    const ctx = path.join(ROOT, "app");
    const base = contentHash(ctx, IMAGE_FILES, { A: "1" });
    expect(contentHash(ctx, IMAGE_FILES, { A: "1" })).toBe(base);
    expect(contentHash(ctx, IMAGE_FILES, { A: "2" })).not.toBe(base);
    expect(contentHash(ctx, IMAGE_FILES.slice(1), { A: "1" })).not.toBe(base);
  });
  test("app/.dockerignore lets in the Dockerfile and the image files alone: what the hash covers", () => {
    const lines = fs
      .readFileSync(path.join(ROOT, "app", ".dockerignore"), "utf8")
      .trim()
      .split("\n");
    expect(lines).toEqual(["*", "!Dockerfile", ...IMAGE_FILES.map((f) => `!${f}`)]);
  });
});

describe("npm run rollback's target", () => {
  test("the next older kept build, or a named kept one; never a build", () => {
    expect(rollbackTarget(["0.0.3", "0.0.2", "0.0.1"], "0.0.3")).toBe("0.0.2");
    expect(rollbackTarget(["0.0.3", "0.0.2", "0.0.1"], "0.0.3", "0.0.1")).toBe("0.0.1");
    expect(() => rollbackTarget(["0.0.2", "0.0.1"], "0.0.1")).toThrow(/no kept build older than 0\.0\.1/);
    expect(() => rollbackTarget(["0.0.2", "0.0.1"], "0.0.2", "0.0.0")).toThrow(/no kept build of 0\.0\.0/);
  });
});

describe("the program with kept builds", () => {
  test("appVersion naming a kept build declares it with its own content (no build) and keeps the others", async () => {
    const first = await runProgram("prod");
    const content = String(first.resources.find((r) => r.name === "flask-build-0.0.1")?.inputs.content);
    const run = await runProgram("prod", {
      keptBuilds: [build("0.0.1", "old", 100), build("0.0.2", content, 200, true)],
      overrides: { appVersion: "0.0.1" },
    });
    const builds = run.resources.filter((r) => r.name.startsWith("flask-build-"));
    expect(builds.map((b) => [b.name, b.inputs.content])).toEqual([
      ["flask-build-0.0.1", "old"],
      ["flask-build-0.0.2", content],
    ]);
    expect(run.resources.filter((r) => r.type === "docker:index/image:Image").map((r) => r.name)).toEqual(["nginx-image"]);
    expect(run.outputs.appVersions).toEqual(["0.0.2", "0.0.1"]);
  });
  test("changed code under a kept version stops the program before anything is declared of the app", async () => {
    const err = await runProgram("prod", { keptBuilds: [build("0.0.1", "old", 100)] }).catch((e: ProgramError) => e);
    expect(err).toBeInstanceOf(ProgramError);
    expect((err as ProgramError).message).toMatch(/appVersion 0\.0\.1 names the kept build/);
    expect((err as ProgramError).registered.filter((r) => r.name.startsWith("flask-build-"))).toEqual([]);
  });
});

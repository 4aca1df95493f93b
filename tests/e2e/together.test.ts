import { leftovers, stackLabel } from "../../infra/engine-objects";
import { upStack, docker, execIn, get, type LiveStack } from "./live";

/** Set by scripts/build-standins.sh on an image it built because the public one could not be pulled. */
const STANDIN_FOR = "org.example.standin-for";
/** What the stand-ins hold whatever tag they carry: Debian bookworm's nginx package. */
const STANDIN_NGINX = /^1\.22\./;

// dev and prod side by side on one engine, then destroyed: stack-scoped names and ports must not collide,
// and destroy must leave nothing of either stack behind.
describe("dev and prod on one engine", () => {
  const stacks: LiveStack[] = [];
  afterAll(async () => {
    for (const s of stacks) await s.destroy();
  });

  test("both come up and each answers on its own port", async () => {
    // One at a time: a stack that came up is destroyed by afterAll even if the next one fails.
    stacks.push(await upStack("dev"));
    stacks.push(await upStack("prod"));
    const [dev, prod] = stacks;
    expect(dev.url).not.toBe(prod.url);
    for (const s of stacks) {
      const r = await get(s.url);
      expect([s.name, r.status, r.body]).toEqual([s.name, 200, "Hello world!"]);
    }
  });

  // What runs is the image the stack names (dev: the tag itself; prod: a build on it), and the version its
  // nginx reports is that image's binary. Here the tags are stand-ins: Debian's nginx 1.22, not 1.13.7/1.27.3.
  test("each nginx runs the image its stack names, and reports that image's nginx version", async () => {
    expect(stacks).toHaveLength(2);
    const [dev, prod] = stacks;
    const runs: Record<string, string> = {};
    for (const s of stacks) {
      const tag = String(s.resource("nginx-base-image").outputs?.name);
      const base = await docker.getImage(tag).inspect();
      const nginx = s.container("nginx-container");
      const running = await docker.getImage((await nginx.inspect()).Image).inspect();
      if (s === dev) expect(running.Id).toBe(base.Id);
      // prod's image is the base with the stack's settings on top: the base's layers, then its own.
      else expect(running.RootFS.Layers?.slice(0, base.RootFS.Layers?.length)).toEqual(base.RootFS.Layers);
      const version = /nginx\/(\S+)/.exec((await execIn(nginx, ["nginx", "-v"])).stderr)?.[1] ?? "?";
      const standIn = base.Config.Labels?.[STANDIN_FOR] === tag;
      expect(version).toMatch(standIn ? STANDIN_NGINX : new RegExp(`^${tag.split(":")[1].replace(/\./g, "\\.")}$`));
      runs[s.name] = `${tag}${standIn ? " (stand-in)" : ""}: nginx ${version}`;
      // dev announces that version; prod's hardened conf (server_tokens off) does not.
      const server = (await get(s.url)).headers.get("server");
      expect([s.name, server]).toEqual([s.name, s === prod ? "nginx" : `nginx/${version}`]);
    }
    console.log(`nginx running: ${JSON.stringify(runs)}`);
  });

  test("destroy leaves no container, network, volume or built image of either stack", async () => {
    expect(stacks).toHaveLength(2);
    const names = stacks.map((s) => s.name);
    while (stacks.length) await stacks.pop()!.destroy();
    // By each stack's label: other stacks of the project may run on the same engine.
    for (const name of names) {
      const left = await leftovers(docker, stackLabel(name));
      expect([name, left]).toEqual([name, { services: [], containers: [], networks: [], volumes: [], images: [] }]);
    }
    // Built images are found by their stack labels above; by name too, in case a build lost them.
    const tags = (await docker.listImages()).flatMap((i) => i.RepoTags ?? []);
    const built = (name: string) => new RegExp(`^flask:.*-${name}$|^flask-proxy-nginx:${name}$`);
    expect(tags.filter((t) => names.some((n) => built(n).test(t)))).toEqual([]);
  });
});

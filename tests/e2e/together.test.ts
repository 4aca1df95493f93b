import { LABEL } from "../../infra/naming";
import { leftovers } from "../../infra/engine-objects";
import { upStack, docker, get, type LiveStack } from "./live";

// dev and prod side by side on one engine, then destroyed: stack-scoped names and ports must not collide,
// and destroy must leave nothing of the project behind.
describe("dev and prod on one engine", () => {
  const stacks: LiveStack[] = [];
  afterAll(async () => {
    for (const s of stacks) await s.destroy();
  });

  test("both come up and each answers on its own port", async () => {
    stacks.push(await upStack("dev"), await upStack("prod"));
    const [dev, prod] = stacks;
    expect(dev.url).not.toBe(prod.url);
    for (const s of stacks) {
      const r = await get(s.url);
      expect([s.name, r.status, r.body]).toEqual([s.name, 200, "Hello world!"]);
    }
    // Each nginx really fronts its own stack's app server.
    expect((await get(dev.url)).headers.get("server")).toMatch(/^nginx\/1\./);
    expect((await get(prod.url)).headers.get("server")).toBe("nginx");
  });

  test("destroy leaves no container, network, volume or built image of the project", async () => {
    expect(stacks).toHaveLength(2);
    while (stacks.length) await stacks.pop()!.destroy();
    const left = await leftovers(docker, LABEL.project);
    expect(left).toEqual({ services: [], containers: [], networks: [], volumes: [], images: [] });
    // Built images are found by their stack labels above; by name too, in case a build lost them.
    const tags = (await docker.listImages()).flatMap((i) => i.RepoTags ?? []);
    expect(tags.filter((t) => /^flask:|^flask-proxy-nginx:/.test(t))).toEqual([]);
  });
});

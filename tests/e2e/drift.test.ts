import { answersHello, docker, upStack, within, type LiveStack } from "./live";

// Out-of-band changes to a running prod stack (what an operator or a crash does behind Pulumi's back): each is
// shown by `pulumi preview --refresh` and repaired by `pulumi up --refresh`, after which the site serves and
// the engine holds nothing the state does not know.
describe("drift on prod: shown by preview --refresh, repaired by up --refresh", () => {
  let live: LiveStack;

  beforeAll(async () => {
    live = await upStack("prod", {}, "drift");
  });
  afterAll(async () => {
    await live?.destroy();
  });

  test("pulumi refresh right after pulumi up finds nothing to change", async () => {
    expect(await live.refreshFindsNothing()).toEqual([]);
  });

  const id = (name: string) => {
    const v = live.resource(name).id;
    if (!v) throw new Error(`${name} has no id`);
    return v;
  };

  test.each([
    ["an app container removed", () => docker.getContainer(id("flask-container")).remove({ force: true })],
    ["an app container stopped", () => docker.getContainer(id("flask-container")).stop({ t: 1 })],
    ["nginx removed", () => docker.getContainer(id("nginx-container")).remove({ force: true })],
    [
      "the stack's network removed",
      async () => {
        const net = docker.getNetwork(id("my-network"));
        const attached = Object.keys((await net.inspect()).Containers ?? {});
        for (const c of attached) await net.disconnect({ Container: c, Force: true });
        await net.remove();
      },
    ],
    [
      "the built app image's tag removed",
      // `docker rmi -f <tag>`: the image is in use by the app container, so the engine removes the tag only.
      () => docker.getImage(String(live.resource("flask-image-tag").inputs?.tag)).remove({ force: true }),
    ],
  ])("%s", async (_what, change) => {
    await change();
    const shown = await live.preview({ refresh: true });
    console.log(`drift, ${_what}: preview --refresh shows ${shown.join("; ") || "nothing"}`);
    expect(shown).not.toEqual([]);
    await live.up({ refresh: true });
    await within(15_000, answersHello(live.url), "serves after up --refresh");
    expect(await live.unknownOnEngine()).toEqual([]);
    // Every container is on the stack's network again (the alias and nginx's DNS depend on it): nginx through
    // the namespace of its holder.
    const net = String(live.resource("my-network").outputs?.name);
    for (const name of ["flask-container", "nginx-netns"]) {
      const networks = Object.keys((await docker.getContainer(id(name)).inspect()).NetworkSettings.Networks ?? {});
      expect([name, networks]).toEqual([name, [net]]);
    }
    const nginx = await docker.getContainer(id("nginx-container")).inspect();
    expect(nginx.HostConfig.NetworkMode).toBe(`container:${(await docker.getContainer(id("nginx-netns")).inspect()).Id}`);
    expect(await live.refreshFindsNothing()).toEqual([]);
  });
});

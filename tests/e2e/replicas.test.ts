import { failures, get, underLoad, upStack, type LiveStack } from "./live";

// prod with replicas: 3 — nginx spreads requests over every app container and routes around one that stops.
describe("prod stack with 3 app replicas", () => {
  let prod: LiveStack;
  const replicaNames = ["flask-container", "flask-container-2", "flask-container-3"];

  beforeAll(async () => {
    prod = await upStack("prod", { replicas: "3" });
  });
  afterAll(async () => {
    await prod?.destroy();
  });

  test("requests are answered by all three replicas", async () => {
    const ids = await Promise.all(replicaNames.map(async (n) => (await prod.container(n).inspect()).Config.Hostname));
    const seen = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const r = await get(prod.url);
      expect(r.body).toBe("Hello world!");
      const by = r.headers.get("x-served-by") ?? "?";
      seen.set(by, (seen.get(by) ?? 0) + 1);
    }
    console.log(`prod ×3: answers per replica ${JSON.stringify(Object.fromEntries(seen))}`);
    expect([...seen.keys()].sort()).toEqual([...ids].sort());
  });

  test("a second pulumi preview finds nothing to change", async () => {
    expect(await prod.preview()).toEqual([]);
  });

  test("stopping one replica under load loses no request", async () => {
    const stopped = prod.container("flask-container-2");
    // The load harness runs 1 s before and after: requests meet the replica as it drains and once it is gone.
    const { load, error } = await underLoad(prod.url, async () => {
      await stopped.stop({ t: 5 });
      await new Promise((r) => setTimeout(r, 2000));
    });
    console.log(
      `prod ×3, one replica stopped mid-load: ${load.requests} responses, ${JSON.stringify(failures(load))}, ` +
        `${load.retried} sent again after a keep-alive connection closed`,
    );
    expect(error).toBeUndefined();
    expect((await stopped.inspect()).State.Running).toBe(false);
    expect(load.ok).toBeGreaterThan(500);
    expect(failures(load)).toEqual({ non2xx: 0, errors: 0, timeouts: 0 });
  });
});

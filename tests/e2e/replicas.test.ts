import autocannon from "autocannon";
import { upStack, get, type LiveStack } from "./live";

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
    const load = autocannon({
      url: prod.url,
      connections: 8,
      amount: 4000, // bounded in count…
      duration: 30, // …and in time
      timeout: 10,
    });
    await new Promise((r) => setTimeout(r, 500));
    await prod.container("flask-container-2").stop({ t: 5 });
    const result = await load;
    console.log(
      `prod ×3, one replica stopped mid-load: ${result.requests.total} requests, ${result.errors} errors, ` +
        `${result.timeouts} timeouts, ${result.non2xx} non-2xx, p99 ${result.latency.p99} ms`,
    );
    expect(result.requests.total).toBeGreaterThan(1000);
    expect({ errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }).toEqual({
      errors: 0,
      timeouts: 0,
      non2xx: 0,
    });
  });
});

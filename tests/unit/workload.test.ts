import { engineCapabilities, engineCpus } from "../../infra/workload";

// The docker provider formats NanoCPUs its own way when it reads a container back; `cpus` forces a
// replacement, so what the program sends must be that text (the live prod suite's second preview checks the
// real provider agrees).
describe("CPU limits as the provider reads them back", () => {
  test.each([
    [2, "2.0"],
    [1, "1.0"],
    [0.5, "0.5"],
    [1.5, "1.5"],
    [10, "10."],
    [10.5, "10.5"],
  ])("%p is sent as %p", (cpus, text) => {
    expect(engineCpus(cpus)).toBe(text);
  });

  test("every limit the config accepts (0.1 to 64, one decimal) keeps its value", () => {
    const changed: string[] = [];
    for (let tenths = 1; tenths <= 640; tenths++) {
      const cpus = tenths / 10;
      if (Number(engineCpus(cpus)) !== cpus) changed.push(`${cpus} → ${engineCpus(cpus)}`);
    }
    expect(changed).toEqual([]);
  });
});

// Docker stores capabilities with the CAP_ prefix and the provider reads them back that way; written without
// it, `pulumi refresh` finds a change (the live suites' refresh checks confirm the real engine agrees).
describe("capabilities as the engine stores them", () => {
  test("the CAP_ prefix is added once, in a stable order", () => {
    expect(engineCapabilities(["SETUID", "CAP_CHOWN", "NET_BIND_SERVICE"])).toEqual([
      "CAP_CHOWN",
      "CAP_NET_BIND_SERVICE",
      "CAP_SETUID",
    ]);
  });
});

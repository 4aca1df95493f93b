// The config reference lives in Pulumi.yaml; docs/configuration.md's table is generated from it (npm run docs:config).
import { CONFIG_KEYS } from "../../infra/config";
import { CHANGE_TABLES, kindOf, measuredInDocs } from "../../docgen/change-docs";
import { CONFIG_TABLE, currentTable, declarations, renderConfigTable } from "../../docgen/config-docs";
import { projectFile } from "../../infra/stack-files";

describe("config docs", () => {
  test(`${CONFIG_TABLE.file}'s config table is the one generated from Pulumi.yaml and the stack files`, () => {
    // On failure: run `npm run docs:config` and commit the file.
    expect(currentTable()).toEqual(renderConfigTable());
  });

  test("every key the program reads is declared in Pulumi.yaml with a type and a description", () => {
    const declared = new Map(declarations());
    const undocumented = CONFIG_KEYS.filter((key) => {
      const decl = declared.get(key);
      return decl?.type === undefined || typeof decl.description !== "string" || decl.description.trim() === "";
    });
    expect(undocumented).toEqual([]);
  });

  test("the template asks only for declared config keys", () => {
    const project = projectFile() as { name: string; template?: { config?: Record<string, unknown> } };
    const declared = new Set(declarations().map(([key]) => key));
    const asked = Object.keys(project.template?.config ?? {});
    expect(asked.length).toBeGreaterThan(0);
    // `pulumi new` prefixes a key without a namespace with the project name.
    const unknown = asked.filter((key) => {
      const [ns, short] = key.includes(":") ? key.split(":", 2) : [project.name, key];
      return ns !== project.name || !declared.has(short);
    });
    expect(unknown).toEqual([]);
  });
});

describe("the change tables' regions", () => {
  // tests/e2e/changes.test.ts compares them with live previews (minutes); this finds a lost region at once.
  test.each(CHANGE_TABLES.map((t) => [t.stack, t.region] as const))(
    "%s: the region is in its file, with its measured rows on config keys",
    (_stack, region) => {
      const measured = measuredInDocs(region, region.read());
      expect(measured.length).toBeGreaterThan(0);
      expect(measured.filter((m) => !(CONFIG_KEYS as string[]).includes(m.key))).toEqual([]);
    },
  );
});

describe("the change table's kinds, from a preview's steps", () => {
  const step = (name: string, op: string) => ({ name, op, diffs: [] });
  test("a release: the new app container is created before the old one is deleted", () => {
    expect(
      kindOf([
        step("flask-image", "update"),
        step("flask-container", "create-replacement"),
        step("flask-cutover", "update"),
        step("flask-container", "replace"),
        step("flask-container", "delete-replaced"),
      ]),
    ).toBe("app image rebuilt, app container replaced beside the old one");
  });
  test("a fixed-name replacement deletes first; parts are named in a fixed order, whatever order the engine announced", () => {
    expect(
      kindOf([
        step("nginx-container", "delete-replaced"),
        step("nginx-container", "replace"),
        step("nginx-container", "create-replacement"),
        step("my-network", "replace"),
      ]),
    ).toBe("network replaced, nginx container replaced, the old one deleted first");
  });
  test("in-place updates, and nothing", () => {
    expect(kindOf([step("flask-container", "update"), step("flask-image-tag", "update")])).toBe("app container updated in place");
    expect(kindOf([])).toBe("nothing");
  });
});

describe("nginx conf changes in the change table", () => {
  const step = (name: string, op: string) => ({ name, op, diffs: [] });
  test("a conf change alone is a reload; with a new nginx container it is not", () => {
    expect(kindOf([step("nginx-conf-file", "update"), step("nginx-conf-reload", "update")])).toBe(
      "nginx conf reloaded into the running nginx",
    );
    expect(
      kindOf([
        step("nginx-container", "delete-replaced"),
        step("nginx-container", "create-replacement"),
        step("nginx-conf-reload", "update"),
      ]),
    ).toBe("nginx container replaced, the old one deleted first");
  });
});

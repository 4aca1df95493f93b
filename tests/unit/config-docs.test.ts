// The config reference lives in Pulumi.yaml; the README's table is generated from it (npm run docs:config).
import * as fs from "fs";
import { CONFIG_KEYS } from "../../infra/config";
import { currentTable, declarations, README_PATH, renderConfigTable } from "../../tools/config-docs";
import { projectFile } from "../../tools/stack-files";

describe("config docs", () => {
  test("README.md's config table is the one generated from Pulumi.yaml and the stack files", () => {
    // On failure: run `npm run docs:config` and commit README.md.
    expect(currentTable(fs.readFileSync(README_PATH, "utf8"))).toEqual(renderConfigTable());
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

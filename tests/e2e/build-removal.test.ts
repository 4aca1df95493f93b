import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { removeBuild } from "../../infra/builds";
import { PROJECT, parseConfig } from "../../infra/config";
import { LABEL } from "../../infra/naming";
import { ROOT, stackConfig } from "../../infra/stack-files";
import { docker } from "./live";

// Two builds holding one image (a build replaced for a new tag, appImageRepository, adopts its predecessor's
// image) are deleted at the same moment by `pulumi destroy`. The engine answers the second of two concurrent
// removals 500 "unrecognized image ID"; before removeBuild looked again, about 1 round in 3 failed the destroy.
const ROUNDS = 12;
const STACK = "build-removal";

async function buildTwice(round: number): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-removal-"));
  try {
    const base = parseConfig(stackConfig("dev"), { stack: "dev", root: ROOT }).app.baseImage;
    fs.writeFileSync(
      path.join(dir, "Dockerfile"),
      `FROM ${base}\nLABEL ${LABEL.project}=${PROJECT} ${LABEL.stack}=${STACK} round=${round}\n`,
    );
    const stream = await docker.buildImage({ context: dir, src: ["Dockerfile"] }, { t: `${PROJECT}-removal:a` });
    await new Promise((resolve, reject) =>
      docker.modem.followProgress(stream, (err: Error | null, out: unknown) => (err ? reject(err) : resolve(out))),
    );
    const image = docker.getImage(`${PROJECT}-removal:a`);
    await image.tag({ repo: `${PROJECT}-removal`, tag: "b" });
    return (await image.inspect()).Id;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const stackImages = async () => docker.listImages({ all: true, filters: JSON.stringify({ label: [`${LABEL.stack}=${STACK}`] }) });

afterAll(async () => {
  for (const i of await stackImages())
    await docker
      .getImage(i.Id)
      .remove({ force: true })
      .catch(() => undefined);
});

test(`two builds of one image removed at once: both removals succeed and the image is gone (${ROUNDS} rounds)`, async () => {
  const failed: string[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const id = await buildTwice(round);
    const results = await Promise.allSettled([
      removeBuild({}, id, `${PROJECT}-removal:a`),
      removeBuild({}, id, `${PROJECT}-removal:b`),
    ]);
    for (const r of results) if (r.status === "rejected") failed.push(`round ${round}: ${String(r.reason)}`);
  }
  expect(failed).toEqual([]);
  expect(await stackImages()).toEqual([]);
});

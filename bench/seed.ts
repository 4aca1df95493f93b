// The tutorial's own topology, run by the tutorial's own tool: its final docker-compose.yml, Dockerfile,
// main.py and nginx.conf, verbatim except that the two host ports bind to 127.0.0.1 on free ports from
// harness/ports.ts (the tutorial publishes 80 and 8080 on every interface). docker-compose is Debian's 1.29.
import { execFile } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { promisify } from "util";
import { freePort } from "../harness/ports";

const run = promisify(execFile);

/** The tutorial's code/main.py, unchanged: also what the prod-tutorial-app scenario serves. */
export const TUTORIAL_MAIN_PY = `from flask import Flask
app = Flask(__name__)

@app.route('/')
def index():
    return 'Hello world!'
`;

const DOCKERFILE = `FROM python:3
RUN pip install flask
`;

const NGINX_CONF = `server {
    listen 80;
    server_name localhost;

    location / {
        proxy_pass http://flask-app:5000/;
        proxy_set_header Host "localhost";
    }
}
`;

/** flaskPort null: the scalable variant (`--scale flask=N`): no fixed container name, no host port for flask. */
const composeFile = (nginxPort: number, flaskPort: number | null) => `version: '3.1'
services:
    nginx:
        image: nginx:1.13.7
        container_name: nginx
        depends_on:
            - flask
        volumes:
            - ./nginx.conf:/etc/nginx/conf.d/default.conf
        networks:
            - my-network
        ports:
            - 127.0.0.1:${nginxPort}:80
    flask:
        build:
            context: ./
            dockerfile: Dockerfile
        image: flask:0.0.1
${flaskPort === null ? "" : "        container_name: flask\n"}        volumes:
            - ./:/code/
        environment:
            - FLASK_APP=/code/main.py
        command: flask run --host=0.0.0.0
        networks:
            my-network:
                aliases:
                    - flask-app
${flaskPort === null ? "" : `        ports:\n            - 127.0.0.1:${flaskPort}:5000\n`}
networks:
    my-network:
`;

/** The compose project name, so `down` finds what `up` made whatever folder it ran in. */
const PROJECT = "flask-proxy-bench-seed";
/** The tutorial names its image; compose's `down --rmi local` keeps named images, so it is removed by name. */
const SEED_IMAGE = "flask:0.0.1";

export interface ComposeSeed {
  /** nginx's published address. */
  url: string;
  dir: string;
  compose(...args: string[]): Promise<string>;
  /** Removes the built app image, so the next `up` builds it again (a cold start). */
  removeImage(): Promise<void>;
  /** Publishes nginx on another port (the compose file edited as a user would); returns the new URL. */
  moveNginx(port: number): string;
  /** docker-compose down, then the built image and the folder: nothing of the seed is left. */
  remove(): Promise<void>;
}

export async function prepareSeed(opts: { scalable?: boolean } = {}): Promise<ComposeSeed> {
  // The tutorial's fixed names could be a user's own (someone who followed it): refuse rather than clobber.
  for (const [kind, name] of [
    ["image", SEED_IMAGE],
    ["container", "nginx"],
    ["container", "flask"],
  ]) {
    const found = await run("docker", [kind, "inspect", name]).then(
      () => true,
      () => false,
    );
    if (found)
      throw new Error(
        `a ${kind} named ${name} already exists; the seed scenario (the tutorial's compose file) creates and removes that name: remove or rename yours first`,
      );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-seed-"));
  fs.chmodSync(dir, 0o755);
  const nginxPort = await freePort();
  const flaskPort = opts.scalable ? null : await freePort();
  const file = path.join(dir, "docker-compose.yml");
  fs.writeFileSync(file, composeFile(nginxPort, flaskPort));
  fs.writeFileSync(path.join(dir, "Dockerfile"), DOCKERFILE);
  fs.writeFileSync(path.join(dir, "main.py"), TUTORIAL_MAIN_PY);
  fs.writeFileSync(path.join(dir, "nginx.conf"), NGINX_CONF);
  const compose = async (...args: string[]) =>
    (
      await run("docker-compose", ["--ansi", "never", "-p", PROJECT, ...args], {
        cwd: dir,
        timeout: 600_000,
        maxBuffer: 16 << 20,
      })
    ).stdout;
  const removeImage = async () => {
    await run("docker", ["image", "rm", "--force", SEED_IMAGE]).catch(() => undefined);
  };
  return {
    url: `http://127.0.0.1:${nginxPort}/`,
    dir,
    compose,
    removeImage,
    moveNginx(port: number) {
      fs.writeFileSync(file, composeFile(port, flaskPort));
      return `http://127.0.0.1:${port}/`;
    },
    async remove() {
      if (!fs.existsSync(dir)) return; // removed already
      try {
        await compose("down", "--volumes", "--remove-orphans", "--timeout", "5");
        await removeImage();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

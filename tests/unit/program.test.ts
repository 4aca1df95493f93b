import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import {
  APP_GRACEFUL_TIMEOUT_S,
  APP_SOCKET_DIR,
  APP_UID,
  CODE_DIR,
  GUNICORN_CONF,
  IMAGE_FILES,
  SOCKET_DIR_ENV,
  SOCKET_FILE,
  socketCutoverCommand,
} from "../../app/facts";
import { DRAIN_S, HANDOVER_HEALTHCHECK, HANDOVER_SYSCTLS, nginxDrainCommand, nginxStartCommand } from "../../nginx/handover";
import { listenFile, servingListens } from "../../nginx/conf";
import { ProgramError, ROOT, runProgram, stackConfig, stackNames, type Declared, type ProgramRun } from "../support/program";

const find = (run: ProgramRun, name: string): Declared => {
  const r = run.resources.find((x) => x.name === name);
  if (!r) throw new Error(`${name} not declared; have ${run.resources.map((x) => x.name).join(", ")}`);
  return r;
};
type Vol = { hostPath: string; containerPath: string; readOnly?: boolean };

describe("dev stack: the tutorial's topology", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("dev");
  });

  test("declares exactly the tutorial's pieces", () => {
    expect(
      run.resources
        .filter((r) => r.custom)
        .map((r) => `${r.type} ${r.name}`)
        .sort(),
    ).toEqual([
      "docker:index/container:Container flask-container",
      "docker:index/container:Container nginx-container",
      "docker:index/network:Network my-network",
      "docker:index/remoteImage:RemoteImage nginx-base-image",
      "pulumi-nodejs:dynamic:Resource flask-build-0.0.1",
      "pulumi-nodejs:dynamic:Resource flask-image-tag",
      "random:index/randomPassword:RandomPassword flask-secret-key",
    ]);
  });

  test("the build's tag is held by a resource that refresh reads (docker.Image reads nothing back)", () => {
    const tag = find(run, "flask-image-tag");
    expect(tag.inputs).toMatchObject({ imageId: find(run, "flask-build-0.0.1").outputs.imageId, tag: "flask:0.0.1-dev" });
  });

  test("nginx:1.13.7 and the app image built from app/ as flask:0.0.1-dev, by a resource named after its version", () => {
    expect(find(run, "nginx-base-image").inputs).toMatchObject({ name: "nginx:1.13.7", keepLocally: true });
    const img = find(run, "flask-build-0.0.1").inputs as {
      version: string;
      content: string;
      tag: string;
      context: string;
      files: string[];
      buildArgs: Record<string, string>;
    };
    expect([img.version, img.tag, img.context]).toEqual(["0.0.1", "flask:0.0.1-dev", path.join(ROOT, "app")]);
    expect(img.files).toEqual(["Dockerfile", ...IMAGE_FILES]);
    // The app's facts reach the Dockerfile from app/flaskApp.ts, stated once there.
    expect(img.buildArgs).toEqual({
      BASE_IMAGE: "python:3",
      APP_VERSION: "0.0.1",
      APP_UID: String(APP_UID),
      CODE_DIR,
      SOCKET_DIR: APP_SOCKET_DIR,
      APP_PORT: "5000",
      GUNICORN_CONF,
      // The stack's labels on the image: its own build, found and removed by them; and what it is.
      PROJECT_LABEL: "org.flask-proxy.project",
      PROJECT: "flask-proxy",
      STACK_LABEL: "org.flask-proxy.stack",
      STACK: "dev",
      VERSION_LABEL: "org.flask-proxy.app-version",
      CONTENT_LABEL: "org.flask-proxy.app-content",
      CONTENT: img.content,
    });
    expect(img.content).toMatch(/^[0-9a-f]{64}$/);
  });

  test("flask: flask run on 0.0.0.0, FLASK_APP, code mounted at /code, alias flask-app, 8080 → 5000 on loopback", () => {
    const c = find(run, "flask-container").inputs;
    expect(c.name).toBe("flask-proxy-dev-flask");
    expect((c.command as string[]).slice(0, 3)).toEqual(["flask", "run", "--host=0.0.0.0"]);
    expect(c.envs).toContain("FLASK_APP=/code/main.py");
    expect(c.volumes).toEqual([{ hostPath: path.join(ROOT, "app"), containerPath: "/code", readOnly: true }]);
    expect(path.isAbsolute((c.volumes as Vol[])[0].hostPath)).toBe(true);
    expect(c.networksAdvanced).toEqual([{ name: "my-network-id", aliases: ["flask-app"] }]); // by ID (the mocks give each resource the ID <name>-id)
    expect(c.ports).toEqual([{ internal: 5000, external: 8080, ip: "127.0.0.1", protocol: "tcp" }]);
    // The built image's ID, so a rebuild replaces the container, and the container goes before the image.
    expect(c.image).toBe(find(run, "flask-build-0.0.1").outputs.imageId);
  });

  test("nginx: the repo's rendered conf mounted as conf.d/default.conf, 80 → 80 on loopback, after flask", () => {
    const n = find(run, "nginx-container");
    expect(n.inputs.name).toBe("flask-proxy-dev-nginx");
    expect(n.inputs.volumes).toEqual([
      { hostPath: path.join(ROOT, "nginx", "dev.conf"), containerPath: "/etc/nginx/conf.d/default.conf", readOnly: true },
    ]);
    expect(n.inputs.ports).toEqual([{ internal: 80, external: 80, ip: "127.0.0.1", protocol: "tcp" }]);
    expect(n.inputs.networksAdvanced).toEqual([{ name: "my-network-id" }]);
    expect(n.inputs.image).toBe(find(run, "nginx-base-image").outputs.imageId);
    expect(n.dependsOn).toEqual(["flask-container"]);
  });

  test("keeps the tutorial's shape: no hardening, healthchecks (the image's own turned off too) or restart policy", () => {
    for (const name of ["flask-container", "nginx-container"]) {
      const c = find(run, name).inputs;
      expect([name, c.readOnly, c.healthcheck, c.restart, c.wait]).toEqual([name, undefined, { tests: ["NONE"] }, "no", false]);
    }
  });

  test("components own their resources; outputs name what was created", () => {
    for (const name of ["flask-build-0.0.1", "flask-container", "flask-secret-key"]) expect(find(run, name).parent).toBe("flask");
    for (const name of ["nginx-base-image", "nginx-container"]) expect(find(run, name).parent).toBe("nginx");
    expect(run.outputs).toEqual({
      url: "http://127.0.0.1:80/",
      httpsUrl: "(no HTTPS: tls is off)",
      caCertificate: "(no stack CA: tls is not internal)",
      appUrl: "http://127.0.0.1:8080/",
      networkName: "flask-proxy-dev-net",
      appWorkload: ["flask-proxy-dev-flask"],
      nginxWorkload: "flask-proxy-dev-nginx",
      appImage: "flask:0.0.1-dev",
      metricsUrl: "(no metrics: metricsPort is 0)",
      appVersions: ["0.0.1"],
    });
  });
});

describe("prod stack: production-shaped", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    run = await runProgram("prod");
  });

  test("gunicorn with the configured workers and threads, on TCP and the socket; code in the image; app not published", () => {
    const c = find(run, "flask-container").inputs;
    const cfg = stackConfig("prod");
    expect(c.command).toEqual([
      "gunicorn",
      "--config",
      GUNICORN_CONF,
      "--workers",
      cfg["flask-proxy:gunicornWorkers"],
      "--threads",
      cfg["flask-proxy:gunicornThreads"],
      "--worker-tmp-dir",
      "/dev/shm",
      "--graceful-timeout",
      String(APP_GRACEFUL_TIMEOUT_S),
      "main:app",
    ]);
    // The config file binds the socket in this directory (app/gunicorn.conf.py).
    expect(c.envs).toContain(`${SOCKET_DIR_ENV}=${APP_SOCKET_DIR}`);
    // The only mount is the socket volume: no code from the host.
    expect(c.volumes).toEqual([{ volumeName: "flask-proxy-prod-flask-socket", containerPath: "/srv/socket", readOnly: false }]);
    expect(c.ports).toEqual([]);
    expect(run.outputs.appUrl).toBe("(not published)");
  });

  test("nginx: pinned image, the rendered conf on a volume it reloads from (socket upstream, X-Forwarded-*), port 8000", () => {
    expect(find(run, "nginx-base-image").inputs.name).toBe("nginx:1.27.3");
    const img = find(run, "nginx-image").inputs as {
      imageName: string;
      build: { context: string; dockerfile: string; args: Record<string, string> };
    };
    expect(img.imageName).toBe("flask-proxy-nginx:prod");
    // Relative to the project (the program runs in it): the same in the state of every checkout.
    expect(process.cwd()).toBe(ROOT);
    expect([img.build.context, img.build.dockerfile]).toEqual(["nginx", path.join("nginx", "Dockerfile")]);
    expect(img.build.args.NGINX_IMAGE).toBe("nginx:1.27.3");
    expect(img.build.args.WORKER_PROCESSES).toBe(stackConfig("prod")["flask-proxy:nginxWorkerProcesses"]);
    // Not in the image: a conf change must not replace the container.
    expect(img.build.args.DEFAULT_CONF).toBeUndefined();
    const file = find(run, "nginx-conf-file").inputs as {
      conf: string;
      volumeName: string;
      fileName: string;
      containerName: string;
      netnsHolder: boolean;
      image: string;
    };
    expect(file.conf).toContain("access_log /var/log/nginx/access.log json buffer=64k flush=5s;");
    expect(file.conf).toContain("server unix:/srv/sockets/1/gunicorn.sock;");
    expect(file.conf).not.toMatch(/^\s*keepalive \d+;/m);
    expect(file.conf).toContain("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
    expect([file.volumeName, file.fileName, file.image]).toEqual([
      "flask-proxy-prod-nginx-conf",
      "default.conf",
      find(run, "nginx-image-local").outputs.imageId,
    ]);
    const n = find(run, "nginx-container");
    // While nginx runs, a changed conf is tested in the nginx containers that joined the holder's namespace
    // (found through the holder, by name: nginx is declared after the file, under a generated name).
    expect([file.containerName, file.netnsHolder, n.inputs.name]).toEqual(["flask-proxy-prod-nginx-netns", true, undefined]);
    expect(n.inputs.image).toBe(find(run, "nginx-image-local").outputs.imageId);
    expect(n.inputs.volumes).toEqual([
      { volumeName: "flask-proxy-prod-nginx-conf", containerPath: "/etc/nginx/conf.d", readOnly: true },
      { volumeName: "flask-proxy-prod-flask-socket", containerPath: "/srv/sockets/1", readOnly: true },
    ]);
    // The file is written before nginx starts; a later change is reloaded into the running container.
    expect(n.dependsOn).toContain("nginx-conf-file");
    const reload = find(run, "nginx-conf-reload");
    expect(reload.dependsOn.sort()).toEqual(["nginx-conf-file", "nginx-container"]);
    expect(reload.inputs).toMatchObject({ containerId: "nginx-container-id", conf: file.conf, volumeName: file.volumeName });
    // The port is the holder's: nginx joins its namespace, and publishes nothing itself.
    const holder = find(run, "nginx-netns");
    expect([n.inputs.ports, n.inputs.networksAdvanced, n.inputs.networkMode]).toEqual([
      undefined,
      undefined,
      "container:nginx-netns-id",
    ]);
    expect(holder.inputs.ports).toEqual([{ internal: 80, external: 8000, ip: "127.0.0.1", protocol: "tcp" }]);
    expect(holder.inputs.name).toBe("flask-proxy-prod-nginx-netns");
  });

  test("nginx hands over: a holder keeps the namespace and port, nginx boots beside the old one, which is drained, then stopped", () => {
    const holder = find(run, "nginx-netns").inputs;
    // The holder sleeps, hardened, with the kernel setting that moves queued connections to the surviving nginx.
    expect([holder.command, holder.readOnly, holder.stopSignal, holder.memory]).toEqual([
      ["sleep", "infinity"],
      true,
      "SIGKILL",
      16,
    ]);
    expect(holder.sysctls).toMatchObject(HANDOVER_SYSCTLS);
    expect(holder.image).toBe(find(run, "nginx-base-image").outputs.imageId);
    const n = find(run, "nginx-container").inputs;
    expect([n.stopSignal, n.sysctls]).toEqual(["SIGQUIT", undefined]);
    expect(n.command).toEqual(nginxStartCommand(servingListens(undefined)));
    // Its own health socket: the shared port may be answered by the old nginx.
    expect((n.healthcheck as { tests: string[] }).tests).toEqual(["CMD", ...HANDOVER_HEALTHCHECK]);
    const cutover = find(run, "nginx-cutover");
    expect(cutover.dependsOn).toEqual(["nginx-container"]);
    expect(cutover.inputs).toMatchObject({
      healthGate: true,
      oldServes: true,
      drainCommand: nginxDrainCommand(),
      drainS: DRAIN_S,
    });
    // Every listen line comes from the container's own file.
    const conf = String(find(run, "nginx-conf-file").inputs.conf);
    expect(conf.match(/^\s*listen .*$/gm)).toBeNull();
    expect(conf).toContain(`include ${listenFile("http")};`);
  });

  test("hardened: false relaxes nginx, never its holder, so the switch hands over instead of closing the ports", async () => {
    const relaxed = await runProgram("prod", { overrides: { hardened: "false" } });
    const holder = (r: ProgramRun) => {
      const h = find(r, "nginx-netns").inputs;
      return [h.readOnly, h.securityOpts, h.capabilities];
    };
    expect(holder(relaxed)).toEqual([true, ["no-new-privileges:true"], { drops: ["ALL"] }]);
    expect(holder(relaxed)).toEqual(holder(run));
    expect(find(relaxed, "nginx-container").inputs.readOnly).toBeUndefined();
  });

  test("both containers: restart policy, healthchecks, hardening, limits; a cutover resource gates each on its health", () => {
    for (const [name, wait] of [
      ["flask-container", false],
      ["nginx-container", false],
    ] as const) {
      const c = find(run, name).inputs as Record<string, unknown> & {
        healthcheck: { tests: string[] };
        capabilities: { drops: string[] };
      };
      expect([name, c.restart, c.wait, c.readOnly, c.securityOpts, c.capabilities.drops]).toEqual([
        name,
        "unless-stopped",
        wait,
        true,
        ["no-new-privileges:true"],
        ["ALL"],
      ]);
      expect(c.memory).toBeGreaterThan(0);
      // No swap beyond the memory limit; and the limits as the provider reads them back (no diff next time).
      expect(c.memorySwap).toBe(c.memory);
      expect(c.cpus).toMatch(/^\d+\.\d$/);
      expect(c.logOpts).toEqual({ "max-size": "10m", "max-file": "3" });
      expect(c.healthcheck.tests[0]).toBe("CMD");
    }
    expect(find(run, "flask-container").inputs.healthcheck).toMatchObject({
      tests: expect.arrayContaining([expect.stringContaining("/healthz")]),
    });
  });

  test("app releases: a generated name per generation, a health-gated cutover, then a drained stop", () => {
    const app = find(run, "flask-container");
    // No fixed name: the provider names each generation, so the new one runs beside the old.
    expect(app.inputs.name).toBeUndefined();
    expect([app.inputs.stopTimeout, app.inputs.destroyGraceSeconds]).toEqual([
      APP_GRACEFUL_TIMEOUT_S + 5,
      APP_GRACEFUL_TIMEOUT_S + 5,
    ]);
    const cutover = find(run, "flask-cutover");
    expect(cutover.parent).toBe("flask");
    expect(cutover.dependsOn).toEqual(["flask-container"]);
    expect(cutover.inputs).toMatchObject({ healthGate: true, switchCommand: socketCutoverCommand(), settleS: 0 });
    expect(cutover.inputs.containerId).toBe("flask-container-id"); // the mocks give each resource the ID <name>-id
    // nginx starts after the cutover has linked the socket (and in its holder's namespace: networkMode names it).
    expect(find(run, "nginx-container").dependsOn.sort()).toEqual(["flask-container", "flask-cutover", "nginx-conf-file"]);
  });

  test("nginx and gunicorn meet at one socket: the volume gunicorn binds in is the one nginx mounts where its conf looks", () => {
    type Mount = { volumeName?: string; containerPath: string; readOnly: boolean };
    const vol = find(run, "flask-socket");
    expect(vol.type).toBe("docker:index/volume:Volume");
    expect(vol.parent).toBe("flask");
    expect(vol.inputs.labels).toEqual(expect.arrayContaining([{ label: "org.flask-proxy.stack", value: "prod" }]));
    const app = find(run, "flask-container").inputs;
    const appMount = (app.volumes as Mount[]).find((v) => v.volumeName === vol.outputs.name);
    // gunicorn binds in the mounted directory, and the cutover links SOCKET_FILE there.
    expect(app.envs).toContain(`${SOCKET_DIR_ENV}=${appMount?.containerPath}`);
    expect(find(run, "flask-cutover").inputs.switchCommand).toEqual(socketCutoverCommand(appMount?.containerPath));
    const nginxMount = (find(run, "nginx-container").inputs.volumes as Mount[]).find((v) => v.volumeName === vol.outputs.name);
    expect(nginxMount?.readOnly).toBe(true);
    const conf = (find(run, "nginx-conf-file").inputs as { conf: string }).conf;
    expect(conf).toContain(`server unix:${nginxMount?.containerPath}/${SOCKET_FILE};`);
    // No pinned address or subnet is needed to keep the upstream valid across app restarts.
    expect((find(run, "my-network").inputs as { ipamConfigs?: unknown }).ipamConfigs).toBeUndefined();
  });
});

describe("across stacks", () => {
  test("names never collide, so all stacks can run on one engine", async () => {
    const names = new Map<string, string>();
    for (const stack of stackNames()) {
      const run = await runProgram(stack);
      for (const r of run.resources.filter((x) => x.custom)) {
        const name = String(r.inputs.name ?? r.inputs.imageName ?? "");
        if (!name || r.type === "docker:index/remoteImage:RemoteImage") continue; // base images are shared on purpose
        expect(names.get(name)).toBeUndefined();
        names.set(name, stack);
      }
      const ports = run.resources
        .flatMap((r) => (r.inputs.ports as { external: number }[] | undefined) ?? [])
        .map((p) => p.external);
      for (const p of ports) {
        expect(names.get(`port:${p}`)).toBeUndefined();
        names.set(`port:${p}`, stack);
      }
    }
  });

  test.each(["dev", "prod", "swarm"])("%s: preview (unknown outputs) declares everything and does not fail", async (stack) => {
    const full = await runProgram(stack);
    const preview = await runProgram(stack, { preview: true });
    expect(preview.resources.map((r) => r.name)).toEqual(full.resources.map((r) => r.name));
    // Image IDs are computed by the provider: known after a real run, unknown during preview.
    expect(JSON.stringify(full.resources.map((r) => r.inputs))).toContain("sha256:");
    expect(JSON.stringify(preview.resources.map((r) => r.inputs))).not.toContain("sha256:");
  });
});

describe("nginx config file", () => {
  test("a mounted conf that differs from the render is refused before anything is declared", async () => {
    const stale = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "conf-")), "default.conf");
    fs.writeFileSync(
      stale,
      fs.readFileSync(path.join(ROOT, "nginx", "dev.conf"), "utf8").replace("flask-app:5000", "flask-app:5001"),
    );
    const err = await runProgram("dev", { overrides: { nginxConfigFile: stale } }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProgramError);
    expect((err as ProgramError).message).toContain("flask-proxy:nginxConfigFile:");
    expect((err as ProgramError).message).toContain("npm run render:nginx");
    expect((err as ProgramError).registered.filter((r) => r.custom)).toEqual([]);
  });
});

describe("prod with metrics and gunicorn's access log", () => {
  let run: ProgramRun;
  beforeAll(async () => {
    // bindAddress 0.0.0.0: the public port faces the network, the metrics port still only the host.
    run = await runProgram("prod", {
      overrides: { metricsPort: "9145", gunicornAccessLog: "true", bindAddress: "0.0.0.0" },
    });
  });

  test("the metrics port is the forwarder's, on 127.0.0.1 whatever bindAddress is; nginx's holder has the public port alone", () => {
    expect(find(run, "nginx-netns").inputs.ports).toEqual([{ internal: 80, external: 8000, ip: "0.0.0.0", protocol: "tcp" }]);
    const f = find(run, "nginx-metrics-container");
    expect(f.inputs).toMatchObject({
      name: "flask-proxy-prod-nginx-metrics",
      ports: [{ internal: 8080, external: 9145, ip: "127.0.0.1", protocol: "tcp" }],
      user: "65534:65534",
      readOnly: true,
      capabilities: { drops: ["ALL"] },
      networksAdvanced: [{ name: "my-network-id" }],
    });
    expect(f.inputs.envs).toEqual([expect.stringContaining("set $metrics_listener flask-proxy-prod-nginx-netns:8080;")]);
    // After the holder (an older stack's frees the port first) and the reload that adds nginx's metrics listener.
    expect(f.dependsOn).toEqual(expect.arrayContaining(["nginx-netns", "nginx-container", "nginx-conf-reload"]));
    expect(run.outputs.metricsUrl).toBe("http://127.0.0.1:9145/");
  });

  test("the exporter runs hardened beside nginx, after it, reading stub_status over the network, publishing nothing", () => {
    const e = find(run, "nginx-exporter-container");
    expect(e.parent).toBe("nginx");
    expect(e.dependsOn).toEqual(expect.arrayContaining(["nginx-netns", "nginx-container", "nginx-cutover", "nginx-conf-reload"]));
    expect(find(run, "nginx-exporter-base-image").inputs).toMatchObject({
      name: stackConfig("prod")["flask-proxy:nginxExporterImage"],
      keepLocally: true,
    });
    expect(e.inputs).toMatchObject({
      name: "flask-proxy-prod-nginx-exporter",
      command: ["--nginx.scrape-uri=http://flask-proxy-prod-nginx-netns:8080/stub_status", "--web.listen-address=:9113"],
      ports: [],
      readOnly: true,
      wait: false,
      healthcheck: { tests: ["NONE"] },
      networksAdvanced: [{ name: "my-network-id", aliases: ["nginx-exporter"] }],
    });
  });

  test("the app gets prometheus_client's multiprocess dir and the metrics port; gunicorn logs each request with its ID", () => {
    const c = find(run, "flask-container").inputs;
    expect(c.envs).toEqual(expect.arrayContaining(["PROMETHEUS_MULTIPROC_DIR=/tmp/app-metrics", "APP_METRICS_PORT=9200"]));
    const command = c.command as string[];
    expect(command.slice(command.indexOf("--access-logfile"), -1)).toEqual([
      "--access-logfile",
      "-",
      "--access-logformat",
      '%(h)s "%(r)s" %(s)s %(B)s %(D)sus request_id=%({x-request-id}i)s',
    ]);
  });
});

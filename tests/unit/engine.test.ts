// infra/engine.ts: one engine client from the docker provider's settings, for the dynamic resources, the
// tools and the harness. TLS against a local server that demands a client certificate of the test's CA; ssh://
// through a stand-in `ssh` (on PATH) that records its arguments and pipes its stdio to a local HTTP server, as
// `ssh host docker system dial-stdio` pipes them to the remote engine's socket.
import * as fs from "fs";
import * as http from "http";
import * as https from "https";
import type { AddressInfo } from "net";
import * as os from "os";
import * as path from "path";
import { makeTlsCerts } from "../../harness/remote-engine";
import { engineClient, engineSettingsOf, sshCommand } from "../../infra/engine";
import { runProgram } from "../support/program";

const listen = (server: http.Server) =>
  new Promise<number>((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));

/** An engine stand-in: _ping, and a 2 MB listing (more than a pipe holds at once). */
const big = Array.from({ length: 20_000 }, (_, i) => ({ Id: `c${i}`, Names: [`/container-${"x".repeat(80)}-${i}`] }));
function answer(req: http.IncomingMessage, res: http.ServerResponse): void {
  if (req.url?.endsWith("/_ping")) res.end("OK");
  else if (req.url?.includes("/containers/json")) res.end(JSON.stringify(big));
  else res.writeHead(404).end('{"message":"no such thing"}');
}

describe("sshCommand: ssh's arguments as the docker CLI's connhelper builds them", () => {
  test("user, port, the stack's sshOpts, a connect timeout, no tty, then the host and dial-stdio", () => {
    expect(sshCommand("ssh://deploy@engine.example:2222", ["-i", "/keys/deploy"])).toEqual(
      ["-l", "deploy", "-p", "2222", "-i", "/keys/deploy", "-o", "ConnectTimeout=30", "-T", "--", "engine.example"].concat(
        "docker system dial-stdio",
      ),
    );
  });
  test("a socket path talks to that socket; sshOpts' own ConnectTimeout and -T are kept", () => {
    expect(sshCommand("ssh://engine.example/run/user/1000/docker.sock", ["-o", "ConnectTimeout=5", "-T"])).toEqual([
      "-o",
      "ConnectTimeout=5",
      "-T",
      "--",
      "engine.example",
      "docker --host=unix:///run/user/1000/docker.sock system dial-stdio",
    ]);
  });
  test("a password in the URL is refused", () => {
    expect(() => sshCommand("ssh://deploy:hunter2@engine.example")).toThrow(/password .* not supported/);
  });
});

describe("engineSettingsOf: the stack's docker: config as the CLI holds it", () => {
  test("every setting, sshOpts as the list `pulumi config set --path` makes", () => {
    expect(
      engineSettingsOf({
        "docker:host": "ssh://deploy@engine.example",
        "docker:sshOpts": '["-i","/keys/deploy"]',
        "flask-proxy:httpPort": "8000",
      }),
    ).toEqual({ host: "ssh://deploy@engine.example", sshOpts: ["-i", "/keys/deploy"] });
  });
  test("sshOpts that are not a list say how to set them", () => {
    expect(() => engineSettingsOf({ "docker:sshOpts": "-i /keys/deploy" })).toThrow(/must be a list of ssh arguments/);
  });
});

describe("engineClient over TLS with a client certificate", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-engine-tls-"));
  const other = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-engine-tls-other-"));
  let server: https.Server;
  let host: string;
  const read = (d: string, f: string) => fs.readFileSync(path.join(d, f), "utf8");

  beforeAll(async () => {
    makeTlsCerts(dir, "127.0.0.1");
    makeTlsCerts(other, "127.0.0.1");
    server = https.createServer(
      {
        ca: read(dir, "ca.pem"),
        cert: read(dir, "server-cert.pem"),
        key: read(dir, "server-key.pem"),
        requestCert: true,
        rejectUnauthorized: true,
      },
      answer,
    );
    host = `tcp://127.0.0.1:${await listen(server)}`;
  });
  afterAll(() => {
    server?.close();
    for (const d of [dir, other]) fs.rmSync(d, { recursive: true, force: true });
  });

  test("docker:certPath: ca.pem, cert.pem and key.pem from the folder", async () => {
    const client = engineClient({ host, certPath: dir });
    expect(String(await client.ping())).toBe("OK");
    expect(await client.listContainers()).toHaveLength(big.length);
  });
  test("docker:caMaterial/certMaterial/keyMaterial", async () => {
    const client = engineClient({
      host,
      caMaterial: read(dir, "ca.pem"),
      certMaterial: read(dir, "cert.pem"),
      keyMaterial: read(dir, "key.pem"),
    });
    expect(String(await client.ping())).toBe("OK");
  });
  test("a client certificate of another CA is refused by the engine; a server of another CA by the client", async () => {
    const client = (d: string) => ({
      caMaterial: read(d, "ca.pem"),
      certMaterial: read(d, "cert.pem"),
      keyMaterial: read(d, "key.pem"),
    });
    const mixed = { ...client(dir), certMaterial: read(other, "cert.pem"), keyMaterial: read(other, "key.pem") };
    await expect(engineClient({ host, ...mixed }).ping()).rejects.toThrow();
    await expect(engineClient({ host, ...client(other) }).ping()).rejects.toThrow(/certificate/);
  });
  test("without certificates a tcp:// host is plain HTTP, which this engine does not answer", async () => {
    await expect(engineClient({ host }).ping()).rejects.toThrow();
  });
  test("materials only in part, or with certPath, are refused as the provider refuses them", () => {
    expect(() => engineClient({ host, caMaterial: read(dir, "ca.pem") })).toThrow(/must all be set/);
    expect(() => engineClient({ host, certPath: dir, ...{ caMaterial: "a", certMaterial: "b", keyMaterial: "c" } })).toThrow(
      /certPath must not be set/,
    );
  });
});

describe("engineClient over ssh://", () => {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-fake-ssh-"));
  const argsFile = path.join(bin, "args.json");
  const saved = { PATH: process.env.PATH, FAKE_SSH_PORT: process.env.FAKE_SSH_PORT };
  let server: http.Server;

  beforeAll(async () => {
    // The stand-in ssh: records its arguments; a host named "refused" fails as ssh does (255, a message).
    fs.writeFileSync(
      path.join(bin, "ssh"),
      `#!${process.execPath}
const fs = require("fs");
const args = process.argv.slice(2);
fs.appendFileSync(${JSON.stringify(argsFile)}, JSON.stringify(args) + "\\n");
if (args.includes("refused")) { process.stderr.write("root@refused: Permission denied (publickey).\\n"); process.exit(255); }
const sock = require("net").connect(Number(process.env.FAKE_SSH_PORT), "127.0.0.1");
process.stdin.pipe(sock);
sock.pipe(process.stdout);
sock.on("end", () => process.stdout.end());
sock.on("close", () => process.exit(0));
`,
      { mode: 0o755 },
    );
    server = http.createServer(answer);
    process.env.FAKE_SSH_PORT = String(await listen(server));
    process.env.PATH = `${bin}:${process.env.PATH}`;
  });
  afterAll(() => {
    server?.close();
    process.env.PATH = saved.PATH;
    process.env.FAKE_SSH_PORT = saved.FAKE_SSH_PORT;
    fs.rmSync(bin, { recursive: true, force: true });
  });

  test("each API call is `ssh <sshOpts> -- <host> docker system dial-stdio`, its stdio the connection", async () => {
    fs.rmSync(argsFile, { force: true });
    const client = engineClient({ host: "ssh://root@engine.example:2200", sshOpts: ["-i", "/keys/test"] });
    expect(String(await client.ping())).toBe("OK");
    expect(await client.listContainers()).toHaveLength(big.length);
    await expect(client.getContainer("nope").inspect()).rejects.toMatchObject({ statusCode: 404 });
    const calls = fs
      .readFileSync(argsFile, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as string[]);
    expect(calls).toHaveLength(3);
    for (const args of calls) expect(args).toEqual(sshCommand("ssh://root@engine.example:2200", ["-i", "/keys/test"]));
  });
  test("an ssh that cannot connect fails the call with ssh's own message", async () => {
    await expect(engineClient({ host: "ssh://root@refused" }).ping()).rejects.toThrow(
      /exit 255: root@refused: Permission denied/,
    );
  });
});

describe("the program hands every dynamic resource the docker provider's settings", () => {
  const dynamic = (run: Awaited<ReturnType<typeof runProgram>>) =>
    run.resources.filter((r) => r.type === "pulumi-nodejs:dynamic:Resource");
  const tls = { host: "tcp://10.0.0.5:2376", caMaterial: "CA PEM", certMaterial: "CERT PEM", keyMaterial: "KEY PEM" };

  test.each([
    [
      "prod",
      [
        "flask-build-0.0.1",
        "flask-cutover",
        "flask-image-tag",
        "nginx-conf-file",
        "nginx-conf-reload",
        "nginx-cutover",
        "nginx-image-removal",
        "nginx-image-tag",
      ],
    ],
    [
      "swarm",
      [
        "flask-build-0.0.1",
        "flask-image-tag",
        "flask-rollout",
        "nginx-conf-file",
        "nginx-conf-reload",
        "nginx-cutover",
        "nginx-image-removal",
        "nginx-image-tag",
      ],
    ],
  ])("%s over TLS: docker:host and the certificates; the engine input is secret (it holds the key)", async (stack, names) => {
    const run = await runProgram(stack, {
      overrides: Object.fromEntries(Object.entries(tls).map(([k, v]) => [`docker:${k}`, v])),
    });
    const found = dynamic(run);
    expect(found.map((r) => r.name).sort()).toEqual(names);
    for (const r of found) {
      expect([r.name, r.inputs.engine]).toEqual([r.name, tls]);
      expect(r.secretInputs).toContain("engine");
    }
  });
  test("prod over ssh://: docker:host and docker:sshOpts, nothing secret", async () => {
    const run = await runProgram("prod", {
      overrides: { "docker:host": "ssh://deploy@engine.example", "docker:sshOpts": '["-i","/keys/deploy"]' },
    });
    expect(dynamic(run).length).toBeGreaterThanOrEqual(5);
    for (const r of dynamic(run)) {
      expect([r.name, r.inputs.engine]).toEqual([
        r.name,
        { host: "ssh://deploy@engine.example", sshOpts: ["-i", "/keys/deploy"] },
      ]);
      expect(r.secretInputs).not.toContain("engine");
    }
  });
});

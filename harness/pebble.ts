// Pebble, Let's Encrypt's ACME test server, and pebble-challtestsrv answering its DNS, as host processes for
// the live tests (installed by scripts/setup-acme.sh). Pebble validates HTTP-01 by connecting to the address
// challtestsrv gives for every name (`answerIPv4`, 127.0.0.1 by default) on `httpPort`: the host port nginx's
// HTTP listener is published on. Pebble makes a new CA at every start; its issuing root comes from the
// management port (/roots/0). Its own listener gets a certificate made here, for 127.0.0.1 and any address
// containers reach the host by (`listenerIps`), so a client given `listenerCaFile` verifies Pebble properly.
import { execFileSync, spawn, type ChildProcess } from "child_process";
import * as fs from "fs";
import * as https from "https";
import * as os from "os";
import * as path from "path";
import { within } from "./load";
import { freePort } from "./ports";

export const PEBBLE_TOOLS_DIR = process.env.ACME_TOOLS_DIR ?? path.join(os.homedir(), ".cache", "flask-proxy", "acme-tools");

export interface PebbleOptions {
  /** The host port Pebble's HTTP-01 validation connects to (nginx's published HTTP port). */
  httpPort: number;
  /** The address challtestsrv answers every A query with: where `httpPort` is reached from the host. */
  answerIPv4?: string;
  /** The address Pebble listens on (ACME and management): 127.0.0.1, or an address containers reach the host at. */
  listenHost?: string;
  /** IP addresses the listener certificate covers besides 127.0.0.1 (and listenHost). */
  listenerIps?: string[];
  /** Lifetime of the certificates Pebble issues, in seconds, for the default profile; `shortlived` gets it too. */
  validitySeconds?: number;
  /** Lifetimes of profiles by name (seconds), over the above: a certificate's lifetime tells which was used. */
  profileValiditySeconds?: Record<string, number>;
  toolsDir?: string;
}

export interface Pebble {
  /** The ACME directory URL, at listenHost (127.0.0.1 when it listens on every address). */
  directoryUrl: string;
  /** The directory URL at another address of the host (one in `listenerIps`, e.g. a network's gateway). */
  directoryUrlAt(host: string): string;
  /** The self-signed certificate (PEM) of Pebble's own HTTPS listener: what an ACME client must trust. */
  listenerCa: string;
  /** The same, as a file. */
  listenerCaFile: string;
  ports: { acme: number; management: number; dns: number; challtestManagement: number };
  /** The root Pebble issues under (PEM), from the management port: new at every start. */
  root(): Promise<string>;
  /** Pebble's and challtestsrv's output so far. */
  logs(): string;
  /**
   * Makes Pebble's ACME Renewal Information for `certPem` (a chain: its first certificate) suggest the window
   * given (Pebble's own test hook, /set-renewal-info/ on the management port), as a CA does for a certificate it
   * wants replaced early.
   */
  setRenewalWindow(certPem: string, window: { start: Date; end: Date }): Promise<void>;
  /** Stops both processes (Pebble's CA and every account are gone) and removes the working directory. */
  stop(): Promise<void>;
}

/**
 * A self-signed P-256 certificate for Pebble's listener, valid for a day, covering `ips` and localhost. Made
 * by the openssl CLI: @peculiar/x509 (in package.json) needs a reflect-metadata polyfill that is not installed.
 */
export function listenerCertificate(ips: string[], dir: string): { certFile: string; keyFile: string } {
  const certFile = path.join(dir, "listener.pem");
  const keyFile = path.join(dir, "listener.key");
  const san = ["DNS:localhost", ...[...new Set(["127.0.0.1", ...ips])].map((ip) => `IP:${ip}`)].join(",");
  execFileSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
      .concat(["-subj", "/CN=Pebble listener (flask-proxy tests)", "-keyout", keyFile, "-out", certFile])
      .concat(["-addext", `subjectAltName=${san}`, "-addext", "extendedKeyUsage=serverAuth"]),
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  fs.chmodSync(keyFile, 0o600);
  return { certFile, keyFile };
}

/** GET over HTTPS trusting `ca` only; the body if 200. */
export function httpsGet(url: string, ca: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, timeout: timeoutMs, headers: { "User-Agent": "flask-proxy-tests" } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${url}: ${res.statusCode} ${body}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${url}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
  });
}

/** POST of a JSON body over HTTPS trusting `ca` only; resolves on 200. */
function httpsPost(url: string, ca: string, body: unknown, timeoutMs = 5000): Promise<void> {
  return new Promise((resolve, reject) => {
    const headers = { "Content-Type": "application/json", "User-Agent": "flask-proxy-tests" };
    const req = https.request(url, { method: "POST", ca, timeout: timeoutMs, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`POST ${url}: ${res.statusCode} ${text}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`POST ${url}: no answer in ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

/** Starts challtestsrv, then Pebble; resolves once Pebble's directory answers. */
export async function startPebble(opts: PebbleOptions): Promise<Pebble> {
  const tools = opts.toolsDir ?? PEBBLE_TOOLS_DIR;
  for (const bin of ["pebble", "pebble-challtestsrv"])
    if (!fs.existsSync(path.join(tools, bin))) throw new Error(`${path.join(tools, bin)} is missing: run scripts/setup-acme.sh`);
  const listenHost = opts.listenHost ?? "127.0.0.1";
  const ports = {
    acme: await freePort(),
    management: await freePort(),
    dns: await freePort(),
    challtestManagement: await freePort(),
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pebble-"));
  const ips = [listenHost, ...(opts.listenerIps ?? [])].filter((h) => h !== "0.0.0.0");
  const { certFile, keyFile } = listenerCertificate(ips, dir);
  const cert = fs.readFileSync(certFile, "utf8");
  const validityPeriod = opts.validitySeconds ?? 7776000;
  const config = {
    pebble: {
      listenAddress: `${listenHost}:${ports.acme}`,
      managementListenAddress: `${listenHost}:${ports.management}`,
      certificate: certFile,
      privateKey: keyFile,
      httpPort: opts.httpPort,
      // TLS-ALPN-01 is not offered by the agent; Pebble still needs a port to name.
      tlsPort: opts.httpPort,
      ocspResponderURL: "",
      externalAccountBindingRequired: false,
      keyAlgorithm: "ecdsa",
      retryAfter: { authz: 1, order: 1 },
      profiles: {
        default: { description: "test lifetime", validityPeriod },
        shortlived: { description: "test lifetime", validityPeriod },
        ...Object.fromEntries(
          Object.entries(opts.profileValiditySeconds ?? {}).map(([name, seconds]) => [
            name,
            { description: `test lifetime ${seconds} s`, validityPeriod: seconds },
          ]),
        ),
      },
    },
  };
  const configFile = path.join(dir, "pebble-config.json");
  fs.writeFileSync(configFile, JSON.stringify(config, null, 2));

  let output = "";
  const children: ChildProcess[] = [];
  const run = (bin: string, args: string[], env: Record<string, string>) => {
    const child = spawn(path.join(tools, bin), args, {
      cwd: dir,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const tag = `[${bin}] `;
    const keep = (d: Buffer) => (output += d.toString().replace(/^(?=.)/gm, tag));
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.on("exit", (code, signal) => (output += `${tag}exited (${signal ?? code})\n`));
    children.push(child);
    return child;
  };
  const killAll = () => children.forEach((c) => c.exitCode === null && c.signalCode === null && c.kill("SIGKILL"));
  process.once("exit", killAll);

  const stop = async () => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => c.kill("SIGKILL"), 5000);
            c.once("exit", () => {
              clearTimeout(timer);
              resolve();
            });
            c.kill("SIGTERM");
          }),
      ),
    );
    process.removeListener("exit", killAll);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
    run(
      "pebble-challtestsrv",
      [
        "-dnsserver",
        `127.0.0.1:${ports.dns}`,
        "-management",
        `127.0.0.1:${ports.challtestManagement}`,
        "-defaultIPv4",
        opts.answerIPv4 ?? "127.0.0.1",
        "-defaultIPv6",
        "",
        // Only DNS: nothing else of it listens.
        "-http01",
        "",
        "-https01",
        "",
        "-tlsalpn01",
        "",
        "-doh",
        "",
      ],
      {},
    );
    run("pebble", ["-config", configFile, "-dnsserver", `127.0.0.1:${ports.dns}`], {
      // No random validation delay, no deliberately refused nonces, and a fresh HTTP-01 validation at every
      // order (no reuse of a valid authorization), so each renewal goes through the webroot again.
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
      PEBBLE_AUTHZREUSE: "0",
    });
    const directoryUrlAt = (host: string) => `https://${host}:${ports.acme}/dir`;
    const local = listenHost === "0.0.0.0" ? "127.0.0.1" : listenHost;
    const directoryUrl = directoryUrlAt(local);
    await within(
      15_000,
      async () => (await httpsGet(directoryUrl, cert)).includes("newOrder"),
      `Pebble's directory at ${directoryUrl}`,
    );
    return {
      directoryUrl,
      directoryUrlAt,
      listenerCa: cert,
      listenerCaFile: certFile,
      ports,
      root: () => httpsGet(`https://${local}:${ports.management}/roots/0`, cert),
      logs: () => output,
      setRenewalWindow: (certPem, window) =>
        httpsPost(`https://${local}:${ports.management}/set-renewal-info/`, cert, {
          Certificate: certPem,
          ARIResponse: JSON.stringify({ suggestedWindow: { start: window.start.toISOString(), end: window.end.toISOString() } }),
        }),
      stop,
    };
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${output}`);
  }
}

// testssl.sh (Debian bookworm's 3.0.8, installed by scripts/setup-engine.sh) against a TLS listener on
// 127.0.0.1, and what its findings mean for the stack: nothing at MEDIUM or above, except the findings listed
// in TESTSSL_ALLOWED, each with why it stays and, where the reason depends on the rest of the scan, a check
// that it still holds. The scan stays on 127.0.0.1: an IP address as the target, no DNS lookups (`--nodns
// none`), and testssl's default of no CRL/OCSP downloads (no `--phone-out`).
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { z } from "zod";

/** The command Debian's package installs (`testssl.sh` upstream). */
export const TESTSSL_BIN = "testssl";

/**
 * The check groups scanned: protocols (-p), cipher categories (-s), forward secrecy (-f), server preference
 * (-P), server defaults and the certificate (-S), HTTP headers (-h), every vulnerability (-U). Left out of a
 * default run: client simulation (-c), which reports which of ~50 clients would connect and has no severity
 * (measured here: 74 s for a default run, 50 s for these groups, against `openssl s_server` on the host).
 */
export const TESTSSL_GROUPS = ["-p", "-s", "-f", "-P", "-S", "-h", "-U"];

// testssl's severities (its fileout() calls), least to most severe; WARN: a check it could not make; FATAL: a scan
// that stopped.
const SEVERITIES = ["DEBUG", "INFO", "OK", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL"] as const;
export type TestsslSeverity = (typeof SEVERITIES)[number];
/** What must not be found: MEDIUM and above, and a check that could not be made. */
export const REFUSED_SEVERITIES: readonly TestsslSeverity[] = ["MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL"];

/** One finding of `--jsonfile` (testssl's flat JSON: an array of these). */
const Finding = z.object({
  id: z.string(),
  ip: z.string(),
  port: z.string(),
  severity: z.enum(SEVERITIES),
  cve: z.string().optional(),
  cwe: z.string().optional(),
  hint: z.string().optional(),
  finding: z.string(),
});
export type TestsslFinding = z.infer<typeof Finding>;

/** Reads testssl's flat JSON output; throws naming the entry that is not a finding. */
export function parseTestsslJson(text: string): TestsslFinding[] {
  return z.array(Finding).parse(JSON.parse(text));
}

export interface AllowedFinding {
  /** testssl's id of the finding. */
  id: string;
  severity: TestsslSeverity;
  /** What testssl says (its `finding` text). */
  finding: RegExp;
  /** Why it stays. */
  reason: string;
  /** When the reason depends on the rest of the scan: why it no longer holds, or undefined while it does. */
  unlessScan?: (scan: TestsslFinding[]) => string | undefined;
}

const said = (scan: TestsslFinding[], id: string) => scan.find((f) => f.id === id)?.finding;

/**
 * The findings at MEDIUM or above that stay, in one place (docs/security.md lists them with these reasons).
 * Scanned: the prod shape with `tls: internal` (the prod stack file's mode), Debian's nginx 1.22.1 stand-in.
 */
export const TESTSSL_ALLOWED: readonly AllowedFinding[] = [
  {
    id: "cipher_order",
    severity: "HIGH",
    finding: /^NOT a cipher order configured$/,
    reason:
      "ssl_prefer_server_ciphers off, as Mozilla's intermediate configuration sets it: every suite offered is " +
      "ECDHE with an AEAD cipher, so the client's pick (ChaCha20 on a phone without AES instructions) is as " +
      "strong as the server's. testssl 3.0.8 rates a missing order HIGH whatever is offered; 3.2 rates it " +
      "by the weakest suite offered (testssl.sh issue 1311, pull request 2235), which here is INFO.",
    // testssl 3.0.8's categories below "strong" that are not MEDIUM or above themselves: CBC suites (LOW).
    unlessScan: (scan) =>
      said(scan, "cipherlist_STRONG") === "offered" && said(scan, "cipherlist_AVERAGE") === "not offered"
        ? undefined
        : `a suite weaker than ECDHE+AEAD is offered (cipherlist_AVERAGE: ${said(scan, "cipherlist_AVERAGE")}), ` +
          "so the client's choice is no longer as good as the server's",
  },
  {
    id: "cert_revocation",
    severity: "HIGH",
    finding: /^Neither CRL nor OCSP URI provided$/,
    reason:
      "tls: internal's leaf comes from the stack's own CA, which only clients given caCertificate trust and " +
      "which runs no CRL or OCSP service; the leaf lives 90 days and the agent beside nginx signs a new one " +
      "with 30 days left. A certificate from a public CA (acme, certificate) names its CRL or OCSP responder.",
  },
  {
    id: "sessionresumption_ticket",
    severity: "WARN",
    finding: /^check failed because of connect problem$/,
    reason:
      "testssl 3.0.8 saves a session with `openssl s_client -sess_out </dev/null`, which quits at its input's " +
      "end, often before TLS 1.3's NewSessionTicket arrives (measured against this stack: 22 of 50 session " +
      "files empty, 0 of 50 with the input held open 0.3 s); the second connection then has no session to " +
      "offer and testssl calls it a connect problem. tls.test.ts checks resumption itself with Node's TLS " +
      "client, which waits for the ticket: TLS 1.2 and 1.3 sessions are resumed.",
  },
];

export interface TestsslVerdict {
  /** Findings that fail the scan: refused severities not on the list, or on it with a reason that no longer holds. */
  refused: { finding: TestsslFinding; why: string }[];
  /** Findings at refused severities that stay, with their reason. */
  allowed: { finding: TestsslFinding; reason: string }[];
  /** Entries of the list this scan did not need. */
  unused: AllowedFinding[];
}

/** Sorts a scan's findings into refused and allowed ones. */
export function judgeTestssl(scan: TestsslFinding[], allowList: readonly AllowedFinding[] = TESTSSL_ALLOWED): TestsslVerdict {
  const verdict: TestsslVerdict = { refused: [], allowed: [], unused: [] };
  const used = new Set<AllowedFinding>();
  for (const f of scan.filter((x) => REFUSED_SEVERITIES.includes(x.severity))) {
    const entry = allowList.find((a) => a.id === f.id && a.severity === f.severity && a.finding.test(f.finding));
    const lapsed = entry?.unlessScan?.(scan);
    if (entry && !lapsed) {
      used.add(entry);
      verdict.allowed.push({ finding: f, reason: entry.reason });
    } else {
      verdict.refused.push({ finding: f, why: lapsed ?? `${f.severity} and not on the allow-list` });
    }
  }
  verdict.unused = allowList.filter((a) => !used.has(a));
  return verdict;
}

/** The findings at LOW and above (and WARN, FATAL), one line each: severity, id, what testssl says. */
export function findingsTable(scan: TestsslFinding[]): string {
  const shown = scan.filter((f) => SEVERITIES.indexOf(f.severity) >= SEVERITIES.indexOf("LOW"));
  const width = Math.max(0, ...shown.map((f) => f.id.length));
  return shown.map((f) => `${f.severity.padEnd(8)} ${f.id.padEnd(width)}  ${f.finding}`).join("\n");
}

export interface TestsslRun {
  findings: TestsslFinding[];
  seconds: number;
  /** testssl's own report (no colour). */
  output: string;
}

/** Runs testssl against 127.0.0.1:`port`, trusting `caFile` besides its own stores; at most `timeoutMs`. */
export async function runTestssl(port: number, caFile: string, timeoutMs = 300_000): Promise<TestsslRun> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flask-proxy-testssl-"));
  const jsonFile = path.join(dir, "findings.json");
  // prettier-ignore
  const args = [
    "--quiet", "--color", "0",
    "--warnings", "batch", // never a prompt
    "--nodns", "none",
    "--connect-timeout", "10", "--openssl-timeout", "10",
    "--add-ca", caFile,
    "--jsonfile", jsonFile,
    ...TESTSSL_GROUPS,
    `127.0.0.1:${port}`,
  ];
  const started = Date.now();
  try {
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(TESTSSL_BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d.toString()));
      child.stderr.on("data", (d: Buffer) => (output += d.toString()));
      const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
      child.on("error", (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(e.code === "ENOENT" ? new Error(`${TESTSSL_BIN} is not installed: run scripts/setup-engine.sh`) : e);
      });
      child.on("close", (c) => {
        clearTimeout(timer);
        resolve({ code: c, output });
      });
    });
    const seconds = Math.round((Date.now() - started) / 1000);
    // The exit status adds up what the checks return (1 for some findings, e.g. BEAST); 242 and above is an
    // error of testssl's own (bad options, no connection, ...). A finished scan ends with its scanTime.
    const findings =
      code !== null && code < 242 && fs.existsSync(jsonFile) ? parseTestsslJson(fs.readFileSync(jsonFile, "utf8")) : [];
    if (!findings.some((f) => f.id === "scanTime")) {
      throw new Error(
        `${TESTSSL_BIN} ${args.join(" ")} exited ${code} after ${seconds} s, no finished scan:\n${output.slice(-3000)}`,
      );
    }
    return { findings, seconds, output };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// The reader of testssl.sh's JSON and the verdict on its findings (the scan itself runs in tests/e2e/tls.test.ts).
import { findingsTable, judgeTestssl, parseTestsslJson, TESTSSL_ALLOWED, type TestsslFinding } from "../../harness/testssl";

const finding = (id: string, severity: TestsslFinding["severity"], text: string): TestsslFinding => ({
  id,
  ip: "127.0.0.1/127.0.0.1",
  port: "443",
  severity,
  finding: text,
});

// What testssl 3.0.8 found on the prod shape's TLS listener (tls: internal), the parts the verdict reads.
const clean: TestsslFinding[] = [
  finding("TLS1", "INFO", "not offered"),
  finding("TLS1_2", "OK", "offered"),
  finding("cipherlist_AVERAGE", "INFO", "not offered"),
  finding("cipherlist_STRONG", "OK", "offered"),
  finding("cipher_order", "HIGH", "NOT a cipher order configured"),
  finding("sessionresumption_ticket", "INFO", "supported"),
  finding("cert_revocation", "HIGH", "Neither CRL nor OCSP URI provided"),
  finding("HSTS", "LOW", "not offered"),
];

test("reads testssl's flat JSON as it writes it, and refuses an entry that is not a finding", () => {
  const text = `[
         {
              "id"           : "BEAST_CBC_TLS1",
              "ip"           : "127.0.0.1/127.0.0.1",
              "port"         : "8443",
              "severity"     : "MEDIUM",
              "cve"          : "CVE-2011-3389",
              "cwe"          : "CWE-20",
              "finding"      : "ECDHE-ECDSA-AES128-SHA"
          }
,         {
              "id"           : "scanTime",
              "ip"           : "127.0.0.1/127.0.0.1",
              "port"         : "8443",
              "severity"     : "INFO",
              "finding"      : "50"
          }
]`;
  expect(parseTestsslJson(text)).toEqual([
    { ...finding("BEAST_CBC_TLS1", "MEDIUM", "ECDHE-ECDSA-AES128-SHA"), port: "8443", cve: "CVE-2011-3389", cwe: "CWE-20" },
    { ...finding("scanTime", "INFO", "50"), port: "8443" },
  ]);
  expect(() => parseTestsslJson(text.replace('"MEDIUM"', '"SEVERE"'))).toThrow(/severity/);
  expect(() => parseTestsslJson('[{"id": "x"}]')).toThrow(/finding/);
});

test("the listed findings stay, each with its reason; anything else at MEDIUM or above, WARN or FATAL is refused", () => {
  const verdict = judgeTestssl(clean);
  expect(verdict.refused).toEqual([]);
  expect(verdict.allowed.map((a) => a.finding.id)).toEqual(["cipher_order", "cert_revocation"]);
  // testssl's ticket check won its race with the server in this scan.
  expect(verdict.unused.map((a) => a.id)).toEqual(["sessionresumption_ticket"]);
  expect(TESTSSL_ALLOWED.every((a) => a.reason.length > 40)).toBe(true);

  const worse = [
    ...clean,
    finding("BEAST_CBC_TLS1", "MEDIUM", "ECDHE-ECDSA-AES128-SHA"),
    finding("heartbleed", "WARN", "test failed"),
    // The same id at another severity or with another text is not what the list allows.
    finding("cert_revocation", "CRITICAL", "Neither CRL nor OCSP URI provided"),
  ];
  expect(judgeTestssl(worse).refused.map((r) => `${r.finding.severity} ${r.finding.id}: ${r.why}`)).toEqual([
    "MEDIUM BEAST_CBC_TLS1: MEDIUM and not on the allow-list",
    "WARN heartbleed: WARN and not on the allow-list",
    "CRITICAL cert_revocation: CRITICAL and not on the allow-list",
  ]);
});

test("a ticket check lost to s_client's race stays; that check failing otherwise is refused", () => {
  const lost = clean.map((f) =>
    f.id === "sessionresumption_ticket"
      ? { ...f, severity: "WARN" as const, finding: "check failed because of connect problem" }
      : f,
  );
  expect(lost.some((f) => f.finding === "check failed because of connect problem")).toBe(true);
  const verdict = judgeTestssl(lost);
  expect(verdict.refused).toEqual([]);
  expect(verdict.allowed.map((a) => a.finding.id)).toEqual(["cipher_order", "sessionresumption_ticket", "cert_revocation"]);
  const other = lost.map((f) => (f.id === "sessionresumption_ticket" ? { ...f, finding: "check failed, pls report" } : f));
  expect(judgeTestssl(other).refused.map((r) => `${r.finding.id}: ${r.why}`)).toEqual([
    "sessionresumption_ticket: WARN and not on the allow-list",
  ]);
});

test("no server cipher order stays allowed only while every suite offered is ECDHE with AEAD", () => {
  const withCbc = clean.map((f) => (f.id === "cipherlist_AVERAGE" ? { ...f, severity: "LOW" as const, finding: "offered" } : f));
  const verdict = judgeTestssl(withCbc);
  expect(verdict.refused.map((r) => `${r.finding.id}: ${r.why}`)).toEqual([
    "cipher_order: a suite weaker than ECDHE+AEAD is offered (cipherlist_AVERAGE: offered), so the client's choice is no longer as good as the server's",
  ]);
  expect(verdict.unused.map((a) => a.id)).toEqual(["cipher_order", "sessionresumption_ticket"]);
});

test("the table shows LOW and above, one finding a line", () => {
  expect(findingsTable(clean).split("\n")).toEqual([
    "HIGH     cipher_order     NOT a cipher order configured",
    "HIGH     cert_revocation  Neither CRL nor OCSP URI provided",
    "LOW      HSTS             not offered",
  ]);
});

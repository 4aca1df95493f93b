// Certificates: checking a user's certificate and key (Node's own X.509 parser, before anything is declared),
// and issuing the stack's own CA and its leaf (`tls: internal`) with @peculiar/x509 over Node's WebCrypto.
import * as crypto from "crypto";

/** A certificate (PEM; a leaf, then the chain it is served with) and its private key (PKCS#8 PEM). */
export interface CertifiedKey {
  certPem: string;
  keyPem: string;
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM text, in order; throws if there is none or one does not parse. */
export function pemChain(pem: string): crypto.X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new Error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  return blocks.map((b, i) => {
    try {
      return new crypto.X509Certificate(b);
    } catch (e) {
      throw new Error(`certificate ${i + 1} of the PEM does not parse (${(e as Error).message})`);
    }
  });
}

const IP_LITERAL = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The names a certificate is for, as `DNS:x, IP:y` (Node's own rendering of the SAN). */
const namesOf = (cert: crypto.X509Certificate) => cert.subjectAltName ?? `no subjectAltName (subject ${cert.subject})`;

/** Whether `cert` covers `domain` (a host name, by SAN per RFC 6125; or an IPv4 address, by IP SAN). */
export function covers(cert: crypto.X509Certificate, domain: string): boolean {
  // subject: "never" — browsers ignore the CN; so does the check.
  return IP_LITERAL.test(domain)
    ? cert.checkIP(domain) !== undefined
    : cert.checkHost(domain, { subject: "never" }) !== undefined;
}

/** A problem with a key's value: the key (without the project namespace) and what is wrong. */
export interface KeyProblem {
  key: "tlsCertificate" | "tlsPrivateKey";
  message: string;
}

/**
 * What is wrong with serving `certPem` (leaf first, then its chain) with `keyPem` for `domain` at `now`: a key
 * that does not parse or match, a certificate that is expired, not yet valid, or not for the domain, or a chain
 * out of order. Empty when nginx can serve it and a client that trusts its root accepts it.
 */
export function certificateProblems(certPem: string, keyPem: string, domain: string, now = new Date()): KeyProblem[] {
  let chain: crypto.X509Certificate[];
  try {
    chain = pemChain(certPem);
  } catch (e) {
    return [{ key: "tlsCertificate", message: (e as Error).message }];
  }
  const problems: KeyProblem[] = [];
  const leaf = chain[0];
  try {
    const key = crypto.createPrivateKey(keyPem);
    if (!leaf.checkPrivateKey(key)) {
      problems.push({
        key: "tlsPrivateKey",
        message: `does not match tlsCertificate (its first certificate, ${leaf.subject.replace(/\n/g, ", ")}, has another public key)`,
      });
    }
  } catch (e) {
    problems.push({ key: "tlsPrivateKey", message: `is not a PEM private key (${(e as Error).message})` });
  }
  chain.forEach((cert, i) => {
    const which = i === 0 ? "the certificate" : `chain certificate ${i + 1}`;
    if (new Date(cert.validTo) <= now) problems.push({ key: "tlsCertificate", message: `${which} expired on ${cert.validTo}` });
    if (new Date(cert.validFrom) > now)
      problems.push({ key: "tlsCertificate", message: `${which} is not valid before ${cert.validFrom}` });
    // Served in the order given: each must be issued by the next (nginx sends it as is; clients need the order).
    const next = chain[i + 1];
    if (next && !cert.checkIssued(next)) {
      problems.push({
        key: "tlsCertificate",
        message: `certificate ${i + 2} did not issue certificate ${i + 1}: give the leaf first, then each issuer in turn`,
      });
    }
  });
  if (!covers(leaf, domain)) {
    problems.push({ key: "tlsCertificate", message: `does not cover domain "${domain}" (it is for ${namesOf(leaf)})` });
  }
  return problems;
}

// --- issuing (tls: internal, and the tests' own CAs) ---
// These run inside Pulumi's dynamic-provider process too, as serialized closures: Node's crypto is required
// where it is used, since the module object a transpiler's import helper wraps cannot be serialized.

/** Node's crypto module, required at the call. */
function nodeCrypto(): typeof import("crypto") {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require("crypto") as typeof import("crypto");
}

/** The library, loaded on first use (also inside Pulumi's dynamic-provider process). */
function x509Lib(): typeof import("@peculiar/x509") {
  // The library's dependency injection (tsyringe) needs the Reflect metadata API loaded first.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  require("reflect-metadata");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const lib = require("@peculiar/x509") as typeof import("@peculiar/x509");
  lib.cryptoProvider.set(nodeCrypto().webcrypto as unknown as LibCrypto);
  return lib;
}

// Node's WebCrypto types, and the library's names for the same objects (typed against the DOM's).
type X509 = typeof import("@peculiar/x509");
type LibKeys = Parameters<X509["X509CertificateGenerator"]["createSelfSigned"]>[0]["keys"];
type LibSigningKey = Extract<Parameters<X509["X509CertificateGenerator"]["create"]>[0], { signingKey: unknown }>["signingKey"];
type LibCrypto = Parameters<X509["cryptoProvider"]["set"]>[0];
type WebKey = crypto.webcrypto.CryptoKey;
type WebKeyPair = crypto.webcrypto.CryptoKeyPair;

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

export interface IssueOptions {
  /** Subject common name. */
  commonName: string;
  /** Days from notBefore to notAfter. */
  days: number;
  /** Start of validity; default a minute ago (clocks of client and server differ slightly). */
  notBefore?: Date;
}

async function newKeys(): Promise<WebKeyPair> {
  return (await nodeCrypto().webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as WebKeyPair;
}

async function pkcs8Pem(key: WebKey): Promise<string> {
  const der = Buffer.from(await nodeCrypto().webcrypto.subtle.exportKey("pkcs8", key));
  return nodeCrypto()
    .createPrivateKey({ key: der, format: "der", type: "pkcs8" })
    .export({ format: "pem", type: "pkcs8" })
    .toString();
}

async function importSigningKey(keyPem: string): Promise<LibSigningKey> {
  const der = nodeCrypto().createPrivateKey(keyPem).export({ format: "der", type: "pkcs8" });
  return (await nodeCrypto().webcrypto.subtle.importKey("pkcs8", der, EC, true, ["sign"])) as unknown as LibSigningKey;
}

const serial = () =>
  nodeCrypto()
    .randomBytes(16)
    .toString("hex")
    .replace(/^[89a-f]/, "1"); // positive, 128 bits
const validity = (o: IssueOptions) => {
  const notBefore = o.notBefore ?? new Date(Date.now() - 60_000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + o.days * DAY_MS) };
};
const cn = (name: string) => `CN=${name.replace(/[,+="\\<>;#]/g, "_")}`;

/** A self-signed root CA (ECDSA P-256), allowed to issue one level of intermediates. */
export async function createRootCa(o: IssueOptions): Promise<CertifiedKey> {
  const x509 = x509Lib();
  const keys = await newKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: cn(o.commonName),
    ...validity(o),
    keys: keys as unknown as LibKeys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create((keys as unknown as LibKeys).publicKey),
    ],
  });
  return { certPem: `${cert.toString("pem").trim()}\n`, keyPem: await pkcs8Pem(keys.privateKey) };
}

export interface LeafOptions extends IssueOptions {
  dnsNames: string[];
  ips: string[];
  /** An intermediate CA instead of a server certificate. */
  ca?: boolean;
}

/** A certificate issued by `issuer`: a TLS server leaf for `dnsNames`/`ips`, or (ca) an intermediate. */
export async function issue(issuer: CertifiedKey, o: LeafOptions): Promise<CertifiedKey> {
  const x509 = x509Lib();
  const keys = await newKeys();
  const publicKey = (keys as unknown as LibKeys).publicKey;
  const issuerCert = new x509.X509Certificate(issuer.certPem);
  const names = [
    ...o.dnsNames.map((value) => ({ type: "dns" as const, value })),
    ...o.ips.map((value) => ({ type: "ip" as const, value })),
  ];
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: cn(o.commonName),
    issuer: issuerCert.subject,
    ...validity(o),
    publicKey,
    signingKey: await importSigningKey(issuer.keyPem),
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(o.ca === true, o.ca ? 0 : undefined, true),
      new x509.KeyUsagesExtension(
        o.ca ? x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign : x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      ...(o.ca ? [] : [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])]),
      ...(names.length ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuerCert),
    ],
  });
  return { certPem: `${cert.toString("pem").trim()}\n`, keyPem: await pkcs8Pem(keys.privateKey) };
}

/** The names a leaf for `domain` carries: the domain, and 127.0.0.1 with localhost (as Caddy and mkcert do). */
export function leafNames(domain: string): { dnsNames: string[]; ips: string[] } {
  if (IP_LITERAL.test(domain)) return { dnsNames: [], ips: [domain] };
  return { dnsNames: [domain], ips: domain === "localhost" ? ["127.0.0.1"] : [] };
}

/** The names of leafNames(domain) as openssl's subjectAltName value: "DNS:localhost,IP:127.0.0.1". */
export function leafSubjectAltName(domain: string): string {
  const { dnsNames, ips } = leafNames(domain);
  return [...dnsNames.map((d) => `DNS:${d}`), ...ips.map((ip) => `IP:${ip}`)].join(",");
}

// The certificate agent beside nginx (certs/agent.sh in the official certbot image): three volumes, a
// one-shot seed that puts a placeholder certificate where nginx reads it (nginx -t and nginx's start need the
// files), and the agent container, which shares nginx's PID namespace to reload it by SIGHUP (no docker socket).
//
// Wiring, in order: declareCertStore() → nginx, mounting `store.nginxVolumes` and depending on `store.seed`,
// its conf serving ACME_CHALLENGE_PATH from NGINX_WEBROOT and reading NGINX_CERT_PATH / NGINX_KEY_PATH →
// declareCertAgent() with the nginx container. Plain containers only: a swarm service cannot share a PID
// namespace with another task.
import * as path from "path";
import * as docker from "@pulumi/docker";
import * as pulumi from "@pulumi/pulumi";
import { buildImage, type BuiltImage } from "../infra/image";
import { labelList, objectName } from "../infra/naming";
import { ACME_CHALLENGE_PATH, ACME_WEBROOT, TLS_CERT_FILE, TLS_DIR, TLS_KEY_FILE } from "../nginx/conf";
import { AGENT_HEALTH, CertificateIssued } from "./issuance";
import { StackCaFiles } from "./stackCaFiles";

/** File names in the certificates volume (agent.sh writes them): the chain nginx serves, and its key (mode 600). */
export const CERT_FILE = TLS_CERT_FILE;
export const KEY_FILE = TLS_KEY_FILE;
/**
 * Where nginx mounts the volumes (read-only): over the folders the rendered conf reads in every tls mode, which
 * the conf volume holds (so a stack's conf names the same files whether ConfFile or the agent writes them).
 */
export const NGINX_CERTS_DIR = TLS_DIR;
export const NGINX_WEBROOT = ACME_WEBROOT;
export const NGINX_CERT_PATH = path.posix.join(NGINX_CERTS_DIR, CERT_FILE);
export const NGINX_KEY_PATH = path.posix.join(NGINX_CERTS_DIR, KEY_FILE);
export { ACME_CHALLENGE_PATH };
/** Where the agent mounts them (agent.sh's defaults). */
export const AGENT_DIRS = { data: "/data", certs: "/certs", webroot: "/webroot" } as const;
/**
 * The ACME client image the agent is built on: the official certbot one (a stand-in here,
 * scripts/build-standins.sh). certbot 4.0 and later ask for ACME profiles; 4.1 and later follow ARI.
 */
export const CERTBOT_IMAGE = "certbot/certbot:v5.8.0";
/** The longest the first issuance may take before `pulumi up` gives up (seconds). */
const AGENT_WAIT_S = 180;
export const LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory";

/** nginx's location for the challenges, inside the port-80 server block, before any redirect. */
export function acmeChallengeLocation(): string {
  return `location ^~ ${ACME_CHALLENGE_PATH} {\n    root ${NGINX_WEBROOT};\n    default_type text/plain;\n}`;
}

export interface CertStoreArgs {
  project: string;
  stack: string;
  labels: Record<string, string>;
  /** The names the certificate is for; the first names certbot's lineage. */
  domains: string[];
  /** The certbot image to build on (CERTBOT_IMAGE by default). */
  clientImage?: string;
  issuer: AcmeIssuer | InternalIssuer;
}

export interface CertStore {
  image: BuiltImage;
  /** certbot's account key and certificates, or the stack CA's leaf and the CA. With an ACME CA, kept on
   * `pulumi destroy` (retainOnDelete): a destroy and `up` reuse the account and the valid certificate instead
   * of hitting the CA's duplicate-certificate limit. */
  data: docker.Volume;
  /** What nginx reads: CERT_FILE and KEY_FILE. */
  certs: docker.Volume;
  /** The challenge files. */
  webroot: docker.Volume;
  /** Ran to completion before nginx starts: if the volume holds no certificate, the stack CA's leaf (internal)
   * or a placeholder. */
  seed: docker.Container;
  issuer: AcmeIssuer | InternalIssuer;
  /** For nginx's container, as infra/workload.ts's ReplicaSpec.volumes takes them. */
  nginxVolumes: { volumeName: pulumi.Output<string>; target: string; readOnly: boolean }[];
}

const volume = (name: string, volumeName: string, labels: Record<string, string>, opts: pulumi.CustomResourceOptions) =>
  new docker.Volume(name, { name: volumeName, labels: labelList(labels) }, opts);

export function declareCertStore(name: string, args: CertStoreArgs, opts: pulumi.CustomResourceOptions = {}): CertStore {
  const base = objectName(args.project, args.stack, "certs");
  const image = buildImage(
    `${name}-image`,
    {
      imageName: `${args.project}-cert-agent:${args.stack}`,
      context: __dirname,
      buildArgs: { CERTBOT_IMAGE: args.clientImage ?? CERTBOT_IMAGE },
      project: args.project,
      stack: args.stack,
    },
    opts,
  );
  const issuer = args.issuer;
  // The engine answers a create of an existing volume with that volume: after a destroy, `up` adopts the kept
  // one. A stack CA's leaf is not worth keeping: its CA goes with the state.
  const data = volume(`${name}-data`, `${base}-data`, args.labels, { ...opts, retainOnDelete: issuer.kind === "acme" });
  const certs = volume(`${name}-certs`, `${base}-certs`, args.labels, opts);
  const webroot = volume(`${name}-webroot`, `${base}-webroot`, args.labels, opts);
  // internal: the stack's CA in the data volume, written before the seed signs with it.
  const caFiles =
    issuer.kind === "internal"
      ? new StackCaFiles(
          `${name}-ca-files`,
          { volumeName: data.name, image: image.ref, labels: args.labels, certPem: issuer.ca.certPem, keyPem: issuer.ca.keyPem },
          opts,
        )
      : undefined;
  const seed = new docker.Container(
    `${name}-seed`,
    {
      name: `${base}-seed`,
      image: image.ref,
      command: ["seed"],
      envs: [...(issuer.kind === "internal" ? internalEnv(issuer) : []), `ACME_DOMAINS=${args.domains.join(",")}`],
      labels: labelList(args.labels),
      volumes: [
        { volumeName: certs.name, containerPath: AGENT_DIRS.certs },
        ...(caFiles ? [{ volumeName: data.name, containerPath: AGENT_DIRS.data }] : []),
      ],
      networkMode: "none",
      // As hardened as the agent: it only writes into the volume, which is root's.
      capabilities: { drops: ["ALL"] },
      readOnly: true,
      tmpfs: { "/tmp": "rw,nosuid,nodev,size=8m" },
      securityOpts: ["no-new-privileges:true"],
      // Runs once to the end (attach waits for it); a stopped seed is what it should be.
      attach: true,
      mustRun: false,
      healthcheck: { tests: ["NONE"] },
    },
    // A fixed name: a new seed (new names asked for) can only come after the old one is gone.
    { ...opts, deleteBeforeReplace: true, dependsOn: caFiles ? [caFiles] : [] },
  );
  return {
    image,
    data,
    certs,
    webroot,
    seed,
    issuer,
    nginxVolumes: [
      { volumeName: certs.name, target: NGINX_CERTS_DIR, readOnly: true },
      { volumeName: webroot.name, target: NGINX_WEBROOT, readOnly: true },
    ],
  };
}

export interface CertAgentArgs {
  project: string;
  stack: string;
  labels: Record<string, string>;
  store: CertStore;
  /** The nginx container to reload: the agent joins its PID namespace (by ID: a new nginx replaces the agent). */
  nginx: docker.Container;
  /** The stack's network: the way out to the ACME server (an internal issuer has no network). */
  network: docker.Network;
  domains: string[];
  /** Longest sleep between checks, backoff bounds after a failure (seconds). */
  checkSeconds?: number;
  backoffMinSeconds?: number;
  backoffMaxSeconds?: number;
  /** Longest `pulumi up` waits for the first certificate (certs/issuance.ts); also the healthcheck's start period. */
  waitTimeoutSeconds?: number;
}

/** certbot, against an ACME CA over HTTP-01. */
export interface AcmeIssuer {
  kind: "acme";
  /** The ACME directory URL (acmeServer). */
  server: string;
  email?: string;
  /** PEM of a CA to trust for the ACME server's own TLS (the contents of acmeCaFile): a private CA, Pebble. */
  caPem?: pulumi.Input<string>;
  /** An ACME profile to prefer (e.g. `shortlived`): certbot's --preferred-profile. */
  profile?: string;
}

/** The stack's own CA (tls: internal): the seed and the agent sign the leaf with openssl, from the CA written into the data volume. */
export interface InternalIssuer {
  kind: "internal";
  lifetimeSeconds: number;
  /** The leaf's subjectAltName, as openssl writes it: "DNS:localhost,IP:127.0.0.1". */
  sans: string;
  /** The CA (infra/stack-ca.ts), its key a secret. */
  ca: { certPem: pulumi.Input<string>; keyPem: pulumi.Input<string> };
}

/** agent.sh's environment for the internal issuer (seed and agent alike). */
const internalEnv = (i: InternalIssuer) => [
  "CERT_ISSUER=internal",
  `INTERNAL_LIFETIME_SECONDS=${i.lifetimeSeconds}`,
  `INTERNAL_SANS=${i.sans}`,
];

/** Seconds as Go prints a duration ("3m0s"), the way the provider reads a healthcheck's back: no perma-diff. */
export function goDuration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h ? `${h}h${m}m${s}s` : m ? `${m}m${s}s` : `${s}s`;
}

/** The agent container: environment of agent.sh, the three volumes, nginx's PID namespace, nothing else. */
export function certAgentContainerArgs(args: CertAgentArgs): docker.ContainerArgs {
  const issuer = args.store.issuer;
  const env: Record<string, pulumi.Input<string> | undefined> = {
    ...(issuer.kind === "acme" ? { ACME_SERVER: issuer.server, ACME_EMAIL: issuer.email } : {}),
    ACME_DOMAINS: args.domains.join(","),
    ...(issuer.kind === "acme" ? { ACME_CA_PEM: issuer.caPem, ACME_PROFILE: issuer.profile } : {}),
    ACME_CHECK_SECONDS: args.checkSeconds?.toString(),
    ACME_BACKOFF_MIN_SECONDS: args.backoffMinSeconds?.toString(),
    ACME_BACKOFF_MAX_SECONDS: args.backoffMaxSeconds?.toString(),
  };
  const waitTimeout = args.waitTimeoutSeconds ?? AGENT_WAIT_S;
  return {
    name: objectName(args.project, args.stack, "cert-agent"),
    image: args.store.image.ref,
    command: ["run"],
    envs: [
      ...(issuer.kind === "internal" ? internalEnv(issuer) : []),
      ...Object.entries(env).flatMap(([k, v]) => (v === undefined ? [] : [pulumi.interpolate`${k}=${v}`])),
    ],
    labels: labelList(args.labels),
    ...(issuer.kind === "acme" ? { networksAdvanced: [{ name: args.network.id }] } : { networkMode: "none" }),
    pidMode: pulumi.interpolate`container:${args.nginx.id}`,
    volumes: [
      { volumeName: args.store.data.name, containerPath: AGENT_DIRS.data },
      { volumeName: args.store.certs.name, containerPath: AGENT_DIRS.certs },
      { volumeName: args.store.webroot.name, containerPath: AGENT_DIRS.webroot },
    ],
    restart: "unless-stopped",
    // Root (the files nginx's root master reads, and the same user as that master to signal it) with no
    // capability at all, on a read-only root with /tmp for certbot's and the script's scratch files.
    capabilities: { drops: ["ALL"] },
    readOnly: true,
    tmpfs: { "/tmp": "rw,nosuid,nodev,size=8m" },
    securityOpts: ["no-new-privileges:true"],
    // Unhealthy at the first failed check (a renewal failing), except during the first issuance, which
    // CertificateIssued watches instead: checks failing in the start period do not count.
    healthcheck: {
      tests: ["CMD", ...AGENT_HEALTH],
      interval: "10s",
      timeout: "5s",
      retries: 1,
      startPeriod: goDuration(waitTimeout),
    },
    memory: 64,
    memorySwap: 64,
  };
}

export interface CertAgent {
  container: docker.Container;
  /** Done when the CA's certificate is in nginx; fails `pulumi up` with the CA's error (certs/issuance.ts). */
  issued: CertificateIssued;
}

export function declareCertAgent(name: string, args: CertAgentArgs, opts: pulumi.CustomResourceOptions = {}): CertAgent {
  const container = new docker.Container(name, certAgentContainerArgs(args), {
    ...opts,
    dependsOn: [args.nginx, args.store.seed],
  });
  const issued = new CertificateIssued(
    `${name}-issued`,
    container,
    { mode: args.store.issuer.kind, domains: args.domains, timeoutS: args.waitTimeoutSeconds ?? AGENT_WAIT_S },
    { parent: opts.parent },
  );
  return { container, issued };
}

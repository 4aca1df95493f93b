// The facts about the app that the stack, nginx, tests, tools and the bench need, each stated once; the
// Dockerfile receives them as build args. No Pulumi imports, so anything can read them cheaply.
import type { StackConfig } from "../infra/config";

/**
 * The files of this folder the image is built from (besides the Dockerfile): app/.dockerignore lets in these
 * alone, and a build's content hash covers them (infra/builds.ts).
 */
export const IMAGE_FILES = ["main.py", "requirements.txt", "gunicorn.conf.py"];
/** The route main.py serves for healthchecks. */
export const APP_HEALTH_PATH = "/healthz";
/** Where the image keeps the code, and where dev bind-mounts it. */
export const CODE_DIR = "/code";
/** Env var naming the file the app reads its secret key from (a swarm secret); main.py reads the same name. */
export const SECRET_KEY_FILE_ENV = "FLASK_SECRET_KEY_FILE";
/** Swarm mounts a secret at /run/secrets/<file name>. */
export const SECRET_KEY_FILE_NAME = "flask-secret-key";
export const SECRETS_DIR = "/run/secrets";
/** The unprivileged user the app runs as (created by the Dockerfile from this build arg). */
export const APP_UID = 10001;
/** upstreamTransport unix: each replica's socket volume, mounted here. */
export const APP_SOCKET_DIR = "/srv/socket";
/**
 * The name nginx connects to in the socket volume: a link to the socket of the container that serves now.
 * Each container binds a socket named after its hostname (app/gunicorn.conf.py, told the directory by
 * SOCKET_DIR_ENV), and the release's cutover step moves the link once the new container is healthy.
 */
export const SOCKET_FILE = "gunicorn.sock";
export const SOCKET_DIR_ENV = "GUNICORN_SOCKET_DIR";
/** Where app/Dockerfile puts app/gunicorn.conf.py (outside CODE_DIR, which dev mounts over). */
export const GUNICORN_CONF = "/etc/gunicorn/gunicorn.conf.py";
/**
 * How long gunicorn lets in-flight requests finish after SIGTERM (--graceful-timeout); Docker's stop timeout
 * and the delete of a replaced container wait a little longer before SIGKILL.
 */
export const APP_GRACEFUL_TIMEOUT_S = 20;

/** metricsPort set: the port gunicorn's master serves the app's Prometheus metrics on (inside the network only). */
export const APP_METRICS_PORT = 9200;
/**
 * metricsPort set: where each process of the app keeps its metric values (prometheus_client's multiprocess mode):
 * under /tmp, a tmpfs when hardened, which the app user can write either way; gunicorn empties it at start.
 */
export const APP_METRICS_DIR = "/tmp/app-metrics";
/** The env var that turns the app's metrics on (prometheus_client reads it) and names APP_METRICS_DIR. */
export const METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR";
/** The env var gunicorn.conf.py reads APP_METRICS_PORT from. */
export const METRICS_PORT_ENV = "APP_METRICS_PORT";
/** nginx-prometheus-exporter's network alias and port (the official image's default). */
export const NGINX_EXPORTER_ALIAS = "nginx-exporter";
export const NGINX_EXPORTER_PORT = 9113;
/**
 * gunicornAccessLog: one line per request, with the request ID nginx sends (%({x-request-id}i)s). gunicorn
 * 20.1's atoms: D is the time in microseconds.
 */
export const GUNICORN_ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(D)sus request_id=%({x-request-id}i)s';

/**
 * Run in a healthy new container: points SOCKET_FILE at the container's own socket. The link is made under a
 * temporary name and renamed over the old one, so nginx never finds the name missing.
 */
export function socketCutoverCommand(socketDir: string = APP_SOCKET_DIR): string[] {
  const script = [
    `cd ${socketDir}`,
    'own="$(hostname).sock"',
    'test -S "$own" || { echo "no socket $own in $PWD" >&2; exit 1; }',
    `ln -sfn "$own" .${SOCKET_FILE}.next`,
    `mv -Tf .${SOCKET_FILE}.next ${SOCKET_FILE}`,
  ].join(" && ");
  return ["sh", "-c", script];
}

/** Where nginx reaches the app: what its config is rendered from. */
export interface AppUpstream {
  /** The network alias, one value with the name nginx proxies to. */
  host: string;
  port: number;
  /** upstreamTransport unix: one socket per replica, each file named socketFile in its own volume. */
  sockets: number;
  socketFile: string;
}

export function appUpstream(app: StackConfig["app"]): AppUpstream {
  return { host: app.alias, port: app.port, sockets: app.transport === "unix" ? app.replicas : 0, socketFile: SOCKET_FILE };
}

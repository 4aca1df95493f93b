// The facts about the app that the stack, nginx, tests, tools and the bench need, each stated once; the
// Dockerfile receives them as build args. No Pulumi imports, so anything can read them cheaply.
import type { StackConfig } from "../infra/config";

/** The route main.py serves for healthchecks. */
export const APP_HEALTH_PATH = "/healthz";
/** Where the image keeps the code, and where dev bind-mounts it. */
export const CODE_DIR = "/code";
/** The unprivileged user the app runs as (created by the Dockerfile from this build arg). */
export const APP_UID = 10001;
/** upstreamTransport unix: gunicorn binds SOCKET_FILE in this directory, a volume per replica. */
export const APP_SOCKET_DIR = "/srv/socket";
export const SOCKET_FILE = "gunicorn.sock";

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

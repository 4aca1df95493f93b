// How one nginx container hands the edge to the next on plain containers, with no refused or reset
// connection. A holder container owns the network namespace (network, alias, published ports, sysctls) and
// outlives every nginx; each nginx joins it (infra/workload.ts netnsHolder) and listens on the ports with
// SO_REUSEPORT, so while both run the kernel spreads new connections over the two. A replacement:
//   1. boot new:     the new nginx starts beside the old one, on the same ports;
//   2. health-gate:  its own health socket answers (infra/cutover.ts);
//   3. drain old:    the old nginx reloads with every listen line moved to a socket of its own: its master
//                    closes the shared ports, the kernel moves connections still queued on them to the new
//                    nginx (net.ipv4.tcp_migrate_req in the holder), and its old workers finish their requests;
//   4. stop old:     Pulumi deletes it: SIGQUIT, a graceful exit with nothing left to serve.
// Without step 3 a stopped nginx leaves queued connections unanswered: measured, 16 timeouts per replacement
// under 16 connections a request each (its workers' copies of the sockets outlive the master's close).
import { drainedListen, LISTEN_DIR, LISTENERS, listenFile, NGINX_HEALTH_PATH, NGINX_HEALTH_SOCKET, type Listener } from "./conf";

/** Seconds between the drain and the old nginx's stop: for its queued connections to move and requests to end. */
export const DRAIN_S = 1;

/** Kernel setting of the holder's namespace: connections queued on a closing listener move to a live one. */
export const HANDOVER_SYSCTLS = { "net.ipv4.tcp_migrate_req": "1" };

const writeListens = (listens: Record<Listener, string>) =>
  LISTENERS.map((l) => {
    if (listens[l].includes("'")) throw new Error(`listen line for ${l} cannot be quoted: ${listens[l]}`);
    return `printf '%s\\n' '${listens[l]}' > ${listenFile(l)}`;
  });

/** The nginx container's command: write its listen lines into its own /run, then run nginx as the image does. */
export function nginxStartCommand(listens: Record<Listener, string>): string[] {
  return ["sh", "-c", ["set -e", `mkdir -p ${LISTEN_DIR}`, ...writeListens(listens), "exec nginx -g 'daemon off;'"].join("\n")];
}

/** Run in the old nginx once the new one is healthy: no shared port listened on, in-flight requests finish. */
export function nginxDrainCommand(): string[] {
  const drained = Object.fromEntries(LISTENERS.map((l) => [l, drainedListen(l)])) as Record<Listener, string>;
  // -t first: `nginx -s reload` exits 0 even when the master then refuses the conf and keeps listening.
  return ["sh", "-c", ["set -e", ...writeListens(drained), "nginx -t -q", "nginx -s reload"].join("\n")];
}

/** The healthcheck of a handing-over nginx: its own socket, not the shared port its peer may answer on. */
export const HANDOVER_HEALTHCHECK = [
  "curl",
  "-fsS",
  "-o",
  "/dev/null",
  "--unix-socket",
  NGINX_HEALTH_SOCKET,
  `http://localhost${NGINX_HEALTH_PATH}`,
];

// The names and labels a stack's Docker objects carry. Stack-scoped, so two stacks on one engine never
// overwrite each other; the labels are what tests, cleanup and the policy pack find them by.

/** Label keys, each stated once for the program, tests, tools and bench. */
export const LABEL = {
  project: "org.flask-proxy.project",
  stack: "org.flask-proxy.stack",
  /** On an app build: the appVersion it was built as. */
  appVersion: "org.flask-proxy.app-version",
  /** On an app build: the hash of what it was built from (infra/builds.ts). */
  appContent: "org.flask-proxy.app-content",
} as const;

export function stackLabels(project: string, stack: string): Record<string, string> {
  return { [LABEL.project]: project, [LABEL.stack]: stack };
}

/** Build args the Dockerfiles turn into the stack's labels on the image they build. */
export function labelBuildArgs(project: string, stack: string): Record<string, string> {
  return { PROJECT_LABEL: LABEL.project, PROJECT: project, STACK_LABEL: LABEL.stack, STACK: stack };
}

/** Docker's list form of a label map, as @pulumi/docker takes it. */
export function labelList(labels: Record<string, string>): { label: string; value: string }[] {
  return Object.entries(labels).map(([label, value]) => ({ label, value }));
}

/**
 * `<project>-<stack>-<service>`, and `-<n>` from the second replica on: replica 1 keeps the unsuffixed
 * name, so scaling 1 → N adds containers and renames none.
 */
export function objectName(project: string, stack: string, service: string, replica = 1): string {
  return `${project}-${stack}-${service}${replicaSuffix(replica)}`;
}

/** Pulumi resource names follow the same rule inside a component. */
export function replicaSuffix(replica: number): string {
  return replica === 1 ? "" : `-${replica}`;
}

/** The n-th host address of an IPv4 subnet, e.g. (172.30.77.0/24, 10) → 172.30.77.10. */
export function hostAddress(subnet: string, n: number): string {
  const [addr, bits] = subnet.split("/");
  const base = addr.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
  const size = 2 ** (32 - Number(bits));
  const network = base - (base % size);
  if (n <= 0 || n >= size - 1) throw new Error(`subnet ${subnet} has no host number ${n}`);
  const v = network + n;
  return [24, 16, 8, 0].map((s) => Math.floor(v / 2 ** s) % 256).join(".");
}

/** App replicas get fixed addresses from this host number on, when the network's subnet is pinned. */
export const FIRST_APP_HOST = 10;

import * as docker from "@pulumi/docker";
import type { Limits, StackConfig } from "./config";

/** The settings every container of a stack shares. */
export interface ContainerPolicy {
  labels: Record<string, string>;
  restartPolicy: StackConfig["restartPolicy"];
  healthchecks: boolean;
  waitForHealthy: boolean;
  bindAddress: string;
  hardened: boolean;
}

export function policyOf(cfg: StackConfig): ContainerPolicy {
  const { labels, restartPolicy, healthchecks, waitForHealthy, bindAddress, hardened } = cfg;
  return { labels, restartPolicy, healthchecks, waitForHealthy, bindAddress, hardened };
}

export function labelList(labels: Record<string, string>): { label: string; value: string }[] {
  return Object.entries(labels).map(([label, value]) => ({ label, value }));
}

/** Container arguments that follow from the shared policy alone. */
type BaseArgs = Pick<docker.ContainerArgs,
  "labels" | "restart" | "wait" | "waitTimeout" | "memory" | "cpus" | "logDriver" | "logOpts" | "readOnly" | "securityOpts">;

export function baseContainerArgs(policy: ContainerPolicy, limits: Limits): BaseArgs {
  return {
    labels: labelList(policy.labels),
    restart: policy.restartPolicy,
    // `pulumi up` returns only once the healthcheck passes, so a broken release fails the update.
    wait: policy.waitForHealthy,
    waitTimeout: policy.waitForHealthy ? 90 : undefined,
    memory: limits.memoryMb,
    cpus: limits.cpus === undefined ? undefined : String(limits.cpus),
    // json-file with rotation: the default driver grows without bound.
    logDriver: "json-file",
    logOpts: { "max-size": "10m", "max-file": "3" },
    // Hardened: nothing in the image can be changed at run time, and no process can gain privileges
    // through setuid binaries. Writable paths are tmpfs mounts listed by each container.
    readOnly: policy.hardened ? true : undefined,
    securityOpts: policy.hardened ? ["no-new-privileges:true"] : undefined,
  };
}

/** Capabilities for a hardened container: none, plus the few the process really needs. */
export function capabilities(policy: ContainerPolicy, adds: string[]): docker.types.input.ContainerCapabilities | undefined {
  return policy.hardened ? { drops: ["ALL"], adds: adds.length ? adds : undefined } : undefined;
}

export function localUrl(bindAddress: string, port: number): string {
  return `http://${bindAddress === "0.0.0.0" ? "localhost" : bindAddress}:${port}/`;
}

export function healthcheck(test: string[]): docker.types.input.ContainerHealthcheck {
  return { tests: ["CMD", ...test], interval: "5s", timeout: "3s", retries: 3, startPeriod: "10s" };
}

export function publish(policy: ContainerPolicy, internal: number, external: number | undefined) {
  return external === undefined ? [] : [{ internal, external, ip: policy.bindAddress, protocol: "tcp" }];
}

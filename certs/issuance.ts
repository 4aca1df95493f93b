// `pulumi up` with tls: acme (or internal) returns when the agent has the CA's certificate in nginx, or fails with the CA's
// own error at the agent's first failed attempt (not after a timeout). The gate asks the agent itself
// (`cert-agent health` run in it): exit 0 is a certificate from the CA, loaded; its status line says why not.
// An agent that renews a certificate still valid does not hold `up` back: its failing renewals show in its
// health and log (certs/agent.sh), while the installed certificate serves on.
import * as pulumi from "@pulumi/pulumi";
import type * as docker from "@pulumi/docker";
import { containerLog, engineClient, execIn, stackEngine, type EngineSettings } from "../infra/engine";

/** agent.sh's health command. */
export const AGENT_HEALTH = ["/usr/local/bin/cert-agent", "health"];

interface IssuanceInputs {
  containerId: string;
  /** The tls mode, for the message. */
  mode: "acme" | "internal";
  /** The names asked for, for the message. */
  domains: string[];
  timeoutS: number;
  engine: EngineSettings;
}

/** What the agent's status line says about the first issuance: done, still to come, or refused. */
export function issuanceState(healthExit: number, status: string): "issued" | "pending" | "refused" | "renewing" {
  if (healthExit === 0) return "issued";
  // agent.sh: "failing since … (n attempts); certificate: none yet; last error: …", or "none loaded yet, the
  // stored one …" when nginx did not take what the CA gave (a reload it refused).
  if (/failing since .*certificate: none/.test(status)) return "refused";
  // A certificate from the CA is loaded, and its renewal fails: that is the agent's health.
  if (/failing since .*certificate: the installed one/.test(status)) return "renewing";
  return "pending";
}

async function awaitCertificate(i: IssuanceInputs): Promise<void> {
  const agent = engineClient(i.engine).getContainer(i.containerId);
  const deadline = Date.now() + i.timeoutS * 1000;
  const names = i.domains.join(", ");
  for (;;) {
    const info = await agent.inspect();
    // An agent that exits is restarted (unless-stopped): either way it stopped, with its reason in the log.
    if (!info.State.Running || info.RestartCount > 0) {
      const log = await containerLog(agent, { tail: 5, timeoutMs: 10_000, what: "the agent's log" });
      throw new Error(
        `tls: ${i.mode}: the certificate agent stopped (exit code ${info.State.ExitCode}): ${`${log.stdout}${log.stderr}`.trim()}`,
      );
    }
    const r = await execIn(agent, AGENT_HEALTH, undefined, 10_000);
    const status = `${r.stdout}${r.stderr}`.trim();
    const state = issuanceState(r.exitCode, status);
    if (state === "issued" || state === "renewing") return;
    if (state === "refused") throw new Error(`tls: ${i.mode}: no certificate for ${names} from the CA: ${status}`);
    if (Date.now() > deadline) throw new Error(`tls: ${i.mode}: no certificate for ${names} after ${i.timeoutS} s: ${status}`);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

const issuanceProvider: pulumi.dynamic.ResourceProvider = {
  async create(inputs: IssuanceInputs) {
    await awaitCertificate(inputs);
    return { id: inputs.containerId, outs: inputs };
  },
  async diff(_id: string, olds: IssuanceInputs, news: IssuanceInputs) {
    return { changes: olds.containerId !== news.containerId };
  },
  // A new agent (new names, a new nginx): the same wait.
  async update(_id: string, _olds: IssuanceInputs, news: IssuanceInputs) {
    await awaitCertificate(news);
    return { outs: news };
  },
};

/** Waits for the agent's first certificate; runs again whenever the agent is replaced. */
export class CertificateIssued extends pulumi.dynamic.Resource {
  constructor(
    name: string,
    agent: docker.Container,
    spec: { mode: IssuanceInputs["mode"]; domains: string[]; timeoutS: number },
    opts: pulumi.CustomResourceOptions = {},
  ) {
    super(issuanceProvider, name, { containerId: agent.id, engine: stackEngine(), ...spec }, { ...opts, dependsOn: [agent] });
  }
}

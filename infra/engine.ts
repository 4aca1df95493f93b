// The Docker Engine as the program's dynamic resources reach it (infra/rollout.ts, infra/cutover.ts): the
// provider's `docker:host` when set, otherwise DOCKER_HOST or the local socket. Each function requires its
// modules itself: dynamic providers are serialized and run in a process of their own.
import type Dockerode from "dockerode";

/** A client for `dockerHost` (unix://, tcp://, http:// or ssh:// URL), or the environment's default engine. */
export function engineClient(dockerHost?: string): Dockerode {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Docker = require("dockerode") as typeof Dockerode;
  const url = dockerHost ? new URL(dockerHost) : undefined;
  if (!url) return new Docker();
  if (url.protocol === "unix:") return new Docker({ socketPath: url.pathname });
  return new Docker({
    protocol: url.protocol === "ssh:" ? "ssh" : "http",
    host: url.hostname,
    port: url.port || undefined,
    username: url.username || undefined,
  });
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` in a running container (as `user`, default the image's) and collects its output. */
export async function execIn(
  container: Dockerode.Container,
  cmd: string[],
  user?: string,
  timeoutMs = 30_000,
): Promise<ExecResult> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { PassThrough } = require("stream") as typeof import("stream");
  const exec = await container.exec({ Cmd: cmd, User: user, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({});
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (d: Buffer) => (stdout += d.toString("utf8")));
  err.on("data", (d: Buffer) => (stderr += d.toString("utf8")));
  container.modem.demuxStream(stream, out, err);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd.join(" ")}: no exit within ${timeoutMs} ms`)), timeoutMs);
    stream.on("end", () => {
      clearTimeout(timer);
      resolve();
    });
    stream.on("error", (e: Error) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  return { exitCode: (await exec.inspect()).ExitCode ?? -1, stdout, stderr };
}

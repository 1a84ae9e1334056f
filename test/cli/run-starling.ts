/**
 * Runs the real `starling` entry (`src/main.ts`) in a child process, for CLI tests. Nothing
 * runs at import.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** `src/main.ts` of this checkout. */
export const MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "src", "main.ts");

/** How a run ended. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options for {@link runStarling}. */
export interface RunOptions {
  /** Working directory; use an empty temporary one so no `cluster.config.json` is picked up. */
  cwd: string;
  /** Written to stdin, which is then closed (closed at once when absent). */
  input?: string;
  timeoutMs?: number;
}

/** An environment without the test runner's markers or STARLING_* overrides. */
export function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    // node --test marks its children with NODE_TEST_CONTEXT; the CLI is not a test file.
    if (key === "NODE_TEST_CONTEXT" || key.startsWith("STARLING_")) continue;
    env[key] = value;
  }
  return env;
}

/** Runs `starling ...args` to completion (killed after `timeoutMs`, default 60 s). */
export async function runStarling(args: readonly string[], options: RunOptions): Promise<RunResult> {
  const child = spawn(process.execPath, [MAIN, ...args], {
    cwd: options.cwd,
    env: cleanEnv(),
    stdio: ["pipe", "pipe", "pipe"],
    timeout: options.timeoutMs ?? 60_000,
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (text: string) => {
    stdout += text;
  });
  child.stderr.setEncoding("utf8").on("data", (text: string) => {
    stderr += text;
  });
  child.stdin.on("error", () => {}); // the CLI may exit before reading what we wrote
  child.stdin.end(options.input);
  const [code, signal] = (await once(child, "close")) as [number | null, NodeJS.Signals | null];
  return { code, signal, stdout, stderr };
}

/** A loopback port nothing listens on (just released by the OS), for "no node running" tests. */
export async function closedPort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

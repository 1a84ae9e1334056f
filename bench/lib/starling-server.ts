/**
 * Starts a Starling node as a child process for a benchmark and creates its users through the
 * admin endpoint. By default the node gets a fresh temporary data directory and ports chosen by
 * the kernel; a cluster driver passes fixed ports and a data directory of its own instead, so a
 * node can be restarted where it was. The node reports its ports in its "node ready" log line,
 * which is the only readiness signal used.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/** Listening ports a node reports when ready. */
export interface NodePorts {
  c2s: number;
  tls: number;
  http: number;
  /** The plain web listener (WebSocket and BOSH), when asked for with `--web-plain-port 0`. */
  webPlain?: number;
}

/** Options for {@link startStarling}. */
export interface StartStarlingOptions {
  /** Repository root holding src/main.ts. */
  repoRoot: string;
  domain: string;
  workers: number;
  /** How long to wait for "node ready". Default 60,000. */
  readyTimeoutMs?: number;
  /** Extra top-level configuration keys, merged over {@link BENCH_NODE_CONFIG}. */
  config?: Record<string, unknown>;
  /** Receives every server log line; by default only warn and above are forwarded to stderr. */
  onLogLine?: (line: string) => void;
  /** Use this data directory (created if missing) and keep it on stop; default a fresh temp one, removed on stop. */
  dataDir?: string;
  /** Fixed listening ports; each absent one is 0 (any free port). */
  ports?: Partial<NodePorts>;
  /** More `starling start` arguments (cluster flags). */
  extraArgs?: readonly string[];
  /** Pass `--allow-registration` (default true). */
  allowRegistration?: boolean;
  /** Append every log line to this file. */
  logFile?: string;
  /** Prefix of forwarded warnings on stderr (default "server"). */
  label?: string;
  /** The server's environment (default: the bench's own). */
  env?: NodeJS.ProcessEnv;
}

/** How a server process ended. */
export interface ServerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running benchmark server; {@link stop} is idempotent and {@link killNow} is safe in an exit handler. */
export interface StartedServer {
  pid: number;
  ports: NodePorts;
  dataDir: string;
  /** `cluster.replicationFactor` the node runs with, from its "node ready" line (null: not said). */
  replicationFactor: number | null;
  /** SIGTERM, wait for exit (SIGKILL after `timeoutMs`, default 10 s), remove a temporary data dir. */
  stop(timeoutMs?: number): Promise<void>;
  /** SIGKILL now (if running) and remove a temporary data dir; synchronous. */
  killNow(): void;
  /** Sends a signal without waiting. */
  signal(signal: NodeJS.Signals): void;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ServerExit>;
  /** Whether the process has exited. */
  hasExited(): boolean;
  /** Log lines at warn level or above seen so far. */
  warnings(): number;
  /** The last log lines, for error messages. */
  tail(): string;
}

const TAIL_LINES = 40;
const FORWARDED_WARNINGS = 10;

function isWarnOrAbove(line: string): boolean {
  try {
    const parsed = JSON.parse(line) as { level?: unknown };
    const level = parsed.level;
    if (typeof level === "number") return level >= 40;
    return level === "warn" || level === "error" || level === "fatal";
  } catch {
    return true;
  }
}

/**
 * The node configuration the bench runs with: the repository's defaults except that SASL is
 * allowed before TLS on the STARTTLS port, so that plain-TCP logins can be measured apart from
 * STARTTLS ones (Prosody's `c2s_require_encryption = false`). Loopback only, as always.
 */
export const BENCH_NODE_CONFIG = {
  $comment: "Written by bench/c2s-throughput.ts for one run; removed with the data directory.",
  tls: { requireBeforeAuth: false },
  log: { level: "info" },
} as const;

/**
 * Spawns `node src/main.ts start ...` with ports 0 and waits for its `"msg":"node ready"` line
 * carrying `"ports":{"c2s":N,"tls":N,"http":N}`. Rejects, after killing the child, if the node
 * exits or stays silent past the timeout.
 */
export async function startStarling(options: StartStarlingOptions): Promise<StartedServer> {
  const ownRoot = options.dataDir === undefined;
  const root = options.dataDir ?? mkdtempSync(join(tmpdir(), "starling-bench-"));
  const dataDir = ownRoot ? join(root, "data") : root;
  mkdirSync(dataDir, { recursive: true });
  const configFile = join(root, "bench.config.json");
  writeFileSync(configFile, JSON.stringify({ ...BENCH_NODE_CONFIG, ...options.config }));
  const label = options.label ?? "server";
  const args = [
    // As `npm start` runs it (package.json): the main thread's young generation small too.
    "--max-semi-space-size=1",
    "src/main.ts",
    "start",
    "--config",
    configFile,
    "--data",
    dataDir,
    "--domain",
    options.domain,
    "--host",
    "127.0.0.1",
    "--c2s-port",
    String(options.ports?.c2s ?? 0),
    "--tls-port",
    String(options.ports?.tls ?? 0),
    "--http-port",
    String(options.ports?.http ?? 0),
    "--web-port",
    "0",
    "--workers",
    String(options.workers),
    ...(options.allowRegistration === false ? [] : ["--allow-registration"]),
    ...(options.extraArgs ?? []),
  ];
  // process.execPath is the Node 24 binary this bench runs on (not the npx shim), so the pid
  // read from /proc is the server itself.
  const child: ChildProcess = spawn(process.execPath, args, {
    cwd: options.repoRoot,
    env: options.env ?? process.env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const tail: string[] = [];
  let warnings = 0;
  let replicationFactor: number | null = null;
  let exited = false;
  let removed = false;
  const removeDataDir = (): void => {
    if (removed || !ownRoot) return;
    removed = true;
    rmSync(root, { recursive: true, force: true });
  };
  const killNow = (): void => {
    if (!exited) child.kill("SIGKILL");
    removeDataDir();
  };
  const exitPromise = new Promise<ServerExit>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = true;
      resolve({ code, signal });
    });
  });

  const ports = await new Promise<NodePorts>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`Starling did not log "node ready" in time. Last lines:\n${tail.join("\n")}`));
    }, options.readyTimeoutMs ?? 60_000);
    const lines = createInterface({ input: child.stderr! });
    let ready = false;
    lines.on("line", (line) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      if (options.logFile !== undefined) appendFileSync(options.logFile, `${line}\n`);
      if (options.onLogLine) options.onLogLine(line);
      else if (isWarnOrAbove(line)) {
        warnings++;
        // An overloaded server can log thousands of identical lines; show the first few and
        // then one in a hundred, and report the total at stop.
        if (warnings <= FORWARDED_WARNINGS || warnings % 100 === 0) {
          // biome-ignore lint/suspicious/noConsole: forwarding the server's own warnings to the bench's stderr.
          console.error(`[${label}] (${warnings}) ${line.slice(0, 600)}`);
        }
      }
      if (ready) return;
      let parsed: { msg?: unknown; ports?: Partial<NodePorts>; replicationFactor?: unknown };
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      if (parsed.msg !== "node ready") return;
      const p = parsed.ports;
      if (typeof p?.c2s !== "number" || typeof p.http !== "number") {
        clearTimeout(timer);
        reject(new Error(`"node ready" line lacks ports: ${line}`));
        return;
      }
      ready = true;
      clearTimeout(timer);
      if (typeof parsed.replicationFactor === "number") replicationFactor = parsed.replicationFactor;
      resolve({
        c2s: p.c2s,
        tls: p.tls ?? 0,
        http: p.http,
        ...(typeof p.webPlain === "number" ? { webPlain: p.webPlain } : {}),
      });
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`Starling exited (code ${code}, signal ${signal}) before ready:\n${tail.join("\n")}`));
    });
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  }).catch((error: unknown) => {
    killNow();
    throw error;
  });

  return {
    pid: child.pid!,
    ports,
    dataDir,
    replicationFactor,
    killNow,
    exited: exitPromise,
    hasExited: () => exited,
    signal: (signal) => {
      if (!exited) child.kill(signal);
    },
    warnings: () => warnings,
    tail: () => tail.join("\n"),
    async stop(timeoutMs = 10_000) {
      if (!exited) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
        await exitPromise;
        clearTimeout(timer);
      }
      removeDataDir();
    },
  };
}

/** Largest batch the admin endpoint accepts per request. */
export const MAX_BULK_USERS = 10_000;

/**
 * Creates users through `POST /api/users/bulk` in batches of at most {@link MAX_BULK_USERS}.
 * Returns the number of users sent; throws on the first non-2xx answer.
 */
export async function bulkCreateUsers(
  httpPort: number,
  users: readonly { jid: string; password: string }[],
  options: { host?: string; adminToken?: string; timeoutMs?: number } = {},
): Promise<number> {
  const host = options.host ?? "127.0.0.1";
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (options.adminToken !== undefined) headers.authorization = `Bearer ${options.adminToken}`;
  for (let i = 0; i < users.length; i += MAX_BULK_USERS) {
    const batch = users.slice(i, i + MAX_BULK_USERS);
    const response = await fetch(`http://${host}:${httpPort}/api/users/bulk`, {
      method: "POST",
      headers,
      body: JSON.stringify({ users: batch }),
      signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
    });
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new Error(`POST /api/users/bulk answered ${response.status}: ${text.slice(0, 500)}`);
    }
    await response.body?.cancel();
  }
  return users.length;
}

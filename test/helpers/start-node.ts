/**
 * Starts a real Starling node as a child process in a fresh temporary data directory, waits for
 * its `"node ready"` log line, and stops it (SIGTERM) after the test. Nothing runs at import.
 *
 * With `STARLING_TEST_TARGET=prosody` in the environment, the same call starts Prosody (the
 * Debian package) on free loopback ports instead, so that parts of the suite can be checked
 * against a reference server: `STARLING_TEST_TARGET=prosody npx node --test test/integration/x.test.ts`.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { freePort } from "./free-port.ts";
import { DEFAULT_TIMEOUT_MS, WaitTimeoutError, waitUntil, withTimeout } from "./wait-for.ts";

/** The repository root, where `src/main.ts` lives. */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The listening ports the node reported in its ready line. */
export interface NodePorts {
  c2s: number;
  tls: number;
  http: number;
  /** The client web listener with TLS, and without (for ws:// from tests); absent for Prosody. */
  web?: number;
  webPlain?: number | null;
}

/** One log line of the node: the parsed JSON object, or `{ raw }` when it was not JSON. */
export type LogLine = Record<string, unknown> & { msg?: string; level?: number | string };

/** Options for {@link startNode}. */
export interface StartNodeOptions {
  /** Deep-merged into the config file written in the data dir (see src/config/defaults.ts). */
  config?: Record<string, unknown>;
  /** Passes `--allow-registration`. */
  allowRegistration?: boolean;
  /** Worker threads; default 2 so that cross-worker routing is exercised. */
  workers?: number;
  /** XMPP domain; default `localhost`. */
  domain?: string;
  /** Reuse this data directory (a restart); it is then not deleted on stop. */
  dataDir?: string;
  /** How long to wait for `"node ready"`; default 30 s. */
  readyTimeoutMs?: number;
  /** Extra environment variables for the child process. */
  env?: Record<string, string>;
  /**
   * Called with every log line as it arrives, before the node is ready: lets a test act at an
   * exact moment of the start (pause the process right after it registered in the cluster).
   */
  onLog?: ((line: LogLine, child: ChildProcess) => void) | undefined;
}

/** A running node. */
export interface StartedNode {
  /** `starling` or `prosody`: tests that check Starling-only behaviour can say so. */
  readonly kind: "starling" | "prosody";
  readonly domain: string;
  readonly host: string;
  readonly ports: NodePorts;
  readonly dataDir: string;
  /** Every stderr line so far, parsed. */
  readonly logs: LogLine[];
  readonly process: ChildProcess;
  /** Resolves with the exit code and signal once the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then waits for exit (SIGKILL after `timeoutMs`, and the promise rejects). */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends a signal without waiting. */
  kill(signal?: NodeJS.Signals): void;
  /** Creates an account through the admin HTTP API (Prosody: prosodyctl). `jid` may be a bare local part. */
  createUser(jid: string, password: string): Promise<void>;
  /** Creates many accounts in one request. */
  createUsers(users: ReadonlyArray<{ jid: string; password: string }>): Promise<void>;
  /** Waits for a log line that satisfies `predicate` (already logged lines count). */
  waitForLog(predicate: (line: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>;
  /** The captured log as text, for failure messages. */
  logText(lastLines?: number): string;
}

/** The hook registrar of a `TestContext` or suite: cleanup runs after the test. */
export interface AfterHook {
  after(fn: () => unknown): void;
  /** Where cleanup reports what it had to force (a TestContext has it). */
  diagnostic?(message: string): void;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Deep-merges plain objects; arrays and scalars in `source` replace those in `target`. */
export function deepMerge(
  target: Record<string, unknown>,
  source: Record<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...target };
  for (const [key, value] of Object.entries(source)) {
    const current = out[key];
    out[key] = isPlainObject(current) && isPlainObject(value) ? deepMerge(current, value) : value;
  }
  return out;
}

/**
 * The test process's environment without node --test's NODE_TEST_CONTEXT marker (the server is
 * not a test file) and without STARLING_* overrides, which would silently change the config.
 */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key === "NODE_TEST_CONTEXT" || key.startsWith("STARLING_")) continue;
    env[key] = value;
  }
  return env;
}

function parseLogLine(line: string): LogLine {
  try {
    const value: unknown = JSON.parse(line);
    if (isPlainObject(value)) return value as LogLine;
  } catch {
    // Not JSON: a crash trace or a warning printed by Node itself.
  }
  return { raw: line };
}

function formatLog(logs: LogLine[], lastLines: number): string {
  return logs
    .slice(-lastLines)
    .map((line) => (typeof line.raw === "string" ? line.raw : JSON.stringify(line)))
    .join("\n");
}

/**
 * Starts a node and registers its cleanup on `t` (when given): SIGTERM, wait for exit, delete the
 * temporary data directory. Rejects with the captured log when the node exits or is not ready in time.
 */
export async function startNode(t?: AfterHook, options: StartNodeOptions = {}): Promise<StartedNode> {
  if (process.env.STARLING_TEST_TARGET === "prosody") return startProsody(t, options);
  const ownStore = (options.config?.store as { url?: unknown } | undefined)?.url !== undefined;
  if (process.env.STARLING_TEST_TARGET === "cluster" && options.dataDir === undefined && !ownStore) {
    // The same behaviour tests against a node whose partitions are half on a second node.
    const { startClusterPair } = await import("./cluster.ts");
    const node = await startClusterPair(options);
    t?.after(() => node.stop().catch(() => {}));
    return node;
  }
  const domain = options.domain ?? "localhost";
  const host = "127.0.0.1";
  const ownDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "starling-test-")));
  const configFile = join(dataDir, "test-config.json");
  await writeFile(configFile, JSON.stringify(options.config ?? {}, null, 2));

  const args = [
    join(REPO_ROOT, "src", "main.ts"),
    "start",
    "--data",
    dataDir,
    "--domain",
    domain,
    "--host",
    host,
    "--c2s-port",
    "0",
    "--tls-port",
    "0",
    "--http-port",
    "0",
    "--web-port",
    "0",
    // A plain web port (for ws:// from tests) unless the config turns it off (a node that web
    // clients reach directly, as without a reverse proxy).
    ...((options.config?.ports as { webPlain?: unknown } | undefined)?.webPlain === null
      ? []
      : ["--web-plain-port", "0"]),
    "--workers",
    String(options.workers ?? 2),
    "--config",
    configFile,
  ];
  if (options.allowRegistration) args.push("--allow-registration");

  // SIGUSR2 makes the node write a diagnostic report (its JavaScript stack, its handles) to
  // its data directory: describeStuckNode uses it when a node does not do what a test waits for.
  const child = spawn(process.execPath, ["--report-on-signal", `--report-directory=${dataDir}`, ...args], {
    cwd: dataDir,
    env: { ...childEnv(), ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: LogLine[] = [];
  const exited = once(child, "exit").then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  const lines = createInterface({ input: child.stderr! });
  const stdoutLines = createInterface({ input: child.stdout! });
  stdoutLines.on("line", (line) => logs.push({ raw: `[stdout] ${line}` }));
  const lineListeners = new Set<(line: LogLine) => void>();
  lines.on("line", (text) => {
    const line = parseLogLine(text);
    logs.push(line);
    options.onLog?.(line, child);
    for (const listener of lineListeners) listener(line);
  });

  // If the test process dies first, do not leave a server behind.
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);

  const waitForLog = (
    predicate: (line: LogLine) => boolean,
    what: string,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ) => {
    const seen = logs.find(predicate);
    if (seen) return Promise.resolve(seen);
    let listener: ((line: LogLine) => void) | undefined;
    const found = new Promise<LogLine>((resolve) => {
      listener = (line) => {
        if (predicate(line)) resolve(line);
      };
      lineListeners.add(listener);
    });
    return withTimeout(found, what, timeoutMs).finally(() => {
      if (listener) lineListeners.delete(listener);
    });
  };

  let ready: LogLine;
  try {
    ready = await Promise.race([
      waitForLog((line) => line.msg === "node ready", '"node ready"', options.readyTimeoutMs ?? 30_000),
      exited.then(({ code, signal }) => {
        throw new Error(`exited with code ${code} signal ${signal} before "node ready"`);
      }),
    ]);
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    process.off("exit", killOnExit);
    if (ownDataDir) await rm(dataDir, { recursive: true, force: true });
    const reason = error instanceof WaitTimeoutError ? error.message : String(error);
    throw new Error(`Starling did not start: ${reason}\n--- node log ---\n${formatLog(logs, 200)}`, {
      cause: error,
    });
  }
  const ports = ready.ports as NodePorts | undefined;
  if (
    !ports ||
    !Number.isInteger(ports.c2s) ||
    !Number.isInteger(ports.tls) ||
    !Number.isInteger(ports.http)
  ) {
    child.kill("SIGKILL");
    throw new Error(`"node ready" line has no ports {c2s,tls,http}: ${JSON.stringify(ready)}`);
  }

  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  const stop = (timeoutMs = 15_000) => {
    stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      try {
        return await withTimeout(exited, "the node to exit after SIGTERM", timeoutMs);
      } catch (error) {
        child.kill("SIGKILL");
        await exited;
        throw error;
      } finally {
        process.off("exit", killOnExit);
      }
    })();
    return stopping;
  };

  // A node started with admin.key wants it on every API call.
  const adminKey = (options.config?.admin as { key?: string } | undefined)?.key;
  const postAdmin = async (path: string, body: unknown) => {
    const response = await fetch(`http://${host}:${ports.http}${path}`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(adminKey === undefined ? {} : { authorization: `Bearer ${adminKey}` }),
      },
      body: JSON.stringify(body),
    });
    if (response.status !== 201 && response.status !== 200) {
      throw new Error(`POST ${path} answered ${response.status}: ${await response.text()}`);
    }
    await response.body?.cancel();
  };
  const toJid = (jid: string) => (jid.includes("@") ? jid : `${jid}@${domain}`);

  const node: StartedNode = {
    kind: "starling",
    domain,
    host,
    ports,
    dataDir,
    logs,
    process: child,
    exited,
    stop,
    kill: (signal = "SIGTERM") => {
      child.kill(signal);
    },
    createUser: (jid, password) => postAdmin("/api/users", { jid: toJid(jid), password }),
    createUsers: (users) =>
      postAdmin("/api/users/bulk", {
        users: users.map((u) => ({ jid: toJid(u.jid), password: u.password })),
      }),
    waitForLog,
    logText: (lastLines = 200) => formatLog(logs, lastLines),
  };

  t?.after(async () => {
    try {
      // A node that ignores SIGTERM is the subject of its own test ("SIGTERM ends every client
      // stream..."); here it is killed and noted, so that it does not mask this test's result.
      await stop(5_000).catch((error: unknown) => {
        const message = `cleanup: ${(error as Error).message}; the node was killed with SIGKILL`;
        if (t.diagnostic) t.diagnostic(message);
        else process.emitWarning(message);
      });
    } finally {
      if (ownDataDir) await rm(dataDir, { recursive: true, force: true });
    }
  });
  return node;
}

const execFileAsync = promisify(execFile);

/** Starts Prosody in the foreground with an equivalent configuration, for validating the tests. */
async function startProsody(t: AfterHook | undefined, options: StartNodeOptions): Promise<StartedNode> {
  const domain = options.domain ?? "localhost";
  const host = "127.0.0.1";
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "starling-prosody-")));
  const ports: NodePorts = { c2s: await freePort(), tls: await freePort(), http: await freePort() };
  await execFileAsync("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "2",
    "-subj",
    `/CN=${domain}`,
    "-addext",
    `subjectAltName=DNS:${domain}`,
    "-keyout",
    join(dataDir, "key.pem"),
    "-out",
    join(dataDir, "cert.pem"),
  ]);
  const config = deepMerge(
    { tls: { requireBeforeAuth: true }, registration: {}, limits: {} },
    options.config ?? {},
  );
  const tlsConfig = config.tls as Record<string, unknown>;
  const limits = config.limits as Record<string, unknown>;
  const registration = config.registration as Record<string, unknown>;
  const lua = `
pidfile = "${dataDir}/prosody.pid"
run_as_root = true
data_path = "${dataDir}"
log = { { levels = { min = "debug" }, to = "console" } }
interfaces = { "${host}" }
c2s_ports = { ${ports.c2s} }
c2s_direct_tls_ports = { ${ports.tls} }
http_ports = { ${ports.http} }
https_ports = { }
s2s_ports = { }
c2s_require_encryption = ${tlsConfig.requireBeforeAuth === false ? "false" : "true"}
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
allow_registration = ${options.allowRegistration ? "true" : "false"}
registration_throttle_max = ${Number(registration.perAddressPerWindow ?? 5)}
registration_throttle_period = ${Math.ceil(Number(registration.windowMs ?? 3_600_000) / 1000)}
registration_whitelist = { ${((registration.allowList as string[] | undefined) ?? ["127.0.0.1", "::1"]).map((a) => `"${a}"`).join(", ")} }
whitelist_registration_only = false
c2s_stanza_size_limit = ${Number(limits.maxStanzaBytes ?? 262_144)}
smacks_hibernation_time = ${Number(limits.smResumeTimeoutSeconds ?? 300)}
offline_message_limit = ${Number(limits.maxOfflineMessagesPerUser ?? 1000)}
ssl = { certificate = "${dataDir}/cert.pem", key = "${dataDir}/key.pem" }
modules_enabled = { "roster", "saslauth", "tls", "disco", "carbons", "blocklist", "vcard_legacy", "private",
  "ping", "version", "register", "smacks", "offline", "time", "limits" }
VirtualHost "${domain}"
`;
  const configFile = join(dataDir, "prosody.cfg.lua");
  await writeFile(configFile, lua);
  // Started as root, Prosody drops to the "prosody" user, which must read and write here.
  if (process.getuid?.() === 0) await execFileAsync("chown", ["-R", "prosody", dataDir]);
  const child = spawn("prosody", ["-F", "--config", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  const logs: LogLine[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on("line", (raw) => logs.push({ raw }));
  }
  const exited = once(child, "exit").then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  try {
    await waitUntil(
      () =>
        new Promise<boolean>((resolve) => {
          const socket = net.connect(ports.c2s, host);
          socket.once("connect", () => {
            socket.destroy();
            resolve(true);
          });
          socket.once("error", () => resolve(false));
        }),
      "Prosody to listen",
      20_000,
    );
  } catch (error) {
    child.kill("SIGKILL");
    await exited;
    process.off("exit", killOnExit);
    if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    throw new Error(`Prosody did not start: ${error}\n${formatLog(logs, 60)}`, { cause: error });
  }
  const prosodyctl = (...args: string[]) => execFileAsync("prosodyctl", ["--config", configFile, ...args]);
  const createUser = async (jid: string, password: string) => {
    const bare = jid.includes("@") ? jid : `${jid}@${domain}`;
    await prosodyctl("register", bare.split("@")[0]!, domain, password);
  };
  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  const stop = (timeoutMs = 15_000) => {
    stopping ??= withTimeout(
      (async () => {
        child.kill("SIGTERM");
        return exited;
      })(),
      "Prosody to exit",
      timeoutMs,
    ).finally(() => process.off("exit", killOnExit));
    return stopping;
  };
  const node: StartedNode = {
    kind: "prosody",
    domain,
    host,
    ports,
    dataDir,
    logs,
    process: child,
    exited,
    stop,
    kill: (signal = "SIGTERM") => {
      child.kill(signal);
    },
    createUser,
    createUsers: async (users) => {
      for (const user of users) await createUser(user.jid, user.password);
    },
    waitForLog: (predicate, what, timeoutMs = DEFAULT_TIMEOUT_MS) =>
      waitUntil(() => logs.find(predicate), what, timeoutMs),
    logText: (lastLines = 200) => formatLog(logs, lastLines),
  };
  t?.after(async () => {
    try {
      await stop();
    } finally {
      if (options.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
    }
  });
  return node;
}

/** Reads the PEM certificate the node generated under `dataDir/tls/` (undefined if none). */
export async function readGeneratedCertificate(dataDir: string): Promise<string | undefined> {
  const dir = join(dataDir, "tls");
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const text = await readFile(join(dir, name), "utf8").catch(() => "");
    if (text.includes("BEGIN CERTIFICATE")) return text;
  }
  return undefined;
}

/**
 * What a node that does not do what a test waits for is doing: whether it burns CPU (from
 * /proc over half a second) and its main thread's JavaScript stack (a diagnostic report asked
 * for with SIGUSR2, written to its data directory). For failure messages.
 */
export async function describeStuckNode(node: StartedNode): Promise<string> {
  const pid = node.process.pid;
  if (pid === undefined) return "no process";
  const ticks = async () => {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  };
  const before = await ticks();
  const existing = new Set(await readdir(node.dataDir));
  node.kill("SIGUSR2");
  await new Promise((resolve) => setTimeout(resolve, 500));
  const cpu = `${(await ticks()) - before} CPU ticks in 0.5 s`;
  for (let i = 0; i < 20; i++) {
    const report = (await readdir(node.dataDir)).find((f) => f.startsWith("report.") && !existing.has(f));
    if (report !== undefined) {
      const text = await readFile(join(node.dataDir, report), "utf8").catch(() => "");
      try {
        const parsed = JSON.parse(text) as { javascriptStack?: { message?: string; stack?: string[] } };
        const stack = parsed.javascriptStack?.stack ?? [];
        return `${cpu}; main thread: ${parsed.javascriptStack?.message ?? "?"}\n  ${stack.slice(0, 25).join("\n  ")}`;
      } catch {
        // Still being written: try again.
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return `${cpu}; no diagnostic report`;
}

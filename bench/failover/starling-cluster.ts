/**
 * Starts and breaks Starling nodes on loopback for a failover scenario. Each node gets fixed
 * ports and its own data directory for the whole run, so that a node restarted after a kill or
 * a drain comes back where clients expect it. Two or more nodes (or --postgres) share one fresh
 * embedded PostgreSQL, stopped at the end; one node alone keeps the embedded LevelDB store.
 *
 * Cluster flags follow the `starling start` interface: `--node NAME --peer-port N --secret S
 * --store URL [--join HOST:PEERPORT]`; the first node forms the cluster, later ones join it.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startPostgres, type TestServer } from "../../test/helpers/postgres.ts";
import type { Address } from "../lib/sim-user.ts";
import { bulkCreateUsers, type StartedServer, startStarling } from "../lib/starling-server.ts";
import {
  type ActionResult,
  type ClusterDriver,
  type FaultAction,
  type NodeSummary,
  since,
} from "./cluster-driver.ts";

/** Options for {@link StarlingCluster}. */
export interface StarlingClusterOptions {
  /** Repository root holding src/main.ts. */
  repoRoot: string;
  /** Nodes started at the beginning. */
  initialNodes: number;
  /** Nodes the run may have (initial plus those that join later). */
  totalNodes: number;
  workers: number;
  /** `cluster.replicationFactor` of every node; undefined: the server's default. */
  replicationFactor?: number | undefined;
  domain: string;
  /** Use PostgreSQL with a single node too (always used with two or more). */
  postgres: boolean;
  /** Where node-<i>.log files go. */
  logDir: string;
  /** Forward every node log line to stderr. */
  forwardLogs: boolean;
  adminToken: string | undefined;
  /** Progress messages. */
  progress: (message: string, fields?: Record<string, unknown>) => void;
}

interface NodeSlot {
  name: string;
  ports: { c2s: number; tls: number; http: number; peer: number };
  dataDir: string;
  server: StartedServer | undefined;
  starts: number;
  warnings: number;
}

/** Bound on a node's start (its "node ready" line), on `leave` and on a graceful stop. */
const READY_TIMEOUT_MS = 60_000;
const LEAVE_TIMEOUT_MS = 120_000;
const MEMBER_UP_TIMEOUT_MS = 60_000;

/** Whether `view` (GET /api/cluster) lists `name` as an up member; undefined when the shape is unknown. */
export function memberIsUp(view: unknown, name: string): boolean | undefined {
  const members = (view as { members?: unknown } | undefined)?.members;
  if (!Array.isArray(members)) return undefined;
  const member = members.find((m: Record<string, unknown>) =>
    [m.node, m.name, m.id, m.nodeId].includes(name),
  ) as Record<string, unknown> | undefined;
  if (member === undefined) return false;
  const status = member.status as unknown;
  const kind = typeof status === "object" && status !== null ? (status as { kind?: unknown }).kind : status;
  return kind === "up";
}

/** `env` without `STARLING_REPLICATION_FACTOR`. */
function withoutReplicationFactor(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { STARLING_REPLICATION_FACTOR: _, ...rest } = env;
  return rest;
}

/** See the file comment. */
export class StarlingCluster implements ClusterDriver {
  readonly addresses: Address[] = [];
  readonly names: string[] = [];
  #options: StarlingClusterOptions;
  #clustered: boolean;
  #root: string | undefined;
  #slots: NodeSlot[] = [];
  #postgres: TestServer | undefined;
  #storeUrl: string | undefined;
  #secret = randomBytes(16).toString("hex");
  #stopped = false;

  constructor(options: StarlingClusterOptions) {
    this.#options = options;
    this.#clustered = options.totalNodes > 1;
  }

  async start(users: readonly { jid: string; password: string }[]): Promise<void> {
    const o = this.#options;
    const root = mkdtempSync(join(tmpdir(), "starling-failover-"));
    this.#root = root;
    // Under root, embedded PostgreSQL runs as the "postgres" user, which must enter this tree.
    chmodSync(root, 0o755);
    for (let i = 0; i < o.totalNodes; i++) {
      const ports = {
        c2s: await freePort(),
        tls: await freePort(),
        http: await freePort(),
        peer: await freePort(),
      };
      const name = `n${i}`;
      this.#slots.push({ name, ports, dataDir: join(root, name), server: undefined, starts: 0, warnings: 0 });
      this.addresses.push({ host: "127.0.0.1", port: ports.c2s });
      this.names.push(name);
    }
    if (this.#clustered || o.postgres) {
      const pgRoot = join(root, "pg");
      mkdirSync(pgRoot, { mode: 0o755 });
      const started = performance.now();
      this.#postgres = await startPostgres(pgRoot);
      this.#storeUrl = `postgres://postgres:${this.#postgres.password}@127.0.0.1:${this.#postgres.port}/postgres`;
      o.progress("PostgreSQL ready", { port: this.#postgres.port, ms: since(started) });
    }
    for (let i = 0; i < o.initialNodes; i++) {
      const started = performance.now();
      await this.#startNode(i, i === 0 ? undefined : 0);
      o.progress(`node ${this.names[i]} ready`, { ports: this.#slots[i]!.ports, ms: since(started) });
    }
    const started = performance.now();
    await bulkCreateUsers(
      this.#slots[0]!.ports.http,
      users,
      o.adminToken === undefined ? {} : { adminToken: o.adminToken },
    );
    o.progress(`created ${users.length} users`, { ms: since(started) });
  }

  async #startNode(i: number, seed: number | undefined): Promise<void> {
    const o = this.#options;
    const slot = this.#slots[i]!;
    const extraArgs: string[] = [];
    if (this.#storeUrl !== undefined) extraArgs.push("--store", this.#storeUrl);
    if (this.#clustered) {
      // Each node's peer links on an address of its own, so that a partition can cut them alone.
      extraArgs.push("--node", slot.name, "--peer-host", peerHostOf(i));
      extraArgs.push("--peer-port", String(slot.ports.peer), "--secret", this.#secret);
      if (seed !== undefined)
        extraArgs.push("--join", `${peerHostOf(seed)}:${this.#slots[seed]!.ports.peer}`);
    }
    const logFile = join(o.logDir, `node-${i}.log`);
    slot.warnings += slot.server?.warnings() ?? 0;
    slot.starts++;
    slot.server = await startStarling({
      repoRoot: o.repoRoot,
      domain: o.domain,
      workers: o.workers,
      dataDir: slot.dataDir,
      ports: { c2s: slot.ports.c2s, tls: slot.ports.tls, http: slot.ports.http },
      extraArgs,
      logFile,
      label: slot.name,
      readyTimeoutMs: READY_TIMEOUT_MS,
      ...(o.replicationFactor === undefined
        ? {}
        : {
            config: { cluster: { replicationFactor: o.replicationFactor } },
            // The node reads STARLING_* variables after its config file: an inherited one would
            // silently replace the factor asked for (it was how the factor was set before).
            env: withoutReplicationFactor(process.env),
          }),
      ...(o.forwardLogs ? { onLogLine: (line: string) => o.progress(`[${slot.name}] ${line}`) } : {}),
    });
  }

  /** A running node other than `except`, to join through. */
  #seedFor(except: number): number | undefined {
    for (let i = 0; i < this.#slots.length; i++) if (i !== except && this.isRunning(i)) return i;
    return undefined;
  }

  isRunning(i: number): boolean {
    const server = this.#slots[i]?.server;
    return server !== undefined && !server.hasExited();
  }

  async kill(i: number): Promise<ActionResult> {
    const server = this.#slots[i]?.server;
    if (server === undefined || server.hasExited()) return { ok: false, detail: "not running", steps: [] };
    const started = performance.now();
    server.signal("SIGKILL");
    await server.exited;
    return { ok: true, steps: [{ step: "SIGKILL to exit", ms: since(started) }] };
  }

  async drain(i: number): Promise<ActionResult> {
    const slot = this.#slots[i]!;
    const server = slot.server;
    if (server === undefined || server.hasExited()) return { ok: false, detail: "not running", steps: [] };
    if (!this.#clustered) return { ok: false, detail: "a single node cannot be drained", steps: [] };
    const steps: ActionResult["steps"] = [];
    let started = performance.now();
    const leave = await runCommand(
      process.execPath,
      ["src/main.ts", "leave", "--http-port", String(slot.ports.http)],
      this.#options.repoRoot,
      LEAVE_TIMEOUT_MS,
    );
    steps.push({ step: "starling leave", ms: since(started) });
    started = performance.now();
    const exited = await Promise.race([
      server.exited.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), LEAVE_TIMEOUT_MS).unref()),
    ]);
    steps.push({ step: "node exit after leave", ms: since(started) });
    if (!exited) {
      server.signal("SIGKILL");
      await server.exited;
    }
    const ok = leave.code === 0 && exited;
    return {
      ok,
      steps,
      ...(ok
        ? {}
        : {
            detail: `leave exited ${leave.code}${exited ? "" : "; node did not exit (killed)"}: ${leave.output}`,
          }),
    };
  }

  async join(i: number): Promise<ActionResult> {
    if (this.isRunning(i)) return { ok: false, detail: "already running", steps: [] };
    const steps: ActionResult["steps"] = [];
    let started = performance.now();
    const seed = this.#clustered ? this.#seedFor(i) : undefined;
    try {
      await this.#startNode(i, seed);
    } catch (error) {
      return { ok: false, detail: (error as Error).message.slice(0, 2000), steps };
    }
    steps.push({ step: "start to node ready", ms: since(started) });
    if (!this.#clustered) return { ok: true, steps };
    started = performance.now();
    const up = await this.#waitMemberUp(i);
    steps.push({ step: "node ready to member up", ms: since(started) });
    if (up === false) return { ok: false, detail: "not an up member of the cluster view in time", steps };
    return {
      ok: true,
      steps,
      ...(up === undefined ? { detail: "no cluster view to confirm membership" } : {}),
    };
  }

  /** Polls node i's view until it lists itself as up; undefined if it offers no view. */
  async #waitMemberUp(i: number): Promise<boolean | undefined> {
    const slot = this.#slots[i]!;
    const deadline = Date.now() + MEMBER_UP_TIMEOUT_MS;
    while (Date.now() < deadline && this.isRunning(i)) {
      const view = await fetchView(slot.ports.http, this.#options.adminToken);
      if (view === "absent") return undefined;
      if (view !== undefined && memberIsUp(view, slot.name) !== false) return memberIsUp(view, slot.name);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    return false;
  }

  async restart(i: number): Promise<ActionResult> {
    const steps: ActionResult["steps"] = [];
    if (this.#clustered) {
      const drained = await this.drain(i);
      steps.push(...drained.steps);
      if (!drained.ok && this.isRunning(i)) return { ...drained, steps };
      const joined = await this.join(i);
      steps.push(...joined.steps);
      const detail = [drained.detail, joined.detail].filter(Boolean).join("; ");
      return { ok: drained.ok && joined.ok, steps, ...(detail ? { detail } : {}) };
    }
    const server = this.#slots[i]?.server;
    if (server === undefined || server.hasExited()) return { ok: false, detail: "not running", steps };
    const started = performance.now();
    await server.stop(30_000);
    steps.push({ step: "SIGTERM to exit", ms: since(started) });
    const joined = await this.join(i);
    steps.push(...joined.steps);
    return { ...joined, steps };
  }

  async fault(action: FaultAction, i: number): Promise<ActionResult> {
    const started = performance.now();
    const done = (detail?: string): ActionResult => ({
      ok: detail === undefined,
      steps: [{ step: action, ms: since(started) }],
      ...(detail === undefined ? {} : { detail }),
    });
    try {
      switch (action) {
        case "pause-node":
        case "resume-node": {
          const server = this.#slots[i]?.server;
          if (server === undefined || server.hasExited()) return done("not running");
          server.signal(action === "pause-node" ? "SIGSTOP" : "SIGCONT");
          return done();
        }
        case "cut-node":
        case "heal-node": {
          if (!this.#clustered) return done("a single node has no peer links");
          // Everything to and from the node's peer address, both ways (loopback passes INPUT).
          const verb = action === "cut-node" ? "-I" : "-D";
          for (const direction of ["-s", "-d"]) {
            const result = await runCommand(
              "iptables",
              [verb, "INPUT", direction, peerHostOf(i), "-j", "DROP"],
              this.#options.repoRoot,
              10_000,
            );
            if (result.code !== 0) return done(`iptables exited ${result.code}: ${result.output}`);
          }
          return done();
        }
        case "pause-db":
        case "resume-db":
        case "crash-db":
        case "restart-db": {
          const pg = this.#postgres;
          if (pg === undefined)
            return done("no PostgreSQL in this run (one node on LevelDB: use --postgres)");
          if (action === "restart-db") await pg.restart();
          else
            await pg.signal(
              action === "pause-db" ? "SIGSTOP" : action === "resume-db" ? "SIGCONT" : "SIGKILL",
            );
          return done();
        }
        default: {
          const never: never = action;
          return done(`unknown fault ${String(never)}`);
        }
      }
    } catch (error) {
      return done((error as Error).message.slice(0, 500));
    }
  }

  pids(): (number | undefined)[] {
    return this.#slots.map((slot, i) => (this.isRunning(i) ? slot.server!.pid : undefined));
  }

  async clusterView(): Promise<unknown> {
    const i = this.#seedFor(-1);
    if (i === undefined || !this.#clustered) return undefined;
    const view = await fetchView(this.#slots[i]!.ports.http, this.#options.adminToken);
    return view === "absent" ? undefined : view;
  }

  nodeSummaries(): NodeSummary[] {
    return this.#slots.map((slot, i) => ({
      node: i,
      name: slot.name,
      address: this.addresses[i]!,
      starts: slot.starts,
      warnings: slot.warnings + (slot.server?.warnings() ?? 0),
      replicationFactor: slot.server?.replicationFactor ?? null,
    }));
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await Promise.all(
      this.#slots.map((slot) => slot.server?.stop(15_000).catch(() => slot.server?.killNow())),
    );
    if (this.#postgres !== undefined) {
      await Promise.race([
        this.#postgres.stop().catch(() => undefined),
        new Promise((resolve) => setTimeout(resolve, 20_000).unref()),
      ]);
      this.#postgres = undefined;
    }
    this.killNow();
  }

  killNow(): void {
    for (const slot of this.#slots) slot.server?.killNow();
    const root = this.#root;
    if (root === undefined) return;
    // A PostgreSQL left by an interrupted run: its postmaster.pid names the process.
    const pgRoot = join(root, "pg");
    if (existsSync(pgRoot)) {
      for (const entry of readdirSync(pgRoot)) {
        const pidFile = join(pgRoot, entry, "postmaster.pid");
        if (!existsSync(pidFile)) continue;
        const pid = Number(readFileSync(pidFile, "utf8").split("\n")[0]);
        if (Number.isInteger(pid) && pid > 1) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
      }
    }
    rmSync(root, { recursive: true, force: true });
    this.#root = undefined;
  }
}

/** GET /api/cluster: the parsed view, "absent" when the node has no such endpoint, undefined on errors. */
/** Node i's peer address: loopback, one address per node (127.0.0.11, .12, ...). */
function peerHostOf(i: number): string {
  return `127.0.0.${11 + i}`;
}

async function fetchView(httpPort: number, adminToken: string | undefined): Promise<unknown> {
  try {
    const response = await fetch(`http://127.0.0.1:${httpPort}/api/cluster`, {
      headers: adminToken === undefined ? {} : { authorization: `Bearer ${adminToken}` },
      signal: AbortSignal.timeout(2000),
    });
    if (response.status === 404) {
      await response.body?.cancel();
      return "absent";
    }
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return await response.json();
  } catch {
    return undefined;
  }
}

/** Runs a command to completion (bounded), returning its exit code and last output. */
export function runCommand(
  command: string,
  args: readonly string[],
  cwd: string,
  timeoutMs: number,
  shell = false,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, shell, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString("utf8")).slice(-2000);
    };
    child.stdout!.on("data", keep);
    child.stderr!.on("data", keep);
    const timer = setTimeout(() => {
      output += `\n(killed after ${timeoutMs} ms)`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.once("error", (error) => {
      clearTimeout(timer);
      resolve({ code: null, output: error.message });
    });
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output: output.trim() });
    });
  });
}

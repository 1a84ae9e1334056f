/**
 * Single-node c2s throughput benchmark. Logs N clients in over plain TCP and over STARTTLS
 * (SCRAM-SHA-1), then drives one-to-one chat traffic between random users and measures
 * logins/s, delivered messages/s, delivery latency, server RSS per session and server CPU per
 * 1,000 messages. By default it starts its own Starling node; with --target it aims at any
 * XMPP server (Prosody, ejabberd, ...). Prints ONE JSON line on stdout; progress on stderr.
 *
 *   npx node bench/c2s-throughput.ts [--target host:port] [--domain D] [--users N] [--workers W]
 *     [--rate R] [--duration S] [--search] [--tls] [--loadgen-procs K] ...   (see --help)
 */
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { hostPort, positiveNumber } from "./lib/cli-args.ts";
import {
  ClientGroup,
  type Counters,
  type GroupConfig,
  type LoadGroup,
  type LoginReport,
  type LoginRequest,
  wallClockMs,
} from "./lib/client-group.ts";
import { LatencyHistogram } from "./lib/latency-histogram.ts";
import { ownCpuSeconds, readCpuSeconds, readRssKib } from "./lib/proc-stats.ts";
import { RemoteGroup } from "./lib/remote-group.ts";
import { bulkCreateUsers, type StartedServer, startStarling } from "./lib/starling-server.ts";
import { userRanges } from "./lib/user-ranges.ts";
import type { SaslMechanism } from "./lib/xmpp-load-client.ts";

const HELP = `Usage: npx node bench/c2s-throughput.ts [options]

Server (default: start a fresh Starling node with ports 0 and bulk-create the users):
  --target host:port        use an existing server's plain c2s port instead
  --domain D                XMPP domain (default localhost)
  --workers W               Starling worker threads when the bench starts the node (default: cores)
  --users-pattern P         localpart pattern, {n} = 1..N (default user{n})
  --password P              password of every user (default pw)
  --register                create the users with XEP-0077 in-band registration first (--target)
  --pid PID                 server pid for RSS/CPU figures (--target); omitted figures are null
  --admin-token T           bearer token for the Starling admin endpoint, if it requires one

Load:
  --users N                 clients (default 2000)
  --login-concurrency C     logins in flight at once (default 100)
  --mechanism M             SCRAM-SHA-1 (default) or PLAIN
  --tls                     run the message phases over STARTTLS sessions (default plain TCP)
  --rate R                  messages/s for the fixed-rate phase (default 2000)
  --duration S              seconds of the fixed-rate phase (default 10)
  --cpu-duration S          seconds of the 1,000 msgs/s CPU phase (default 10)
  --payload-chars B         extra body characters per message (default 0)
  --search                  find the highest rate with p99 < 200 ms and no backlog growth
  --search-start R          first rate tried by --search (default 1000)
  --step-duration S         seconds per search step (default 8)
  --search-budget S         total seconds allowed for --search (default 240)
  --loadgen-procs K         spread clients over K child processes (default 1)
  --timeout-ms T            per-client login/close bound (default 30000)
  --max-seconds S           abort the whole run after S seconds (default 1800)
  --server-log              forward every server log line to stderr (default: warn and above)
`;

const LATENCY_BOUND_MS = 200;

interface Options {
  target: { host: string; port: number } | undefined;
  domain: string;
  workers: number;
  usersPattern: string;
  password: string;
  register: boolean;
  pid: number | undefined;
  adminToken: string | undefined;
  users: number;
  loginConcurrency: number;
  mechanism: SaslMechanism;
  tls: boolean;
  rate: number;
  durationS: number;
  cpuDurationS: number;
  payloadChars: number;
  search: boolean;
  searchStart: number;
  stepDurationS: number;
  searchBudgetS: number;
  loadgenProcs: number;
  timeoutMs: number;
  maxSeconds: number;
  serverLog: boolean;
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      help: { type: "boolean" },
      target: { type: "string" },
      domain: { type: "string" },
      workers: { type: "string" },
      "users-pattern": { type: "string" },
      password: { type: "string" },
      register: { type: "boolean" },
      pid: { type: "string" },
      "admin-token": { type: "string" },
      users: { type: "string" },
      "login-concurrency": { type: "string" },
      mechanism: { type: "string" },
      tls: { type: "boolean" },
      rate: { type: "string" },
      duration: { type: "string" },
      "cpu-duration": { type: "string" },
      "payload-chars": { type: "string" },
      search: { type: "boolean" },
      "search-start": { type: "string" },
      "step-duration": { type: "string" },
      "search-budget": { type: "string" },
      "loadgen-procs": { type: "string" },
      "timeout-ms": { type: "string" },
      "max-seconds": { type: "string" },
      "server-log": { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  let target: Options["target"];
  if (values.target !== undefined) target = hostPort("target", values.target);

  const mechanism = values.mechanism ?? "SCRAM-SHA-1";
  if (mechanism !== "SCRAM-SHA-1" && mechanism !== "PLAIN") {
    throw new RangeError(`--mechanism must be SCRAM-SHA-1 or PLAIN, got "${mechanism}"`);
  }
  const users = positiveNumber("users", values.users, 2000);
  if (users < 2) throw new RangeError("--users must be at least 2 (messages go to another user)");
  const usersPattern = values["users-pattern"] ?? "user{n}";
  if (!usersPattern.includes("{n}"))
    throw new RangeError(`--users-pattern must contain {n}, got "${usersPattern}"`);
  if (values.pid !== undefined && target === undefined)
    throw new TypeError("--pid only applies with --target");
  if (values.register && target === undefined) {
    throw new TypeError("--register only applies with --target (the bench creates Starling's users itself)");
  }
  return {
    target,
    domain: values.domain ?? "localhost",
    workers: positiveNumber("workers", values.workers, availableParallelism()),
    usersPattern,
    password: values.password ?? "pw",
    register: values.register ?? false,
    pid: values.pid === undefined ? undefined : positiveNumber("pid", values.pid, 0),
    adminToken: values["admin-token"],
    users,
    loginConcurrency: positiveNumber("login-concurrency", values["login-concurrency"], 100),
    mechanism,
    tls: values.tls ?? false,
    rate: positiveNumber("rate", values.rate, 2000),
    durationS: positiveNumber("duration", values.duration, 10),
    cpuDurationS: positiveNumber("cpu-duration", values["cpu-duration"], 10),
    payloadChars:
      values["payload-chars"] === undefined ? 0 : positiveNumber("payload-chars", values["payload-chars"], 0),
    search: values.search ?? false,
    searchStart: positiveNumber("search-start", values["search-start"], 1000),
    stepDurationS: positiveNumber("step-duration", values["step-duration"], 8),
    searchBudgetS: positiveNumber("search-budget", values["search-budget"], 240),
    loadgenProcs: positiveNumber("loadgen-procs", values["loadgen-procs"], 1),
    timeoutMs: positiveNumber("timeout-ms", values["timeout-ms"], 30_000),
    maxSeconds: positiveNumber("max-seconds", values["max-seconds"], 1800),
    serverLog: values["server-log"] ?? false,
  };
}

function progress(message: string, fields?: Record<string, unknown>): void {
  const suffix = fields === undefined ? "" : ` ${JSON.stringify(fields)}`;
  // biome-ignore lint/suspicious/noConsole: progress of a CLI bench goes to stderr by design.
  console.error(`[c2s-bench ${new Date().toISOString().slice(11, 19)}] ${message}${suffix}`);
}

function round(value: number | undefined, digits = 1): number | null {
  if (value === undefined || !Number.isFinite(value)) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** Resolves after `ms`; used only to pace measurements (settling, sampling), never to synchronise. */
function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The load processes, driven together. */
class LoadFleet {
  readonly groups: LoadGroup[];
  readonly remotes: RemoteGroup[];

  private constructor(groups: LoadGroup[], remotes: RemoteGroup[]) {
    this.groups = groups;
    this.remotes = remotes;
  }

  static async create(base: Omit<GroupConfig, "id" | "first" | "count">, procs: number): Promise<LoadFleet> {
    const configs: GroupConfig[] = userRanges(base.totalUsers, procs).map((range, id) => ({
      ...base,
      id,
      ...range,
    }));
    if (configs.length === 1) return new LoadFleet([new ClientGroup(configs[0]!)], []);
    const remotes: RemoteGroup[] = [];
    try {
      for (const config of configs) remotes.push(await RemoteGroup.start(config));
    } catch (error) {
      for (const r of remotes) r.kill();
      throw error;
    }
    return new LoadFleet(remotes, remotes);
  }

  async login(request: Omit<LoginRequest, "concurrency"> & { concurrency: number }): Promise<LoginReport> {
    const per = Math.max(1, Math.ceil(request.concurrency / this.groups.length));
    const started = performance.now();
    const reports = await Promise.all(this.groups.map((g) => g.login({ ...request, concurrency: per })));
    const elapsedMs = performance.now() - started;
    const merged: LoginReport = {
      ok: 0,
      failed: 0,
      errors: {},
      firstError: undefined,
      elapsedMs,
      scramDerivations: 0,
    };
    for (const r of reports) {
      merged.ok += r.ok;
      merged.failed += r.failed;
      merged.scramDerivations += r.scramDerivations;
      merged.firstError ??= r.firstError;
      for (const [code, n] of Object.entries(r.errors)) merged.errors[code] = (merged.errors[code] ?? 0) + n;
    }
    return merged;
  }

  async counters(phase: number): Promise<Counters> {
    const all = await Promise.all(this.groups.map((g) => g.counters(phase)));
    const total: Counters = {
      sent: 0,
      received: 0,
      duplicates: 0,
      online: 0,
      disconnects: 0,
      disconnectReasons: {},
    };
    for (const c of all) {
      total.sent += c.sent;
      total.received += c.received;
      total.duplicates += c.duplicates;
      total.online += c.online;
      total.disconnects += c.disconnects;
      for (const [reason, n] of Object.entries(c.disconnectReasons)) {
        total.disconnectReasons[reason] = (total.disconnectReasons[reason] ?? 0) + n;
      }
    }
    return total;
  }

  /** Load-generator CPU seconds: every child plus this orchestrator process. */
  async cpuSeconds(): Promise<number> {
    if (this.remotes.length === 0) return ownCpuSeconds();
    const children = await Promise.all(this.remotes.map((r) => r.cpuSeconds()));
    return children.reduce((a, b) => a + b, ownCpuSeconds());
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.groups.map((g) => g.closeAll()));
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.groups.map((g) => g.shutdown()));
  }

  killNow(): void {
    for (const r of this.remotes) r.kill();
  }
}

/** What one traffic phase measured. */
interface PhaseResult {
  targetRate: number;
  durationS: number;
  sent: number;
  blocked: number;
  sendRate: number;
  received: number;
  deliveredRate: number;
  lost: number;
  duplicates: number;
  p50: number;
  p99: number;
  maxMs: number;
  backlogMid: number;
  backlogEnd: number;
  disconnects: number;
  serverCpuS: number | undefined;
  loadgenCpuS: number;
  sustained: boolean;
  reason: string;
  /** The only failure was the load generator not reaching the target rate. */
  loadgenBound: boolean;
}

/** A login run and the server's CPU seconds during it (undefined without its pid). */
type MeasuredLogin = LoginReport & { serverCpuS: number | undefined };

/**
 * Server CPU milliseconds per successful login of a run: the figure to compare servers by when the
 * load generator, on the same cores, caps the logins per second both can show.
 */
function cpuMsPerLogin(run: MeasuredLogin): number | undefined {
  return run.serverCpuS === undefined || run.ok === 0 ? undefined : (run.serverCpuS * 1000) / run.ok;
}

class Bench {
  #opts: Options;
  #fleet!: LoadFleet;
  #pid: number | undefined;
  #nextPhase = 1;

  constructor(opts: Options, fleet: LoadFleet, pid: number | undefined) {
    this.#opts = opts;
    this.#fleet = fleet;
    this.#pid = pid;
  }

  async login(label: string, starttls: boolean, required = true): Promise<MeasuredLogin> {
    const serverCpu0 = this.#pid === undefined ? undefined : readCpuSeconds(this.#pid);
    const loadCpu0 = await this.#fleet.cpuSeconds();
    const report = await this.#fleet.login({
      starttls,
      mechanism: this.#opts.mechanism,
      concurrency: this.#opts.loginConcurrency,
      // A re-login after an overload gets 20 s to start its logins (each then bounded by
      // --timeout-ms): a collapsed server must not stall the search for minutes.
      deadlineMs: required ? Math.max(60_000, this.#opts.timeoutMs * 4) : 20_000,
    });
    const perS = report.ok / (report.elapsedMs / 1000);
    const serverCpu1 = this.#pid === undefined ? undefined : readCpuSeconds(this.#pid);
    const loadCpu1 = await this.#fleet.cpuSeconds();
    const serverCpuS =
      serverCpu0 === undefined || serverCpu1 === undefined ? undefined : serverCpu1 - serverCpu0;
    progress(`login ${label}`, {
      ok: report.ok,
      failed: report.failed,
      seconds: round(report.elapsedMs / 1000, 2),
      logins_per_s: round(perS),
      scram_derivations: report.scramDerivations,
      server_cpu_s: round(serverCpuS, 2),
      loadgen_cpu_s: round(loadCpu1 - loadCpu0, 2),
      errors: report.errors,
      first_error: report.firstError,
    });
    if (required && report.ok === 0)
      throw new Error(`No client could log in (${label}): ${report.firstError}`);
    return { ...report, serverCpuS };
  }

  /**
   * One open-loop traffic phase at `rate` msgs/s for `durationS`, then a bounded drain. The
   * backlog (sent but not yet received) is sampled at mid-window and at its end.
   */
  /**
   * Waits (at most 30 s) until the server uses under a quarter of a core, so that a phase does
   * not start while the server still works off the previous one. Without a pid: one second.
   */
  async settle(): Promise<void> {
    if (this.#pid === undefined) return delay(1000);
    const deadline = Date.now() + 30_000;
    let last = readCpuSeconds(this.#pid);
    let lastAt = performance.now();
    while (Date.now() < deadline) {
      await delay(500);
      const cpu = readCpuSeconds(this.#pid);
      const at = performance.now();
      if (cpu === undefined || last === undefined) return;
      const cores = (cpu - last) / ((at - lastAt) / 1000);
      if (cores < 0.25) return;
      last = cpu;
      lastAt = at;
    }
    progress("server still busy after 30 s; starting the next phase anyway");
  }

  async traffic(rate: number, durationS: number): Promise<PhaseResult> {
    await this.settle();
    const phase = this.#nextPhase++;
    // Sessions the server dropped in an earlier phase would turn messages to them into offline
    // storage; log those users back in first so every phase starts with all N online.
    const missing = this.#opts.users - (await this.#fleet.counters(phase)).online;
    if (missing > 0) await this.login(`re-login of ${missing} dropped sessions`, this.#opts.tls, false);
    const groups = this.#fleet.groups;
    const durationMs = durationS * 1000;
    const startAtMs = wallClockMs() + 200;
    const before = await this.#fleet.counters(phase);
    const serverCpu0 = this.#pid === undefined ? undefined : readCpuSeconds(this.#pid);
    const loadCpu0 = await this.#fleet.cpuSeconds();
    const perGroup = rate / groups.length;
    const sending = Promise.all(
      groups.map((g) =>
        g.traffic({
          phase,
          ratePerS: perGroup,
          startAtMs,
          durationMs,
          payloadChars: this.#opts.payloadChars,
        }),
      ),
    );
    await delay(Math.max(0, startAtMs - wallClockMs() + durationMs / 2));
    const mid = await this.#fleet.counters(phase);
    const reports = await sending;
    const end = await this.#fleet.counters(phase);
    const sent = reports.reduce((a, r) => a + r.sent, 0);
    const blocked = reports.reduce((a, r) => a + r.blocked, 0);
    // Drain: wait until everything sent has arrived, or nothing arrived for 2 s, at most 15 s.
    const drainDeadline = Date.now() + 15_000;
    let drained = end;
    let lastProgress = Date.now();
    while (drained.received < sent && Date.now() < drainDeadline && Date.now() - lastProgress < 2000) {
      await delay(50);
      const now = await this.#fleet.counters(phase);
      if (now.received > drained.received) lastProgress = Date.now();
      drained = now;
    }
    const serverCpu1 = this.#pid === undefined ? undefined : readCpuSeconds(this.#pid);
    const loadCpu1 = await this.#fleet.cpuSeconds();
    const histogram = new LatencyHistogram();
    let receivedInWindow = 0;
    for (const stats of await Promise.all(groups.map((g) => g.phaseStats(phase)))) {
      histogram.merge(stats.histogram);
      receivedInWindow += stats.receivedInWindow;
    }
    const p50 = histogram.quantile(0.5);
    const p99 = histogram.quantile(0.99);
    const backlogMid = mid.sent - mid.received;
    const backlogEnd = end.sent - end.received;
    const lost = Math.max(0, sent - drained.received);
    const duplicates = drained.duplicates;
    const disconnects = drained.disconnects - before.disconnects;
    const sendRate = sent / durationS;
    const reasons: string[] = [];
    const loadgenShort = sendRate < 0.95 * rate;
    if (loadgenShort) reasons.push(`load generator sent only ${Math.round(sendRate)}/s`);
    if (blocked > 0.01 * (sent + blocked)) reasons.push(`${blocked} sends skipped on full socket buffers`);
    if (!(p99 < LATENCY_BOUND_MS)) reasons.push(`p99 ${round(p99)} ms`);
    if (lost > 0.001 * sent) reasons.push(`${lost} of ${sent} not delivered`);
    if (duplicates > 0) reasons.push(`${duplicates} delivered twice`);
    if (disconnects > 0) reasons.push(`${disconnects} sessions dropped`);
    // No backlog growth: what is in flight at the end must not exceed 200 ms of traffic, nor
    // have grown by more than 5 % of a second's traffic since mid-window.
    const growth = backlogEnd - backlogMid;
    if (backlogEnd > rate * (LATENCY_BOUND_MS / 1000) || growth > Math.max(50, 0.05 * rate)) {
      reasons.push(`backlog ${backlogMid} -> ${backlogEnd}`);
    }
    const result: PhaseResult = {
      targetRate: rate,
      durationS,
      sent,
      blocked,
      sendRate,
      received: drained.received,
      deliveredRate: receivedInWindow / durationS,
      lost,
      duplicates,
      p50,
      p99,
      maxMs: histogram.maxMs,
      backlogMid,
      backlogEnd,
      disconnects,
      serverCpuS: serverCpu0 === undefined || serverCpu1 === undefined ? undefined : serverCpu1 - serverCpu0,
      loadgenCpuS: loadCpu1 - loadCpu0,
      sustained: reasons.length === 0,
      reason: reasons.join("; "),
      loadgenBound: loadgenShort && reasons.length === 1,
    };
    progress(`traffic phase ${phase} at ${rate} msgs/s`, {
      sent,
      blocked,
      delivered_per_s: round(result.deliveredRate),
      p50_ms: round(p50, 2),
      p99_ms: round(p99, 2),
      max_ms: round(result.maxMs),
      backlog_mid: backlogMid,
      backlog_end: backlogEnd,
      lost,
      duplicates,
      disconnects: result.disconnects,
      disconnect_reasons_so_far: disconnects > 0 ? drained.disconnectReasons : undefined,
      server_cpu_s: round(result.serverCpuS, 2),
      loadgen_cpu_s: round(result.loadgenCpuS, 2),
      sustained: result.sustained,
      why_not: result.reason || undefined,
    });
    if (end.online < 2)
      throw new Error("Fewer than two clients remain online; the server dropped the sessions");
    return result;
  }

  /**
   * Finds the highest sustained rate: doubles from the start rate until a step fails, then
   * bisects between the best pass and the first failure until they are within 10 %, within
   * the time budget. A step the load generator itself could not drive ends the search.
   */
  async search(): Promise<{ best: number | null; steps: number; limitedBy: string | null }> {
    const { searchStart, stepDurationS, searchBudgetS } = this.#opts;
    const deadline = Date.now() + searchBudgetS * 1000;
    let good = 0;
    let bad: number | undefined;
    let rate = searchStart;
    let steps = 0;
    let limitedBy: string | null = "step-limit";
    while (steps < 24) {
      if (Date.now() + stepDurationS * 1000 + 5000 >= deadline) {
        limitedBy = "time-budget";
        break;
      }
      steps++;
      const result = await this.traffic(rate, stepDurationS);
      if (result.sustained) good = rate;
      else {
        bad = rate;
        // A generator that falls short while the server is otherwise fine cannot say where the
        // server's limit is; if the server failed too, bisecting below this rate still can.
        if (result.loadgenBound) {
          limitedBy = "loadgen";
          break;
        }
      }
      const next = bad === undefined ? rate * 2 : Math.round((good + bad) / 2);
      if ((bad !== undefined && (bad - good) / bad <= 0.1) || next === rate || next < 1) {
        limitedBy = null;
        break;
      }
      rate = next;
    }
    return { best: good > 0 ? good : null, steps, limitedBy };
  }
}

async function main(): Promise<number> {
  let opts: Options | undefined;
  try {
    opts = parseOptions(process.argv.slice(2));
  } catch (error) {
    progress(`${(error as Error).message} (see --help)`);
    return 2;
  }
  if (opts === undefined) return 0;
  const repoRoot = fileURLToPath(new URL("..", import.meta.url));
  let server: StartedServer | undefined;
  let fleet: LoadFleet | undefined;
  let cleaningUp = false;
  const cleanupNow = (): void => {
    fleet?.killNow();
    server?.killNow();
  };
  process.on("exit", cleanupNow);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      progress(`${signal}: stopping`);
      cleanupNow();
      process.exit(130);
    });
  }
  const watchdog = setTimeout(() => {
    progress(`--max-seconds ${opts.maxSeconds} exceeded: aborting`);
    cleanupNow();
    process.exit(2);
  }, opts.maxSeconds * 1000);
  watchdog.unref();

  try {
    let host: string;
    let port: number;
    let pid: number | undefined;
    if (opts.target === undefined) {
      progress(`starting Starling (${opts.workers} workers)`);
      server = await startStarling({
        repoRoot,
        domain: opts.domain,
        workers: opts.workers,
        ...(opts.serverLog ? { onLogLine: (line: string) => progress(`[server] ${line}`) } : {}),
      });
      host = "127.0.0.1";
      port = server.ports.c2s;
      pid = server.pid;
      progress("Starling ready", { pid, ports: server.ports, data: server.dataDir });
      const users = [];
      for (let n = 1; n <= opts.users; n++) {
        users.push({
          jid: `${opts.usersPattern.replaceAll("{n}", String(n))}@${opts.domain}`,
          password: opts.password,
        });
      }
      const started = performance.now();
      await bulkCreateUsers(
        server.ports.http,
        users,
        opts.adminToken === undefined ? {} : { adminToken: opts.adminToken },
      );
      progress(`created ${users.length} users`, { seconds: round((performance.now() - started) / 1000, 2) });
    } else {
      host = opts.target.host;
      port = opts.target.port;
      pid = opts.pid;
    }

    fleet = await LoadFleet.create(
      {
        host,
        port,
        domain: opts.domain,
        userPattern: opts.usersPattern,
        password: opts.password,
        totalUsers: opts.users,
        timeoutMs: opts.timeoutMs,
      },
      opts.loadgenProcs,
    );
    const loadCpuStart = await fleet.cpuSeconds();

    if (opts.register) {
      const started = performance.now();
      const reports = await Promise.all(
        fleet.groups.map((g) =>
          g.register({
            starttls: false,
            mechanism: opts.mechanism,
            concurrency: Math.max(1, Math.ceil(opts.loginConcurrency / fleet!.groups.length)),
            deadlineMs: 600_000,
          }),
        ),
      );
      const created = reports.reduce((a, r) => a + r.created, 0);
      const exists = reports.reduce((a, r) => a + r.exists, 0);
      const failed = reports.reduce((a, r) => a + r.failed, 0);
      progress("in-band registration", {
        created,
        exists,
        failed,
        seconds: round((performance.now() - started) / 1000, 2),
        first_error: reports.find((r) => r.firstError)?.firstError,
      });
      if (failed > 0) throw new Error(`${failed} registrations failed`);
    }

    const bench = new Bench(opts, fleet, pid);
    const rssBefore = pid === undefined ? undefined : readRssKib(pid);

    // Run 1, cold: every login pays the client-side PBKDF2 (a real client's first login). It
    // measures RSS per session, then warms the SCRAM key cache for the measured runs. With --tls
    // it runs over STARTTLS, so the memory figure is a TLS session's (issue 12 compares those):
    // a plain session leaves out what OpenSSL and the TLS socket keep per connection.
    const cold = await bench.login(`${opts.tls ? "STARTTLS" : "plain"}, cold SCRAM cache`, opts.tls);
    await delay(1000);
    const rssLoggedIn = pid === undefined ? undefined : readRssKib(pid);
    const rssPerSession =
      rssBefore === undefined || rssLoggedIn === undefined ? undefined : (rssLoggedIn - rssBefore) / cold.ok;
    progress("server RSS", {
      before_kib: rssBefore,
      logged_in_kib: rssLoggedIn,
      per_session_kib: round(rssPerSession, 2),
    });
    if (rssPerSession !== undefined && rssPerSession <= 0) {
      progress(
        "warning: server RSS did not grow; it was probably warm from earlier sessions — restart it for this figure",
      );
    }
    await fleet.closeAll();
    await delay(1000);

    // Runs 2 and 3: the measured login rates. The sessions of the last run carry the traffic.
    let plain: MeasuredLogin;
    let starttls: MeasuredLogin;
    if (opts.tls) {
      plain = await bench.login("plain", false);
      await fleet.closeAll();
      await delay(1000);
      starttls = await bench.login("STARTTLS", true);
    } else {
      starttls = await bench.login("STARTTLS", true);
      await fleet.closeAll();
      await delay(1000);
      plain = await bench.login("plain", false);
    }

    const cpuPhase = await bench.traffic(1000, opts.cpuDurationS);
    const cpuPer1000 =
      cpuPhase.serverCpuS === undefined ? undefined : cpuPhase.serverCpuS / (cpuPhase.sent / 1000);
    const loadCpuPer1000 = cpuPhase.loadgenCpuS / (cpuPhase.sent / 1000);

    const fixed = await bench.traffic(opts.rate, opts.durationS);
    const cpuPer1000AtRate =
      fixed.serverCpuS === undefined ? undefined : fixed.serverCpuS / (fixed.sent / 1000);

    let search: Awaited<ReturnType<Bench["search"]>> | undefined;
    if (opts.search) {
      search = await bench.search();
      progress("search done", search);
    }

    const loadCpuTotal = (await fleet.cpuSeconds()) - loadCpuStart;
    let serverWarnings: number | null = null;
    cleaningUp = true;
    await fleet.closeAll();
    await fleet.shutdown();
    fleet = undefined;
    if (server !== undefined) {
      await server.stop();
      serverWarnings = server.warnings();
      server = undefined;
    }

    const result = {
      bench: "c2s-throughput",
      server: opts.target === undefined ? "starling" : `${opts.target.host}:${opts.target.port}`,
      users: opts.users,
      workers: opts.target === undefined ? opts.workers : null,
      loadgen_procs: opts.loadgenProcs,
      cores: availableParallelism(),
      mechanism: opts.mechanism,
      traffic_over_tls: opts.tls,
      logins_per_s: round(plain.ok / (plain.elapsedMs / 1000)),
      logins_per_s_starttls: round(starttls.ok / (starttls.elapsedMs / 1000)),
      logins_per_s_cold_client: round(cold.ok / (cold.elapsedMs / 1000)),
      server_cpu_ms_per_login: round(cpuMsPerLogin(plain), 2),
      server_cpu_ms_per_starttls_login: round(cpuMsPerLogin(starttls), 2),
      server_cpu_ms_per_cold_login: round(cpuMsPerLogin(cold), 2),
      login_failures: plain.failed + starttls.failed + cold.failed,
      max_sustained_msgs_per_s: search?.best ?? null,
      search_steps: search?.steps ?? null,
      search_limited_by: search?.limitedBy ?? null,
      rate_msgs_per_s: opts.rate,
      delivered_msgs_per_s: round(fixed.deliveredRate),
      latency_p50_ms: round(fixed.p50, 2),
      latency_p99_ms: round(fixed.p99, 2),
      latency_max_ms: round(fixed.maxMs, 1),
      undelivered: fixed.lost,
      duplicates: fixed.duplicates,
      sessions_dropped: fixed.disconnects,
      rss_before_kib: rssBefore ?? null,
      rss_logged_in_kib: rssLoggedIn ?? null,
      rss_per_session_kib: round(rssPerSession, 2),
      rss_sessions: opts.tls ? "starttls" : "plain",
      cpu_s_per_1000_msgs: round(cpuPer1000, 4),
      cpu_phase_latency_p99_ms: round(cpuPhase.p99, 2),
      cpu_phase_latency_max_ms: round(cpuPhase.maxMs, 1),
      cpu_s_per_1000_msgs_at_rate: round(cpuPer1000AtRate, 4),
      loadgen_cpu_s: round(loadCpuTotal, 2),
      loadgen_cpu_s_per_1000_msgs: round(loadCpuPer1000, 4),
      server_warnings: serverWarnings,
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (error) {
    progress(
      `failed${cleaningUp ? " during cleanup" : ""}: ${error instanceof Error ? (error.stack ?? error.message) : error}`,
    );
    if (fleet !== undefined) await fleet.shutdown().catch(() => undefined);
    if (server !== undefined) await server.stop().catch(() => undefined);
    return 1;
  } finally {
    clearTimeout(watchdog);
  }
}

process.exit(await main());

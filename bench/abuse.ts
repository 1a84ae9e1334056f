/**
 * bench/abuse.ts: what ordinary users see while a server is attacked (issue 12, "under abuse").
 *
 * Canary pairs (bench/lib/canaries.ts) message each other every `--interval-ms` over STARTTLS
 * while, one phase at a time, a load child (bench/lib/attack-group.ts) attacks the server:
 * deeply nested XML before and after authentication, a stanza of many small children, a
 * message flood, clients that stop reading while others write to them, and clients that send
 * one byte a second. Each phase reports the canaries' latency p50/p99/max, their lost messages
 * and dropped connections, what the server did to the attackers (closed with which stream
 * error, or left open), and the server's resident memory before the attack, at its peak and
 * after a recovery period. Against Starling (default: a fresh node), ejabberd (the Debian
 * package, `--server ejabberd`), both in one run (`--server both`), or any server (`--target`).
 *
 * One JSON line on stdout; progress and the Markdown table on stderr. Bounded in time: every
 * phase has a fixed length and the whole run aborts after `--max-seconds`.
 */
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { AttackOutcome, AttackSpec } from "./lib/attack-group.ts";
import { Canaries, type CanaryFigures } from "./lib/canaries.ts";
import { ChildRpc } from "./lib/child-rpc.ts";
import { hostPort, positiveNumber } from "./lib/cli-args.ts";
import { startEjabberd } from "./lib/ejabberd-server.ts";
import { readRssKib } from "./lib/proc-stats.ts";
import { bulkCreateUsers, startStarling } from "./lib/starling-server.ts";
import { LoadClient, loopbackSourceFor } from "./lib/xmpp-load-client.ts";

const HELP = `Usage: npx node bench/abuse.ts [options]

  --server S          starling (default: a fresh node), ejabberd (the Debian package), or both
  --target host:port  attack a running server instead (users must exist, or add --register)
  --pid PID           with --target: the server's pid, for its memory figures
  --register          with --target: create the accounts with XEP-0077 in-band registration
  --domain D          XMPP domain (default localhost)
  --password P        password of every account (default pw)
  --port P            ejabberd's c2s port (default 25222)
  --workers W         Starling worker threads (default: cores)
  --canary-pairs N    pairs of ordinary users measuring (default 4)
  --interval-ms T     each canary messages its partner every T ms (default 100)
  --recovery-s S      seconds measured after each attack before the next (default 5)
  --scale F           multiply every attack's size (connections, bytes, seconds) by F (default 1)
  --only TEXT         run only the attacks whose phase name contains TEXT (the quiet phases stay)
  --max-seconds S     abort the whole run after S seconds (default 900)

Accounts: canary1..canaryN*2 and abuse1..abuse235 at --scale 1 (created for a started server).
`;

interface Options {
  servers: ("starling" | "ejabberd" | "target")[];
  target: { host: string; port: number } | undefined;
  pid: number | undefined;
  register: boolean;
  domain: string;
  password: string;
  port: number;
  workers: number;
  canaryPairs: number;
  intervalMs: number;
  recoveryS: number;
  scale: number;
  /** Only the attack phases whose name contains it (undefined: every phase). */
  only: string | undefined;
  maxSeconds: number;
}

/** One phase: an attack (none for the quiet ones) and how long the canaries measure it. */
interface Phase {
  name: string;
  attack: ((accounts: Accounts) => AttackSpec) | undefined;
  /** Seconds measured when there is no attack (an attack lasts as long as it runs). */
  quietS?: number;
  /** It attacks the web listener (WebSocket, BOSH): skipped where the bench knows of none. */
  web?: boolean;
}

/** Hands out attack accounts, a fresh block per phase. */
class Accounts {
  /** Every attack account the phases of a run take, as they will take them. */
  static forRun(options: Options): string[] {
    const accounts = new Accounts();
    for (const phase of phases(options)) phase.attack?.(accounts);
    return new Accounts().take(accounts.used);
  }

  #next = 1;
  take(count: number): string[] {
    const users = [];
    for (let i = 0; i < count; i++) users.push(`abuse${this.#next++}`);
    return users;
  }
  get used(): number {
    return this.#next - 1;
  }
}

function phases(options: Options): Phase[] {
  const n = (count: number): number => Math.max(1, Math.round(count * options.scale));
  const domain = options.domain;
  return [
    { name: "quiet", attack: undefined, quietS: 10 },
    {
      name: "nested XML before auth",
      attack: () => ({ kind: "nested-pre-auth", connections: n(20), depth: 10_000, waitMs: 5_000 }),
    },
    {
      name: "nested XML after auth",
      attack: (a) => ({
        kind: "nested-post-auth",
        users: a.take(n(5)),
        to: `canary1@${domain}`,
        depth: 10_000,
        waitMs: 5_000,
      }),
    },
    {
      name: "stanza of 100,000 small children",
      attack: (a) => ({
        kind: "wide-stanza",
        users: a.take(n(5)),
        to: `canary1@${domain}`,
        children: 100_000,
        waitMs: 5_000,
      }),
    },
    {
      name: "message flood",
      attack: (a) => {
        const [victim, ...users] = a.take(n(20) + 1);
        return {
          kind: "flood",
          victim: victim!,
          users,
          to: `${victim}@${domain}`,
          seconds: n(10),
          bodyChars: 100,
        };
      },
    },
    {
      name: "clients that stop reading",
      attack: (a) => ({
        kind: "non-readers",
        receivers: a.take(n(200)),
        senders: a.take(4),
        seconds: n(15),
        bodyChars: 60_000,
        maxBytes: n(58) * 1024 * 1024,
      }),
    },
    {
      name: "WebSocket and BOSH: 100,000 small children before auth",
      web: true,
      attack: () => ({
        kind: "web-wide",
        websockets: n(5),
        boshRequests: n(5),
        children: 100_000,
        waitMs: 5_000,
      }),
    },
    {
      name: "one byte a second",
      attack: () => ({ kind: "slow-writers", connections: n(500), seconds: n(20) }),
    },
    { name: "after", attack: undefined, quietS: 10 },
  ];
}

/** What one phase measured. */
interface PhaseReport {
  phase: string;
  canaries: CanaryFigures;
  attack: AttackOutcome | null;
  rssBeforeMiB: number | null;
  rssPeakMiB: number | null;
  rssAfterMiB: number | null;
}

function progress(message: string, fields?: Record<string, unknown>): void {
  process.stderr.write(`[abuse] ${message}${fields === undefined ? "" : ` ${JSON.stringify(fields)}`}\n`);
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      help: { type: "boolean" },
      server: { type: "string" },
      target: { type: "string" },
      pid: { type: "string" },
      register: { type: "boolean" },
      domain: { type: "string" },
      password: { type: "string" },
      port: { type: "string" },
      workers: { type: "string" },
      "canary-pairs": { type: "string" },
      "interval-ms": { type: "string" },
      "recovery-s": { type: "string" },
      scale: { type: "string" },
      only: { type: "string" },
      "max-seconds": { type: "string" },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return undefined;
  }
  let target: Options["target"];
  let servers: Options["servers"];
  if (values.target !== undefined) {
    target = hostPort("target", values.target);
    if (values.server !== undefined) throw new RangeError("--target and --server exclude each other");
    servers = ["target"];
  } else {
    const server = values.server ?? "starling";
    if (server !== "starling" && server !== "ejabberd" && server !== "both")
      throw new RangeError(`--server must be starling, ejabberd or both, got "${server}"`);
    servers = server === "both" ? ["starling", "ejabberd"] : [server];
  }
  const port = positiveNumber("port", values.port, 25_222);
  if (port > 65_535) throw new RangeError(`--port must be a port number, got "${values.port}"`);
  return {
    servers,
    target,
    pid: values.pid === undefined ? undefined : positiveNumber("pid", values.pid, 0),
    register: values.register ?? false,
    domain: values.domain ?? "localhost",
    password: values.password ?? "pw",
    port,
    workers: positiveNumber("workers", values.workers, availableParallelism()),
    canaryPairs: positiveNumber("canary-pairs", values["canary-pairs"], 4),
    intervalMs: positiveNumber("interval-ms", values["interval-ms"], 100),
    recoveryS: positiveNumber("recovery-s", values["recovery-s"], 5),
    scale: positiveNumber("scale", values.scale, 1, false),
    only: values.only,
    maxSeconds: positiveNumber("max-seconds", values["max-seconds"], 900),
  };
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const mib = (kib: number | undefined): number | null =>
  kib === undefined ? null : Math.round(kib / 102.4) / 10;

/** Samples a process's resident memory every 100 ms; `peak` since the last `reset`. */
class RssSampler {
  readonly #pid: number | undefined;
  readonly #timer: NodeJS.Timeout;
  #peak = 0;
  constructor(pid: number | undefined) {
    this.#pid = pid;
    this.#timer = setInterval(() => this.now(), 100);
  }
  now(): number | undefined {
    if (this.#pid === undefined) return undefined;
    const rss = readRssKib(this.#pid);
    if (rss !== undefined && rss > this.#peak) this.#peak = rss;
    return rss;
  }
  reset(): void {
    this.#peak = this.now() ?? 0;
  }
  get peak(): number | undefined {
    return this.#pid === undefined ? undefined : this.#peak;
  }
  stop(): void {
    clearInterval(this.#timer);
  }
}

/** Creates accounts with XEP-0077 in-band registration, a few at a time. */
async function register(
  host: string,
  port: number,
  options: Options,
  users: readonly string[],
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < users.length) {
      const index = next++;
      await new LoadClient({
        host,
        port,
        domain: options.domain,
        username: users[index]!,
        password: options.password,
        ...loopbackSourceFor(host, 20_000 + index),
      }).register();
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

/** Runs every phase against one server listening on host:port. */
async function attackServer(
  host: string,
  port: number,
  pid: number | undefined,
  options: Options,
  webPort?: number,
): Promise<PhaseReport[]> {
  const canaryUsers = Array.from({ length: options.canaryPairs * 2 }, (_, i) => `canary${i + 1}`);
  const rss = new RssSampler(pid);
  const attackers = await ChildRpc.start("attack", {
    host,
    port,
    ...(webPort === undefined ? {} : { webPort }),
    domain: options.domain,
    password: options.password,
  });
  const canaries = await Canaries.start({
    host,
    port,
    domain: options.domain,
    password: options.password,
    users: canaryUsers,
    intervalMs: options.intervalMs,
    starttls: true,
  });
  const reports: PhaseReport[] = [];
  /** Each report's phase number in the canaries' count (their login is phase 0). */
  const indices: number[] = [];
  const accounts = new Accounts();
  try {
    for (const phase of phases(options)) {
      if (phase.attack !== undefined && options.only !== undefined && !phase.name.includes(options.only))
        continue;
      if (phase.web === true && webPort === undefined) {
        progress(`phase skipped: ${phase.name} (the bench knows no web listener of this server)`);
        continue;
      }
      const index = canaries.beginPhase();
      indices.push(index);
      const before = rss.now();
      rss.reset();
      let attack: AttackOutcome | null = null;
      progress(`phase: ${phase.name}`);
      if (phase.attack === undefined) await delay((phase.quietS ?? 10) * 1000);
      else {
        attack = await attackers.call<AttackOutcome>("run", phase.attack(accounts));
        await delay(options.recoveryS * 1000);
      }
      const report: PhaseReport = {
        phase: phase.name,
        canaries: canaries.figures(index),
        attack,
        rssBeforeMiB: mib(before),
        rssPeakMiB: mib(rss.peak),
        rssAfterMiB: mib(rss.now()),
      };
      progress(`phase done: ${phase.name}`, report as unknown as Record<string, unknown>);
      reports.push(report);
    }
    // Stragglers of the last phases arrive during the final quiet one; count them.
    for (const [at, index] of indices.entries()) reports[at]!.canaries = canaries.figures(index);
  } finally {
    rss.stop();
    await canaries.stop();
    await attackers.call("shutdown").catch(() => {});
    attackers.kill();
  }
  return reports;
}

function outcomeCell(attack: AttackOutcome | null): string {
  if (attack === null) return "–";
  const closed = Object.entries(attack.closedBy)
    .map(([condition, count]) => `${count} ${condition === "none" ? "closed" : condition}`)
    .join(", ");
  const when = attack.closeMsP50 === null ? "" : ` (p50 ${attack.closeMsP50} ms)`;
  const failed = attack.loginFailures > 0 ? `, ${attack.loginFailures} refused login` : "";
  return `${attack.connections} conns: ${closed || "none closed"}${when}, ${attack.leftOpen} left open${failed}`;
}

function table(results: Record<string, PhaseReport[]>): string {
  const lines = [
    "| server | phase | canary p50 / p99 / max (ms) | lost / sent | dropped | attackers | RSS before / peak / after (MiB) |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const [server, reports] of Object.entries(results)) {
    for (const r of reports) {
      const c = r.canaries;
      lines.push(
        `| ${server} | ${r.phase} | ${c.p50Ms ?? "–"} / ${c.p99Ms ?? "–"} / ${c.maxMs ?? "–"} | ${c.lost} / ${c.sent} | ${c.dropped} | ${outcomeCell(r.attack)} | ${r.rssBeforeMiB ?? "–"} / ${r.rssPeakMiB ?? "–"} / ${r.rssAfterMiB ?? "–"} |`,
      );
    }
  }
  return lines.join("\n");
}

async function main(): Promise<number> {
  let options: Options | undefined;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    progress(`${(error as Error).message} (see --help)`);
    return 2;
  }
  if (options === undefined) return 0;
  const watchdog = setTimeout(() => {
    progress(`--max-seconds ${options.maxSeconds} exceeded: aborting`);
    process.exit(2);
  }, options.maxSeconds * 1000);
  watchdog.unref();
  const accounts = [
    ...Array.from({ length: options.canaryPairs * 2 }, (_, i) => `canary${i + 1}`),
    ...Accounts.forRun(options),
  ];
  const results: Record<string, PhaseReport[]> = {};
  for (const server of options.servers) {
    if (server === "target") {
      const { host, port } = options.target!;
      if (options.register) await register(host, port, options, accounts);
      results[`${host}:${port}`] = await attackServer(host, port, options.pid, options);
    } else if (server === "ejabberd") {
      // Each server as shipped: ejabberd's package limits client input (c2s_shaper: normal).
      const ejabberd = await startEjabberd({ port: options.port, domain: options.domain, stockShaper: true });
      try {
        progress("ejabberd started: registering the accounts", {
          pid: ejabberd.pid,
          accounts: accounts.length,
        });
        await register("127.0.0.1", options.port, options, accounts);
        results.ejabberd = await attackServer("127.0.0.1", options.port, ejabberd.pid, options);
      } finally {
        await ejabberd.stop();
      }
    } else {
      const repoRoot = fileURLToPath(new URL("..", import.meta.url));
      const starling = await startStarling({
        repoRoot,
        domain: options.domain,
        workers: options.workers,
        extraArgs: ["--web-plain-port", "0"],
      });
      try {
        progress("Starling started", { pid: starling.pid, ports: starling.ports });
        await bulkCreateUsers(
          starling.ports.http,
          accounts.map((user) => ({ jid: `${user}@${options.domain}`, password: options.password })),
        );
        results.starling = await attackServer(
          "127.0.0.1",
          starling.ports.c2s,
          starling.pid,
          options,
          starling.ports.webPlain,
        );
      } finally {
        await starling.stop();
      }
    }
  }
  process.stderr.write(`\n${table(results)}\n`);
  process.stdout.write(`${JSON.stringify(results)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    progress(`failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);

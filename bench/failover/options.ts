/**
 * Command-line options of the failover scenarios (`npm run bench -- <scenario> [options]`):
 * parsed once, checked once, with every default in {@link HELP} and in the scenario table.
 */
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import type { Address } from "../lib/sim-user.ts";
import { TRAFFIC_PATTERNS, type TrafficPattern } from "../lib/workload.ts";
import type { SaslMechanism } from "../lib/xmpp-load-client.ts";

/** The failover scenarios. */
export type ScenarioName =
  | "steady"
  | "join-under-load"
  | "drain-under-load"
  | "kill-under-load"
  | "kill-two-of-five"
  | "rolling-restart"
  | "db-outage"
  | "db-restart"
  | "partition"
  | "pause-node"
  | "joins-at-once"
  | "reconnect-storm";

/** What each scenario does, and its defaults. */
export const SCENARIOS: Record<
  ScenarioName,
  { summary: string; defaultNodes: number; minNodes: number; joins: number }
> = {
  steady: { summary: "load only, no fault: the baseline", defaultNodes: 1, minNodes: 1, joins: 0 },
  "join-under-load": {
    summary: "one more node starts and joins the cluster at --event-at",
    defaultNodes: 2,
    minNodes: 1,
    joins: 1,
  },
  "drain-under-load": {
    summary: "node --victim is drained (`starling leave`) at --event-at",
    defaultNodes: 3,
    minNodes: 2,
    joins: 0,
  },
  "kill-under-load": {
    summary: "node --victim is SIGKILLed at --event-at (with one node: restarted at once)",
    defaultNodes: 3,
    minNodes: 1,
    joins: 0,
  },
  "kill-two-of-five": {
    summary: "the two last nodes are SIGKILLed together at --event-at",
    defaultNodes: 5,
    minNodes: 3,
    joins: 0,
  },
  "rolling-restart": {
    summary: "every node in turn is drained and started again, --gap seconds apart",
    defaultNodes: 3,
    minNodes: 1,
    joins: 0,
  },
  "db-outage": {
    summary: "the database is paused (SIGSTOP) at --event-at for --fault seconds",
    defaultNodes: 3,
    minNodes: 1,
    joins: 0,
  },
  "db-restart": {
    summary: "the database is killed at --event-at and started again --fault seconds later",
    defaultNodes: 3,
    minNodes: 1,
    joins: 0,
  },
  partition: {
    summary: "node --victim's peer links are cut both ways at --event-at for --fault seconds",
    defaultNodes: 3,
    minNodes: 2,
    joins: 0,
  },
  "pause-node": {
    summary: "node --victim is paused (SIGSTOP) at --event-at for --fault seconds",
    defaultNodes: 3,
    minNodes: 2,
    joins: 0,
  },
  "joins-at-once": {
    summary: "two more nodes start and join 0.1 s apart at --event-at",
    defaultNodes: 3,
    minNodes: 1,
    joins: 2,
  },
  "reconnect-storm": {
    summary: "every client closes its connection at once at --event-at (a proxy restarting); all resume",
    defaultNodes: 1,
    minNodes: 1,
    joins: 0,
  },
};

/** Every option of a failover run. */
export interface FailoverOptions {
  scenario: ScenarioName;
  nodes: number;
  clients: number;
  rate: number;
  durationS: number;
  seed: number;
  pattern: TrafficPattern;
  contacts: number;
  burstPeriodMs: number;
  /** Seconds into the load when the scenario's fault starts; undefined = a third of the duration. */
  eventAtS: number | undefined;
  victim: number | undefined;
  gapS: number;
  /** How long a fault that heals (database outage, partition, pause) lasts. */
  faultS: number;
  tailS: number;
  recoverMaxS: number;
  workers: number;
  /** `cluster.replicationFactor` of the nodes started; undefined: the server's default (2). */
  replicationFactor: number | undefined;
  postgres: boolean;
  loadgenProcs: number;
  loginConcurrency: number;
  loginTimeoutMs: number;
  backoffMs: number;
  backoffMaxMs: number;
  ackRequestMs: number;
  ackTimeoutMs: number;
  resume: boolean;
  fetchRoster: boolean;
  mechanism: SaslMechanism;
  starttls: boolean;
  /** XEP-0388 SASL2 with Bind 2 and XEP-0198 inline (one round trip to log in or resume). */
  sasl2: boolean;
  drainMaxS: number;
  out: string | undefined;
  maxSeconds: number;
  nodeLog: boolean;
  target: Address[] | undefined;
  /** With --target: the server processes (index = address) whose CPU and RSS are sampled. */
  pids: number[];
  domain: string;
  users: string;
  password: string;
  killCmd: string | undefined;
  startCmd: string | undefined;
  drainCmd: string | undefined;
  faultCmd: string | undefined;
  adminToken: string | undefined;
}

/** `--help` of the failover scenarios. */
export const HELP = `Usage: npm run bench -- <scenario> [options]

Scenarios:
${(Object.keys(SCENARIOS) as ScenarioName[]).map((name) => `  ${name.padEnd(18)}${SCENARIOS[name].summary}`).join("\n")}
  c2s-throughput    the one-node throughput bench (bench/c2s-throughput.ts; its own --help)
  replication-cost  steady in pairs, replication factor 2 then 1: the CPU and latency replication
                    costs (bench/replication-cost.ts; its own --help)

Load:
  --nodes N              nodes at the start (default per scenario: steady 1, join 2, kill-two-of-five 5, others 3)
  --clients N            simulated clients, one user each (default 1000)
  --rate R               messages per second offered, from random online clients (default 200)
  --duration S           seconds of load (default 60; steady 30)
  --seed N               workload seed: senders, recipients (default 1)
  --pattern P            random (pairs), roster (contacts), burst (default random)
  --contacts K           roster: users per contact group, subscribed both ways in band (default 10)
  --burst-period-ms T    burst: every T ms, the period's messages all at once (default 2000)
  --mechanism M          SCRAM-SHA-1 (default) or PLAIN
  --starttls             STARTTLS before authenticating (default: plain TCP)
  --sasl2                log in and resume with XEP-0388 SASL2, Bind 2 and XEP-0198 inline,
                         as Conversations and Monal do (default: RFC 6120 SASL, bind, enable)
  --no-roster            skip the roster fetch at login
  --no-resume            never try XEP-0198 resumption: always log in again
  --backoff-ms B         reconnect delay: random in [0, min(max, B·2^attempt)] (default 500)
  --backoff-max-ms M     (default 10000)
  --ack-request-ms T     clients with unacked stanzas send <r/> this often (default 500)
  --ack-timeout-ms T     an <r/> unanswered this long means a dead connection (default 15000)
  --login-concurrency C  first logins in flight (default 100)
  --login-timeout-ms T   bound on one login attempt (default 30000)
  --loadgen-procs K      spread clients over K child processes (default 1)

Faults:
  --event-at S           seconds into the load when the fault starts (default duration / 3)
  --victim I             node to kill or drain, 0-based (default the last)
  --gap S                rolling-restart: seconds between two nodes (default 5)
  --fault S              db-outage, db-restart, partition, pause-node: how long the fault
                         lasts before it heals (default 20)
  --recover-max S        after the last fault, keep the load on until every disconnected client
                         is back, at most S seconds (default 120)
  --tail S               then keep the load on S more seconds (default 10)

Run:
  --workers W            worker threads per node (default cores / nodes, at least 1)
  --replication-factor F cluster.replicationFactor of the nodes: 1 turns hot replication off
                         (default: the server's, 2)
  --postgres             PostgreSQL store even with one node (always used with two or more)
  --drain-max S          after the load, wait at most S s for acks and deliveries (default 30)
  --out DIR              report folder (default bench/results/<scenario>-<time>)
  --max-seconds S        abort the whole run after S seconds (default 900)
  --node-log             forward every node log line to stderr (they are always in DIR/node-<i>.log)

Another server (no node is started; faults through your commands, {i} = node index):
  --target H:P[,H:P...]  client addresses; index = node. join-under-load: list the joining node last
  --domain D             XMPP domain (default localhost)
  --users P              localpart pattern, {n} = 1..clients (default user{n}); users must exist
  --password P           every user's password (default pw)
  --kill-cmd 'CMD {i}'   kill node i (kill-*, rolling-restart)
  --start-cmd 'CMD {i}'  start node i and return (join-under-load, rolling-restart, one-node kill)
  --drain-cmd 'CMD {i}'  drain node i (drain-under-load; rolling-restart prefers it to --kill-cmd)
  --fault-cmd 'CMD {fault} {i}'
                         cause or heal a fault: {fault} is pause-node, resume-node, cut-node,
                         heal-node, pause-db, resume-db, crash-db or restart-db
  --admin-token T        bearer token for Starling's admin endpoint, if it needs one
  --pid PID[,PID...]     the target's server process ids, one per address, for its CPU and RSS
                         (fixed for the run: after a --kill-cmd or --start-cmd they no longer apply)
`;

function integer(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min)
    throw new RangeError(`--${name} must be an integer ≥ ${min}, got "${value}"`);
  return n;
}

function seconds(name: string, value: string | undefined, fallback: number | undefined): number | undefined {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0)
    throw new RangeError(`--${name} must be a number of seconds ≥ 0, got "${value}"`);
  return n;
}

/** Parses `host:port[,host:port...]`. */
export function parseAddresses(text: string): Address[] {
  return text.split(",").map((part) => {
    const colon = part.lastIndexOf(":");
    const port = Number(part.slice(colon + 1));
    if (colon < 1 || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new RangeError(`--target must be host:port[,host:port...], got "${part}"`);
    }
    return { host: part.slice(0, colon).replace(/^\[(.*)\]$/, "$1"), port };
  });
}

function isScenario(name: string): name is ScenarioName {
  return Object.hasOwn(SCENARIOS, name);
}

/** Parses a failover scenario's arguments (after the scenario name); undefined after --help. */
export function parseFailoverOptions(scenario: string, argv: string[]): FailoverOptions | undefined {
  if (!isScenario(scenario)) throw new RangeError(`Unknown scenario "${scenario}"`);
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      help: { type: "boolean", short: "h" },
      nodes: { type: "string" },
      clients: { type: "string" },
      rate: { type: "string" },
      duration: { type: "string" },
      seed: { type: "string" },
      pattern: { type: "string" },
      contacts: { type: "string" },
      "burst-period-ms": { type: "string" },
      mechanism: { type: "string" },
      starttls: { type: "boolean" },
      sasl2: { type: "boolean" },
      "no-roster": { type: "boolean" },
      "no-resume": { type: "boolean" },
      "backoff-ms": { type: "string" },
      "backoff-max-ms": { type: "string" },
      "ack-request-ms": { type: "string" },
      "ack-timeout-ms": { type: "string" },
      "login-concurrency": { type: "string" },
      "login-timeout-ms": { type: "string" },
      "loadgen-procs": { type: "string" },
      "event-at": { type: "string" },
      victim: { type: "string" },
      gap: { type: "string" },
      fault: { type: "string" },
      tail: { type: "string" },
      "recover-max": { type: "string" },
      workers: { type: "string" },
      "replication-factor": { type: "string" },
      postgres: { type: "boolean" },
      "drain-max": { type: "string" },
      out: { type: "string" },
      "max-seconds": { type: "string" },
      "node-log": { type: "boolean" },
      target: { type: "string" },
      domain: { type: "string" },
      users: { type: "string" },
      password: { type: "string" },
      "kill-cmd": { type: "string" },
      "start-cmd": { type: "string" },
      "drain-cmd": { type: "string" },
      "fault-cmd": { type: "string" },
      "admin-token": { type: "string" },
      pid: { type: "string" },
    },
  });
  if (values.help) return undefined;
  const info = SCENARIOS[scenario];
  const target = values.target === undefined ? undefined : parseAddresses(values.target);
  const defaultNodes = target === undefined ? info.defaultNodes : target.length - info.joins;
  const nodes = integer("nodes", values.nodes, defaultNodes);
  if (nodes < info.minNodes)
    throw new RangeError(`${scenario} needs at least ${info.minNodes} nodes, got ${nodes}`);
  if (target !== undefined && target.length < nodes + info.joins) {
    throw new RangeError(`${scenario} with --nodes ${nodes} needs ${nodes + info.joins} --target addresses`);
  }
  const clients = integer("clients", values.clients, 1000);
  if (clients < 2) throw new RangeError("--clients must be at least 2 (messages go to another user)");
  const pattern = (values.pattern ?? "random") as TrafficPattern;
  if (!TRAFFIC_PATTERNS.includes(pattern)) {
    throw new RangeError(`--pattern must be one of ${TRAFFIC_PATTERNS.join(", ")}, got "${values.pattern}"`);
  }
  const mechanism = values.mechanism ?? "SCRAM-SHA-1";
  if (mechanism !== "SCRAM-SHA-1" && mechanism !== "PLAIN") {
    throw new RangeError(`--mechanism must be SCRAM-SHA-1 or PLAIN, got "${mechanism}"`);
  }
  const users = values.users ?? "user{n}";
  if (!users.includes("{n}")) throw new RangeError(`--users must contain {n}, got "${users}"`);
  const victim = values.victim === undefined ? undefined : integer("victim", values.victim, 0, 0);
  if (victim !== undefined && victim >= nodes)
    throw new RangeError(`--victim must be below --nodes (${nodes})`);
  const pids = values.pid === undefined ? [] : values.pid.split(",").map((p) => integer("pid", p, 0));
  if (target !== undefined && pids.length > target.length)
    throw new RangeError(`--pid names ${pids.length} processes for ${target.length} --target addresses`);
  if (target === undefined) {
    for (const flag of ["kill-cmd", "start-cmd", "drain-cmd", "fault-cmd", "pid"] as const) {
      if (values[flag] !== undefined) throw new TypeError(`--${flag} only applies with --target`);
    }
  } else if (values["replication-factor"] !== undefined) {
    throw new TypeError(
      "--replication-factor only applies to the Starling nodes the bench starts, not with --target",
    );
  }
  return {
    scenario,
    nodes,
    clients,
    rate: integer("rate", values.rate, 200),
    durationS: integer("duration", values.duration, scenario === "steady" ? 30 : 60),
    seed: integer("seed", values.seed, 1, 0),
    pattern,
    contacts: integer("contacts", values.contacts, 10, 2),
    burstPeriodMs: integer("burst-period-ms", values["burst-period-ms"], 2000),
    eventAtS: seconds("event-at", values["event-at"], undefined),
    victim,
    gapS: seconds("gap", values.gap, 5)!,
    faultS: seconds("fault", values.fault, 20)!,
    tailS: seconds("tail", values.tail, 10)!,
    recoverMaxS: seconds("recover-max", values["recover-max"], 120)!,
    workers: integer("workers", values.workers, Math.max(1, Math.floor(availableParallelism() / nodes))),
    replicationFactor:
      values["replication-factor"] === undefined
        ? undefined
        : integer("replication-factor", values["replication-factor"], 2),
    postgres: values.postgres ?? false,
    loadgenProcs: integer("loadgen-procs", values["loadgen-procs"], 1),
    loginConcurrency: integer("login-concurrency", values["login-concurrency"], 100),
    loginTimeoutMs: integer("login-timeout-ms", values["login-timeout-ms"], 30_000),
    backoffMs: integer("backoff-ms", values["backoff-ms"], 500, 0),
    backoffMaxMs: integer("backoff-max-ms", values["backoff-max-ms"], 10_000, 0),
    ackRequestMs: integer("ack-request-ms", values["ack-request-ms"], 500),
    ackTimeoutMs: integer("ack-timeout-ms", values["ack-timeout-ms"], 15_000),
    resume: !(values["no-resume"] ?? false),
    fetchRoster: !(values["no-roster"] ?? false),
    mechanism,
    starttls: values.starttls ?? false,
    sasl2: values.sasl2 ?? false,
    drainMaxS: seconds("drain-max", values["drain-max"], 30)!,
    out: values.out,
    maxSeconds: integer("max-seconds", values["max-seconds"], 900),
    nodeLog: values["node-log"] ?? false,
    target,
    domain: values.domain ?? "localhost",
    users,
    pids,
    password: values.password ?? "pw",
    killCmd: values["kill-cmd"],
    startCmd: values["start-cmd"],
    drainCmd: values["drain-cmd"],
    faultCmd: values["fault-cmd"],
    adminToken: values["admin-token"],
  };
}

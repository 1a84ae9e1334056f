/**
 * The failover report: every figure of a run in one JSON object (report.json), the per-event
 * and per-node breakdowns, the per-second timelines the HTML charts are drawn from, and the
 * short summary table printed at the end. Times in the report are seconds since t0, the moment
 * the clients started logging in; the load window is [load_started_s, load_ended_s].
 */
import { cpus, platform, release, totalmem } from "node:os";
import type { ConnectReport, GroupResult, LiveCounters } from "../lib/failover-group.ts";
import { LatencyHistogram } from "../lib/latency-histogram.ts";
import type { DisconnectRecord } from "../lib/sim-user.ts";
import type { Accounting } from "./accounting.ts";
import type { NodeSummary } from "./cluster-driver.ts";
import type { FailoverOptions } from "./options.ts";
import { type EventRecord, FAILING_KINDS } from "./scenarios.ts";

/** One sample the orchestrator takes every second while the run goes on. */
export interface Sample {
  atMs: number;
  live: LiveCounters;
  /** Cores each node's process used since the previous sample (null where unknown). */
  serverCores: (number | null)[];
  serverRssKib: (number | null)[];
}

/** Everything a report is built from. */
export interface RunFacts {
  options: FailoverOptions;
  t0Ms: number;
  loadStartMs: number;
  loadEndMs: number;
  endMs: number;
  connect: ConnectReport;
  rosterIncomplete: number | null;
  events: EventRecord[];
  samples: Sample[];
  results: GroupResult[];
  accounting: Accounting;
  nodes: NodeSummary[];
  loadgenCpuS: number;
  /** The load generator's CPU seconds while the load ran (logins excluded). */
  loadgenCpuLoadS: number;
  clusterViews: { at_s: number; view: unknown }[];
  /** Why the run stopped early, if it did. */
  aborted: string | undefined;
}

/** A disconnect happening this long after a failing event ended is not blamed on it. */
export const ATTRIBUTION_GRACE_MS = 10_000;

/** `value` rounded to `digits` decimals, as the report gives figures; null when it is not a number. */
export const round = (value: number | undefined | null, digits = 1): number | null => {
  if (value === undefined || value === null || !Number.isFinite(value)) return null;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
};

/** Exact quantile of a sorted array (nearest rank); null when empty. */
export function quantileOf(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

/** The failing event (kill, drain, restart) a disconnect is explained by, if any. */
export function attributedEvent(
  record: DisconnectRecord,
  events: readonly EventRecord[],
): EventRecord | undefined {
  return events.find(
    (e) =>
      FAILING_KINDS.has(e.kind) &&
      e.nodes.includes(record.node) &&
      record.atMs >= e.startMs &&
      record.atMs <= e.endMs + ATTRIBUTION_GRACE_MS,
  );
}

/** Disconnect figures over a set of disconnect records. */
export function disconnectFigures(records: readonly DisconnectRecord[]) {
  const durations = records
    .filter((r) => r.backAtMs !== undefined)
    .map((r) => r.backAtMs! - r.atMs)
    .sort((a, b) => a - b);
  return {
    disconnects: records.length,
    clients: new Set(records.map((r) => r.user)).size,
    resumed: records.filter((r) => r.outcome === "resumed").length,
    relogged: records.filter((r) => r.outcome === "relogged").length,
    not_back: records.filter((r) => r.backAtMs === undefined).length,
    reconnect_p50_ms: round(quantileOf(durations, 0.5), 0),
    reconnect_p99_ms: round(quantileOf(durations, 0.99), 0),
    reconnect_max_ms: round(durations.at(-1), 0),
  };
}

/**
 * CPU seconds of the sampled servers (all, or node `node` only) between two wall-clock times:
 * each sample holds the mean cores used since the one before, so each interval counts for its
 * overlap with [from, to]. Null when no server was sampled in that time.
 */
export function serverCpuBetween(
  samples: readonly Sample[],
  fromMs: number,
  toMs: number,
  node?: number,
): number | null {
  let cpuS: number | null = null;
  for (let k = 1; k < samples.length; k++) {
    const start = Math.max(samples[k - 1]!.atMs, fromMs);
    const end = Math.min(samples[k]!.atMs, toMs);
    if (end <= start) continue;
    for (const [i, cores] of samples[k]!.serverCores.entries()) {
      if (cores !== null && (node === undefined || i === node))
        cpuS = (cpuS ?? 0) + (cores * (end - start)) / 1000;
    }
  }
  return cpuS;
}

/**
 * What the servers spent per message while the load ran: their CPU seconds over the whole
 * seconds of the load phase (the first and last partial seconds left out, so the CPU and the
 * per-second delivery counts cover the same time), and per 1,000 messages delivered meanwhile.
 * Undefined when no server was sampled or nothing was delivered.
 */
export function serverCostDuringLoad(
  samples: readonly Sample[],
  deliveredPerSecond: readonly number[],
  t0Ms: number,
  loadStartMs: number,
  loadEndMs: number,
): { cpuS: number; perThousand: number } | undefined {
  const first = Math.ceil((loadStartMs - t0Ms) / 1000);
  const last = Math.floor((loadEndMs - t0Ms) / 1000);
  if (last <= first) return undefined;
  const cpuS = serverCpuBetween(samples, t0Ms + first * 1000, t0Ms + last * 1000);
  const delivered = deliveredPerSecond.slice(first, last).reduce((x, y) => x + y, 0);
  if (cpuS === null || delivered === 0) return undefined;
  return { cpuS, perThousand: cpuS / (delivered / 1000) };
}

function sumBins(arrays: number[][]): number[] {
  const out: number[] = [];
  for (const a of arrays) {
    a.forEach((v, i) => {
      out[i] = (out[i] ?? 0) + v;
    });
  }
  for (let i = 0; i < out.length; i++) out[i] ??= 0;
  return out;
}

function machine() {
  const list = cpus();
  return {
    cpu: list[0]?.model ?? "unknown",
    cores: list.length,
    memory_gib: round(totalmem() / 2 ** 30, 1),
    os: `${platform()} ${release()}`,
    node: process.version,
  };
}

/** Builds the report object (report.json). */
export function buildReport(facts: RunFacts) {
  const { options: o, t0Ms, accounting: a, events } = facts;
  const at = (ms: number) => round((ms - t0Ms) / 1000, 3);
  const records = facts.results.flatMap((r) => r.disconnects).sort((x, y) => x.atMs - y.atMs);
  const unattributed = records.filter((r) => attributedEvent(r, events) === undefined);
  const all = disconnectFigures(records);

  // Per-second bins, summed over the load processes.
  const bins = (
    key: "sent" | "acked" | "delivered" | "duplicates" | "disconnects" | "resumed" | "relogged",
  ) => sumBins(facts.results.map((r) => r.perSecond[key]));
  const delivered = bins("delivered");
  const seconds = Math.max(
    ...facts.results.map((r) => r.perSecond.latency.length),
    delivered.length,
    Math.ceil((facts.endMs - t0Ms) / 1000),
  );
  const pad = (values: number[]) => Array.from({ length: seconds }, (_, i) => values[i] ?? 0);
  const latencyP50: (number | null)[] = [];
  const latencyP99: (number | null)[] = [];
  for (let s = 0; s < seconds; s++) {
    const h = new LatencyHistogram();
    for (const r of facts.results) {
      const data = r.perSecond.latency[s];
      if (data) h.merge(data);
    }
    latencyP50.push(round(h.total === 0 ? null : h.quantile(0.5), 2));
    latencyP99.push(round(h.total === 0 ? null : h.quantile(0.99), 2));
  }
  const latency = new LatencyHistogram();
  for (const r of facts.results) latency.merge(r.latency);

  const loadS = (facts.loadEndMs - facts.loadStartMs) / 1000;
  const firstLoadSecond = Math.floor((facts.loadStartMs - t0Ms) / 1000);
  const lastLoadSecond = Math.ceil((facts.loadEndMs - t0Ms) / 1000);
  const deliveredInLoad = delivered.slice(firstLoadSecond, lastLoadSecond).reduce((x, y) => x + y, 0);
  const sentFirstTime = bins("sent").reduce((x, y) => x + y, 0);
  const loadCost = serverCostDuringLoad(facts.samples, delivered, t0Ms, facts.loadStartMs, facts.loadEndMs);

  const nodeCount = facts.nodes.length;
  const sampleAtLoadStart = facts.samples.find((s) => s.atMs >= facts.loadStartMs) ?? facts.samples[0];
  const perNode = facts.nodes.map((n) => {
    const rss = facts.samples
      .map((s) => s.serverRssKib[n.node] ?? null)
      .filter((v): v is number => v !== null);
    const cpuS = serverCpuBetween(facts.samples, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, n.node);
    const mine = records.filter((r) => r.node === n.node);
    return {
      node: n.node,
      name: n.name,
      address: `${n.address.host}:${n.address.port}`,
      starts: n.starts,
      clients_at_load_start: sampleAtLoadStart?.live.onlineByNode[n.node] ?? null,
      disconnects: mine.length,
      disconnects_not_on_failed_node: mine.filter((r) => attributedEvent(r, events) === undefined).length,
      cpu_s: round(cpuS, 2),
      max_rss_mib: rss.length > 0 ? round(Math.max(...rss) / 1024, 1) : null,
      warnings: n.warnings,
      replication_factor: n.replicationFactor,
    };
  });

  const eventFigures = events.map((e) => {
    const mine = records.filter((r) => attributedEvent(r, events) === e);
    const figures = disconnectFigures(mine);
    const backs = mine.map((r) => r.backAtMs);
    const allBackAtMs =
      mine.length === 0 || backs.some((b) => b === undefined) ? undefined : Math.max(...(backs as number[]));
    return {
      kind: e.kind,
      nodes: e.nodes,
      node_names: e.nodes.map((i) => facts.nodes[i]?.name ?? String(i)),
      at_s: at(e.startMs),
      done_s: at(e.endMs),
      duration_ms: Math.round(e.endMs - e.startMs),
      ok: e.ok,
      detail: e.detail ?? null,
      steps: e.steps,
      ...figures,
      // From the fault to the moment the last of its disconnected clients was back online.
      all_back_after_ms: allBackAtMs === undefined ? null : Math.round(allBackAtMs - e.startMs),
      // What the servers spent meanwhile (sampled nodes only): the cost of bringing them back.
      server_cpu_s_until_all_back:
        allBackAtMs === undefined ? null : round(serverCpuBetween(facts.samples, e.startMs, allBackAtMs), 2),
    };
  });

  const totalMessages = Math.max(1, a.attempted);
  return {
    bench: "failover",
    scenario: o.scenario,
    server: o.target === undefined ? "starling" : o.target.map((t) => `${t.host}:${t.port}`).join(","),
    started_at: new Date(t0Ms).toISOString(),
    aborted: facts.aborted ?? null,
    machine: machine(),
    options: {
      nodes: o.nodes,
      clients: o.clients,
      rate: o.rate,
      duration_s: o.durationS,
      seed: o.seed,
      pattern: o.pattern,
      workers: o.target === undefined ? o.workers : null,
      replication_factor: o.target === undefined ? (o.replicationFactor ?? null) : null,
      store: o.target !== undefined ? null : nodeCount > 1 || o.postgres ? "postgres" : "level",
      resume: o.resume,
      mechanism: o.mechanism,
      starttls: o.starttls,
      sasl2: o.sasl2,
      backoff_ms: o.backoffMs,
      backoff_max_ms: o.backoffMaxMs,
      loadgen_procs: o.loadgenProcs,
    },
    clients: o.clients,
    nodes: o.nodes,
    nodes_in_run: nodeCount,
    logins_ok: facts.connect.ok,
    login_failures: facts.connect.failed,
    logins_per_s: round(facts.connect.ok / (facts.connect.elapsedMs / 1000)),
    roster_incomplete: facts.rosterIncomplete,
    disconnected: all.clients,
    disconnects: all.disconnects,
    disconnected_not_on_failed_node: new Set(unattributed.map((r) => r.user)).size,
    resumed: all.resumed,
    relogged: all.relogged,
    not_reconnected: all.not_back,
    never_online: facts.results.reduce((x, r) => x + r.neverOnline, 0),
    offline_at_end: facts.results.reduce((x, r) => x + r.offlineAtEnd, 0),
    reconnect_p50_ms: all.reconnect_p50_ms,
    reconnect_p99_ms: all.reconnect_p99_ms,
    reconnect_max_ms: all.reconnect_max_ms,
    sent: a.sent,
    delivered: a.delivered,
    lost: a.lost,
    duplicated: a.duplicated,
    unacked_at_end: a.unackedAtEnd,
    delivered_unacked: a.deliveredUnacked,
    lost_pairs: a.lostPairs,
    duplicated_pairs: a.duplicatedPairs,
    out_of_order: a.outOfOrder,
    misrouted: a.misrouted,
    phantom: a.phantom,
    foreign_messages: a.foreign,
    ack_anomalies: a.ackAnomalies,
    impossible_acks: a.impossibleAcks,
    ack_anomaly_samples: a.ackAnomalySamples,
    not_offered: facts.results.reduce((x, r) => x + r.notOffered, 0),
    latency_p50_ms: round(latency.total === 0 ? null : latency.quantile(0.5), 2),
    latency_p99_ms: round(latency.total === 0 ? null : latency.quantile(0.99), 2),
    latency_max_ms: round(latency.total === 0 ? null : latency.maxMs, 1),
    offered_msgs_per_s: o.rate,
    sent_msgs_per_s: round(sentFirstTime / loadS),
    throughput_msgs_per_s: round(deliveredInLoad / loadS),
    load_started_s: at(facts.loadStartMs),
    load_ended_s: at(facts.loadEndMs),
    run_ended_s: at(facts.endMs),
    server_cpu_s_during_load: round(loadCost?.cpuS, 2),
    server_cpu_s_per_1000_msgs: round(loadCost?.perThousand, 3),
    loadgen_cpu_s: round(facts.loadgenCpuS, 2),
    loadgen_cpu_cores: round(facts.loadgenCpuS / ((facts.endMs - t0Ms) / 1000), 3),
    loadgen_cpu_cores_during_load: round(facts.loadgenCpuLoadS / loadS, 3),
    loadgen_cpu_s_per_1000_msgs: round(facts.loadgenCpuLoadS / (totalMessages / 1000), 3),
    events: eventFigures,
    per_node: perNode,
    timeline: {
      // Sampled once a second: connected clients per node (the client's view) and server load.
      t_s: facts.samples.map((s) => at(s.atMs)),
      connected_by_node: facts.nodes.map((n) => facts.samples.map((s) => s.live.onlineByNode[n.node] ?? 0)),
      reconnecting: facts.samples.map((s) => s.live.reconnecting),
      server_cores_by_node: facts.nodes.map((n) => facts.samples.map((s) => round(s.serverCores[n.node], 3))),
      server_rss_mib_by_node: facts.nodes.map((n) =>
        facts.samples.map((s) => round((s.serverRssKib[n.node] ?? Number.NaN) / 1024, 1)),
      ),
      // Counted per second since t0 (index = second).
      sent_per_s: pad(bins("sent")),
      acked_per_s: pad(bins("acked")),
      delivered_per_s: pad(delivered),
      duplicated_per_s: pad(bins("duplicates")),
      disconnects_per_s: pad(bins("disconnects")),
      resumed_per_s: pad(bins("resumed")),
      relogged_per_s: pad(bins("relogged")),
      latency_p50_ms: latencyP50,
      latency_p99_ms: latencyP99,
    },
    lost_samples: a.lostSamples,
    duplicate_samples: a.duplicateSamples,
    login_errors: facts.connect.errors,
    attempt_errors: mergeCounts(facts.results.map((r) => r.attemptErrors)),
    disconnect_reasons: mergeCounts([
      records.reduce<Record<string, number>>((acc, r) => {
        acc[r.reason] = (acc[r.reason] ?? 0) + 1;
        return acc;
      }, {}),
    ]),
    cluster_views: facts.clusterViews,
    // One row per disconnect: user, at_s, node, reason, back_after_ms (null: never), outcome, to_node, attempts.
    disconnect_log: records.map((r) => [
      r.user,
      at(r.atMs),
      r.node,
      r.reason,
      r.backAtMs === undefined ? null : Math.round(r.backAtMs - r.atMs),
      r.outcome ?? null,
      r.toNode ?? null,
      r.attempts,
    ]),
  };
}

function mergeCounts(list: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counts of list) for (const [k, v] of Object.entries(counts)) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** The report's type. */
export type FailoverReport = ReturnType<typeof buildReport>;

/** The short table printed at the end of a run. */
export function summaryTable(r: FailoverReport): string {
  const ms = (v: number | null) => (v === null ? "–" : `${v} ms`);
  const rows: [string, string][] = [
    ["scenario", `${r.scenario} on ${r.server} (${r.nodes} nodes at start, ${r.clients} clients)`],
    [
      "load",
      `${r.offered_msgs_per_s} msgs/s offered, ${(r.load_ended_s! - r.load_started_s!).toFixed(1)} s, pattern ${r.options.pattern}`,
    ],
    ["logins", `${r.logins_ok} ok, ${r.login_failures} failed, ${r.logins_per_s ?? "–"}/s`],
    ["disconnected", `${r.disconnected} clients (${r.disconnects} disconnects)`],
    ["  not on a failed node", String(r.disconnected_not_on_failed_node)],
    [
      "  resumed / relogged",
      `${r.resumed} / ${r.relogged}${r.not_reconnected > 0 ? `, ${r.not_reconnected} never back` : ""}`,
    ],
    ["  reconnect p50 / p99", `${ms(r.reconnect_p50_ms)} / ${ms(r.reconnect_p99_ms)}`],
    ["sent (acked by server)", String(r.sent)],
    ["delivered", String(r.delivered)],
    ["lost / duplicated", `${r.lost} / ${r.duplicated}`],
    ["unacked at end", String(r.unacked_at_end)],
    ["latency p50 / p99", `${ms(r.latency_p50_ms)} / ${ms(r.latency_p99_ms)}`],
    ["throughput", `${r.throughput_msgs_per_s ?? "–"} msgs/s delivered`],
    [
      "server CPU",
      r.server_cpu_s_per_1000_msgs === null
        ? "– (no server sampled, or nothing delivered in a whole second of the load)"
        : `${r.server_cpu_s_per_1000_msgs} s per 1,000 messages delivered during the load (${r.server_cpu_s_during_load} s)`,
    ],
    [
      "load generator CPU",
      `${r.loadgen_cpu_s} s in all (${r.loadgen_cpu_cores} cores); ${r.loadgen_cpu_cores_during_load} cores during the load`,
    ],
  ];
  for (const e of r.events) {
    rows.push([
      `event ${e.kind} ${e.node_names.join("+")}`,
      `at ${e.at_s} s, took ${e.duration_ms} ms${e.ok ? "" : " (FAILED)"}; ${e.clients} clients disconnected` +
        (e.all_back_after_ms === null ? "" : `, all back after ${e.all_back_after_ms} ms`) +
        (e.server_cpu_s_until_all_back === null || e.server_cpu_s_until_all_back === 0
          ? ""
          : ` (server CPU meanwhile ${e.server_cpu_s_until_all_back} s)`),
    ]);
  }
  if (r.aborted !== null) rows.push(["ABORTED", r.aborted]);
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n");
}

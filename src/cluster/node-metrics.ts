/**
 * The node's metrics for `/metrics` (src/http/metrics.ts): every worker's statistics, one
 * sample per worker (label `worker`), and the cluster member's view when the node is in a
 * cluster. Prometheus sums or picks across workers; nothing here is averaged away.
 */
import type { MetricFamily, MetricSample } from "../http/metrics.ts";
import type { ClusterStatus } from "./cluster-member.ts";
import type { ReplicaStats } from "./session-replicas.ts";
import type { WorkerStats } from "./worker-main.ts";

/** What the families are built from. */
export interface NodeMetricsInput {
  workers: readonly WorkerStats[];
  workerRestarts: number;
  /** The main thread's replica shard (main-replicas.ts): a sample labelled `worker="main"`. */
  mainReplicas?: ReplicaStats;
  /** The process's resident memory. */
  rssBytes: number;
  /** Absent for a single node. */
  cluster?: ClusterStatus;
}

/** A family of one unlabelled sample. */
function single(name: string, help: string, type: "counter" | "gauge", value: number): MetricFamily {
  return { name, help, type, samples: [{ value }] };
}

/** The metric families of one node. */
export function nodeMetrics(input: NodeMetricsInput): MetricFamily[] {
  const perWorker = (pick: (w: WorkerStats) => number): MetricSample[] =>
    input.workers.map((w) => ({ labels: { worker: w.index }, value: pick(w) }));
  const gauge = (name: string, help: string, pick: (w: WorkerStats) => number): MetricFamily => ({
    name,
    help,
    type: "gauge",
    samples: perWorker(pick),
  });
  const counter = (name: string, help: string, pick: (w: WorkerStats) => number): MetricFamily => ({
    name,
    help,
    type: "counter",
    samples: perWorker(pick),
  });
  // Copies are held by workers (one node: the next worker) and by the main thread (a cluster).
  const replicas = (
    type: "gauge" | "counter",
    name: string,
    help: string,
    key: keyof ReplicaStats,
  ): MetricFamily => {
    const samples = perWorker((w) => w.replicas[key]);
    if (input.mainReplicas !== undefined)
      samples.push({ labels: { worker: "main" }, value: input.mainReplicas[key] });
    return { name, help, type, samples };
  };
  const families: MetricFamily[] = [
    gauge(
      "starling_connections",
      "Client connections open now (TCP, WebSocket, BOSH).",
      (w) => w.connections,
    ),
    gauge("starling_sessions", "Sessions held, bound or waiting for XEP-0198 resumption.", (w) => w.sessions),
    gauge("starling_actors", "Actors active (users with something in memory).", (w) => w.actors),
    counter("starling_logins_total", "Successful SASL authentications.", (w) => w.logins),
    counter("starling_login_failures_total", "Failed SASL authentications.", (w) => w.loginFailures),
    counter("starling_stanzas_in_total", "Top-level elements received from clients.", (w) => w.stanzasIn),
    counter("starling_stanzas_out_total", "Top-level elements sent to clients.", (w) => w.stanzasOut),
    gauge(
      "starling_mailbox_messages",
      "Messages waiting in the actors' mailboxes.",
      (w) => w.mailboxes.queued,
    ),
    gauge("starling_mailbox_deepest", "The longest single actor mailbox.", (w) => w.mailboxes.deepest),
    gauge(
      "starling_retained_messages",
      "Messages sent to other nodes' actors and not yet accepted.",
      (w) => w.retained,
    ),
    gauge("starling_epoch", "The owner table's epoch each worker routes by.", (w) => w.epoch),
    gauge(
      "starling_partitions_awaiting_handoff",
      "Partitions gained and still waiting for their previous owner's state.",
      (w) => w.incomingPartitions,
    ),
    gauge(
      "starling_replicating_sessions",
      "Sessions streaming their state to replicas.",
      (w) => w.replicating,
    ),
    gauge(
      "starling_replication_lag_changes",
      "Session changes streamed to replicas and not yet held by all of them (the replication lag).",
      (w) => w.replicationLag.changes,
    ),
    gauge(
      "starling_replication_stalled_seconds",
      "The longest time a session's replicas have gone without acknowledging while behind.",
      (w) => w.replicationLag.stalledMs / 1000,
    ),
    replicas("gauge", "starling_replica_copies", "Copies of other shards' sessions held here.", "held"),
    replicas(
      "counter",
      "starling_replica_changes_applied_total",
      "Replicated changes applied to copies.",
      "applied",
    ),
    replicas(
      "counter",
      "starling_replica_changes_refused_total",
      "Replicated changes refused (a zombie owner, or a gap).",
      "refused",
    ),
    replicas(
      "counter",
      "starling_replica_promotions_total",
      "Copies promoted after their owner died.",
      "promoted",
    ),
    gauge("starling_heap_used_bytes", "V8 heap in use by each worker's isolate.", (w) => w.heapUsedBytes),
    single(
      "starling_worker_restarts_total",
      "Workers restarted after a crash.",
      "counter",
      input.workerRestarts,
    ),
    single(
      "starling_resident_memory_bytes",
      "Resident memory of the node's process.",
      "gauge",
      input.rssBytes,
    ),
  ];
  const cluster = input.cluster;
  if (cluster !== undefined) {
    families.push(
      single("starling_cluster_epoch", "The committed owner table's epoch.", "gauge", cluster.epoch),
      single("starling_cluster_view_version", "The membership view's version.", "gauge", cluster.version),
      single(
        "starling_cluster_up",
        "1 when this node is an up member serving its partitions.",
        "gauge",
        cluster.state === "up" ? 1 : 0,
      ),
      {
        name: "starling_peer_link_up",
        help: "1 when the link to the member is up (this node's own row counts as up).",
        type: "gauge",
        samples: cluster.members
          .filter((m) => m.status !== "down")
          .map((m) => ({ labels: { peer: m.node }, value: m.linkUp ? 1 : 0 })),
      },
      {
        name: "starling_member_partitions",
        help: "Partitions each member owns in the committed assignment.",
        type: "gauge",
        samples: cluster.members.map((m) => ({ labels: { member: m.node }, value: m.partitions })),
      },
    );
  }
  return families;
}

/**
 * What a failover scenario needs from the servers under test, whoever runs them: Starling
 * nodes this bench starts itself (starling-cluster.ts), or any XMPP server driven through the
 * operator's own commands (external-target.ts). Node i is reached at `addresses[i]`.
 */
import type { Address } from "../lib/sim-user.ts";

/** One timed step of a fault, for the report. */
export interface StepTiming {
  step: string;
  ms: number;
}

/** The outcome of one fault action on one node. */
export interface ActionResult {
  ok: boolean;
  /** What went wrong, or extra facts (the exit status of a command). */
  detail?: string;
  steps: StepTiming[];
}

/** A node's life in the run, for the per-node report. */
export interface NodeSummary {
  node: number;
  name: string;
  address: Address;
  /** Times the node was started (0 for an external node the bench never started). */
  starts: number;
  /** Warn-or-worse log lines (Starling nodes only). */
  warnings: number | null;
  /** The replication factor its last start ran with, from its "node ready" line (Starling nodes only). */
  replicationFactor: number | null;
}

/**
 * Faults that heal, caused and healed by the driver: a node paused (SIGSTOP) and resumed, a
 * node's peer links cut both ways and restored, the database paused and resumed, or crashed
 * (SIGKILL) and started again on its data.
 */
export type FaultAction =
  | "pause-node"
  | "resume-node"
  | "cut-node"
  | "heal-node"
  | "pause-db"
  | "resume-db"
  | "crash-db"
  | "restart-db";

/** See the file comment. */
export interface ClusterDriver {
  /** Every node the run may have, including ones that join later; index = node number. */
  readonly addresses: readonly Address[];
  /** The node names (used by the cluster's membership view). */
  readonly names: readonly string[];
  /** Starts the nodes present at the beginning and makes the users exist. */
  start(users: readonly { jid: string; password: string }[]): Promise<void>;
  /** SIGKILL (or --kill-cmd) node i and wait until it is gone. */
  kill(i: number): Promise<ActionResult>;
  /** Drain node i (`starling leave`, or --drain-cmd) and wait until it has exited. */
  drain(i: number): Promise<ActionResult>;
  /** Start node i and have it join the running cluster; resolves once it serves clients. */
  join(i: number): Promise<ActionResult>;
  /** Take node i down gracefully and bring it back. */
  restart(i: number): Promise<ActionResult>;
  /** Causes or heals a fault (node i where it names a node); ok:false with why when it cannot. */
  fault(action: FaultAction, i: number): Promise<ActionResult>;
  /** Whether node i is running now, as far as the driver knows. */
  isRunning(i: number): boolean;
  /** Server process ids by node (undefined where unknown or not running), for CPU and RSS. */
  pids(): (number | undefined)[];
  /** The cluster's own view (`GET /api/cluster`), or undefined when none is available. */
  clusterView(): Promise<unknown>;
  nodeSummaries(): NodeSummary[];
  /** Stops everything this driver started; idempotent. */
  stop(): Promise<void>;
  /** Kills everything this driver started at once; safe in an exit handler. */
  killNow(): void;
}

/** Milliseconds elapsed since `started` (a performance.now() value), rounded. */
export function since(started: number): number {
  return Math.round(performance.now() - started);
}

/**
 * The replica shard of a node's main thread (ring.ts `mainShardOf`): it holds the copies of
 * other nodes' sessions (session-replicas.ts places them here), applies each change as the peer
 * link delivers it and acknowledges it in one batch per owner at the end of that turn
 * (setImmediate), on the main thread that is already awake for the frame. Held on a worker, a
 * replicated change crossed to the worker and its acknowledgement back, two thread crossings
 * and, at moderate load, two wake-ups of idle threads per message (docs/benchmarks.md).
 *
 * It owns no partition and hosts no session: when an owner's node dies, the copies it is heir to
 * are handed, with the owner table that says so, to this node's workers, which turn them into
 * detached sessions awaiting `<resume/>` (worker-main.ts `adoptCopies`). A `<resume/>` that
 * reaches it first (`resume-take`) takes its copy as a worker's replica would; one that reaches
 * it while a promoted copy is on its way to a worker is told "pending" (it asks again, and finds
 * the copy on the worker), never "unknown".
 */
import { Packr } from "msgpackr";
import type { WorkerMessage } from "../../actors/messages.ts";
import type { Logger } from "../log.ts";
import type { ResumeTake } from "./client-stream-host.ts";
import type { Envelope } from "./envelope.ts";
import { deadNodesOf, type LiveNode } from "./handoff.ts";
import { isMainShard, mainShardOf, nodeNoOf, type OwnerTable, workerOf } from "./ring.ts";
import {
  type PromotedCopy,
  ReplicaHost,
  type ReplicaStats,
  type ReplicationSender,
  referenceOf,
  shardOfPrefix,
  takeCopyForResume,
} from "./session-replicas.ts";

export interface MainReplicaOptions {
  nodeNo: number;
  log: Logger;
  /**
   * How late a change nothing waits for may be acknowledged (`cluster.replicationBatchMs`):
   * unless a frame to its owner's node leaves sooner, its acknowledgement waits for others'.
   */
  lazyAckMs?: number;
  /** Sends an encoded batch to worker `worker` of this node. */
  toWorker(worker: number, bytes: Uint8Array): void;
  /** Sends an encoded batch to shard `dest` of another node (over its peer link). */
  toPeer(dest: number, bytes: Uint8Array): void;
  /**
   * Worker `shard` of another node crashed and restarted (its new sessions' ids start with
   * `keepPrefix`); `promoted`, the copies of its sessions this shard was heir to, for this
   * node's workers to adopt (then {@link MainReplicaShard.handedOver}).
   */
  peerWorkerRestarted(shard: number, deadPrefix: string, keepPrefix: string, promoted: PromotedCopy[]): void;
}

/** Dead worker incarnations a main thread remembers (see `#deadIncarnations`). */
const MAX_DEAD_INCARNATIONS = 1_000;

export class MainReplicaShard {
  readonly self: number;
  readonly #nodeNo: number;
  readonly #log: Logger;
  readonly #options: MainReplicaOptions;
  readonly #host: ReplicaHost;
  /** Nodes that died, from the owner tables applied: their sessions' copies may promote. */
  readonly #goneNodes = new Set<number>();
  /**
   * Dead incarnations of other nodes' workers (their sid prefix → shard): their sessions' copies
   * promote at the notice, or at a later table if the heir named first in a copy's replica list
   * turns out to be dead too. By prefix, not by shard: a worker of the same number in a later
   * incarnation of its node lives. Forgotten when their node dies (its table promotes them all).
   */
  readonly #deadIncarnations = new Map<string, number>();
  // Structures must not be shared between independently decoded batches (STYLE.md §6).
  readonly #packr = new Packr({ useRecords: false, moreTypes: false });
  /** Malformed batches and envelopes of kinds a replica shard does not take (logged, dropped). */
  #dropped = 0;

  constructor(options: MainReplicaOptions) {
    this.#options = options;
    this.#nodeNo = options.nodeNo;
    this.#log = options.log;
    this.self = mainShardOf(options.nodeNo);
    const sender: ReplicationSender = {
      self: this.self,
      send: (shard, envelope) => this.#send(shard, envelope),
    };
    this.#host = new ReplicaHost(
      sender,
      options.log,
      setImmediate,
      Date.now,
      (owner, stream) => this.#ownerDead(owner, stream),
      undefined,
      options.lazyAckMs ?? 0,
    );
  }

  get stats(): ReplicaStats {
    return this.#host.stats;
  }

  /** A batch for this shard, from a peer link or one of this node's workers. */
  receive(bytes: Uint8Array): void {
    let batch: Envelope[];
    try {
      batch = this.#packr.unpack(bytes) as Envelope[];
      if (!Array.isArray(batch)) throw new TypeError("not a list of envelopes");
    } catch (error) {
      this.#drop({ err: error }, "malformed batch for the main thread's replica shard; dropped");
      return;
    }
    for (const envelope of batch) this.#receive(envelope);
  }

  #receive(envelope: Envelope): void {
    switch (envelope.t) {
      case "rep":
        return this.#host.receive(envelope);
      case "rep-end":
        return this.#host.end(envelope.token, envelope.owner, envelope.stream);
      case "chain":
        this.#send(envelope.to, {
          t: "session",
          msg: this.#host.chain(envelope.to, envelope.msg),
        });
        // Late acknowledgements for that node ride the same frame.
        this.#host.ackNowTo(nodeNoOf(envelope.to));
        return;
      case "rep-live":
        this.#host.audit(envelope.owner, envelope.prefix, envelope.live);
        return;
      case "restarted":
        return this.#workerRestarted(envelope.shard, envelope.deadPrefix, envelope.keepPrefix);
      case "worker":
        if (envelope.msg.kind === "resume-take") return this.#resumeTake(envelope.msg);
        if (envelope.msg.kind === "copy-held")
          return this.#host.held(envelope.msg.token, envelope.msg.stream);
        break;
    }
    this.#drop({ t: envelope.t }, "envelope the main thread's replica shard does not take; dropped");
  }

  #resumeTake(msg: Extract<WorkerMessage, { kind: "resume-take" }>): void {
    const gone = new Set([...this.#goneNodes, ...(msg.gone ?? [])]);
    // A promoted copy on its way to a worker is "pending" (ReplicaHost keeps it until the
    // session made of it is replicated).
    const copy = takeCopyForResume(this.#host, msg.token, msg.user, msg.h, gone, msg.taker);
    if (copy !== undefined && copy !== "pending")
      this.#log.info({ user: msg.user }, "replica taken over by a resumption: its owner's node is dead");
    const value: ResumeTake =
      copy === "pending"
        ? { pending: true }
        : copy === undefined
          ? undefined
          : { snapshot: copy.state, copyOf: referenceOf(copy) };
    this.#send(msg.toShard, { t: "reply", reqId: msg.reqId, ok: true, value });
  }

  /**
   * The node moves from owner table `prev` to `next` with the nodes `live` serving: the copies
   * whose owner's node died (in this table or an earlier one) and whose heir is this shard are
   * promoted, and returned for the workers to adopt.
   */
  applyTable(prev: OwnerTable, next: OwnerTable, live: readonly LiveNode[]): PromotedCopy[] {
    if (next.epoch <= prev.epoch) return [];
    // As a worker does (handoff.ts tableApplied): promote when this table drops a node, with
    // every node known dead (a copy whose heir died in an earlier table falls to the next one).
    return this.membersChanged(live, deadNodesOf(prev, live));
  }

  /**
   * The serving members are `live` now, and the nodes `died` died: with a table that drops them
   * ({@link applyTable}), or without one, when they owned no partition (a node that joined and
   * died before a table gave it any). The copies whose owner's node died and whose heir is this
   * shard are promoted, and returned for the workers to adopt.
   */
  membersChanged(live: readonly LiveNode[], died: ReadonlySet<number>): PromotedCopy[] {
    // A node back under its name keeps its number: its new incarnation's sessions are alive.
    for (const { nodeNo } of live) this.#goneNodes.delete(nodeNo);
    if (died.size === 0) return [];
    for (const node of died) this.#goneNodes.add(node);
    // Copies taken by shards of the dead nodes that never said their replicas held the session
    // come back, and are promoted again below (to this node's workers).
    this.#host.restore((taker) => died.has(nodeNoOf(shardOfPrefix(taker))));
    // The whole node died: none of its workers' sessions lives on.
    for (const [prefix, shard] of this.#deadIncarnations)
      if (died.has(nodeNoOf(shard))) this.#deadIncarnations.delete(prefix);
    const promoted = this.#promoteDead();
    if (promoted.length > 0)
      this.#log.info({ sessions: promoted.length }, "replicas promoted: handed to the workers");
    return promoted;
  }

  /**
   * Worker `shard` of another node crashed: its sessions (ids starting `deadPrefix`) died with it,
   * as with a node's death, but the node lives on and no owner table says so. Their copies held
   * here are promoted now (the owner's node sent this after everything of the old worker, on the
   * same link, so no change of theirs is still on its way); the new incarnation's sessions, ids
   * starting `keepPrefix`, replicate here as any other. A notice heard before (re-sent after a link
   * overflow) changes nothing.
   */
  #workerRestarted(shard: number, deadPrefix: string, keepPrefix: string): void {
    if (nodeNoOf(shard) === this.#nodeNo || isMainShard(shard) || !deadPrefix.startsWith(`${shard}.`)) {
      this.#drop({ shard }, "a restart notice for a shard of this node or a main thread; dropped");
      return;
    }
    // Late: its node died since, and its copies were promoted then.
    if (this.#goneNodes.has(nodeNoOf(shard)) || this.#deadIncarnations.has(deadPrefix)) return;
    this.#deadIncarnations.set(deadPrefix, shard);
    // A worker in a crash loop on a node that never dies must not grow this for ever: the oldest
    // incarnations' copies were promoted long ago.
    if (this.#deadIncarnations.size > MAX_DEAD_INCARNATIONS)
      this.#deadIncarnations.delete(this.#deadIncarnations.keys().next().value!);
    // Copies that worker took for a resumption and had not confirmed died with it: back, and
    // promoted here (the notice comes after everything the old incarnation sent on the link, and
    // before anything the new one sends).
    this.#host.restore((taker) => taker === deadPrefix);
    const promoted = this.#promoteDead();
    this.#log.warn(
      { shard, sessions: promoted.length },
      "a worker of another node crashed: its sessions' copies promoted here",
    );
    this.#options.peerWorkerRestarted(shard, deadPrefix, keepPrefix, promoted);
  }

  /**
   * Promotes the copies this shard is heir to whose owner died: its node (a copy whose first
   * replica's node died too falls to the next one), or the worker incarnation that streamed it.
   */
  #promoteDead(): PromotedCopy[] {
    return this.#host.promote(
      (s) => this.#goneNodes.has(nodeNoOf(s)),
      (owner, stream) => this.#ownerDead(owner, stream),
    );
  }

  /** Whether the owner of `stream` died: its node, or its worker incarnation. */
  #ownerDead(owner: number, stream: string): boolean {
    if (this.#goneNodes.has(nodeNoOf(owner))) return true;
    for (const prefix of this.#deadIncarnations.keys()) if (stream.startsWith(prefix)) return true;
    return false;
  }

  /** This node's worker `shard` crashed and runs again: every other node of `nodes` is told. */
  announceRestart(shard: number, deadPrefix: string, keepPrefix: string, nodes: Iterable<number>): void {
    for (const nodeNo of nodes) {
      if (nodeNo !== this.#nodeNo)
        this.#send(mainShardOf(nodeNo), { t: "restarted", shard, deadPrefix, keepPrefix });
    }
  }

  /**
   * Worker `worker` of this node adopted these copies (with a table, or after a worker's crash):
   * it holds them now. Each is kept here until its session is replicated (`copy-held`), or comes
   * back if that worker dies first ({@link localWorkerDied}).
   */
  handedOver(copies: readonly PromotedCopy[], workerPrefix: string | undefined): void {
    if (workerPrefix === undefined) return;
    for (const { state, stream } of copies) this.#host.assign(state.token, stream, workerPrefix);
  }

  /**
   * The worker of this node whose session ids start with `deadPrefix` died: the copies it adopted
   * or took for a resumption whose sessions had no replica holding them yet died with it. They
   * come back and are promoted again, for the running workers to adopt (the session survives a
   * second crash, not only the owner's).
   */
  localWorkerDied(deadPrefix: string): PromotedCopy[] {
    if (this.#host.restore((taker) => taker === deadPrefix) === 0) return [];
    const promoted = this.#promoteDead();
    if (promoted.length > 0)
      this.#log.warn(
        { worker: deadPrefix, sessions: promoted.length },
        "copies a crashed worker held promoted again",
      );
    return promoted;
  }

  /**
   * One envelope, packed on its own: a replica shard sends one acknowledgement per owner per turn
   * (and a restart notice is rare).
   */
  #send(shard: number, envelope: Envelope): void {
    // pack() returns a view into a reused buffer: a peer link keeps the bytes until its turn ends.
    const bytes = new Uint8Array(this.#packr.pack([envelope]));
    if (nodeNoOf(shard) === this.#nodeNo) this.#options.toWorker(workerOf(shard), bytes);
    else this.#options.toPeer(shard, bytes);
  }

  #drop(fields: Record<string, unknown>, message: string): void {
    if (this.#dropped++ % 1000 === 0) this.#log.warn({ ...fields, dropped: this.#dropped }, message);
  }
}

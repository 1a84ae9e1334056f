/**
 * Moves envelopes between shards. Envelopes for one destination are collected during an
 * event-loop turn and sent as one msgpackr-encoded batch, so a burst of stanzas costs one
 * postMessage per destination, not one per stanza. Shards of this node are reached over a
 * MessagePort each; shards of other nodes through the uplink to the main thread, which owns the
 * peer links.
 *
 * Ownership is checked on arrival: an envelope routed under an older table is forwarded to the
 * current owner, one routed under a newer table than ours waits until we learn it, and one for a
 * partition we are taking over waits for the previous owner's handoff.
 */
import type { MessagePort } from "node:worker_threads";
import { Packr } from "msgpackr";
import { type ActorKey, actorKey, splitActorKey } from "../../actors/actor.ts";
import type { ActorRouter, SessionMessage, UserMessage } from "../../actors/messages.ts";
import { fromErrorRecord, toErrorRecord } from "../errors.ts";
import { addressedBatchToWire, batchFromWire, batchToWire } from "./batch-wire.ts";
import type { ActorMessage, Envelope } from "./envelope.ts";
import { isMainShard, nodeNoOf, type OwnerTable, ownerShard, partitionOf, workerOf } from "./ring.ts";

/** Batches larger than this are flushed at once instead of waiting for the end of the turn. */
const MAX_BATCH = 512;

/** Envelopes held for a newer table or a handoff; beyond this the oldest are dropped (and logged). */
const MAX_HELD = 100_000;

/** Delivers one envelope that arrived for this shard. */
export type EnvelopeHandler = (envelope: Envelope) => void;

/** Where batches for shards of other nodes go: the main thread, which sends them over a peer link. */
export interface Uplink {
  /** A batch for shard `dest` of another node, as batch-wire.ts's `addressedBatchToWire`. */
  postMessage(wire: string): void;
}

interface Retained {
  key: ActorKey;
  msg: ActorMessage;
  dest: number;
  /** The re-drive round that last re-sent it (0: never). */
  round: number;
  /** Called once the message is safe (the sender's XEP-0198 `h` may count it). */
  onAccepted?: () => void;
  /** When it was last sent, and how long to wait before sending it again. */
  sentAt: number;
  retryMs: number;
}

/**
 * A retained message not accepted this long is sent again (to the owner under the current
 * table), then after twice as long, up to {@link RETRY_MAX_MS}: a write that went to a node that
 * died before the sender heard of it, or an accept lost with a node, is not stuck for good.
 * Receivers drop what they already handled (by key), so a re-send costs a duplicate check only.
 */
const RETRY_FIRST_MS = 3_000;
const RETRY_MAX_MS = 30_000;

/** About how many bytes a message takes on a link (its XML, plus routing fields). */
function approximateBytes(msg: ActorMessage): number {
  let bytes = 128;
  if ("xml" in msg && typeof msg.xml === "string") bytes += msg.xml.length;
  if (msg.kind === "stanza") bytes += msg.stanza.xml.length;
  return bytes;
}

/**
 * The router of one worker. Peer ports are MessagePorts to every other worker of the node;
 * a port can be replaced when that worker restarts.
 */
export class ShardRouter implements ActorRouter {
  /** This shard's cluster-wide number. */
  readonly self: number;
  readonly #selfNode: number;
  #table: OwnerTable;
  #uplink: Uplink | undefined;
  /** Envelopes routed under a table newer than ours. */
  #future: Envelope[] = [];
  /** Partitions we own but are still receiving from their previous owner, with what waits for them. */
  readonly #incoming = new Map<number, Envelope[]>();
  #held = 0;
  /** Stanzas sent to another node's actor, kept until it says `accepted`. */
  readonly #retained = new Map<number, Retained>();
  #nextRid = 1;
  /** Every shard of every node serving now (joining, up or leaving), this one included. */
  #liveShards: readonly number[] = [];
  /** Nodes that died or left: requests to their shards fail at once instead of timing out. */
  readonly #goneNodes = new Set<number>();
  #accepted: Map<number, number[]> = new Map();
  /** Called when held envelopes overflow, so the worker can log it. */
  onDrop: ((count: number) => void) | undefined;
  /** A reply that came after its request gave up (a late resumption take must be given back). */
  onLateReply: ((value: unknown) => void) | undefined;
  readonly #ports: (MessagePort | undefined)[] = [];
  readonly #pending = new Map<number, Envelope[]>();
  #flushScheduled = false;
  readonly #handler: EnvelopeHandler;
  // Structures must not be shared between independently decoded batches (STYLE.md §6).
  readonly #packr = new Packr({ useRecords: false, moreTypes: false });
  #nextReqId = 1;
  readonly #requests = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void; shard?: number }
  >();
  /** Waiting for the next owner table (see {@link nextTable}). */
  #tableWaiters: (() => void)[] = [];
  readonly #partitionCache = new Map<string, number>();

  constructor(self: number, table: OwnerTable, handler: EnvelopeHandler) {
    this.self = self;
    this.#selfNode = nodeNoOf(self);
    this.#table = table;
    this.#handler = handler;
  }

  /** The current owner table. */
  get table(): OwnerTable {
    return this.#table;
  }

  /** Retained stanzas not yet accepted (for statistics and tests). */
  /** Envelopes held for a newer table or a partition's handoff. */
  get heldCount(): number {
    return this.#held;
  }

  get retainedCount(): number {
    return this.#retained.size;
  }

  /** Attaches the port to the main thread, for shards of other nodes. */
  setUplink(uplink: Uplink): void {
    this.#uplink = uplink;
  }

  /** Delivers a batch from another worker of this node or, through the main thread, another node (batch-wire.ts). */
  receiveBatch(wire: string): void {
    const batch = this.#packr.unpack(batchFromWire(wire)) as Envelope[];
    for (const envelope of batch) this.#receive(envelope);
  }

  /**
   * Switches to a newer table. `incoming` lists partitions this shard gains whose previous owner
   * is alive and will hand them off: envelopes for them wait for {@link completeIncoming}.
   */
  setTable(table: OwnerTable, incoming: readonly number[]): void {
    if (table.epoch <= this.#table.epoch) return;
    this.#table = table;
    for (const p of incoming) if (!this.#incoming.has(p)) this.#incoming.set(p, []);
    const future = this.#future;
    this.#future = [];
    this.#held -= future.length;
    for (const envelope of future) this.#receive(envelope);
    for (const resolve of this.#tableWaiters.splice(0)) resolve();
  }

  /** The shards of every node serving now (for the rare cluster-wide question). */
  liveShards(): readonly number[] {
    return this.#liveShards.length > 0 ? this.#liveShards : [...this.#table.shardNos];
  }

  /** Records the shards of the nodes serving now (they may own no partition, e.g. leaving). */
  setLiveShards(shards: readonly number[]): void {
    this.#liveShards = shards;
    // A node back under its name keeps its number: its new incarnation is not gone.
    for (const shard of shards) this.#goneNodes.delete(nodeNoOf(shard));
  }

  /** Holds envelopes for `partitions` until {@link completeIncoming} (a restarted worker's recovery). */
  holdIncoming(partitions: readonly number[]): void {
    for (const p of partitions) if (!this.#incoming.has(p)) this.#incoming.set(p, []);
  }

  /** The previous owner's handoff of `partition` is applied: deliver what waited for it, in order. */
  completeIncoming(partition: number): void {
    const waiting = this.#incoming.get(partition);
    if (waiting === undefined) return;
    this.#incoming.delete(partition);
    this.#held -= waiting.length;
    for (const envelope of waiting) this.#receive(envelope);
  }

  /** Whether a shard number is on this node. */
  isLocal(shard: number): boolean {
    return nodeNoOf(shard) === this.#selfNode;
  }

  /**
   * Nodes `nodeNos` died: re-route every retained message under the current table. Those sent
   * to the dead nodes' actors need a new owner; the others may have been passed on to a session
   * that lived there (its accept died with it). Recipients drop what they already handled (actors
   * by sid, sessions and actors by the stanza's key).
   */
  resendRetainedTo(nodeNos: ReadonlySet<number>): number {
    for (const nodeNo of nodeNos) this.#goneNodes.add(nodeNo);
    // Requests to their shards will never be answered: fail them now, not at their timeout.
    for (const [reqId, request] of this.#requests) {
      if (request.shard === undefined || !nodeNos.has(nodeNoOf(request.shard))) continue;
      this.#requests.delete(reqId);
      request.reject(new Error(`shard ${request.shard} is on a node that died`));
    }
    return this.#resend(undefined);
  }

  /** Whether `shard` is on a node that died or left. */
  isOnGoneNode(shard: number): boolean {
    return this.#goneNodes.has(nodeNoOf(shard));
  }

  /** Nodes that died or left, as this shard knows from the committed tables. */
  goneNodes(): number[] {
    return [...this.#goneNodes];
  }

  /** Resolves true at the next owner table, or false after `timeoutMs`. */
  nextTable(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        this.#tableWaiters = this.#tableWaiters.filter((w) => w !== done);
        resolve(false);
      }, timeoutMs);
      timer.unref();
      this.#tableWaiters.push(done);
    });
  }

  /** Re-sends retained messages waiting longer than their retry interval (called every second). */
  retryRetained(now = Date.now()): number {
    return this.#resend(undefined, (entry) => {
      if (now - entry.sentAt < entry.retryMs) return false;
      entry.retryMs = Math.min(entry.retryMs * 2, RETRY_MAX_MS);
      return true;
    });
  }

  /**
   * The link to `nodeNo` dropped what it held (it overflowed) and is back: re-send the retained
   * messages sent to that node that round `round` has not re-sent yet, oldest first, about
   * `maxBytes` of them (more would overflow the link again), to the owner under the current
   * table. Receivers drop what they had already handled (actors by sid, sessions by the write's
   * key). Returns how many were re-sent and how many of the round remain.
   */
  redrive(nodeNo: number, round: number, maxBytes: number): { resent: number; remaining: number } {
    let bytes = 0;
    let remaining = 0;
    const resent = this.#resend(new Set([nodeNo]), (entry) => {
      if (entry.round >= round) return false;
      if (bytes >= maxBytes) {
        remaining++;
        return false;
      }
      bytes += approximateBytes(entry.msg);
      entry.round = round;
      return true;
    });
    return { resent, remaining };
  }

  #resend(nodeNos: ReadonlySet<number> | undefined, pick: (entry: Retained) => boolean = () => true): number {
    let resent = 0;
    const now = Date.now();
    for (const [rid, entry] of this.#retained) {
      if ((nodeNos !== undefined && !nodeNos.has(nodeNoOf(entry.dest))) || !pick(entry)) continue;
      const partition = this.partitionOfKey(entry.key);
      const dest = ownerShard(this.#table, partition);
      entry.dest = dest;
      entry.sentAt = now;
      this.send(dest, {
        t: "actor",
        key: entry.key,
        epoch: this.#table.epoch,
        partition,
        msg: entry.msg,
        ack: { shard: this.self, rid },
      });
      resent++;
    }
    return resent;
  }

  /** The actor handled a retained message: tell its sender (batched per turn). */
  accept(ack: { shard: number; rid: number }): void {
    let rids = this.#accepted.get(ack.shard);
    if (rids === undefined) {
      rids = [];
      this.#accepted.set(ack.shard, rids);
      if (this.#accepted.size === 1) setImmediate(this.#flushAccepted);
    }
    rids.push(ack.rid);
  }

  readonly #flushAccepted = (): void => {
    const accepted = this.#accepted;
    this.#accepted = new Map();
    for (const [shard, rids] of accepted) this.send(shard, { t: "accepted", rids });
  };

  /** Attaches (or replaces) the port to worker `worker` of this node. */
  setPort(worker: number, port: MessagePort): void {
    this.#ports[worker]?.close();
    this.#ports[worker] = port;
    port.on("message", (wire: string) => this.receiveBatch(wire));
  }

  /** The partition of a user, cached because every stanza needs it. */
  partitionOf(user: string): number {
    let p = this.#partitionCache.get(user);
    if (p === undefined) {
      p = partitionOf(user, this.#table.partitions);
      if (this.#partitionCache.size > 100_000) this.#partitionCache.clear();
      this.#partitionCache.set(user, p);
    }
    return p;
  }

  /** The partition of an actor: its name's, whatever its kind (ring.ts partitionOf); cached by key. */
  partitionOfKey(key: ActorKey): number {
    let p = this.#partitionCache.get(key);
    if (p === undefined) {
      p = this.partitionOf(splitActorKey(key).name);
      this.#partitionCache.set(key, p);
    }
    return p;
  }

  /** The shard that hosts a user's actor. */
  shardOfUser(user: string): number {
    return ownerShard(this.#table, this.partitionOf(user));
  }

  /** The shard that hosts the actor of `key`. */
  shardOfKey(key: ActorKey): number {
    return ownerShard(this.#table, this.partitionOfKey(key));
  }

  /** The node a shard number is on. */
  nodeOf(shard: number): number {
    return nodeNoOf(shard);
  }

  /**
   * Where a retained write to a session on `shard` goes first: the session's replica, which keeps
   * it and passes it on (chain replication, session-replicas.ts `ReplicaHost.chain`), or undefined
   * to send it straight to the session. Only a write that carries its sender's accept request: its
   * sender's node sends it again if it is lost with the replica. Anything else (presence, iqs,
   * copies of a message accepted through its first write, control messages) goes straight, as
   * a replica's node dying must not lose it; it may overtake a retained write still on its way
   * through the replica (docs/cluster.md). Set by the worker from its replication settings.
   */
  chainVia: ((shard: number) => number | undefined) | undefined;

  /** Sends a message to session `msg.sid` on `shard` (a retained write through {@link chainVia}). */
  toSession(shard: number, msg: SessionMessage): void {
    const via =
      msg.kind === "write" && msg.accept !== undefined && msg.dedupe !== undefined
        ? this.chainVia?.(shard)
        : undefined;
    if (via !== undefined && msg.kind === "write") this.send(via, { t: "chain", to: shard, msg });
    else this.send(shard, { t: "session", msg });
  }

  /**
   * Sends a message to the UserActor of `msg.user`. A message for an actor on another node is
   * kept until that actor has handled it, so a node's death cannot lose it (see
   * {@link resendRetainedTo}): a stanza, and also a bind, a presence or a roster change, whose
   * loss would leave a client waiting or a session table wrong. Actors handle a re-sent control
   * message idempotently (same sid); message writes carry a key sessions deduplicate on.
   *
   * With `onAccepted`, the message is retained wherever its actor lives, and `onAccepted` runs
   * once it is safe: written to a session whose replicas hold it, stored, or refused.
   */
  toUser(msg: UserMessage, onAccepted?: () => void): void {
    this.toActor(actorKey("user", msg.user), msg, onAccepted);
  }

  /** Sends a message to the actor of `key`, of any kind, on the terms of {@link toUser}. */
  toActor(key: ActorKey, msg: ActorMessage, onAccepted?: () => void): void {
    const partition = this.partitionOfKey(key);
    const shard = ownerShard(this.#table, partition);
    const epoch = this.#table.epoch;
    if (nodeNoOf(shard) !== this.#selfNode || onAccepted !== undefined) {
      const rid = this.#nextRid++;
      const entry: Retained = {
        key,
        msg,
        dest: shard,
        round: 0,
        sentAt: Date.now(),
        retryMs: RETRY_FIRST_MS,
      };
      if (onAccepted !== undefined) entry.onAccepted = onAccepted;
      this.#retained.set(rid, entry);
      this.send(shard, { t: "actor", key, epoch, partition, msg, ack: { shard: this.self, rid } });
      return;
    }
    this.send(shard, { t: "actor", key, epoch, partition, msg });
  }

  /** Sends a request to a UserActor and waits for its reply. */
  requestUser<T>(build: (reqId: number) => UserMessage, timeoutMs = 10_000): Promise<T> {
    const reqId = this.#nextReqId++;
    const promise = this.#awaitReply<T>(reqId, timeoutMs);
    this.toUser(build(reqId));
    return promise;
  }

  /** Sends a request to the actor of `key`, of any kind, and waits for its reply. */
  requestActor<T>(key: ActorKey, build: (reqId: number) => ActorMessage, timeoutMs = 10_000): Promise<T> {
    const reqId = this.#nextReqId++;
    const promise = this.#awaitReply<T>(reqId, timeoutMs);
    this.toActor(key, build(reqId));
    return promise;
  }

  /** Sends a request to a worker and waits for its reply; fails at once if its node is gone. */
  requestShard<T>(shard: number, build: (reqId: number) => Envelope, timeoutMs = 10_000): Promise<T> {
    if (this.#goneNodes.has(nodeNoOf(shard))) {
      return Promise.reject(new Error(`shard ${shard} is on a node that left the cluster`));
    }
    const reqId = this.#nextReqId++;
    const promise = this.#awaitReply<T>(reqId, timeoutMs, shard);
    this.send(shard, build(reqId));
    return promise;
  }

  /** Answers a request that came from `shard`. */
  reply(
    shard: number,
    reqId: number,
    result: { ok: true; value: unknown } | { ok: false; error: unknown },
  ): void {
    this.send(
      shard,
      result.ok
        ? { t: "reply", reqId, ok: true, value: result.value }
        : { t: "reply", reqId, ok: false, error: toErrorRecord(result.error) },
    );
  }

  #awaitReply<T>(reqId: number, timeoutMs: number, shard?: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(reqId);
        reject(new Error(`request ${reqId} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#requests.set(reqId, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
        ...(shard === undefined ? {} : { shard }),
      });
    });
  }

  /** Queues an envelope for a shard (this one included); sent at the end of the turn. */
  send(shard: number, envelope: Envelope): void {
    let batch = this.#pending.get(shard);
    if (batch === undefined) {
      batch = [];
      this.#pending.set(shard, batch);
    }
    batch.push(envelope);
    if (batch.length >= MAX_BATCH) {
      // Detach the batch first: delivering it locally can route more envelopes here, and they
      // must start a new batch rather than join (and re-run) this one.
      this.#pending.delete(shard);
      this.#flushOne(shard, batch);
    } else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
  }

  /**
   * Called at the end of each turn with the shards this turn's batches go to, before they leave:
   * envelopes it sends join them (replication's deferred changes riding a frame to their
   * replica's node that goes anyway).
   */
  beforeFlush: ((destinations: Iterable<number>) => void) | undefined;

  readonly #flush = (): void => {
    this.beforeFlush?.(this.#pending.keys());
    this.#flushScheduled = false;
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [shard, batch] of pending) this.#flushOne(shard, batch);
  };

  #flushOne(shard: number, batch: Envelope[]): void {
    if (shard === this.self) {
      for (const envelope of batch) this.#receive(envelope);
      return;
    }
    // pack() returns a view into a reused buffer: the wire string copies just the bytes. The
    // main thread forwards what is for other nodes, and keeps what is for its own replica shard.
    if (nodeNoOf(shard) !== this.#selfNode || isMainShard(shard)) {
      if (this.#uplink === undefined) return;
      this.#uplink.postMessage(addressedBatchToWire(shard, this.#packr.pack(batch)));
      return;
    }
    const port = this.#ports[workerOf(shard)];
    if (port === undefined) return; // The worker is restarting; its sessions re-register later.
    port.postMessage(batchToWire(this.#packr.pack(batch)));
  }

  #hold(queue: Envelope[], envelope: Envelope): void {
    if (this.#held >= MAX_HELD) {
      this.onDrop?.(1);
      return;
    }
    this.#held++;
    queue.push(envelope);
  }

  #receive(envelope: Envelope): void {
    if (envelope.t === "reply") {
      const request = this.#requests.get(envelope.reqId);
      if (request === undefined) {
        if (envelope.ok) this.onLateReply?.(envelope.value);
        return;
      }
      this.#requests.delete(envelope.reqId);
      if (envelope.ok) request.resolve(envelope.value);
      else request.reject(fromErrorRecord(envelope.error));
      return;
    }
    if (envelope.t === "accepted") {
      for (const rid of envelope.rids) {
        const entry = this.#retained.get(rid);
        if (entry === undefined) continue;
        this.#retained.delete(rid);
        entry.onAccepted?.();
      }
      return;
    }
    if (envelope.t === "actor") {
      if (envelope.epoch > this.#table.epoch) return this.#hold(this.#future, envelope);
      const owner = ownerShard(this.#table, envelope.partition);
      if (owner !== this.self) {
        // Routed under an older table: forward to the current owner rather than act on a key
        // we do not own, keeping the sender's ack request.
        this.send(owner, { ...envelope, epoch: this.#table.epoch });
        return;
      }
      const waiting = this.#incoming.get(envelope.partition);
      if (waiting !== undefined) return this.#hold(waiting, envelope);
    }
    this.#handler(envelope);
  }

  /** Closes every port. */
  close(): void {
    for (const port of this.#ports) port?.close();
  }
}

/**
 * Hot replication of resumable sessions (CLUSTER.md "Hot replication", guarantee 3).
 *
 * A session with XEP-0198 resumption streams every change of its state (actors/session-state.ts)
 * to `replicationFactor - 1` replicas: the main thread of each of the next nodes after its own in
 * node-number order (on a single node, the next worker). Each change carries the owner shard and
 * a log sequence number; a replica applies it with the same pure function and acknowledges the
 * highest number it holds, batched per turn like every envelope. The owner writes a stanza to
 * the socket, and accepts a sender's stanza, only once every replica holds it, so a client never
 * sees (or acknowledges) what a crash could lose.
 *
 * A write to a session whose only replica is another node's main thread goes through that
 * replica first (chain replication, {@link ReplicaHost.chain}): the replica keeps it and passes it
 * on, and the owner, which then knows both hold it, writes it to the socket and accepts it at
 * once, telling the replica what it did with it in the next batch. Two peer frames instead of
 * three (one instead of three when the user's actor is on the replica's node), and no round
 * trip between the write and the socket (docs/benchmarks.md).
 *
 * When the owner's node (or worker) dies, the first replica that survives promotes its copy into
 * a detached session awaiting `<resume/>`, on the same token: resumption then finds it like any
 * detached session. A replica accepts changes only from the owner it was initialised by, so once
 * a copy is promoted (or re-initialised by a resumption elsewhere) the old owner, a zombie, gets
 * nothing acknowledged.
 */
import { randomUUID } from "node:crypto";
import type { SessionMessage } from "../../actors/messages.ts";
import {
  applySessionChange,
  type ChainMark,
  cloneSessionState,
  type DeferrableChange,
  type SessionChange,
  type SessionSnapshot,
  unackedAfter,
} from "../../actors/session-state.ts";
import type { Logger } from "../log.ts";
import type { Envelope } from "./envelope.ts";
import { mainShardOf, nodeNoOf } from "./ring.ts";

/**
 * Where the replicas of one owner shard's sessions go (pure, deterministic): the main thread
 * (ring.ts `mainShardOf`) of each of the next `factor - 1` nodes after the owner's in node-number
 * order, so a change is applied and acknowledged where the peer link hands it over, with no
 * crossing to a worker thread and back on the replica's side. On a single node, the next worker
 * (a worker crash is survivable; a process crash drops every socket anyway).
 */
export function placeReplicas(owner: number, liveShards: readonly number[], factor: number): number[] {
  if (factor <= 1) return [];
  const ownNode = nodeNoOf(owner);
  const nodes = [...new Set(liveShards.map(nodeNoOf))].sort((a, b) => a - b);
  // The nodes after ours in ring order, wrapping: each node's successor is a different node.
  const others = [...nodes.filter((n) => n > ownNode), ...nodes.filter((n) => n < ownNode)];
  if (others.length > 0) return others.slice(0, factor - 1).map(mainShardOf);
  const local = liveShards.filter((shard) => nodeNoOf(shard) === ownNode).sort((a, b) => a - b);
  if (local.length < 2) return [];
  return [local[(local.indexOf(owner) + 1) % local.length]!];
}

/** What the replication sends through the router. */
export interface ReplicationSender {
  readonly self: number;
  send(shard: number, envelope: Extract<Envelope, { t: "rep" | "rep-ack" | "rep-end" }>): void;
  /**
   * Runs `flush` a little later (`cluster.replicationBatchMs`), for changes nothing waits on at
   * once, so that many sessions' share one batch. Without it they are sent like any other.
   */
  later?(flush: () => void): void;
  /**
   * A change leaves at once: the flushes waiting for {@link later} run now, so their changes go
   * in the same turn's batch to the same replicas instead of a batch of their own.
   */
  now?(): void;
}

/**
 * {@link ReplicationSender.later} and `now` for one worker. Every flush asked for runs together,
 * `delayMs` after the first (one timer per worker, not one per session), or sooner, with the
 * next change any of the worker's sessions sends at once: all of a worker's sessions replicate
 * to the same shards (placeReplicas depends on the owner shard only), so the deferred counts
 * ride in a batch that goes anyway. A batch of their own costs a peer frame, its
 * acknowledgement and the wake-ups of four threads (docs/benchmarks.md): at 1,000 msgs/s on
 * three nodes the timer's batches were 0.6 of the 4.6 write system calls per message that
 * replication added.
 */
export function batchLater(delayMs: number): Required<Pick<ReplicationSender, "later" | "now">> {
  let due: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  const runDue = (): void => {
    clearTimeout(timer);
    timer = undefined;
    const flushes = due;
    due = [];
    for (const flush of flushes) flush();
  };
  return {
    later(flush) {
      if (due.push(flush) === 1) timer = setTimeout(runDue, delayMs).unref();
    },
    now() {
      if (due.length > 0) runDue();
    },
  };
}

/** The owner's side: one stream per replicated session. */
export class ReplicaStream {
  readonly token: string;
  /**
   * Unique per stream: a session resumed on the worker that held it before streams under the same
   * token, and the old stream's late acknowledgements must not count for the new one.
   */
  readonly id: string;
  #replicas: number[];
  /**
   * Replicas a re-seat replaced, kept (make before break) until every replica of the new list
   * holds the state: they go on receiving changes, keep the list they had (so, should the owner
   * die meanwhile, the copy that holds everything promotes), and their acknowledgements count,
   * so whatever is acknowledged is on them too (sim seed 7603: ended at once, the old replica
   * dropped the only copy while the new one was behind a cut link).
   */
  #leaving: number[] = [];
  /** For a promoted copy's stream: the stream and lsn the copy came from (sent with every init). */
  readonly #origin: { stream: string; lsn: number } | undefined;
  /** The lsn of the last re-seat: once every replica holds it, the leaving ones end. */
  #reseatLsn = 0;
  /**
   * Replicas a re-seat added that do not hold the state yet. Every list sent names them after
   * the ones that hold it, so the first live replica of a list, which promotes the copy if the
   * owner dies, holds it (sim seed 3705: the owner died a moment after a re-seat whose init
   * reached the kept replica but not the new heir, which the list named first: nobody promoted).
   * Once they hold it, every replica gets the list in placement order.
   */
  #adding: number[] = [];
  #lsn = 0;
  /** Deferred changes not sent yet, with their lsns: always the newest ones pushed. */
  #deferred: [number, DeferrableChange][] = [];
  readonly #acked = new Map<number, number>();
  readonly #sender: ReplicationSender;
  readonly #onAcked: (lsn: number) => void;
  #ended = false;

  constructor(
    sender: ReplicationSender,
    token: string,
    id: string,
    replicas: number[],
    state: SessionSnapshot,
    onAcked: (lsn: number) => void,
    clock: () => number = Date.now,
    origin?: { stream: string; lsn: number },
  ) {
    this.#origin = origin;
    this.#clock = clock;
    this.#progressAt = clock();
    this.#sender = sender;
    this.token = token;
    this.id = id;
    this.#replicas = replicas;
    this.#onAcked = onAcked;
    // The initial state is change 1, so until the replicas acknowledge it nothing counts as held
    // (a resumed session's re-sent log waits for it like any write).
    this.#lsn = 1;
    this.#init(replicas, state);
  }

  /** The session ended here: nothing more is sent. */
  get ended(): boolean {
    return this.#ended;
  }

  /** The replicas now. */
  get replicas(): readonly number[] {
    return this.#replicas;
  }

  /** The last change pushed. */
  get lsn(): number {
    return this.#lsn;
  }

  /** Replicas being replaced by a re-seat, until the new ones hold the state. */
  get leaving(): readonly number[] {
    return this.#leaving;
  }

  /**
   * The one replica, when there is exactly one and no re-seat is under way: only then may a
   * write that replica passed on be written at once (chain replication, {@link ReplicaHost.chain}),
   * as it is then the only other holder the write needs.
   */
  get soleReplica(): number | undefined {
    if (this.#replicas.length !== 1 || this.#leaving.length > 0 || this.#adding.length > 0) return undefined;
    return this.#replicas[0];
  }

  /** The highest change every replica (and every leaving one) holds. */
  get ackedLsn(): number {
    let min = this.#lsn;
    for (const shard of this.#replicas) min = Math.min(min, this.#acked.get(shard) ?? 0);
    for (const shard of this.#leaving) min = Math.min(min, this.#acked.get(shard) ?? 0);
    return min;
  }

  /** Streams one change (already applied by the owner); returns its number. */
  push(change: SessionChange): number {
    // Changes reach replicas in lsn order, so whatever waits goes first; the worker's other
    // sessions' deferred changes go in the same batch.
    this.#flushDeferred();
    this.#sender.now?.();
    this.#next();
    this.#send(this.#replicas, change, this.#lsn);
    this.#send(this.#leaving, change, this.#lsn);
    return this.#lsn;
  }

  /**
   * Streams a change that may wait for the next batch (see {@link DeferrableChange}): it goes
   * with the stream's next {@link push}, or when the sender's `later` runs. Returns its number;
   * a count (`in`, `ack`) replacing one of the same kind still waiting keeps that one's number.
   */
  pushDeferred(change: DeferrableChange): number {
    if (this.#sender.later === undefined) return this.push(change);
    const last = this.#deferred[this.#deferred.length - 1];
    if (last !== undefined && last[1].c === change.c && (change.c === "in" || change.c === "ack")) {
      last[1] = change;
      return last[0];
    }
    this.#next();
    this.#deferred.push([this.#lsn, change]);
    if (this.#deferred.length === 1) this.#sender.later(this.#flushLater);
    return this.#lsn;
  }

  /**
   * Something waits for the deferred changes (a client's `<r/>` for its inbound count): they
   * go now, in this turn's batch, instead of at the batch timer.
   */
  hurry(): void {
    this.#flushDeferred();
  }

  /**
   * Numbers a new change. Replicas that held everything start being behind now: their silence
   * counts from here, not from their last acknowledgement (which may be long ago for a quiet
   * session), or a change still on its way would look lost and re-send the whole state.
   */
  #next(): void {
    if (this.ackedLsn >= this.#lsn) this.#progressAt = this.#clock();
    this.#lsn++;
  }

  /**
   * Sends the deferred changes now. `lazy` when nothing waits for them (the batch timer, or a
   * frame to the replicas' node leaving anyway): the replicas may acknowledge them late.
   */
  #flushDeferred(lazy = false): void {
    if (this.#deferred.length === 0) return;
    const deferred = this.#deferred;
    this.#deferred = [];
    if (this.#ended) return;
    for (const [lsn, change] of deferred) {
      this.#send(this.#replicas, change, lsn, undefined, lazy);
      this.#send(this.#leaving, change, lsn, undefined, lazy);
    }
  }

  readonly #flushLater = (): void => this.#flushDeferred(true);

  /**
   * Replicas behind the owner with no acknowledgement for `ms`: what was sent to them was lost
   * (a peer link that overflowed drops its queue) or refused after a gap. {@link reinit} them.
   */
  lagging(now: number, ms: number): number[] {
    if (this.quiet || now - this.#progressAt < ms) return [];
    return this.#replicas.filter((shard) => (this.#acked.get(shard) ?? 0) < this.#lsn);
  }

  /**
   * How far the replicas are behind: changes pushed that not all of them hold, and for how long
   * they have gone without acknowledging anything while behind (0 when they hold everything).
   */
  lag(now: number): { changes: number; stalledMs: number } {
    const changes = this.#lsn - this.ackedLsn;
    return { changes, stalledMs: changes === 0 ? 0 : Math.max(0, now - this.#progressAt) };
  }

  /** The session is lent to a resumption: it pushes nothing, and its replicas are left alone. */
  quiet = false;

  /** When a replica last acknowledged something, or was last (re)initialised. */
  #progressAt: number;
  readonly #clock: () => number;

  /** A replica holds every change up to `lsn`. */
  acked(shard: number, lsn: number): void {
    if (!this.#replicas.includes(shard) && !this.#leaving.includes(shard)) return;
    if (lsn <= (this.#acked.get(shard) ?? 0)) return;
    this.#progressAt = this.#clock();
    const before = this.ackedLsn;
    this.#acked.set(shard, lsn);
    if (
      (this.#leaving.length > 0 || this.#adding.length > 0) &&
      this.#replicas.every((r) => (this.#acked.get(r) ?? 0) >= this.#reseatLsn)
    ) {
      // The new replicas hold the state: the replaced ones may drop their copies now, and every
      // replica learns the list in placement order.
      this.#endReplicas(this.#leaving);
      this.#leaving = [];
      if (this.#adding.length > 0) {
        this.#adding = [];
        this.#relist();
      }
    }
    const after = this.ackedLsn;
    if (after > before) this.#onAcked(after);
  }

  /**
   * The live shards changed: replicas that died (`isGone`) are dropped, the others that are no
   * longer the successors stay as leaving replicas until the new list holds the state (make
   * before break), the added ones get the whole state, and every replica the new list.
   */
  reseat(replicas: number[], state: SessionSnapshot, isGone: (shard: number) => boolean = () => false): void {
    if (this.#ended) return;
    // The replicas it keeps (and the ones it replaces) must see no gap: what waits goes first.
    this.#flushDeferred();
    const added = replicas.filter((shard) => !this.#replicas.includes(shard));
    const removed = this.#replicas.filter((shard) => !replicas.includes(shard));
    const goneLeaving = this.#leaving.filter((shard) => isGone(shard) || replicas.includes(shard));
    if (added.length === 0 && removed.length === 0 && goneLeaving.length === 0) return;
    const before = this.ackedLsn;
    this.#leaving = this.#leaving.filter((shard) => !goneLeaving.includes(shard));
    // A leaving replica back in the list is a replica again (the init below).
    this.#endReplicas(goneLeaving.filter((shard) => !replicas.includes(shard)));
    this.#endReplicas(removed.filter(isGone));
    for (const shard of removed)
      if (!isGone(shard) && !this.#leaving.includes(shard)) this.#leaving.push(shard);
    this.#replicas = replicas;
    this.#reseatLsn = this.#lsn;
    this.#adding = [...this.#adding.filter((shard) => replicas.includes(shard)), ...added];
    // Every replica learns the new list, so all agree on which of them promotes the copy: the
    // added ones with the state, the others (they hold every change) as a numbered change.
    this.#init(added, state);
    this.#relist();
    if (this.#leaving.length > 0 && replicas.length === 0) {
      // Nowhere to replicate to any more (factor 1, or one worker left): nothing to wait for.
      this.#endReplicas(this.#leaving);
      this.#leaving = [];
    }
    const after = this.ackedLsn;
    if (after > before) this.#onAcked(after);
  }

  /** Tells `shards` to drop their copy of this stream. */
  #endReplicas(shards: readonly number[]): void {
    for (const shard of shards) {
      this.#acked.delete(shard);
      this.#sender.send(shard, {
        t: "rep-end",
        token: this.token,
        owner: this.#sender.self,
        stream: this.id,
      });
    }
  }

  /** Re-sends the whole state to a replica that lost it (its worker restarted, a link dropped it). */
  reinit(shard: number, state: SessionSnapshot, now = this.#clock()): void {
    if (this.#ended || !this.#replicas.includes(shard)) return;
    this.#flushDeferred();
    this.#progressAt = now;
    this.#init([shard], state);
  }

  /**
   * The whole state, numbered with the current lsn (it holds every change so far), so the
   * replicas that did not get it see no gap in what follows.
   */
  #init(shards: number[], state: SessionSnapshot): void {
    if (shards.length === 0) return;
    for (const shard of shards) this.#acked.delete(shard);
    this.#send(shards, { c: "init", state: cloneSessionState(state) }, this.#lsn, this.#list());
  }

  /**
   * Every replica learns the list as it is now: a numbered change, so one that is lost is a gap,
   * and {@link lagging} re-initialises the replica that missed it. Leaving replicas get the change
   * without the list: they keep theirs (make before break), in which they may be the heir.
   */
  #relist(): void {
    if (this.#ended || this.#replicas.length + this.#leaving.length === 0) return;
    this.#flushDeferred();
    this.#next();
    this.#send(this.#replicas, { c: "relist" }, this.#lsn, this.#list());
    this.#send(this.#leaving, { c: "relist" }, this.#lsn);
  }

  /** The replica list to send: those still without the state last (see {@link #adding}). */
  #list(): number[] {
    if (this.#adding.length === 0) return this.#replicas;
    return [...this.#replicas.filter((shard) => !this.#adding.includes(shard)), ...this.#adding];
  }

  #send(
    shards: readonly number[],
    change: SessionChange,
    lsn: number,
    replicas?: number[],
    lazy = false,
  ): void {
    if (shards.length === 0) return;
    // One envelope for every replica: the router encodes it per destination.
    const envelope: Extract<Envelope, { t: "rep" }> = {
      t: "rep",
      token: this.token,
      owner: this.#sender.self,
      stream: this.id,
      lsn,
      change,
    };
    if (replicas !== undefined) envelope.replicas = replicas;
    if (lazy) envelope.lazy = true;
    if (change.c === "init" && this.#origin !== undefined) envelope.origin = this.#origin;
    for (const shard of shards) this.#sender.send(shard, envelope);
  }

  /** The session ended here (closed, expired, or taken by a resumption): replicas drop it. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#deferred = [];
    this.#endReplicas([...this.#replicas, ...this.#leaving]);
    this.#leaving = [];
  }
}

/** The streams of one shard's replicated sessions, by token, with their live state. */
export class ReplicaStreams {
  readonly #streams = new Map<string, { stream: ReplicaStream; state: SessionSnapshot }>();

  get size(): number {
    return this.#streams.size;
  }

  add(stream: ReplicaStream, state: SessionSnapshot): void {
    this.#streams.set(stream.token, { stream, state });
  }

  /** Forgets `stream`, unless a newer stream of the same token replaced it. */
  remove(stream: ReplicaStream): void {
    if (this.#streams.get(stream.token)?.stream === stream) this.#streams.delete(stream.token);
  }

  /** A replica's acknowledgements: [token, stream id, lsn]; a replaced stream's are ignored. */
  acked(from: number, acks: readonly [string, string, number][]): void {
    for (const [token, id, lsn] of acks) {
      const entry = this.#streams.get(token);
      if (entry?.stream.id === id) entry.stream.acked(from, lsn);
    }
  }

  /**
   * The replication lag of this shard's sessions: changes not yet on every replica, summed,
   * and the longest time a stream's replicas have gone without acknowledging while behind.
   */
  lag(now: number): { changes: number; stalledMs: number } {
    let changes = 0;
    let stalledMs = 0;
    for (const { stream } of this.#streams.values()) {
      const lag = stream.lag(now);
      changes += lag.changes;
      stalledMs = Math.max(stalledMs, lag.stalledMs);
    }
    return { changes, stalledMs };
  }

  values(): IterableIterator<{ stream: ReplicaStream; state: SessionSnapshot }> {
    return this.#streams.values();
  }
}

/** Promoted or taken copies remembered per shard, to refuse their old stream's re-init. */
const MAX_RETIRED = 10_000;

interface ReplicaEntry {
  state: SessionSnapshot;
  owner: number;
  /** The owner's stream (ReplicaStream.id) that initialised the copy. */
  stream: string;
  lsn: number;
  /** The owner's replica list when it initialised this copy: the first live one promotes. */
  replicas: number[];
  /** The stream is a promoted copy's (its init carried `origin`), not a session a client bound or resumed. */
  promoted?: true;
  /**
   * Handed out once (promoted or taken) and given back because its taker died first: its owner
   * is dead, so no change of its stream counts any more (a zombie's would otherwise apply).
   */
  sealed?: true;
  /** With `sealed`: the sid prefix of the worker incarnation that took it and died. */
  deadTaker?: string;
  /** The writes this copy passed on to the owner ({@link ReplicaHost.chain}). */
  chain?: CopyChain;
}

/**
 * The writes one copy passes on: named `via` (unique to the copy, so the owner's mark of the
 * last one it took, `SessionSnapshot.chained`, refers to this copy only) and numbered from 1
 * without gaps, so the owner can tell one never reached it; `kept`, those its changes have not
 * settled yet, oldest first (a promotion appends them to the copy's log).
 */
interface CopyChain {
  via: string;
  next: number;
  kept: ChainedWrite[];
  keptBytes: number;
}

/** A write a replica passed on to its session's owner (see {@link ReplicaHost.chain}). */
interface ChainedWrite {
  seq: number;
  xml: string;
  /** The xml's size in UTF-8, counted once (CopyChain.keptBytes). */
  bytes: number;
  storable: boolean;
  key: string;
  at?: number;
}

/** A write to a session, as a user's actor sends it (actors/messages.ts). */
export type SessionWrite = Extract<SessionMessage, { kind: "write" }>;

/**
 * Writes (and their bytes) a copy keeps for its owner at most: past this, writes go as ordinary
 * ones. An owner that does not take them (its link stalled) must not grow the copy without
 * bound, nor a promotion append more than a session's log may hold at once on a peer link.
 */
export const MAX_CHAINED_WRITES = 512;
export const MAX_CHAINED_BYTES = 256 * 1024;

/**
 * Appends to `state` (a copy being promoted or taken) the writes its replica passed on that the
 * owner had not settled (`via`: that replica host's id): each one the owner may have written to
 * the client, in the order the owner took them, after everything the copy holds (the owner's
 * changes reach the replica in order, so any it did not get came after those it did). A key the
 * log holds already is skipped: the owner dropped that write as a re-sent copy.
 */
export function appendChained(state: SessionSnapshot, chain: CopyChain | undefined): void {
  if (chain === undefined) return;
  const via = chain.via;
  const settled = state.chained?.via === via ? state.chained.seq : 0;
  const seen = new Set(state.dedupe);
  for (const write of chain.kept) {
    if (write.seq <= settled || seen.has(write.key)) continue;
    seen.add(write.key);
    applySessionChange(state, {
      c: "out",
      xml: write.xml,
      storable: write.storable,
      key: write.key,
      ...(write.at === undefined ? {} : { at: write.at }),
      chain: { via, seq: write.seq },
    });
  }
}

/** A copy promoted after its owner died: its state, and the stream and lsn it was copied to. */
export interface PromotedCopy {
  state: SessionSnapshot;
  stream: string;
  lsn: number;
  /**
   * The shard that keeps the copy until the session made of it is replicated where it is now
   * ({@link ReplicaHost.held}); absent for a copy no one keeps.
   */
  holder?: number;
  /**
   * Handed out before to the worker incarnation with this sid prefix, which died first: the
   * session made of the copy replaces its registration (SessionRegistration.replaces).
   */
  replaces?: string;
}

/**
 * How long a copy handed out is kept for a taker that never says its replicas hold the session
 * (a confirmation lost with a link's queue): longer than the default resumption window.
 */
export const HANDED_OUT_KEEP_MS = 15 * 60_000;

/**
 * What a resumption that took a copy passes on (ResumeTake's `copyOf`): the copy without its
 * state, for the registration, the holder's confirmation and a late reply's adoption.
 */
export type CopyReference = Omit<PromotedCopy, "state">;

/** The {@link CopyReference} of `copy`. */
export function referenceOf(copy: PromotedCopy): CopyReference {
  const { state: _state, ...reference } = copy;
  return reference;
}

/** The shard of a worker incarnation's session id prefix (`<shard>.<hex>.`). */
export function shardOfPrefix(prefix: string): number {
  return Number.parseInt(prefix, 10);
}

/** Counters for statistics and tests. */
export interface ReplicaStats {
  held: number;
  applied: number;
  refused: number;
  promoted: number;
}

/** The replica's side: copies of other shards' sessions held by this shard. */
export class ReplicaHost {
  readonly #entries = new Map<string, ReplicaEntry>();
  /**
   * Copies promoted or taken here, with the stream they came from: that stream is a zombie now,
   * and must not start a copy again (a re-init after its node woke up). Bounded, oldest first.
   */
  readonly #retired = new Map<string, string>();
  /**
   * Copies promoted or taken out, kept until the session made of them is replicated where it
   * now lives (make before break; {@link held}), with the worker incarnation that took them
   * (`to`: its session id prefix, `<shard>.<hex>.`, once known) and when. If that incarnation
   * dies first, the copy comes back ({@link restore}) and is promoted again: taken for good, it
   * died with a worker that crashed before its own replicas held the session (sim seed 3941, and
   * the gap crash-during-resume). Pruned, oldest first, as copies are handed out.
   */
  readonly #handedOut = new Map<string, { entry: ReplicaEntry; to: string | undefined; at: number }>();
  readonly #clock: () => number;
  readonly #sender: ReplicationSender;
  readonly #log: Logger;
  /** Owner shard → "token stream" → highest lsn to acknowledge this turn. */
  #pendingAcks = new Map<number, Map<string, number>>();
  readonly #counts = { applied: 0, refused: 0, promoted: 0 };
  readonly #schedule: (flush: () => void) => void;

  readonly #ownerDead: (owner: number, stream: string) => boolean;
  /** Names the writes this host passes on (with a copy number: ChainMark `via`), unique per process. */
  readonly #chainId: string;
  #chainCopies = 0;
  /** The token of the copy of each full JID, for {@link chain} (checked against the copy). */
  readonly #tokenOfFull = new Map<string, string>();
  readonly #lazyAckMs: number;
  /** The acknowledgements are due at the end of this turn. */
  #ackThisTurn = false;
  /** Only lazy changes wait for acknowledgement: they go when this fires, at the latest. */
  #lazyAckTimer: NodeJS.Timeout | undefined;

  /**
   * `schedule` runs the per-turn flush of acknowledgements (setImmediate; a deterministic
   * simulation passes its own scheduler). `ownerDead`: whether the owner of a stream is known
   * dead here (its node, or its worker incarnation). `chainId` names the writes it passes on.
   * `lazyAckMs`: how late a change nothing waits for (`lazy`) may be acknowledged, unless a
   * frame to its owner's node leaves sooner ({@link ackNowTo}); 0 acknowledges it in its turn.
   */
  constructor(
    sender: ReplicationSender,
    log: Logger,
    schedule: (flush: () => void) => void = setImmediate,
    clock: () => number = Date.now,
    ownerDead: (owner: number, stream: string) => boolean = () => false,
    chainId: string = randomUUID(),
    lazyAckMs = 0,
  ) {
    this.#lazyAckMs = lazyAckMs;
    this.#chainId = chainId;
    this.#sender = sender;
    this.#log = log;
    this.#schedule = schedule;
    this.#clock = clock;
    this.#ownerDead = ownerDead;
  }

  get stats(): ReplicaStats {
    return { held: this.#entries.size, ...this.#counts };
  }

  /** The copy of session `token` held here, if any (read only: for inspection and checks). */
  copyOf(token: string): Readonly<SessionSnapshot> | undefined {
    return this.#entries.get(token)?.state;
  }

  /**
   * A change from an owner's stream. Changes from any stream but the one that initialised the
   * copy are refused.
   */
  receive(rep: Extract<Envelope, { t: "rep" }>): void {
    const { token, owner, stream, lsn, change, replicas, origin } = rep;
    let entry = this.#entries.get(token);
    if (
      change.c === "init" &&
      (this.#retired.get(token) === stream || (entry?.sealed === true && entry.stream === stream))
    ) {
      this.#counts.refused++;
      return;
    }
    // A copy only moves forward: a session lent to a resumption (or left behind by one) must not
    // replace the copy of the session that took it over.
    if (
      change.c === "init" &&
      entry !== undefined &&
      entry.stream !== stream &&
      entry.state.moves > change.state.moves
    ) {
      this.#counts.refused++;
      return;
    }
    // A copy promoted from the stream this one holds, but from less of it (a replica a re-seat
    // replaced, promoted when the owner died before it learned it could drop its copy): this
    // copy holds more, and promotes itself when its owner's death is applied here.
    if (
      change.c === "init" &&
      entry !== undefined &&
      origin !== undefined &&
      origin.stream === entry.stream &&
      origin.lsn < entry.lsn
    ) {
      this.#counts.refused++;
      return;
    }
    // At an equal move count, a copy promoted from another stream does not replace the copy of a
    // live session a client bound or resumed: the UserActor keeps that session too and ends the
    // promoted one (user-actor.ts `supersedes`), whose rep-end would then leave nothing here.
    // Sim seed 63292: a lender's heir, promoted beside the session its taker had resumed,
    // re-initialised the taker's replica, ended as stale, and dropped the copy; the taker's
    // worker crashed a moment later and the session was lost. Once that session's owner is known
    // dead the promoted copy wins at the UserActor, and its init is taken (refused, its stream
    // would never be acknowledged here, nor its copy promoted past this replica).
    if (
      change.c === "init" &&
      entry !== undefined &&
      entry.stream !== stream &&
      origin !== undefined &&
      origin.stream !== entry.stream &&
      entry.promoted !== true &&
      entry.state.moves === change.state.moves &&
      !this.#ownerDead(entry.owner, entry.stream)
    ) {
      this.#counts.refused++;
      return;
    }
    if (change.c === "init") {
      const before = entry;
      entry = { state: cloneSessionState(change.state), owner, stream, lsn, replicas: replicas ?? [] };
      if (origin !== undefined) entry.promoted = true;
      // The same stream re-initialised (a change was lost): the writes passed on that its state
      // does not settle are still on their way to the owner, or back in its next changes.
      if (before?.chain !== undefined && before.stream === stream && before.owner === owner) {
        entry.chain = before.chain;
        this.#settleChained(entry.chain, entry.state.chained);
      }
      this.#entries.set(token, entry);
      this.#tokenOfFull.set(entry.state.full, token);
    } else {
      if (
        entry === undefined ||
        entry.sealed === true ||
        entry.stream !== stream ||
        entry.owner !== owner ||
        lsn !== entry.lsn + 1
      ) {
        // A zombie owner (its copy was promoted or re-initialised by another), or a gap.
        this.#counts.refused++;
        if (this.#counts.refused % 1000 === 1) {
          this.#log.warn(
            { owner, lsn, expected: entry?.owner === owner ? entry.lsn + 1 : undefined },
            "replication change refused (not from the session's current owner, or out of order)",
          );
        }
        return;
      }
      applySessionChange(entry.state, change);
      entry.lsn = lsn;
      // A re-seat's list (a `relist`, the state unchanged).
      if (replicas !== undefined) entry.replicas = replicas;
      if (entry.chain !== undefined && (change.c === "out" || change.c === "unchain") && change.chain)
        this.#settleChained(entry.chain, change.chain);
    }
    this.#counts.applied++;
    let acks = this.#pendingAcks.get(owner);
    const key = `${token} ${stream}`;
    if (acks === undefined) {
      acks = new Map();
      this.#pendingAcks.set(owner, acks);
    }
    acks.set(key, lsn);
    if (rep.lazy === true && this.#lazyAckMs > 0) {
      this.#lazyAckTimer ??= setTimeout(this.#flushAcks, this.#lazyAckMs).unref();
    } else if (!this.#ackThisTurn) {
      this.#ackThisTurn = true;
      this.#schedule(this.#flushAcks);
    }
  }

  /**
   * Sends now the acknowledgements waiting for owners on node `node`: a frame to that node leaves
   * anyway (a write passed on), so they cost no frame of their own.
   */
  ackNowTo(node: number): void {
    for (const [owner, acks] of this.#pendingAcks) {
      if (nodeNoOf(owner) !== node) continue;
      this.#pendingAcks.delete(owner);
      this.#sendAcks(owner, acks);
    }
  }

  /**
   * Chain replication: a user's actor sends a write for the session `write.full` of owner shard
   * `to` here, to the session's replica, on its way to the owner. When this copy is the owner's
   * only replica, it keeps the write and returns it marked (`chain`): the owner may then write it
   * to the client and accept it at once, since both hold it, and says in its next changes what it
   * did with it (written: `out` with the mark; not by this route: `unchain`), which settles it
   * here. Should the owner die first, the promotion appends the writes it did not settle
   * ({@link appendChained}). Any other write, or one for a copy that cannot hold it, is returned
   * as it came: an ordinary write, which the owner sends to its replicas and writes once they
   * hold it. Writes without a dedupe key are never kept: a promotion drops by key the copies it
   * must not append twice.
   */
  chain(to: number, write: SessionWrite): SessionWrite {
    const token = this.#tokenOfFull.get(write.full);
    const entry = token === undefined ? undefined : this.#entries.get(token);
    if (
      write.dedupe === undefined ||
      entry === undefined ||
      entry.state.full !== write.full ||
      entry.owner !== to ||
      entry.sealed === true ||
      entry.replicas.length !== 1 ||
      entry.replicas[0] !== this.#sender.self ||
      this.#ownerDead(entry.owner, entry.stream)
    )
      return write;
    const bytes = Buffer.byteLength(write.xml);
    entry.chain ??= { via: `${this.#chainId}.${++this.#chainCopies}`, next: 1, kept: [], keptBytes: 0 };
    const chain = entry.chain;
    if (chain.kept.length >= MAX_CHAINED_WRITES || chain.keptBytes + bytes > MAX_CHAINED_BYTES) return write;
    const seq = chain.next++;
    const storable = write.isMessage ?? false;
    const kept: ChainedWrite = { seq, xml: write.xml, bytes, storable, key: write.dedupe };
    if (storable && write.at !== undefined) kept.at = write.at;
    chain.kept.push(kept);
    chain.keptBytes += bytes;
    return { ...write, chain: { via: chain.via, seq, replica: this.#sender.self, stream: entry.stream } };
  }

  /**
   * The owner took the writes this copy passed on up to `mark` (in the order they were sent, each
   * written, or refused by `unchain`): they are settled.
   */
  #settleChained(chain: CopyChain, mark: ChainMark | undefined): void {
    if (mark?.via !== chain.via) return;
    let done = 0;
    while (done < chain.kept.length && chain.kept[done]!.seq <= mark.seq)
      chain.keptBytes -= chain.kept[done++]!.bytes;
    chain.kept.splice(0, done);
  }

  /** Drops the copy of `token`. */
  #drop(token: string, entry: ReplicaEntry): void {
    this.#entries.delete(token);
    if (this.#tokenOfFull.get(entry.state.full) === token) this.#tokenOfFull.delete(entry.state.full);
  }

  readonly #flushAcks = (): void => {
    this.#ackThisTurn = false;
    clearTimeout(this.#lazyAckTimer);
    this.#lazyAckTimer = undefined;
    const pending = this.#pendingAcks;
    this.#pendingAcks = new Map();
    for (const [owner, acks] of pending) this.#sendAcks(owner, acks);
  };

  #sendAcks(owner: number, acks: Map<string, number>): void {
    const list: [string, string, number][] = [];
    for (const [key, lsn] of acks) {
      const space = key.indexOf(" ");
      list.push([key.slice(0, space), key.slice(space + 1), lsn]);
    }
    this.#sender.send(owner, { t: "rep-ack", from: this.#sender.self, acks: list });
  }

  /** The owner ended the session (or it moved): drop the copy, unless another stream took it over. */
  end(token: string, owner: number, stream: string): void {
    const entry = this.#entries.get(token);
    // A sealed copy's owner is dead: a late rep-end of its (a paused node waking, a cut link's
    // queue) must not drop the copy that was given back to be promoted again.
    if (entry?.owner === owner && entry.stream === stream && entry.sealed !== true) this.#drop(token, entry);
  }

  /**
   * `rep-live` (a link that overflowed is back): of owner `owner`'s incarnation `prefix`, only the
   * streams numbered `live` still replicate here, so a copy of any other is one whose `rep-end`
   * the link dropped; it is dropped now, or a later death of the owner would promote it beside
   * the live session (a ghost). Copies of the owner's dead incarnations are kept: they promote.
   * Returns how many were dropped.
   */
  audit(owner: number, prefix: string, live: readonly number[]): number {
    const alive = new Set(live.map((n) => `${prefix}${n}`));
    let dropped = 0;
    for (const [token, entry] of this.#entries) {
      if (entry.owner !== owner || entry.sealed === true || !entry.stream.startsWith(prefix)) continue;
      if (alive.has(entry.stream)) continue;
      this.#drop(token, entry);
      dropped++;
    }
    if (dropped > 0)
      this.#log.warn(
        { owner, copies: dropped },
        "copies of ended sessions dropped after a link lost their rep-end",
      );
    return dropped;
  }

  /**
   * A `<resume/>` for `token` reached this shard before its copy was promoted. When the owner is
   * dead (`isDead`, from a committed table) and this shard is the heir, the copy is taken out and
   * returned with the stream it came from, so the client resumes at once; "pending" when the
   * owner is not known dead yet.
   */
  takeForResume(
    token: string,
    user: string,
    isDead: (shard: number) => boolean,
    taker?: string,
  ): PromotedCopy | "pending" | undefined {
    const entry = this.#entries.get(token);
    if (entry === undefined) {
      // Out with a taker that has not confirmed: ask again (it holds the session, or dies and
      // the copy comes back).
      const out = this.#handedOut.get(token);
      return out?.entry.state.full.startsWith(`${user}/`) ? "pending" : undefined;
    }
    if (!entry.state.full.startsWith(`${user}/`)) return undefined;
    if (!isDead(entry.owner)) return "pending";
    // Another replica comes first: it answers itself, or it died too and the asker learns so at
    // a later table (two nodes dying a moment apart), when this copy is the heir.
    if (entry.replicas.find((shard) => !isDead(shard)) !== this.#sender.self) return "pending";
    this.#counts.promoted++;
    return this.#handOut(token, entry, taker);
  }

  /**
   * Takes `entry` out for a new owner (`to`, when known), keeping it until that owner's replicas
   * hold the session; returns the copy to hand over: the state with one move more.
   */
  #handOut(token: string, entry: ReplicaEntry, to: string | undefined): PromotedCopy {
    this.#drop(token, entry);
    this.#retire(token, entry.stream);
    const now = this.#clock();
    this.#pruneHandedOut(now);
    // Deleted first, so the map stays in the order copies went out (the prune stops at the first
    // young one).
    this.#handedOut.delete(token);
    this.#handedOut.set(token, { entry, to, at: now });
    const state = cloneSessionState(entry.state);
    // The writes passed on that the dead owner did not settle: it may have written them.
    appendChained(state, entry.chain);
    state.moves++;
    const copy: PromotedCopy = { state, stream: entry.stream, lsn: entry.lsn, holder: this.#sender.self };
    if (entry.deadTaker !== undefined) copy.replaces = entry.deadTaker;
    return copy;
  }

  /** Forgets the copies out longer than HANDED_OUT_KEEP_MS: their confirmation was lost. */
  #pruneHandedOut(now: number): void {
    for (const [oldest, out] of this.#handedOut) {
      if (now - out.at < HANDED_OUT_KEEP_MS) break;
      this.#handedOut.delete(oldest);
    }
  }

  /**
   * A promoted copy was adopted by the worker incarnation whose session ids start with `to` (a
   * worker of this node, for a main thread's copy).
   */
  assign(token: string, stream: string, to: string): void {
    const out = this.#handedOut.get(token);
    if (out?.entry.stream === stream) out.to = to;
  }

  /**
   * The session made of the copy of `token` from `stream` is replicated where it lives now, or
   * ended there, or moved on again: the copy is not needed any more.
   */
  held(token: string, stream: string): void {
    if (this.#handedOut.get(token)?.entry.stream === stream) this.#handedOut.delete(token);
  }

  /** A copy taken out but not used after all (the client's `h` is impossible): it is back. */
  giveBack(token: string, stream: string): void {
    const out = this.#handedOut.get(token);
    if (out?.entry.stream !== stream) return;
    this.#handedOut.delete(token);
    this.#counts.promoted--;
    this.#putBack(token, out.entry, undefined);
  }

  /**
   * A copy handed out comes back, sealed (its owner is dead), unless a newer copy of the session
   * arrived meanwhile (its taker's replica list included us). Returns whether it came back.
   */
  #putBack(token: string, entry: ReplicaEntry, deadTaker: string | undefined): boolean {
    if (this.#entries.has(token)) return false;
    entry.sealed = true;
    if (deadTaker !== undefined) entry.deadTaker = deadTaker;
    this.#entries.set(token, entry);
    return true;
  }

  /**
   * The worker incarnations `lost` died (by their session id prefix: a node, or a worker that
   * crashed): the copies they took and had not confirmed come back, sealed, to be promoted (or
   * taken) again. Returns how many came back.
   */
  restore(lost: (takerPrefix: string) => boolean): number {
    let back = 0;
    for (const [token, out] of this.#handedOut) {
      if (out.to === undefined || !lost(out.to)) continue;
      this.#handedOut.delete(token);
      if (this.#putBack(token, out.entry, out.to)) back++;
    }
    if (back > 0)
      this.#log.warn(
        { copies: back },
        "the taker of copies died before its replicas held them; the copies are back",
      );
    return back;
  }

  #retire(token: string, stream: string): void {
    this.#retired.set(token, stream);
    if (this.#retired.size > MAX_RETIRED) this.#retired.delete(this.#retired.keys().next().value!);
  }

  /**
   * Owners that died (`isDead`): every copy whose first live replica is this shard is taken out
   * and returned, to become a detached session here. Copies another live replica will promote are
   * kept until that one re-initialises them, in case it dies too. `ownerDied` decides per copy
   * when the owner's death is known by stream rather than by shard: a crashed worker's old
   * incarnation died, its new one (which may have taken clients before the crash was announced)
   * lives.
   */
  promote(
    isDead: (shard: number) => boolean,
    ownerDied: (owner: number, stream: string) => boolean = (owner) => isDead(owner),
  ): PromotedCopy[] {
    const promoted: PromotedCopy[] = [];
    for (const [token, entry] of this.#entries) {
      if (!ownerDied(entry.owner, entry.stream)) continue;
      const heir = entry.replicas.find((shard) => !isDead(shard));
      if (heir !== this.#sender.self) continue;
      promoted.push(this.#handOut(token, entry, undefined));
    }
    this.#counts.promoted += promoted.length;
    return promoted;
  }
}

/**
 * A `<resume/>` that reached a shard holding a copy (worker-main.ts and main-replicas.ts
 * `resume-take`): the copy, with the client's acknowledgement `h` applied, once its owner's node
 * is known dead (`gone`: this shard's knowledge and the asker's) and this shard is the heir;
 * "pending" while that is not known; undefined when no copy of the user's session is here, or
 * when the client acknowledged more than the copy ever sent (XEP-0198 §5: the client is wrong).
 */
export function takeCopyForResume(
  host: ReplicaHost,
  token: string,
  user: string,
  h: number,
  gone: ReadonlySet<number>,
  taker: string,
): PromotedCopy | "pending" | undefined {
  const copy = host.takeForResume(token, user, (shard) => gone.has(nodeNoOf(shard)), taker);
  if (copy === undefined || copy === "pending") return copy;
  if (unackedAfter(copy.state, h) < 0) {
    host.giveBack(token, copy.stream);
    return undefined;
  }
  applySessionChange(copy.state, { c: "ack", h });
  return copy;
}

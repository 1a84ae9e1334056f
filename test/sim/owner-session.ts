/**
 * The owner's side of a replicated session, as actors/session-actor.ts runs it, reduced to the
 * rules that matter for replication and XEP-0198 (no XML routing, no presence). It drives the
 * real ReplicaStream and the real session-state functions; what it mirrors from
 * SessionActor is cited by method:
 * - `write`: apply `out`, push it; write to the socket only once `ackedLsn >= lsn` (`write`).
 * - `onReplicated`: release what waited, in order (`#onReplicated`).
 * - inbound: count, accept possibly out of order, `h` is the accepted prefix; one `in` change
 *   per turn (`handle`, `#acceptIn`); `<a h>` only when all received are accepted and the `in`
 *   change carrying that count is replicated (`#answerAck`).
 * - `lendForResume` (two-phase take: quiet but keeping its replicas until `confirmMoved`, or
 *   `restore` when the taker gives up), `whenReplicated`, `resumeOn`, `onLinkClosed` as in
 *   SessionActor.
 */
import {
  applySessionChange,
  cloneSessionState,
  type SessionChange,
  type SessionSnapshot,
  unackedAfter,
} from "../../actors/session-state.ts";
import type { ReplicaStream } from "../../src/cluster/session-replicas.ts";

/** The socket side, provided by the world. */
export interface SimClientLink {
  readonly id: number;
  send(kind: "stanza" | "a" | "resumed", value: string | number): void;
  close(reason: string): void;
}

export class OwnerSession {
  readonly state: SessionSnapshot;
  stream: ReplicaStream | undefined;
  link: SimClientLink | undefined;
  ended = false;
  received: number;
  inPending: number[] = [];
  unreplicated: [number, string | undefined][] = [];
  inPushed: [number, number] = [0, 0];
  inReplicated: number;
  inPushScheduled = false;
  ackWanted = false;
  /**
   * A replica promoted after its owner died, not adopted by a client: its outbound count at
   * promotion (SessionActor `#promotedAt`), undefined otherwise.
   */
  promotedAt: number | undefined;
  /** With `promotedAt`: the stream and lsn its copy held (SessionActor `#copyOf`). */
  copyOf: { stream: string; lsn: number } | undefined;
  /** A copy promoted again: the dead adopter's stream prefix it replaces (SessionActor `#replaces`). */
  replaces: string | undefined;
  /** Deliberate break for the sim's own test: write before the replicas hold it. */
  static writeBeforeAck = false;
  readonly endOfTurn: (run: () => void) => void;

  constructor(
    state: SessionSnapshot,
    link: SimClientLink | undefined,
    openStream: (session: OwnerSession) => ReplicaStream,
    endOfTurn: (run: () => void) => void,
  ) {
    this.endOfTurn = endOfTurn;
    this.state = state;
    this.link = link;
    this.received = state.handledIn;
    this.inReplicated = state.handledIn;
    this.inPushed = [0, state.handledIn];
    this.stream = openStream(this);
  }

  change(change: SessionChange): number {
    applySessionChange(this.state, change);
    return this.stream?.push(change) ?? 0;
  }

  onReplicated(lsn: number): void {
    let done = 0;
    for (const [at, text] of this.unreplicated) {
      if (at > lsn) break;
      done++;
      if (text !== undefined) this.link?.send("stanza", text);
    }
    if (done > 0) this.unreplicated.splice(0, done);
    if (this.inPushed[0] <= lsn) this.inReplicated = this.inPushed[1];
    this.answerAck();
    while (this.#replicatedWaiters.length > 0 && this.#replicatedWaiters[0]![0] <= lsn) {
      this.#replicatedWaiters.shift()![1]();
    }
  }

  write(text: string): void {
    if (this.ended) return;
    const lsn = this.change({ c: "out", xml: text, storable: true });
    if (this.stream !== undefined && lsn > this.stream.ackedLsn && !OwnerSession.writeBeforeAck) {
      this.unreplicated.push([lsn, this.link === undefined ? undefined : text]);
      return;
    }
    this.link?.send("stanza", text);
  }

  /** A stanza from the client; `accept` is called back when its recipient took it. */
  handle(acceptLater: (run: () => void) => void): number {
    this.received++;
    const seq = this.received;
    this.inPending.push(seq);
    acceptLater(() => this.acceptIn(seq));
    return seq;
  }

  acceptIn(seq: number): void {
    const at = this.inPending.indexOf(seq);
    if (at < 0 || this.ended) return;
    this.inPending.splice(at, 1);
    const accepted = this.inPending.length === 0 ? this.received : this.inPending[0]! - 1;
    if (accepted === this.state.handledIn) return;
    this.state.handledIn = accepted;
    if (this.inPushScheduled) return;
    this.inPushScheduled = true;
    this.endOfTurn(() => {
      this.inPushScheduled = false;
      if (this.stream === undefined || this.ended) return;
      const value = this.state.handledIn;
      this.inPushed = [this.stream.pushDeferred({ c: "in", handledIn: value }), value];
      // SessionActor: a client waiting for <a/> waits for this count, which goes now.
      if (this.ackWanted) this.stream.hurry();
    });
  }

  answerAck(): void {
    if (!this.ackWanted || this.link === undefined) return;
    if (this.inReplicated !== this.received) {
      if (this.inPending.length === 0) this.stream?.hurry();
      return;
    }
    this.ackWanted = false;
    this.link.send("a", this.inReplicated);
  }

  /** The client's `<a h>`; false when `h` is impossible (the product closes the stream). */
  clientAck(h: number): boolean {
    if (unackedAfter(this.state, h) < 0) return false;
    applySessionChange(this.state, { c: "ack", h });
    this.stream?.pushDeferred({ c: "ack", h });
    return true;
  }

  onLinkClosed(): void {
    if (this.ended) return;
    this.link = undefined;
    for (const entry of this.unreplicated) entry[1] = undefined;
    this.ackWanted = false;
  }

  /** Lent to a resumption until it confirms (SessionActor.lendForResume). */
  lent = false;
  /**
   * Came back after a lend that was never confirmed (registers as `restored`) and not told
   * `active` yet: a resumption is told "pending" (SessionActor.standby).
   */
  restored = false;
  /**
   * Came back after a lend that was never confirmed, ever: its taker may have gone on (resumed
   * again, promoted, replicated) and hold more than this copy.
   */
  wasRestored = false;
  #replicatedWaiters: [number, () => void][] = [];

  lendForResume(h: number): SessionSnapshot | undefined {
    if (this.ended || this.lent || unackedAfter(this.state, h) < 0) return undefined;
    this.change({ c: "ack", h });
    const old = this.link;
    this.link = undefined;
    this.lent = true;
    this.ackWanted = false;
    if (this.stream !== undefined) this.stream.quiet = true;
    for (const entry of this.unreplicated) entry[1] = undefined;
    old?.close("conflict");
    const snapshot = cloneSessionState(this.state);
    snapshot.moves++;
    // SessionActor.lendForResume: only the count the replicas hold (sim seed 3231).
    if (this.stream !== undefined) snapshot.handledIn = this.inReplicated;
    return snapshot;
  }

  /** For a session made of a replica's copy: SessionActor's `releaseCopy`. */
  #releaseCopy: (() => void) | undefined;

  /** SessionActor's `releaseCopy` option: once the replicas hold the session, or it ends. */
  releaseCopyWhenReplicated(release: () => void): void {
    this.#releaseCopy = release;
    this.whenReplicated(() => this.#copyReleased());
  }

  #copyReleased(): void {
    const release = this.#releaseCopy;
    this.#releaseCopy = undefined;
    release?.();
  }

  confirmMoved(): void {
    if (!this.lent) return;
    this.#copyReleased();
    this.lent = false;
    this.ended = true;
    this.stream?.end();
    this.stream = undefined;
    this.unreplicated = [];
  }

  /** Returns whether it is resumable again (it must then register as restored). */
  restore(): boolean {
    if (!this.lent) return false;
    this.lent = false;
    if (this.ended) return false;
    this.restored = true;
    this.wasRestored = true;
    this.promotedAt = undefined;
    const stream = this.stream;
    if (stream !== undefined) stream.quiet = false;
    if (stream !== undefined) for (const replica of stream.replicas) stream.reinit(replica, this.state);
    return true;
  }

  whenReplicated(then: () => void): void {
    const stream = this.stream;
    if (stream === undefined || stream.ackedLsn >= stream.lsn) return then();
    this.#replicatedWaiters.push([stream.lsn, then]);
    stream.hurry();
  }

  /**
   * As SessionActor `#endStale`: the UserActor holds a newer registration, so this session ends
   * quietly; returns what it logged after its promotion, for the UserActor to pass on.
   */
  endStale(): string[] {
    if (this.ended || this.lent) return [];
    this.ended = true;
    this.#copyReleased();
    this.stream?.end();
    this.stream = undefined;
    this.unreplicated = [];
    const after =
      this.promotedAt === undefined
        ? 0
        : Math.min(this.state.sentOut - this.promotedAt, this.state.unacked.length);
    const handBack = this.state.unacked.slice(this.state.unacked.length - after).map(([, text]) => text);
    this.state.unacked = [];
    const old = this.link;
    this.link = undefined;
    old?.close("conflict");
    return handBack;
  }

  /** As SessionActor.resumeOn: the log goes out once the new replicas hold the snapshot. */
  resumeOn(): void {
    this.link?.send("resumed", this.state.handledIn);
    const lsn = this.stream?.lsn ?? 0;
    const gated = this.stream !== undefined && lsn > this.stream.ackedLsn && !OwnerSession.writeBeforeAck;
    for (const [, text] of this.state.unacked) {
      if (gated) this.unreplicated.push([lsn, text]);
      else this.link?.send("stanza", text);
    }
  }
}

/**
 * Replicas that fell behind are sent the whole state again in chunks a peer link can take.
 *
 * A link whose queue passed `cluster.maxPeerBufferBytes` drops it and reconnects; the copies on
 * the other side then lack the changes it dropped. Re-initialising every such replica at once
 * can be more than that budget again (a worker with thousands of sessions, each with a log of
 * unacknowledged stanzas): the link overflows again, drops the states, reconnects, and the same
 * catch-up starts over, for ever, while every write to those sessions waits for their replicas
 * (test/cluster/replica-catch-up.test.ts saw 70–100 ms cycles of it). So the catch-up follows the link's
 * re-drive: a chunk of states per call, the next when the link has drained
 * (cluster-member.ts `#redrive`), and the retry timer's re-initialisations of silent replicas
 * leave alone those waiting here (while the round goes on) and spend at most a chunk per
 * replica per tick.
 */
import { approxSnapshotBytes, type SessionSnapshot } from "../../actors/session-state.ts";
import type { ReplicaStream } from "./session-replicas.ts";

interface Lagging {
  stream: ReplicaStream;
  state: SessionSnapshot;
}

/**
 * A round whose chunks stopped coming (a worker call failed, its node died) no longer holds its
 * streams back from the retry timer after this long. Long enough for a round that is only
 * waiting for its link to drain (the main thread sends no chunk meanwhile); a round cut short by
 * the link going down starts again at the next link-up (cluster-member.ts `#onPeerDown`).
 */
export const CATCH_UP_IDLE_MS = 30_000;

export class ReplicaCatchUp {
  /**
   * Per replica shard: the re-drive round, the streams whose state it has still to send (from
   * `next` on), the same streams as a set for {@link waits}, and when a chunk last went.
   */
  readonly #pending = new Map<
    number,
    { round: number; streams: Lagging[]; next: number; waiting: Set<ReplicaStream>; at: number }
  >();

  /**
   * Round `round` of the re-drive to `replica`'s node starts: of `streams`, those whose copy there
   * is behind (`lagging`) wait for {@link next}. A round already started changes nothing.
   */
  start(replica: number, round: number, streams: Iterable<Lagging>, now: number): void {
    if (this.#pending.get(replica)?.round === round) return;
    const lagging: Lagging[] = [];
    for (const entry of streams) if (entry.stream.lagging(now, 0).includes(replica)) lagging.push(entry);
    this.#pending.set(replica, {
      round,
      streams: lagging,
      next: 0,
      waiting: new Set(lagging.map((entry) => entry.stream)),
      at: now,
    });
  }

  /**
   * Re-initialises waiting copies on `replica` until about `maxBytes` went (at least one);
   * returns the bytes sent and how many copies still wait. A stream that ended or caught up
   * meanwhile is skipped.
   */
  next(replica: number, maxBytes: number, now: number): { sent: number; remaining: number } {
    const pending = this.#pending.get(replica);
    if (pending === undefined) return { sent: 0, remaining: 0 };
    pending.at = now;
    let sent = 0;
    while (pending.next < pending.streams.length && (sent === 0 || sent < maxBytes)) {
      const { stream, state } = pending.streams[pending.next++]!;
      pending.waiting.delete(stream);
      if (stream.ended || !stream.lagging(now, 0).includes(replica)) continue;
      stream.reinit(replica, state, now);
      sent += approxSnapshotBytes(state);
    }
    const remaining = pending.streams.length - pending.next;
    if (remaining === 0) this.#pending.delete(replica);
    return { sent, remaining };
  }

  /** Whether `stream`'s copy on `replica` waits for a chunk of a live round (the retry timer leaves it alone). */
  waits(replica: number, stream: ReplicaStream, now: number): boolean {
    const pending = this.#pending.get(replica);
    if (pending === undefined) return false;
    if (now - pending.at > CATCH_UP_IDLE_MS) {
      this.#pending.delete(replica);
      return false;
    }
    return pending.waiting.has(stream);
  }

  /**
   * The retry timer: re-initialises the copies silent for `stallMs` while behind, at most about
   * `maxBytes` per replica shard (at least one), except those waiting for {@link next}. Returns
   * how many it re-initialised.
   */
  stalled(streams: Iterable<Lagging>, stallMs: number, maxBytes: number, now: number): number {
    // Rounds idle too long go, whether or not a stream still lists their replica (its node died).
    for (const [replica, pending] of this.#pending) {
      if (now - pending.at > CATCH_UP_IDLE_MS) this.#pending.delete(replica);
    }
    const spent = new Map<number, number>();
    let reinitialised = 0;
    for (const { stream, state } of streams) {
      for (const replica of stream.lagging(now, stallMs)) {
        const bytes = spent.get(replica) ?? 0;
        if (bytes > 0 && bytes >= maxBytes) continue;
        if (this.waits(replica, stream, now)) continue;
        stream.reinit(replica, state, now);
        spent.set(replica, bytes + approxSnapshotBytes(state));
        reinitialised++;
      }
    }
    return reinitialised;
  }
}

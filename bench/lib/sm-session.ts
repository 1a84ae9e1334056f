/**
 * The client side of one XEP-0198 stream-management session, kept apart from any connection so
 * that it outlives one: the resumption id, the inbound counter `h` this client reports, and the
 * outbound stanzas the server has not acknowledged yet, in the order they were sent.
 *
 * XEP-0198 §4: "the value of 'h' starts at zero at the point stream management is enabled ...
 * and is incremented ... for each stanza handled"; an `<a h='N'/>` from the server therefore
 * acknowledges the first N stanzas this client sent since `<enable/>`, cumulatively.
 */

/** One stanza the server has not acknowledged yet. */
export interface UnackedStanza {
  /** The serialised stanza, re-sent verbatim after a resumption or a new login. */
  xml: string;
  /** The owner's handle on it (a message sequence number), or -1 for stanzas nobody tracks. */
  tag: number;
}

const H_MODULUS = 2 ** 32;

/** Client-side XEP-0198 state; see the file comment. */
export class SmSession {
  /** Resumption id from `<enabled resume='true' id='...'/>`; undefined when not resumable. */
  id: string | undefined;
  /** Preferred reconnection address (`host:port`) from `<enabled location='...'/>`, if any. */
  location: string | undefined;
  /** Stanzas received since `<enable/>` (mod 2^32): the `h` this client reports. */
  inbound = 0;
  /** Acknowledgements claiming more stanzas than were sent (a server bug); never expected. */
  impossibleAcks = 0;
  /**
   * Initial presence was sent on this session. A login can break between `<enabled/>` and
   * presence; resuming such a session restores it without presence, so the client must still
   * send it, or the server keeps the session unavailable and stores its messages offline.
   */
  available = false;
  /** Called once per tracked stanza (tag ≥ 0) when the server acknowledges it. */
  onAcked: (tag: number) => void;

  /** The server's last `h` (mod 2^32). */
  #acked = 0;
  #queue: UnackedStanza[] = [];
  #head = 0;

  constructor(onAcked: (tag: number) => void = () => {}) {
    this.onAcked = onAcked;
  }

  /** Stanzas sent and not yet acknowledged. */
  get unacked(): number {
    return this.#queue.length - this.#head;
  }

  /** Messages (tag ≥ 0) sent and not yet acknowledged. */
  get unackedMessages(): number {
    let n = 0;
    for (let i = this.#head; i < this.#queue.length; i++) if (this.#queue[i]!.tag >= 0) n++;
    return n;
  }

  /**
   * A new session was enabled on a fresh stream: counters restart at zero. The queue must be
   * empty here: what the previous session left was taken by {@link abandon}.
   */
  begin(id: string | undefined, location: string | undefined): void {
    this.id = id;
    this.location = location;
    this.available = false;
    this.inbound = 0;
    this.#acked = 0;
    this.#queue = [];
    this.#head = 0;
  }

  /** Records a stanza written on the managed stream. */
  push(xml: string, tag: number): void {
    this.#queue.push({ xml, tag });
  }

  /**
   * Applies the server's `h`: drops the stanzas it covers and reports tracked ones through
   * {@link onAcked}. Returns false (and drops nothing) when `h` covers more than was sent.
   */
  ack(h: number): boolean {
    if (!Number.isInteger(h) || h < 0 || h >= H_MODULUS) {
      this.impossibleAcks++;
      return false;
    }
    const count = (h - this.#acked + H_MODULUS) % H_MODULUS;
    if (count > this.unacked) {
      this.impossibleAcks++;
      return false;
    }
    this.#acked = h;
    const end = this.#head + count;
    for (let i = this.#head; i < end; i++) {
      const tag = this.#queue[i]!.tag;
      if (tag >= 0) this.onAcked(tag);
    }
    this.#head = end;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return true;
  }

  /** The unacknowledged stanzas, oldest first, still held (re-sent after `<resumed/>`). */
  pending(): UnackedStanza[] {
    return this.#queue.slice(this.#head);
  }

  /**
   * The session cannot be resumed: applies `h` when the server told it (XEP-0198 `<failed h=''/>`),
   * clears the session and returns the tracked stanzas still unacknowledged, for the owner to
   * send again on a new session (untracked ones — presence, roster queries — are redone by login).
   */
  abandon(h?: number): UnackedStanza[] {
    if (h !== undefined) this.ack(h);
    const left = this.pending().filter((entry) => entry.tag >= 0);
    this.id = undefined;
    this.location = undefined;
    this.available = false;
    this.inbound = 0;
    this.#acked = 0;
    this.#queue = [];
    this.#head = 0;
    return left;
  }
}

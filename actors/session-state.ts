/**
 * A session's volatile state as plain data, changed only through named changes. The
 * SessionActor applies each change to its own copy and streams the same change to the
 * session's replicas (src/cluster/session-replicas.ts), which apply it with the same function:
 * a replica is therefore always a prefix of the owner's history, and a snapshot (resumption,
 * promotion after a node died) is just the data.
 *
 * `applySessionChange` has no side effects beyond the state it is given: no clock, no I/O.
 */
import type { FullJid } from "../src/xmpp/jid.ts";

/** XEP-0198 sequence numbers wrap at 2^32 (§5). */
export const SEQ_MOD = 2 ** 32;

/** Keys of retained-stanza writes a session remembers, to drop a re-sent copy. */
export const RECENT_DEDUPE_KEYS = 1024;

/** Everything a session needs to continue elsewhere (resumption, promotion of a replica). */
export interface SessionSnapshot {
  full: FullJid;
  token: string;
  /**
   * Stanzas from the client the server has taken responsibility for (XEP-0198 `h`). On the
   * owner it counts every handled stanza; what a replica holds counts only the accepted ones.
   */
  handledIn: number;
  sentOut: number;
  /**
   * Unacknowledged outbound stanzas: [sequence number, xml, storable offline, when it was written
   * (ms since the epoch; absent in states from before it was kept)].
   */
  unacked: UnackedEntry[];
  presence: string | undefined;
  priority: number;
  carbons: boolean;
  carbonPeers: number;
  blocklist: string[];
  directed: string[];
  rosterInterest: boolean;
  blocklistInterest: boolean;
  /** Keys of recent retained-stanza writes (oldest first): a re-sent copy is written once. */
  dedupe: string[];
  /** How many times the session moved to another worker (resumption, promotion of a replica). */
  moves: number;
  /**
   * The last write a replica passed on to this session (chain replication, session-replicas.ts
   * `ReplicaHost.chain`) that the owner took: written, or refused (`unchain`). The replica's
   * copy holds every write it passed on above it.
   */
  chained?: ChainMark;
}

/** A write a replica passed on: the replica host's id and the write's number there. */
export interface ChainMark {
  via: string;
  seq: number;
}

/** One stanza of the XEP-0198 log (see {@link SessionSnapshot.unacked}). */
export type UnackedEntry = [seq: number, xml: string, storable: boolean, at?: number];

/** The named changes of a session's state. */
export type SessionChange =
  /** The whole state (a new replica starts from it). */
  | { c: "init"; state: SessionSnapshot }
  /** The client's stanzas up to `handledIn` are accepted (XEP-0198 inbound count). */
  | { c: "in"; handledIn: number }
  /**
   * A stanza was written to the client (numbered `sentOut + 1`) at `at`; `key` is its dedupe
   * key. The time is the change's data, not read here: apply stays deterministic.
   */
  | {
      c: "out";
      xml: string;
      storable: boolean;
      key?: string;
      at?: number;
      /** The write came through the session's replica, which held it before the owner wrote it. */
      chain?: ChainMark;
    }
  /**
   * A write the replica passed on was not written by this route (the owner wrote it as an
   * ordinary write, once the replicas held it, or dropped a copy): the replica's copy of it goes.
   */
  | { c: "unchain"; chain: ChainMark }
  /** The client acknowledged everything up to `h`. */
  | { c: "ack"; h: number }
  /** Broadcast presence and priority changed. */
  | { c: "presence"; presence: string | undefined; priority: number }
  /** Per-session flags that a re-registration and delivery rules need. */
  | {
      c: "flags";
      carbons?: boolean;
      carbonPeers?: number;
      blocklist?: string[];
      rosterInterest?: boolean;
      blocklistInterest?: boolean;
    }
  /** Directed presence recipients (RFC 6121 §4.6). */
  | { c: "directed"; add?: string; remove?: string; clear?: true }
  /**
   * The stream's replica list changed (the envelope carries it, session-replicas.ts); the state
   * does not.
   */
  | { c: "relist" };

/**
 * Changes a replica may get a little later, in a batch with other sessions': an XEP-0198
 * inbound count, for which only the sender's next `<a/>` waits, and a client's acknowledgement,
 * which a replica behind on it only costs a re-send that the client's `<resume h/>` drops anyway
 * (of these a newer one replaces an older one still waiting); and what the owner did with a
 * write the replica passed on (`out` with `chain`, `unchain`): the replica holds the write
 * already, so nothing waits for its answer.
 */
export type DeferrableChange =
  | Extract<SessionChange, { c: "in" | "ack" | "unchain" }>
  | (Extract<SessionChange, { c: "out" }> & { chain: ChainMark });

/** A fresh session's state. */
export function newSessionState(full: FullJid, token: string): SessionSnapshot {
  return {
    full,
    token,
    handledIn: 0,
    sentOut: 0,
    unacked: [],
    presence: undefined,
    priority: 0,
    carbons: false,
    carbonPeers: 0,
    blocklist: [],
    directed: [],
    rosterInterest: false,
    blocklistInterest: false,
    dedupe: [],
    moves: 0,
  };
}

/** How many stanzas `h` leaves unacknowledged, or -1 when `h` is impossible (XEP-0198 §4). */
export function unackedAfter(state: SessionSnapshot, h: number): number {
  if (!Number.isInteger(h) || h < 0 || h >= SEQ_MOD) return -1;
  const count = (state.sentOut - h + SEQ_MOD) % SEQ_MOD;
  return count > state.unacked.length ? -1 : count;
}

/**
 * Where a client's `h` stands (XEP-0198 §4, §6): one the log can take (`ok`), above the number
 * of stanzas sent (`too-high`: the client counts wrong), below what it acknowledged before
 * (`stale`: the log no longer holds what lies between), or not a 32-bit count at all. Counts
 * wrap at 2^32, so "above" and "below" are each half of the ring.
 */
export function ackStanding(state: SessionSnapshot, h: number): "ok" | "too-high" | "stale" | "invalid" {
  if (!Number.isInteger(h) || h < 0 || h >= SEQ_MOD) return "invalid";
  if (unackedAfter(state, h) >= 0) return "ok";
  return (h - state.sentOut + SEQ_MOD) % SEQ_MOD < SEQ_MOD / 2 ? "too-high" : "stale";
}

/** Applies one change to `state` (in place) and returns it. An impossible `ack` changes nothing. */
export function applySessionChange(state: SessionSnapshot, change: SessionChange): SessionSnapshot {
  switch (change.c) {
    case "init":
      return cloneSessionState(change.state);
    case "in":
      state.handledIn = change.handledIn;
      return state;
    case "out":
      state.sentOut = (state.sentOut + 1) % SEQ_MOD;
      state.unacked.push(
        change.at === undefined
          ? [state.sentOut, change.xml, change.storable]
          : [state.sentOut, change.xml, change.storable, change.at],
      );
      if (change.key !== undefined) {
        state.dedupe.push(change.key);
        // Re-sends follow a node's death within seconds; a window of recent keys is enough.
        if (state.dedupe.length > RECENT_DEDUPE_KEYS) state.dedupe.shift();
      }
      if (change.chain !== undefined) state.chained = change.chain;
      return state;
    case "unchain":
      state.chained = change.chain;
      return state;
    case "ack": {
      const keep = unackedAfter(state, change.h);
      if (keep >= 0) state.unacked.splice(0, state.unacked.length - keep);
      return state;
    }
    case "presence":
      state.presence = change.presence;
      state.priority = change.priority;
      return state;
    case "flags":
      if (change.carbons !== undefined) state.carbons = change.carbons;
      if (change.carbonPeers !== undefined) state.carbonPeers = change.carbonPeers;
      if (change.blocklist !== undefined) state.blocklist = change.blocklist;
      if (change.rosterInterest !== undefined) state.rosterInterest = change.rosterInterest;
      if (change.blocklistInterest !== undefined) state.blocklistInterest = change.blocklistInterest;
      return state;
    case "directed":
      if (change.clear) state.directed = [];
      if (change.remove !== undefined) state.directed = state.directed.filter((j) => j !== change.remove);
      if (change.add !== undefined && !state.directed.includes(change.add)) state.directed.push(change.add);
      return state;
    case "relist":
      return state;
    default: {
      const never: never = change;
      throw new TypeError(`unknown session change ${JSON.stringify(never)}`);
    }
  }
}

/** A deep copy (the unacked log and lists are not shared). */
export function cloneSessionState(state: SessionSnapshot): SessionSnapshot {
  return {
    ...state,
    unacked: state.unacked.map((entry): UnackedEntry => [...entry]),
    blocklist: [...state.blocklist],
    directed: [...state.directed],
    dedupe: [...state.dedupe],
  };
}

/**
 * About how many bytes `state` takes encoded (its strings in UTF-8 plus a fixed overhead): for
 * pacing what is sent (a replica's catch-up), not exact.
 */
export function approxSnapshotBytes(state: SessionSnapshot): number {
  const utf8 = (text: string): number => Buffer.byteLength(text, "utf8");
  let bytes = 128 + utf8(state.full) + state.token.length + utf8(state.presence ?? "");
  for (const [, xml] of state.unacked) bytes += utf8(xml) + 8;
  for (const list of [state.blocklist, state.directed, state.dedupe]) {
    for (const text of list) bytes += utf8(text) + 2;
  }
  return bytes;
}

/**
 * A UserActor's volatile state (what lives only in memory: the user's sessions as the actor
 * knows them, and whether the account exists) as plain data, changed only through the named
 * changes below. The roster and blocklist are not here: they are read from the store at
 * activation and written through to it.
 *
 * `applyUserChange` is the only writer: the actor applies each change to its own state, and
 * the same data is the snapshot a handoff carries to the partition's next owner.
 */
import type { FullJid } from "../src/xmpp/jid.ts";

/** One session as its UserActor knows it. */
export interface SessionState {
  shard: number;
  sid: string;
  /** Last broadcast presence, serialised, when the session is available. */
  presence: string | undefined;
  priority: number;
  /** The session asked for the roster, so it gets roster pushes (RFC 6121 §2.1.6). */
  rosterInterest: boolean;
  blocklistInterest: boolean;
  carbons: boolean;
  /** XEP-0198 resumption is on: if the session's node dies, a replica takes it over. */
  resumable?: boolean;
  /** Its node died; a replica is expected to re-register it (writes wait meanwhile). */
  lost?: boolean;
  /** How many times the session moved (resumption, promotion): older registrations are stale. */
  moves?: number;
  /** A promoted replica no client adopted yet (see SessionRegistration.promoted). */
  promoted?: boolean;
  /** With `promoted`: the stream and lsn its copy held (see SessionRegistration.copyOf). */
  copyOf?: { stream: string; lsn: number };
  /**
   * When it bound (ms since the epoch), as this actor saw it; absent for a session registered
   * from elsewhere (a resumption, a promotion, a rebuilt actor), whose start is not known here.
   */
  boundAt?: number;
}

/** What the store said about the account, once asked. */
export type AccountKnown = "unknown" | "exists" | "absent";

/** The volatile state of one user's actor. */
export interface UserState {
  readonly sessions: Map<FullJid, SessionState>;
  /**
   * A lent session whose taker never confirmed, refused while the taker's registration is
   * alive: it stays resumable where it is and takes over if the taker's node dies (sim seed
   * 4494: the taker's replicas never got the session, so the lender's copy is all there is).
   */
  readonly standby: Map<FullJid, SessionState>;
  known: AccountKnown;
}

/** The named changes of a {@link UserState}. */
export type UserChange =
  /** A session bound this full JID (RFC 6120 §7); it replaces any earlier one. */
  | { c: "bound"; full: FullJid; shard: number; sid: string; at?: number }
  /** A session re-registered from a new place (resumption, promotion, recovery). */
  | { c: "registered"; full: FullJid; session: SessionState }
  /** The session ended, was replaced, or vanished. */
  | { c: "ended"; full: FullJid }
  /** Its last broadcast presence (undefined: unavailable) and priority. */
  | { c: "presence"; full: FullJid; presence: string | undefined; priority: number }
  /** It asked for the roster or the blocklist, so it gets their pushes. */
  | { c: "interest"; full: FullJid; roster?: true; blocklist?: true }
  /** XEP-0280 carbons on or off. */
  | { c: "carbons"; full: FullJid; enabled: boolean }
  /** Its node or worker died; a replica is expected to re-register it. */
  | { c: "lost"; full: FullJid }
  /** What the store said about the account. */
  | { c: "known"; known: AccountKnown }
  /** A restored lender waits as the registered session's standby (undefined: none any more). */
  | { c: "standby"; full: FullJid; session: SessionState | undefined };

/** A state with no session, the account not looked up yet. */
export function newUserState(): UserState {
  return { sessions: new Map(), standby: new Map(), known: "unknown" };
}

/** A freshly bound session's entry (bound at `at`, when given). */
export function boundSession(shard: number, sid: string, at?: number): SessionState {
  return {
    ...(at === undefined ? {} : { boundAt: at }),
    shard,
    sid,
    presence: undefined,
    priority: 0,
    rosterInterest: false,
    blocklistInterest: false,
    carbons: false,
  };
}

/** Applies one change to `state` (in place) and returns it. */
export function applyUserChange(state: UserState, change: UserChange): UserState {
  switch (change.c) {
    case "bound":
      state.sessions.set(change.full, boundSession(change.shard, change.sid, change.at));
      return state;
    case "registered":
      state.sessions.set(change.full, { ...change.session });
      return state;
    case "ended":
      state.sessions.delete(change.full);
      return state;
    case "known":
      state.known = change.known;
      return state;
    case "standby":
      if (change.session === undefined) state.standby.delete(change.full);
      else state.standby.set(change.full, { ...change.session });
      return state;
  }
  const session = state.sessions.get(change.full);
  if (session === undefined) return state;
  switch (change.c) {
    case "presence":
      session.presence = change.presence;
      session.priority = change.priority;
      return state;
    case "interest":
      if (change.roster === true) session.rosterInterest = true;
      if (change.blocklist === true) session.blocklistInterest = true;
      return state;
    case "carbons":
      session.carbons = change.enabled;
      return state;
    case "lost":
      session.lost = true;
      return state;
    default: {
      const never: never = change;
      throw new TypeError(`unknown user change ${JSON.stringify(never)}`);
    }
  }
}

/** Sessions as plain entries, for a handoff (a copy: later changes do not reach it). */
export function sessionEntries(sessions: Map<FullJid, SessionState>): [FullJid, SessionState][] {
  return [...sessions].map(([full, session]) => [full, { ...session }]);
}

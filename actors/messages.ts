/**
 * The messages actors exchange, discriminated on `kind`. They travel inside envelopes between
 * worker threads (and, later, nodes), encoded with msgpackr, so they hold plain data only:
 * stanzas as serialised XML plus the few attributes routing needs.
 */
import type { BareJid, FullJid } from "../src/xmpp/jid.ts";
import type { Ack } from "./actor.ts";

/** A stanza on its way to a user, with what delivery rules need, so nobody re-parses it. */
export interface RoutedStanza {
  name: "message" | "presence" | "iq";
  /** The `type` attribute, or "" when absent. */
  type: string;
  from: string;
  to: string;
  id: string;
  /** The whole stanza, serialised with xmlns='jabber:client'. */
  xml: string;
  /** For messages: whether it has content worth storing offline (a body, or a hint to store). */
  storable?: boolean;
  /**
   * For messages: copied to the user's other carbons-enabled resources (XEP-0280 §6): a chat,
   * a normal message with a body, or one carrying a chat state, receipt or chat marker, unless
   * marked private (§7) or no-copy (XEP-0334).
   */
  carbon?: boolean;
  /**
   * `<private/>` or `<no-copy/>`: what releases before `carbon` read (they copy a chat unless
   * it is set), sent for them during a rolling upgrade; `carbon` decides where it is present.
   */
  noCopy?: boolean;
}

/** Where a session's socket lives: a worker of some node. */
export interface SessionLocation {
  full: FullJid;
  /** Cluster-wide shard number (src/cluster/ring.ts shardNumber). */
  shard: number;
  /** Unique per session and worker incarnation: two sessions of one full JID never share it. */
  sid: string;
}

/** What a session tells its UserActor when it re-registers (resumption, worker restart). */
export interface SessionRegistration {
  /** The last broadcast presence when available. */
  presence: string | undefined;
  priority: number;
  carbons: boolean;
  rosterInterest: boolean;
  blocklistInterest: boolean;
  /** XEP-0198 resumption is on: if its node dies, a replica takes the session over. */
  resumable?: boolean;
  /** How many times the session moved (resumption, promotion): a stale registration loses. */
  moves?: number;
  /**
   * A replica promoted after its owner died, not adopted by a client yet. At an equal move
   * count a session a client resumed wins over it: both came from the same owner, and a copy
   * promoted beside a resumed session is a ghost (its owner's rep-end was lost).
   */
  promoted?: boolean;
  /**
   * With `promoted`: the owner's replication stream and the lsn the copy held. A replica that
   * a re-seat replaced is kept until the new ones hold the session (make before break); if the
   * owner dies before it learns it may drop its copy, both copies are promoted, and of two from
   * the same stream at an equal count the one that holds more (the higher lsn) wins.
   */
  copyOf?: { stream: string; lsn: number };
  /**
   * With `promoted`: the nodes its promoter knew dead. A registered session on one of them (or
   * one known lost) is not a live sibling: the promoted copy is its heir even at an equal count
   * (the session resumed on a node that then died before its new replicas held anything).
   */
  deadNodes?: number[];
  /**
   * Lent to a resumption that never confirmed it (the taker gave up or died): resumable here
   * again. With `deadNodes`, it wins over a registration on a dead node or one known lost.
   */
  restored?: boolean;
  /**
   * Made of a replica's copy (promoted, or taken by a resumption) that was handed out before to
   * the worker incarnation whose session ids start with this prefix, which died before its
   * replicas held the session: that incarnation's registration, if still there, is this
   * session's dead predecessor, whether or not its death is known yet.
   */
  replaces?: string;
}

/** The shard that waits for the answer to a request (a message with `reqId`). */
export function askerOf(msg: Extract<ActorMessage, { reqId: number }>): number {
  return "session" in msg ? msg.session.shard : msg.shard;
}

/** Every message an actor of some kind handles. */
export type ActorMessage = UserMessage | LoginMessage;

/**
 * Messages handled by the login throttle's actors (login-actor.ts): `login-address:<prefix>`
 * for an address prefix, `login-account:<bare jid>` for an account (which lives on the same
 * shard as the account's UserActor). Requests are answered with a `LoginVerdict`
 * (login-state.ts) to `shard`'s request `reqId`.
 */
export type LoginMessage =
  /**
   * Whether the address may attempt a login now, charging nothing: its failures are counted when
   * they happen (a node caps how many of its attempts run at once, client-stream-host.ts).
   */
  | { kind: "login-address-check"; shard: number; reqId: number }
  /** A failed attempt from the address (with or without an account named): it counts. */
  | { kind: "login-address-failed" }
  /** A password attempt on the account from `prefix`: charge it, or refuse (login-state.ts). */
  | { kind: "login-account-charge"; prefix: string; shard: number; reqId: number }
  /**
   * A token attempt on the account from `prefix`: charges nothing (a token cannot be guessed),
   * answers only whether the address is one the account knows (always allowed).
   */
  | { kind: "login-account-known"; prefix: string; shard: number; reqId: number }
  /**
   * An admitted attempt from `prefix` that did not fail: `succeeded` (the address becomes a
   * known one), or withdrawn (the backend could not judge it). `pair` and `account` say what it
   * was charged to (a token attempt to neither), so exactly that is taken back.
   */
  | { kind: "login-account-settle"; prefix: string; succeeded: boolean; pair: boolean; account: boolean };

/** Messages handled by a UserActor (keyed by `user`). */
export type UserMessage =
  /**
   * A stanza addressed to the user's bare JID or one of its full JIDs. `key` names it across
   * re-sends (the sender's resumption id and XEP-0198 number): sessions write it once.
   */
  | { kind: "stanza"; user: BareJid; stanza: RoutedStanza; key?: string }
  /** A session finished binding; the actor answers `bound` (and replaces a conflicting one). */
  | { kind: "bind"; user: BareJid; session: SessionLocation; reqId: number }
  /** A session ended; `unavailable` is the presence to broadcast if it was available. */
  | {
      kind: "unbind";
      user: BareJid;
      session: SessionLocation;
      unavailable?: string;
      directed: string[];
    }
  /** A session was resumed (XEP-0198) on another worker. */
  | { kind: "relocate"; user: BareJid; session: SessionLocation; state: SessionRegistration }
  /** Broadcast presence from one of the user's sessions (no `to`). */
  | {
      kind: "presence";
      user: BareJid;
      session: SessionLocation;
      xml: string;
      priority: number;
      available: boolean;
    }
  /** Outbound subscription presence from one of the user's sessions (RFC 6121 §3). */
  | {
      kind: "subscription-out";
      user: BareJid;
      session: SessionLocation;
      to: BareJid;
      type: "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed";
      xml: string;
    }
  /** Inbound subscription presence from a contact's UserActor. */
  | {
      kind: "subscription-in";
      user: BareJid;
      from: BareJid;
      type: "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed";
      xml: string;
    }
  /** A presence probe from `from` (a full JID of a contact's session) (RFC 6121 §4.3). */
  | { kind: "probe"; user: BareJid; from: string }
  /**
   * End every session of the user, with no resumption (the site signed the user out, an
   * operator kicked it); answers how many sessions were told, to `shard`'s request `reqId`.
   */
  | { kind: "kick"; user: BareJid; reason: string; shard: number; reqId: number }
  /** A roster or blocking iq from one of the user's sessions; the actor answers with `write`. */
  | { kind: "iq"; user: BareJid; session: SessionLocation; xml: string }
  /** XEP-0280 enable/disable from one session. */
  | { kind: "carbons"; user: BareJid; session: SessionLocation; enabled: boolean; reqId: number }
  /** XEP-0280: a message one session sent, to copy to the user's other carbon-enabled sessions. */
  | { kind: "carbon-sent"; user: BareJid; session: SessionLocation; xml: string }
  /** Stanzas a dead session never got acknowledged, to store offline (XEP-0198 §5). */
  /**
   * A session ended with these stanzas unacknowledged (XEP-0198 §4); `writtenAt[i]`: when
   * `stanzas[i]` was written to it (0 when not known), for the delay stamp.
   */
  | { kind: "store-offline"; user: BareJid; stanzas: string[]; writtenAt?: number[] }
  /** A worker had no session `session.sid` for a write: forget it, and keep the stanza if it was storable. */
  | {
      kind: "session-gone";
      user: BareJid;
      session: SessionLocation;
      xml?: string;
      storable?: boolean;
      /** The write's dedupe key and its sender's accept request, carried on with it. */
      dedupe?: string;
      accept?: { shard: number; rid: number };
      /** When the user's actor routed it (its clock), carried on with it. */
      at?: number;
      /** The session was resumed elsewhere: it will re-register (`relocate`) from there. */
      moved?: boolean;
      /** The session died with its worker's previous incarnation (a crash): a replica may take it over. */
      crashed?: boolean;
    }
  /** A moved session did not re-register in time: what waited for it goes offline. */
  | { kind: "relocate-timeout"; user: BareJid; full: FullJid; sid: string }
  /** Worker `shard` restarted: its sessions older than `keepPrefix` are gone. */
  | { kind: "shard-lost"; user: BareJid; shard: number; keepPrefix: string }
  /** Nodes `nodeNos` died: their sessions are gone. */
  | { kind: "nodes-lost"; user: BareJid; nodeNos: number[] };

/** Messages handled by a session on the worker that holds its socket. */
export type SessionMessage =
  /** Write a stanza to the client. */
  | {
      kind: "write";
      full: FullJid;
      sid: string;
      xml: string;
      /**
       * Offline storage takes it if the session ends before the client acknowledges it. Named
       * for what it first meant: peers of earlier releases read this name (rolling upgrades).
       */
      isMessage?: boolean;
      /** The retained stanza this write delivers: a session drops a second write with the same key. */
      dedupe?: string;
      /** The sender waits for this: the session accepts once the write is safe (replicated). */
      accept?: { shard: number; rid: number };
      /**
       * For a storable write: when the user's actor routed it, by its own clock (ms since the
       * epoch). The session logs it as the stanza's time, so that the actor compares it with
       * the times it saw sessions bind on one clock (SessionState.boundAt).
       */
      at?: number;
      /**
       * Passed on by the session's replica, which holds it (src/cluster/session-replicas.ts
       * `ReplicaHost.chain`): `via` and `seq` name it there, `replica` is that shard and `stream`
       * the copy's stream. The session may write it at once if that is still its only replica.
       */
      chain?: { via: string; seq: number; replica: number; stream: string };
    }
  /** Another session bound the same resource (RFC 6120 §7.7.2.2): close with `<conflict/>`. */
  | { kind: "conflict"; full: FullJid; sid: string }
  /** The session ends now, not resumable: its stream gets `<policy-violation/>` with `reason`. */
  | { kind: "kick"; full: FullJid; sid: string; reason: string }
  /** How many of the user's sessions have carbons enabled (XEP-0280). */
  | { kind: "carbon-peers"; full: FullJid; sid: string; enabled: number }
  /** The user's blocklist changed (XEP-0191); sessions refuse to send to blocked JIDs. */
  | { kind: "blocklist"; full: FullJid; sid: string; list: string[] }
  /**
   * The UserActor holds a newer registration of this full JID (a higher move count, or a
   * resumed session beside this promoted copy): this session is a ghost and ends quietly.
   */
  | { kind: "stale"; full: FullJid; sid: string }
  /**
   * This restored lender is the registered session of its full JID (its taker died, or never
   * registered): it may be resumed again. Until then it answers a resumption "pending", so a
   * client does not take the lender's copy while the taker holds the session.
   */
  | { kind: "active"; full: FullJid; sid: string };

/** Requests between workers (XEP-0198 resumption, partition handoff). */
export type WorkerMessage =
  | {
      kind: "resume-take";
      token: string;
      h: number;
      toShard: number;
      reqId: number;
      user: BareJid;
      /** Nodes the asking shard knows are dead: a replica of a session they held may promote it. */
      gone?: number[];
      /**
       * The asking worker incarnation's session id prefix: a replica's copy handed to it is kept
       * until it confirms (`copy-held`), and comes back if that incarnation dies first.
       */
      taker: string;
    }
  /**
   * The taker of a lent session (see `resume-take`) holds it now, its replicas too (`ok`), or
   * gave up (`ok` false): the lender ends quietly, or becomes resumable again.
   */
  | { kind: "resume-done"; sid: string; ok: boolean }
  /**
   * Session `sid` refused a resumption's `h` and nobody else holds the session: it ends as if
   * its window had passed; the reply says whether it did (SessionActor.endRefused).
   */
  | { kind: "resume-refused"; sid: string; toShard: number; reqId: number }
  /**
   * The session made of a replica's copy (promoted, or taken by a resumption) is replicated
   * where it lives now, or ended: the shard that handed the copy out drops it
   * (session-replicas.ts ReplicaHost.held).
   */
  | { kind: "copy-held"; token: string; stream: string }
  /**
   * A BOSH request (XEP-0124) for a session this worker holds, which reached another worker of
   * the node; the answer (a `<body/>`) is the reply, up to the session's `wait` later.
   */
  | { kind: "bosh"; body: string; secure: boolean; remoteAddress: string; toShard: number; reqId: number }
  /** An operator's listing: the sessions this worker holds (of `user` only, when given). */
  | { kind: "sessions"; user?: BareJid; toShard: number; reqId: number }
  /**
   * The partitions' previous owner (or, after a node died, a surviving shard) hands over what it
   * knows of them at `epoch`: actor snapshots from a previous owner, session registrations from
   * a survivor. `from` is the sending shard.
   */
  | {
      kind: "handoff";
      epoch: number;
      from: number;
      partitions: number[];
      /** Actor states moving with `partitions` (ActorHost.release). */
      actors: { key: `${string}:${string}`; state: unknown }[];
      sessions: { session: SessionLocation; state: SessionRegistration }[];
    };

/**
 * What actors reach of the cluster (src/cluster/shard-router.ts implements it): messages to
 * other actors and to sessions, answers and accepts. Actors never see envelopes or tables.
 */
export interface ActorRouter {
  /** To the UserActor of `msg.user`; `onAccepted` makes the router retain it until it is safe. */
  toUser(msg: UserMessage, onAccepted?: () => void): void;
  /** To session `msg.sid` on `shard`. */
  toSession(shard: number, msg: SessionMessage): void;
  /** The answer to a request that carried `reqId`, to the shard that asked. */
  reply(
    shard: number,
    reqId: number,
    result: { ok: true; value: unknown } | { ok: false; error: unknown },
  ): void;
  /** Tells a retaining sender that its message is safe. */
  accept(ack: Ack): void;
  /** Nodes that died or left, as the committed tables say. */
  goneNodes(): number[];
  /** The node a shard number is on. */
  nodeOf(shard: number): number;
}

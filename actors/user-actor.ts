/**
 * UserActor: the home of one user (a bare JID, key `user:<jid>`), living on the shard that owns
 * its partition. It knows the user's sessions and their presence, caches the roster and
 * blocklist, runs the RFC 6121 subscription state machine, applies the delivery rules to
 * everything addressed to the user, and stores messages offline when nobody is there to
 * receive them.
 *
 * The actor host (src/cluster/actor-host.ts) runs it: one message at a time in arrival order,
 * store reads and writes awaited inside the turn, so the roster never sees interleaved updates.
 * Its volatile state is user-state.ts, changed only through named changes.
 */
import { type Element, escapeXML, xml } from "@xmpp/xml";
import type { Config } from "../src/config/defaults.ts";
import type { Logger } from "../src/log.ts";
import type { RosterItem, Store, Subscription } from "../src/storage/store.ts";
import { type BareJid, bareOf, type FullJid, parseJid } from "../src/xmpp/jid.ts";
import { NS_BLOCKING, NS_CARBONS, NS_CLIENT, NS_DELAY, NS_FORWARD, NS_ROSTER } from "../src/xmpp/ns.ts";
import { errorReply, iqResult, readdress } from "../src/xmpp/stanza.ts";
import { parseElement } from "../src/xmpp/stream-parser.ts";
import type { Ack, Actor, ActorKind, ActorSelf, Turn } from "./actor.ts";
import { bounceStanza, routedOf } from "./bounce.ts";
import {
  type ActorRouter,
  askerOf,
  type RoutedStanza,
  type SessionLocation,
  type SessionRegistration,
  type UserMessage,
} from "./messages.ts";
import {
  type AccountKnown,
  applyUserChange,
  newUserState,
  type SessionState,
  sessionEntries,
  type UserChange,
  type UserState,
} from "./user-state.ts";

/** What a UserActor needs from its shard. */
export interface UserActorContext {
  store: Store;
  router: ActorRouter;
  config: Readonly<Config>;
  log: Logger;
  /** Whether an account exists, as the authentication provider knows it (the site's, or ours). */
  accountExists(jid: BareJid): Promise<boolean>;
}

/** Stanzas a UserActor remembers handing to later sessions (see `#redirected`). */
const MAX_REDIRECTED = 256;

/** How long writes wait for a session resumed elsewhere to re-register before going offline. */
const RELOCATE_WAIT_MS = 10_000;

/**
 * How long a resumable session whose node died is kept (its contacts see no change, its writes
 * wait) for a replica to take it over and re-register; then it is gone like any other.
 */
const LOST_SESSION_WAIT_MS = 30_000;

/** A write waiting for a session to re-register from its new place. */
interface WaitingWrite {
  xml: string;
  storable: boolean;
  dedupe?: string;
  accept?: { shard: number; rid: number };
  /** When this actor routed it (see the session write's `at`). */
  at?: number;
}

/** What a UserActor hands to its partition's next owner. */
export interface UserActorSnapshot {
  user: BareJid;
  sessions: [FullJid, SessionState][];
  standby?: [FullJid, SessionState][];
  known: AccountKnown;
}

export type { SessionState } from "./user-state.ts";

type SubscriptionType = "subscribe" | "subscribed" | "unsubscribe" | "unsubscribed";

/** The answer to a `bind` request. */
export interface BindReply {
  blocklist: string[];
}

/** The key of a user's actor. */
export function userKey(user: BareJid): `user:${string}` {
  return `user:${user}`;
}

/** The user actor kind, for the actor host. */
export function userActorKind(ctx: UserActorContext): ActorKind<UserMessage, UserActorSnapshot> {
  return {
    kind: "user",
    create: (name, self) => new UserActor(name as BareJid, ctx, self),
    // Only stanzas are refused: control messages (bind, unbind, presence, relocate...) are
    // bounded by the user's sessions, and losing one would corrupt the session table.
    refusable: (msg) => msg.kind === "stanza",
    // Only the delivery of a re-sendable stanza carries its key: other turns (a presence that
    // flushes offline storage, say) write many different stanzas to one session.
    dedupeKey: (msg, ack: Ack | undefined) =>
      msg.kind !== "stanza"
        ? undefined
        : (msg.key ?? (ack === undefined ? undefined : `${ack.shard}:${ack.rid}`)),
    nodesLost: (name, nodeNos) => ({ kind: "nodes-lost", user: name as BareJid, nodeNos }),
    shardLost: (name, shard, keepPrefix) => ({
      kind: "shard-lost",
      user: name as BareJid,
      shard,
      keepPrefix,
    }),
  };
}

/** One user's actor. */
export class UserActor implements Actor<UserMessage, UserActorSnapshot> {
  readonly user: BareJid;
  readonly #ctx: UserActorContext;
  readonly #self: Pick<ActorSelf<UserMessage>, "tell">;
  readonly #state: UserState = newUserState();
  #roster = new Map<BareJid, RosterItem>();
  #rosterVersion = 0;
  #blocklist = new Set<string>();
  /**
   * The turn of the retained stanza being handled: its writes carry the stanza's re-send key
   * so sessions drop a re-sent copy, and the first session write takes the sender's accept
   * along (the session accepts once its replicas hold the write). Undefined in other turns.
   */
  #turn: Turn | undefined;
  /** Writes for sessions resumed elsewhere whose re-registration has not arrived yet, by full JID. */
  readonly #waitingForRelocate = new Map<FullJid, { sid: string; writes: WaitingWrite[] }>();
  #pushId = 0;

  constructor(user: BareJid, ctx: UserActorContext, self: Pick<ActorSelf<UserMessage>, "tell">) {
    this.user = user;
    this.#ctx = ctx;
    this.#self = self;
  }

  /** Sessions currently bound, for statistics. */
  get sessionCount(): number {
    return this.#state.sessions.size;
  }

  /** Nothing lives only in memory: no session, no write waiting for one. */
  get empty(): boolean {
    return (
      this.#state.sessions.size === 0 && this.#state.standby.size === 0 && this.#waitingForRelocate.size === 0
    );
  }

  /** Stanzas to names nobody registered must not pile up actors until the idle sweep. */
  get disposable(): boolean {
    return this.#state.known === "absent";
  }

  /** The latest time this actor stamped (see {@link #now}). */
  #lastStamp = 0;

  /**
   * This actor's clock for bind times and routing times, which it compares
   * (#deliverToLaterSessions): never behind a time it gave before, should the system clock be
   * stepped back.
   */
  #now(): number {
    this.#lastStamp = Math.max(Date.now(), this.#lastStamp);
    return this.#lastStamp;
  }

  /**
   * Stanzas lately handed to sessions bound after them (#deliverToLaterSessions), oldest first:
   * the same stanza from a second ending session (a message to the bare JID reached both) is
   * not handed over twice.
   */
  readonly #redirected = new Set<string>();

  /** Applies one named change to the volatile state. */
  #change(change: UserChange): void {
    applyUserChange(this.#state, change);
  }

  /** The state that lives only in memory, for the partition's next owner (handoff). */
  snapshot(): UserActorSnapshot {
    return {
      user: this.user,
      sessions: sessionEntries(this.#state.sessions),
      standby: sessionEntries(this.#state.standby),
      known: this.#state.known,
    };
  }

  /** Takes over a previous owner's state; the roster and blocklist are re-read from the store. */
  restore(snapshot: UserActorSnapshot): void {
    // Bind times are the previous owner's clock: forgotten, as for any session registered from
    // elsewhere (#deliverToLaterSessions compares only times of this actor's clock).
    for (const [full, { boundAt: _bound, ...session }] of snapshot.sessions) {
      this.#change({ c: "registered", full, session });
    }
    for (const [full, session] of snapshot.standby ?? []) this.#change({ c: "standby", full, session });
    if (snapshot.known !== "unknown") this.#change({ c: "known", known: snapshot.known });
  }

  failed(msg: UserMessage, error: unknown): void {
    if ("reqId" in msg) this.#ctx.router.reply(askerOf(msg), msg.reqId, { ok: false, error });
  }

  async handle(msg: UserMessage, turn: Turn): Promise<void> {
    this.#turn = msg.kind === "stanza" ? turn : undefined;
    try {
      await this.#handle(msg);
    } finally {
      this.#turn = undefined;
    }
  }

  async activate(): Promise<void> {
    const [roster, blocklist] = await Promise.all([
      this.#ctx.store.getRoster(this.user),
      this.#ctx.store.getBlocklist(this.user),
    ]);
    this.#roster = new Map(roster.items.map((item) => [item.jid, item]));
    this.#rosterVersion = roster.version;
    this.#blocklist = new Set(blocklist);
  }

  async #handle(msg: UserMessage): Promise<void> {
    switch (msg.kind) {
      case "stanza":
        return this.#onStanza(msg.stanza);
      case "bind":
        return this.#onBind(msg.session, msg.reqId);
      case "kick": {
        // As for a replaced session (conflict): each session is told to end, and contacts see
        // each available resource go unavailable.
        let told = 0;
        for (const [full, session] of [...this.#state.sessions]) {
          this.#writeSession(full, session, { kind: "kick", reason: msg.reason });
          this.#change({ c: "ended", full });
          if (session.presence !== undefined) {
            const unavailable = `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(full)}"/>`;
            this.#broadcastPresence(full, unavailable, []);
          }
          told++;
        }
        this.#ctx.router.reply(msg.shard, msg.reqId, { ok: true, value: told });
        return;
      }
      case "unbind":
        return this.#onUnbind(msg.session, msg.unavailable, msg.directed);
      case "relocate": {
        // The session's own view wins: after a worker restart this actor starts from nothing.
        const current = this.#state.sessions.get(msg.session.full);
        const gone = new Set([...this.#ctx.router.goneNodes(), ...(msg.state.deadNodes ?? [])]);
        const isGone = (shard: number) => gone.has(this.#ctx.router.nodeOf(shard));
        const state: SessionState = { shard: msg.session.shard, sid: msg.session.sid, ...msg.state };
        // The same session re-registering (it enabled resumption, say) keeps the bind time this
        // actor took; another one (resumed, promoted) has none known here.
        if (current?.sid === msg.session.sid && current.boundAt !== undefined)
          state.boundAt = current.boundAt;
        if (current !== undefined && !supersedes(current, msg.session.sid, msg.state, isGone)) {
          if (msg.state.restored === true) {
            // A lender whose taker never confirmed, while the taker is alive as far as we know:
            // it waits where it is (a resumption is told "pending") in case the taker's node
            // dies with the session; then it is adopted.
            this.#dropStandby(msg.session.full, msg.session.sid);
            this.#change({ c: "standby", full: msg.session.full, session: state });
            return;
          }
          // A late registration from a place the session has moved on from, or a ghost (a copy
          // promoted beside the session resumed from the same owner): it ends quietly.
          this.#writeSession(msg.session.full, state, { kind: "stale" });
          return;
        }
        // A replaced registration of another session of this full JID is a ghost or gone, and
        // so is a standby that is not the one registering.
        if (current === undefined || current.sid !== msg.session.sid) {
          if (current !== undefined) this.#writeSession(msg.session.full, current, { kind: "stale" });
          this.#dropStandby(msg.session.full, msg.session.sid);
        }
        this.#change({ c: "registered", full: msg.session.full, session: state });
        if (msg.state.restored === true) this.#writeSession(msg.session.full, state, { kind: "active" });
        const waiting = this.#waitingForRelocate.get(msg.session.full);
        if (waiting !== undefined) {
          this.#waitingForRelocate.delete(msg.session.full);
          for (const write of waiting.writes) {
            this.#writeSession(msg.session.full, state, writeOf(write));
          }
        }
        this.#announceCarbonPeers();
        return;
      }
      case "relocate-timeout": {
        const waiting = this.#waitingForRelocate.get(msg.full);
        if (waiting === undefined || waiting.sid !== msg.sid) return;
        this.#waitingForRelocate.delete(msg.full);
        const state = this.#state.sessions.get(msg.full);
        if (state !== undefined && state.sid === msg.sid) this.#forget(msg.full, state);
        for (const write of waiting.writes) {
          if (write.storable) await this.#storeOffline(write.xml, undefined, write.at);
          if (write.accept !== undefined) this.#ctx.router.accept(write.accept);
        }
        return;
      }
      case "presence":
        return this.#onOwnPresence(msg.session, msg.xml, msg.priority, msg.available);
      case "subscription-out":
        return this.#onSubscriptionOut(msg.session, msg.to, msg.type, msg.xml);
      case "subscription-in":
        return this.#onSubscriptionIn(msg.from, msg.type, msg.xml);
      case "probe":
        return this.#onProbe(msg.from);
      case "iq":
        return this.#onOwnIq(msg.session, parseElement(msg.xml));
      case "carbons": {
        const state = this.#state.sessions.get(msg.session.full);
        if (state !== undefined && state.sid === msg.session.sid) {
          this.#change({ c: "carbons", full: msg.session.full, enabled: msg.enabled });
        }
        this.#announceCarbonPeers();
        this.#ctx.router.reply(msg.session.shard, msg.reqId, { ok: true, value: null });
        return;
      }
      case "carbon-sent":
        return this.#onCarbonSent(msg.session.full, msg.xml);
      case "store-offline":
        // A store that is full refuses them: their senders hear so (RFC 6121 §8.5.2.1.1).
        for (const [i, stanza] of msg.stanzas.entries()) {
          const writtenAt = msg.writtenAt?.[i] || undefined;
          if (writtenAt !== undefined && this.#deliverToLaterSessions(stanza, writtenAt)) continue;
          await this.#storeOffline(stanza, routedOf(stanza), writtenAt);
        }
        return;
      case "session-gone": {
        const state = this.#state.sessions.get(msg.session.full);
        if (
          state !== undefined &&
          state.sid === msg.session.sid &&
          msg.moved === true &&
          msg.xml !== undefined
        ) {
          // Resumed elsewhere, and its re-registration is still on its way: keep the write for it.
          this.#awaitRelocate(msg.session.full, msg.session.sid, waitingOf(msg.xml, msg));
          return;
        }
        if (state !== undefined && state.sid === msg.session.sid && msg.crashed === true && state.resumable) {
          // Its worker crashed and was restarted before this actor heard of it: a replica is
          // taking the session over, and the write waits for it like any write to a lost session.
          this.#lose(msg.session.full, state);
          if (msg.xml !== undefined) {
            this.#awaitRelocate(msg.session.full, msg.session.sid, waitingOf(msg.xml, msg));
          }
          return;
        }
        if (state !== undefined && state.sid === msg.session.sid) this.#forget(msg.session.full, state);
        else if (state !== undefined && msg.xml !== undefined) {
          // The session was resumed elsewhere after this write left: follow it there, so a
          // resumed client gets it now rather than at its next login.
          this.#writeSession(msg.session.full, state, writeOf(waitingOf(msg.xml, msg)));
          return;
        }
        if (msg.xml !== undefined && msg.storable)
          await this.#storeOffline(msg.xml, routedOf(msg.xml), msg.at);
        if (msg.accept !== undefined) this.#ctx.router.accept(msg.accept);
        return;
      }
      case "shard-lost":
        for (const [full, state] of [...this.#state.sessions]) {
          if (state.shard === msg.shard && !state.sid.startsWith(msg.keepPrefix)) this.#lose(full, state);
        }
        return;
      case "nodes-lost":
        for (const [full, state] of [...this.#state.sessions]) {
          if (msg.nodeNos.includes(this.#ctx.router.nodeOf(state.shard))) this.#lose(full, state);
        }
        return;
      default: {
        const never: never = msg;
        throw new TypeError(`unknown user message ${JSON.stringify(never)}`);
      }
    }
  }

  // --- sessions -------------------------------------------------------------------------

  async #onBind(session: SessionLocation, reqId: number): Promise<void> {
    const existing = this.#state.sessions.get(session.full);
    if (existing !== undefined && existing.sid === session.sid) {
      // The same bind again (re-sent after a node died before answering): answer it again.
      this.#ctx.router.reply(session.shard, reqId, { ok: true, value: { blocklist: [...this.#blocklist] } });
      return;
    }
    if (existing !== undefined) {
      // RFC 6120 §7.7.2.2: the existing session is terminated with <conflict/>, and its
      // contacts see that resource go unavailable before the new one announces itself.
      this.#writeSession(session.full, existing, { kind: "conflict" });
      this.#change({ c: "ended", full: session.full });
      if (existing.presence !== undefined) {
        const unavailable = `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(session.full)}"/>`;
        this.#broadcastPresence(session.full, unavailable, []);
      }
    }
    this.#dropStandby(session.full);
    this.#change({ c: "bound", full: session.full, shard: session.shard, sid: session.sid, at: this.#now() });
    const reply: BindReply = { blocklist: [...this.#blocklist] };
    this.#ctx.router.reply(session.shard, reqId, { ok: true, value: reply });
    this.#announceCarbonPeers();
  }

  async #onUnbind(
    session: SessionLocation,
    unavailable: string | undefined,
    directed: string[],
  ): Promise<void> {
    const state = this.#state.sessions.get(session.full);
    // A newer session with the same resource may already have replaced this one.
    if (state === undefined || state.sid !== session.sid) return;
    this.#change({ c: "ended", full: session.full });
    this.#dropStandby(session.full);
    if (state.presence !== undefined) {
      const xmlText =
        unavailable ??
        `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(session.full)}"/>`;
      this.#broadcastPresence(session.full, xmlText, directed);
    }
    this.#announceCarbonPeers();
  }

  /**
   * The session's worker or node died. A resumable one is kept while a replica takes it over
   * and re-registers it: contacts see no change, and what is written to it meanwhile waits
   * (CLUSTER.md guarantee 3). Any other is gone.
   */
  #lose(full: FullJid, state: SessionState): void {
    if (state.resumable !== true) return this.#forget(full, state);
    if (state.lost === true) return;
    this.#change({ c: "lost", full });
    this.#waitFor(full, state.sid, LOST_SESSION_WAIT_MS);
    this.#adoptStandby(full);
  }

  /** The registered session died: a standby lender takes over (it registers as it would). */
  #adoptStandby(full: FullJid): void {
    const standby = this.#state.standby.get(full);
    if (standby === undefined) return;
    this.#change({ c: "standby", full, session: undefined });
    const { shard, sid, ...registration } = standby;
    this.#self.tell({
      kind: "relocate",
      user: this.user,
      session: { full, shard, sid },
      state: { ...registration, restored: true },
    });
  }

  /** Tells a standby of `full` (other than `keep`) that it is stale, and forgets it. */
  #dropStandby(full: FullJid, keep?: string): void {
    const standby = this.#state.standby.get(full);
    if (standby === undefined) return;
    this.#change({ c: "standby", full, session: undefined });
    if (standby.sid !== keep) this.#writeSession(full, standby, { kind: "stale" });
  }

  /** Drops a session that vanished without an unbind (its worker died or lost it). */
  #forget(full: FullJid, state: SessionState): void {
    this.#change({ c: "ended", full });
    if (state.presence !== undefined) {
      this.#broadcastPresence(
        full,
        `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(full)}"/>`,
        [],
      );
    }
    this.#announceCarbonPeers();
  }

  #awaitRelocate(full: FullJid, sid: string, write: WaitingWrite): void {
    const waiting = this.#waitFor(full, sid, RELOCATE_WAIT_MS);
    // Bounded like a session's own unacknowledged log.
    if (waiting.writes.length < this.#ctx.config.limits.smMaxUnackedStanzas) waiting.writes.push(write);
    else if (write.accept !== undefined) this.#ctx.router.accept(write.accept);
  }

  /** Starts (or finds) the wait for session `sid` of `full` to re-register, bounded by `ms`. */
  #waitFor(full: FullJid, sid: string, ms: number): { sid: string; writes: WaitingWrite[] } {
    let waiting = this.#waitingForRelocate.get(full);
    if (waiting === undefined || waiting.sid !== sid) {
      waiting = { sid, writes: [] };
      this.#waitingForRelocate.set(full, waiting);
      const timer = setTimeout(
        () => this.#self.tell({ kind: "relocate-timeout", user: this.user, full, sid }),
        ms,
      );
      timer.unref();
    }
    return waiting;
  }

  #announceCarbonPeers(): void {
    let enabled = 0;
    for (const state of this.#state.sessions.values()) if (state.carbons) enabled++;
    for (const [full, state] of this.#state.sessions) {
      this.#writeSession(full, state, { kind: "carbon-peers", enabled });
    }
  }

  #writeSession(
    full: FullJid,
    to: { shard: number; sid: string; lost?: boolean },
    msg:
      | { kind: "conflict" }
      | { kind: "kick"; reason: string }
      | { kind: "stale" }
      | { kind: "active" }
      | { kind: "carbon-peers"; enabled: number }
      | { kind: "blocklist"; list: string[] }
      | {
          kind: "write";
          xml: string;
          isMessage?: boolean;
          dedupe?: string;
          accept?: { shard: number; rid: number };
          at?: number;
        },
  ): void {
    if ("lost" in to && to.lost === true) {
      // Its node died: the write waits for the replica that takes the session over.
      if (msg.kind === "write") {
        this.#awaitRelocate(full, to.sid, {
          xml: msg.xml,
          storable: msg.isMessage ?? false,
          ...carried(msg),
        });
      }
      return;
    }
    this.#ctx.router.toSession(to.shard, { ...msg, full, sid: to.sid });
  }

  /**
   * Writes to session `full`. `retained`: a message, whose delivery the sender's accept and the
   * session's dedupe key follow; `storable`: offline storage takes it if the session ends before
   * its client acknowledged it (XEP-0198 §4: as if sent to an unavailable resource, so only
   * what RFC 6121 §8.5.2 and XEP-0334 would store: not chat states, receipts, `<no-store/>`,
   * headlines, errors or carbon copies).
   */
  #write(full: FullJid, xmlText: string, retained = false, storable = retained): boolean {
    const state = this.#state.sessions.get(full);
    if (state === undefined) return false;
    const dedupe = this.#turn?.dedupe;
    // A stanza that may end in offline storage carries when this actor routed it (by its clock).
    const at = storable ? { at: this.#now() } : {};
    if (!retained || dedupe === undefined) {
      this.#writeSession(full, state, { kind: "write", xml: xmlText, isMessage: storable, ...at });
      return true;
    }
    // The first write of a retained stanza takes the sender's accept request along.
    const accept = this.#turn?.takeAccept();
    this.#writeSession(
      full,
      state,
      accept === undefined
        ? { kind: "write", xml: xmlText, isMessage: storable, dedupe, ...at }
        : { kind: "write", xml: xmlText, isMessage: storable, dedupe, accept, ...at },
    );
    return true;
  }

  #availableSessions(): [FullJid, SessionState][] {
    return [...this.#state.sessions].filter(([, s]) => s.presence !== undefined);
  }

  // --- presence ---------------------------------------------------------------------------

  async #onOwnPresence(session: SessionLocation, xmlText: string, priority: number, available: boolean) {
    const state = this.#state.sessions.get(session.full);
    // A replaced session's late presence must not touch its successor's entry.
    if (state === undefined || state.sid !== session.sid) return;
    const initial = available && state.presence === undefined;
    // RFC 6121 §8.5.2.1.1: offline messages wait for a resource with non-negative priority.
    const becameDeliverable = available && priority >= 0 && (initial || state.priority < 0);
    const wasAvailable = state.presence !== undefined;
    this.#change({ c: "presence", full: session.full, presence: available ? xmlText : undefined, priority });
    if (!available) {
      if (!wasAvailable) return;
      this.#broadcastPresence(session.full, xmlText, []);
      return;
    }
    this.#broadcastPresence(session.full, xmlText, []);
    if (!initial) {
      if (becameDeliverable) await this.#deliverOffline(session.full);
      return;
    }

    // RFC 6121 §4.2.2: on initial presence, probe contacts we are subscribed to, and send the
    // user the presence of its own other available resources.
    for (const item of this.#roster.values()) {
      if (item.subscription === "to" || item.subscription === "both") {
        this.#ctx.router.toUser({ kind: "probe", user: item.jid, from: session.full });
      }
    }
    for (const [full, other] of this.#availableSessions()) {
      if (full !== session.full && other.presence !== undefined) {
        this.#write(session.full, readdress(other.presence, session.full));
      }
    }
    // RFC 6121 §3.1.3: pending subscription requests are delivered at every login until
    // answered; then the offline messages. Both reads go to the store at once.
    const [pendings, offline] = await Promise.all([
      this.#ctx.store.getPendingSubscriptions(this.user),
      becameDeliverable ? this.#ctx.store.takeOffline(this.user) : [],
    ]);
    for (const pending of pendings) this.#write(session.full, pending.stanza);
    for (const message of offline) this.#write(session.full, message.stanza, true);
  }

  /** Sends presence from one resource to subscribed contacts, to directed recipients and to the user's own resources. */
  #broadcastPresence(from: FullJid, xmlText: string, directed: string[]): void {
    const type = /^<presence[^>]* type="unavailable"/.test(xmlText) ? "unavailable" : "";
    const targets = new Set<string>();
    for (const item of this.#roster.values()) {
      if ((item.subscription === "from" || item.subscription === "both") && !this.#blocklist.has(item.jid)) {
        targets.add(item.jid);
      }
    }
    for (const target of directed) targets.add(target);
    for (const target of targets) {
      const jid = parseJid(target);
      if (jid === undefined) continue;
      this.#ctx.router.toUser({
        kind: "stanza",
        user: bareOf(jid),
        stanza: { name: "presence", type, from, to: target, id: "", xml: readdress(xmlText, target) },
      });
    }
    for (const [full] of this.#availableSessions()) this.#write(full, readdress(xmlText, full));
    // The sender itself, if it has just gone unavailable, no longer counts as available.
    if (
      type === "unavailable" &&
      this.#state.sessions.has(from) &&
      this.#state.sessions.get(from)!.presence === undefined
    ) {
      this.#write(from, readdress(xmlText, from));
    }
  }

  async #onProbe(from: string): Promise<void> {
    const jid = parseJid(from);
    if (jid === undefined) return;
    const prober = bareOf(jid);
    const item = this.#roster.get(prober);
    // RFC 6121 §4.3.2: answer only contacts subscribed to our presence.
    if (item === undefined || (item.subscription !== "from" && item.subscription !== "both")) return;
    if (this.#blocklist.has(prober)) return;
    this.#sendCurrentPresence(prober, from);
  }

  // --- delivery (RFC 6121 §8.5) --------------------------------------------------------------

  async #onStanza(stanza: RoutedStanza): Promise<void> {
    if (this.#isBlocked(stanza.from)) {
      // XEP-0191 §3.4: do not deliver; answer iq and message with an error, drop presence.
      if (stanza.name !== "presence" && stanza.type !== "error" && stanza.type !== "result") {
        bounceStanza(this.#ctx.router, stanza, "service-unavailable");
      }
      return;
    }
    // Routed stanzas carry normalised JIDs (the sender's session parsed them): a slash means a resource.
    if (stanza.to.includes("/")) {
      const full = stanza.to as FullJid;
      if (this.#state.sessions.has(full)) {
        if (stanza.name === "presence" && stanza.type === "") {
          // Directed or broadcast available presence reaching an available session.
        }
        this.#write(full, stanza.xml, stanza.name === "message", stanza.storable === true);
        if (stanza.name === "message" && carbonOf(stanza)) {
          this.#carbonReceived(stanza, new Set([full]));
        }
        return;
      }
      // RFC 6121 §8.5.3.2: no such resource.
      if (stanza.name === "iq") {
        if (stanza.type === "get" || stanza.type === "set")
          bounceStanza(this.#ctx.router, stanza, "service-unavailable");
        return;
      }
      if (stanza.name === "presence") return;
      if (stanza.type === "groupchat") return bounceStanza(this.#ctx.router, stanza, "service-unavailable");
      // RFC 6121 §8.5.3.2.1: headline and error to an absent resource are dropped silently.
      if (stanza.type === "error" || stanza.type === "headline") return;
    }
    switch (stanza.name) {
      case "message":
        return this.#deliverMessageToBare(stanza);
      case "presence":
        // RFC 6121 §8.5.2.1.2: presence to the bare JID goes to every available resource.
        for (const [full] of this.#availableSessions()) this.#write(full, stanza.xml);
        return;
      case "iq":
        // iq to a bare JID is answered by the server on the user's behalf at the sender's shard;
        // one that still arrives here has nobody to answer it.
        if (stanza.type === "get" || stanza.type === "set")
          bounceStanza(this.#ctx.router, stanza, "service-unavailable");
        return;
    }
  }

  async #deliverMessageToBare(stanza: RoutedStanza): Promise<void> {
    const candidates = this.#availableSessions().filter(([, s]) => s.priority >= 0);
    if (stanza.type === "groupchat") return bounceStanza(this.#ctx.router, stanza, "service-unavailable");
    if (stanza.type === "headline") {
      // RFC 6121 §8.5.2.1.1: a headline is not stored.
      for (const [full] of candidates) this.#write(full, stanza.xml, true, false);
      return;
    }
    if (candidates.length === 0) {
      if (stanza.type === "error") return;
      if (stanza.storable) await this.#storeOffline(stanza.xml, stanza);
      return;
    }
    // RFC 6121 §8.5.2.1.1 (a): the "most available" resources, here those of highest priority.
    const top = Math.max(...candidates.map(([, s]) => s.priority));
    const delivered = new Set<FullJid>();
    for (const [full, state] of candidates) {
      if (state.priority === top) {
        this.#write(full, stanza.xml, true, stanza.storable === true);
        delivered.add(full);
      }
    }
    if (carbonOf(stanza)) this.#carbonReceived(stanza, delivered);
  }

  /**
   * Whether the account exists. Only the store paths ask (offline messages, pending
   * subscriptions): RFC 6121 §8.5.1 has the server refuse, not keep, stanzas for an account
   * that does not exist, and anyone can address any JID. A "yes" is kept; a "no" is asked
   * again, since the account may be registered meanwhile.
   */
  async #accountExists(): Promise<boolean> {
    if (this.#state.known !== "exists") {
      const exists = await this.#ctx.accountExists(this.user);
      this.#change({ c: "known", known: exists ? "exists" : "absent" });
    }
    return this.#state.known === "exists";
  }

  /** Stores a message for the next login, stamped (XEP-0203) with `failedAt` or now. */
  async #storeOffline(stanzaXml: string, stanza: RoutedStanza | undefined, failedAt?: number): Promise<void> {
    if (!(await this.#accountExists())) {
      if (stanza !== undefined) bounceStanza(this.#ctx.router, stanza, "service-unavailable");
      return;
    }
    const stamped = addDelay(stanzaXml, this.#ctx.config.domain, failedAt ?? Date.now());
    const stored = await this.#ctx.store.pushOffline(
      this.user,
      { stanza: stamped, storedAt: Date.now() },
      this.#ctx.config.limits.maxOfflineMessagesPerUser,
    );
    // RFC 6121 §8.5.2.1.1: when storage is full the server returns service-unavailable.
    if (!stored && stanza !== undefined) bounceStanza(this.#ctx.router, stanza, "service-unavailable");
  }

  /**
   * A stanza an ended session never acknowledged goes, as if sent to an unavailable resource
   * (XEP-0198 §4, RFC 6121 §8.5.3.2.1), to the available resources of highest non-negative
   * priority among those that bound after it was routed: they cannot have had it, nor a
   * carbon of it. The others may have (a message to the bare JID, a carbon), so they are left
   * to offline storage, which the next login reads. False when there is no such resource.
   *
   * Both times are this actor's clock: `writtenAt` is the `at` this actor put on the write, and
   * `boundAt` is set only by a bind this actor saw (forgotten on a handoff). A stanza routed by
   * a previous owner was routed before any session bound here, so another node's clock can
   * only make a later session look earlier (left to storage), never an earlier one later.
   */
  #deliverToLaterSessions(stanzaXml: string, writtenAt: number): boolean {
    const later = this.#availableSessions().filter(
      ([, s]) => s.priority >= 0 && s.boundAt !== undefined && s.boundAt > writtenAt,
    );
    if (later.length === 0) return false;
    if (this.#redirected.has(stanzaXml)) return true;
    this.#redirected.add(stanzaXml);
    if (this.#redirected.size > MAX_REDIRECTED)
      this.#redirected.delete(this.#redirected.values().next().value!);
    const top = Math.max(...later.map(([, s]) => s.priority));
    const stamped = addDelay(stanzaXml, this.#ctx.config.domain, writtenAt);
    for (const [full, s] of later) if (s.priority === top) this.#write(full, stamped, true, true);
    return true;
  }

  async #deliverOffline(full: FullJid): Promise<void> {
    const messages = await this.#ctx.store.takeOffline(this.user);
    for (const message of messages) this.#write(full, message.stanza, true);
  }

  #isBlocked(from: string): boolean {
    if (this.#blocklist.size === 0) return false;
    const jid = parseJid(from);
    if (jid === undefined) return false;
    // XEP-0191 §3.2 matches like privacy lists: full JID, bare JID, or domain.
    return this.#blocklist.has(from) || this.#blocklist.has(bareOf(jid)) || this.#blocklist.has(jid.domain);
  }

  // --- carbons (XEP-0280) -----------------------------------------------------------------

  #carbonReceived(stanza: RoutedStanza, delivered: Set<FullJid>): void {
    for (const [full, state] of this.#state.sessions) {
      if (!state.carbons || delivered.has(full)) continue;
      // A copy: the original went to another resource, so the copy is not stored.
      this.#write(full, wrapCarbon("received", this.user, full, stanza.xml), true, false);
    }
  }

  #onCarbonSent(sender: FullJid, stanzaXml: string): void {
    for (const [full, state] of this.#state.sessions) {
      if (!state.carbons || full === sender) continue;
      this.#write(full, wrapCarbon("sent", this.user, full, stanzaXml), true, false);
    }
  }

  // --- roster (RFC 6121 §2) and blocking (XEP-0191) ----------------------------------------------

  async #onOwnIq(session: SessionLocation, iq: Element): Promise<void> {
    const state = this.#state.sessions.get(session.full);
    const query = iq.getChild("query", NS_ROSTER);
    const reply = (el: Element) =>
      this.#writeSession(session.full, session, { kind: "write", xml: el.toString() });
    if (query !== undefined) {
      if (iq.attrs.type === "get") {
        if (state !== undefined) this.#change({ c: "interest", full: session.full, roster: true });
        // RFC 6121 §2.6.3: an up-to-date client gets an empty result and later pushes.
        const clientVer = query.attrs.ver;
        const result = iqResult(iq);
        if (clientVer === undefined || clientVer !== String(this.#rosterVersion)) {
          const q = result.c("query", { xmlns: NS_ROSTER, ver: String(this.#rosterVersion) });
          for (const item of this.#roster.values()) q.cnode(itemElement(item));
        }
        return reply(result);
      }
      return reply(await this.#rosterSet(iq, query));
    }
    if (iq.getChild("blocklist", NS_BLOCKING) !== undefined && iq.attrs.type === "get") {
      if (state !== undefined) this.#change({ c: "interest", full: session.full, blocklist: true });
      const list = xml("blocklist", { xmlns: NS_BLOCKING });
      for (const jid of [...this.#blocklist].sort()) list.c("item", { jid });
      return reply(iqResult(iq, undefined, list));
    }
    const block = iq.getChild("block", NS_BLOCKING) ?? iq.getChild("unblock", NS_BLOCKING);
    if (block !== undefined && iq.attrs.type === "set") return reply(await this.#blockSet(iq, block));
    return reply(errorReply(iq, "service-unavailable"));
  }

  async #rosterSet(iq: Element, query: Element): Promise<Element> {
    const items = query.getChildren("item");
    // RFC 6121 §2.3.3: exactly one item per roster set.
    if (iq.attrs.type !== "set" || items.length !== 1) return errorReply(iq, "bad-request");
    const el = items[0]!;
    const jid = parseJid(el.attrs.jid ?? "");
    if (jid === undefined || jid.resource !== "") return errorReply(iq, "bad-request");
    const contact = bareOf(jid);
    if (contact === this.user) return errorReply(iq, "not-allowed");
    const groups = el.getChildren("group").map((g) => g.text());
    // RFC 6121 §2.3.3: an empty group name is not-acceptable, a duplicate one bad-request.
    if (groups.some((g) => g === "")) return errorReply(iq, "not-acceptable");
    if (new Set(groups).size !== groups.length) return errorReply(iq, "bad-request");
    if (el.attrs.subscription === "remove") {
      const item = this.#roster.get(contact);
      if (item === undefined) return errorReply(iq, "item-not-found");
      // RFC 6121 §2.5.2: cancel both directions of the subscription.
      if (item.subscription === "to" || item.subscription === "both" || item.ask) {
        this.#sendSubscription(contact, "unsubscribe");
      }
      if (item.subscription === "from" || item.subscription === "both") {
        this.#sendSubscription(contact, "unsubscribed");
      }
      await this.#ctx.store.deletePendingSubscription(this.user, contact);
      await this.#removeItem(contact);
      return iqResult(iq);
    }
    if (this.#rosterFull(contact)) {
      return errorReply(iq, "not-allowed", { text: "roster is full" });
    }
    const previous = this.#roster.get(contact);
    // Clients may not change subscription state through a roster set (RFC 6121 §2.1.2.5).
    const item: RosterItem = {
      jid: contact,
      subscription: previous?.subscription ?? "none",
      groups,
      ...(el.attrs.name !== undefined && el.attrs.name !== "" ? { name: el.attrs.name } : {}),
      ...(previous?.ask ? { ask: true } : {}),
      ...(previous?.approved ? { approved: true } : {}),
    };
    await this.#putItem(item);
    return iqResult(iq);
  }

  async #putItem(item: RosterItem): Promise<void> {
    this.#rosterVersion = await this.#ctx.store.putRosterItem(this.user, item);
    this.#roster.set(item.jid, item);
    this.#pushRoster(itemElement(item));
  }

  async #removeItem(contact: BareJid): Promise<void> {
    const version = await this.#ctx.store.deleteRosterItem(this.user, contact);
    if (version === undefined) return;
    this.#rosterVersion = version;
    this.#roster.delete(contact);
    this.#pushRoster(xml("item", { jid: contact, subscription: "remove" }));
  }

  /** RFC 6121 §2.1.6: push the changed item to every session that asked for the roster. */
  #pushRoster(item: Element): void {
    for (const [full, state] of this.#state.sessions) {
      if (!state.rosterInterest) continue;
      const push = xml(
        "iq",
        { xmlns: NS_CLIENT, type: "set", id: `push${++this.#pushId}`, to: full },
        xml("query", { xmlns: NS_ROSTER, ver: String(this.#rosterVersion) }, item),
      );
      this.#write(full, push.toString());
    }
  }

  async #blockSet(iq: Element, block: Element): Promise<Element> {
    const items: string[] = [];
    for (const el of block.getChildren("item")) {
      const jid = parseJid(el.attrs.jid ?? "");
      if (jid === undefined) return errorReply(iq, "jid-malformed");
      items.push(jid.resource === "" ? bareOf(jid) : `${bareOf(jid)}/${jid.resource}`);
    }
    const blocking = block.name === "block";
    // XEP-0191 §3.3: a block request with no items is a bad request.
    if (blocking && items.length === 0) return errorReply(iq, "bad-request");
    if (
      blocking &&
      new Set([...this.#blocklist, ...items]).size > this.#ctx.config.limits.maxBlocklistItems
    ) {
      return errorReply(iq, "not-allowed", { text: "the blocklist is full" });
    }
    const list = blocking
      ? await this.#ctx.store.addBlocked(this.user, items)
      : await this.#ctx.store.removeBlocked(this.user, items.length === 0 ? undefined : items);
    const newlyBlocked = items.filter((jid) => !this.#blocklist.has(jid));
    const unblocked = [...this.#blocklist].filter((jid) => !list.includes(jid));
    this.#blocklist = new Set(list);
    // XEP-0191 §3.3: blocked contacts see us go unavailable; §3.4: unblocked subscribers get
    // our current presence again.
    if (blocking) for (const target of newlyBlocked) this.#sendUnavailableFromAll(target);
    for (const target of unblocked) {
      const item = this.#roster.get(target as BareJid);
      if (item === undefined || (item.subscription !== "from" && item.subscription !== "both")) continue;
      this.#sendCurrentPresence(item.jid, item.jid);
    }
    // Push the change to every session that asked for the blocklist.
    for (const [full, state] of this.#state.sessions) {
      this.#writeSession(full, state, { kind: "blocklist", list: [...this.#blocklist] });
      if (!state.blocklistInterest) continue;
      const push = xml("iq", { xmlns: NS_CLIENT, type: "set", id: `push${++this.#pushId}`, to: full });
      const child = push.c(block.name, { xmlns: NS_BLOCKING });
      for (const jid of items) child.c("item", { jid });
      this.#write(full, push.toString());
    }
    return iqResult(iq);
  }

  // --- subscriptions (RFC 6121 §3) --------------------------------------------------------

  #sendSubscription(contact: BareJid, type: SubscriptionType, original?: string): void {
    const xmlText =
      original !== undefined
        ? readdressFrom(original, contact, this.user)
        : `<presence xmlns="${NS_CLIENT}" type="${type}" from="${escapeXML(this.user)}" to="${escapeXML(contact)}"/>`;
    this.#ctx.router.toUser({ kind: "subscription-in", user: contact, from: this.user, type, xml: xmlText });
  }

  /** Whether adding `contact` would take the roster past maxRosterItems. */
  #rosterFull(contact: BareJid): boolean {
    return !this.#roster.has(contact) && this.#roster.size >= this.#ctx.config.limits.maxRosterItems;
  }

  /** Answers a subscription the roster has no room for with not-allowed, as a roster set would get. */
  #refuseSubscription(
    session: SessionLocation,
    contact: BareJid,
    type: SubscriptionType,
    xmlText: string,
  ): void {
    bounceStanza(
      this.#ctx.router,
      { name: "presence", type, from: session.full, to: contact, id: "", xml: xmlText },
      "not-allowed",
    );
  }

  async #onSubscriptionOut(
    session: SessionLocation,
    contact: BareJid,
    type: SubscriptionType,
    xmlText: string,
  ) {
    void session;
    if (contact === this.user) return;
    const item = this.#roster.get(contact);
    const sub: Subscription = item?.subscription ?? "none";
    switch (type) {
      case "subscribe": {
        if (this.#rosterFull(contact)) return this.#refuseSubscription(session, contact, type, xmlText);
        // RFC 6121 §3.1.2: record "pending out" and push; route the request unless already subscribed.
        if (sub !== "to" && sub !== "both" && !item?.ask) {
          await this.#putItem({ ...(item ?? { jid: contact, subscription: "none", groups: [] }), ask: true });
        }
        this.#sendSubscription(contact, type, xmlText);
        return;
      }
      case "subscribed": {
        if (this.#rosterFull(contact)) return this.#refuseSubscription(session, contact, type, xmlText);
        // RFC 6121 §3.1.5: approve a pending request, or pre-approve (§3.4).
        const pending = (await this.#ctx.store.getPendingSubscriptions(this.user)).some(
          (p) => p.from === contact,
        );
        if (pending) {
          await this.#ctx.store.deletePendingSubscription(this.user, contact);
          const next: Subscription = sub === "to" ? "both" : sub === "none" ? "from" : sub;
          const base = item ?? { jid: contact, subscription: "none" as Subscription, groups: [] };
          const { approved: _a, ...rest } = base;
          await this.#putItem({ ...rest, subscription: next });
          this.#sendSubscription(contact, type, xmlText);
          // §3.1.5: the contact now gets our current presence.
          this.#sendCurrentPresence(contact, contact);
        } else if (sub === "none" || sub === "to") {
          if (!item?.approved) {
            await this.#putItem({
              ...(item ?? { jid: contact, subscription: "none", groups: [] }),
              approved: true,
            });
          }
        }
        return;
      }
      case "unsubscribe": {
        if (item !== undefined && (sub === "to" || sub === "both" || item.ask)) {
          const { ask: _ask, ...rest } = item;
          await this.#putItem({
            ...rest,
            subscription: sub === "both" ? "from" : sub === "to" ? "none" : sub,
          });
        }
        this.#sendSubscription(contact, type, xmlText);
        return;
      }
      case "unsubscribed": {
        await this.#ctx.store.deletePendingSubscription(this.user, contact);
        if (item !== undefined && (sub === "from" || sub === "both" || item.approved)) {
          const { approved: _a, ...rest } = item;
          await this.#putItem({
            ...rest,
            subscription: sub === "both" ? "to" : sub === "from" ? "none" : sub,
          });
        }
        this.#sendSubscription(contact, type, xmlText);
        // §3.2.2: the contact no longer sees us; tell it we are gone.
        this.#sendUnavailableFromAll(contact);
        return;
      }
    }
  }

  /** Sends the current presence of each of our available resources to `to` (a JID of `user`). */
  #sendCurrentPresence(user: BareJid, to: string): void {
    for (const [full, state] of this.#availableSessions()) {
      this.#ctx.router.toUser({
        kind: "stanza",
        user,
        stanza: { name: "presence", type: "", from: full, to, id: "", xml: readdress(state.presence!, to) },
      });
    }
  }

  /** Sends unavailable presence from each of our available resources to `target`. */
  #sendUnavailableFromAll(target: string): void {
    const jid = parseJid(target);
    if (jid === undefined) return;
    for (const [full] of this.#availableSessions()) {
      const unavailable = `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(full)}" to="${escapeXML(target)}"/>`;
      this.#ctx.router.toUser({
        kind: "stanza",
        user: bareOf(jid),
        stanza: { name: "presence", type: "unavailable", from: full, to: target, id: "", xml: unavailable },
      });
    }
  }

  async #onSubscriptionIn(contact: BareJid, type: SubscriptionType, xmlText: string): Promise<void> {
    if (this.#isBlocked(contact)) return;
    const item = this.#roster.get(contact);
    const sub: Subscription = item?.subscription ?? "none";
    const deliver = () => {
      for (const [full] of this.#availableSessions()) this.#write(full, xmlText);
    };
    switch (type) {
      case "subscribe": {
        // RFC 6121 §3.1.3: already subscribed → answer for the user; pre-approved → approve now.
        if (sub === "from" || sub === "both") {
          this.#sendSubscription(contact, "subscribed");
          return;
        }
        if (item?.approved) {
          const { approved: _a, ...rest } = item;
          await this.#putItem({ ...rest, subscription: sub === "to" ? "both" : "from" });
          this.#sendSubscription(contact, "subscribed");
          // §3.1.5: an approval, even one given in advance, sends the user's current presence.
          this.#sendCurrentPresence(contact, contact);
          return;
        }
        if (!(await this.#accountExists())) return;
        await this.#ctx.store.putPendingSubscription(this.user, { from: contact, stanza: xmlText });
        deliver();
        return;
      }
      case "subscribed": {
        // RFC 6121 §3.1.6: only meaningful if we asked.
        if (item === undefined || !item.ask) return;
        const { ask: _ask, ...rest } = item;
        await this.#putItem({ ...rest, subscription: sub === "from" ? "both" : sub === "none" ? "to" : sub });
        deliver();
        return;
      }
      case "unsubscribe": {
        await this.#ctx.store.deletePendingSubscription(this.user, contact);
        if (item !== undefined && (sub === "from" || sub === "both")) {
          await this.#putItem({ ...item, subscription: sub === "both" ? "to" : "none" });
          deliver();
          // RFC 6121 §3.3.3: the former subscriber sees every resource of ours go unavailable.
          this.#sendUnavailableFromAll(contact);
        }
        return;
      }
      case "unsubscribed": {
        if (item !== undefined && (sub === "to" || sub === "both" || item.ask)) {
          const { ask: _ask, ...rest } = item;
          await this.#putItem({
            ...rest,
            subscription: sub === "both" ? "from" : sub === "to" ? "none" : sub,
          });
          deliver();
        }
        return;
      }
    }
  }
}

/**
 * Whether a registration of session `sid` replaces `current` for the same full JID: the same
 * session again (a worker restart, `<enable resume>`); any session when the registered one is
 * dead (lost, or on a gone node), whatever the move counts: whatever that one did after the
 * registering copy was never replicated, or its own heir registers later with a higher count
 * and wins in turn, and nothing it did not replicate was acknowledged to anyone (sim seeds
 * 1028, 1909); a copy given back by a dead taker over that taker's registration (`replaces`,
 * before this actor hears of the crash); a strictly higher move count (a resumption or a
 * promotion moved it on); at an
 * equal count, of two sessions that came from the same owner, the one a client adopted over a
 * promoted copy (a ghost whose owner's rep-end was lost), and of two promoted copies of one
 * replication stream, the one that holds more.
 */
export function supersedes(
  current: SessionState,
  sid: string,
  state: SessionRegistration,
  isGone: (shard: number) => boolean,
): boolean {
  if (current.sid === sid) return true;
  if (current.lost === true || isGone(current.shard)) return true;
  // The same copy promoted again because the worker that adopted it died (ReplicaHost.restore):
  // that worker's registration is dead, though this actor may not have heard of the crash yet
  // (sim seed 32403: told stale, the re-promoted copy ended and the session was lost).
  if (state.replaces !== undefined && current.sid.startsWith(state.replaces)) return true;
  const had = current.moves ?? 0;
  const has = state.moves ?? 0;
  if (has !== had) return has > had;
  // Two promoted copies of one stream (a replaced replica kept until its successor held the
  // session, and that successor): the one that holds more.
  if (state.promoted === true && current.promoted === true && state.copyOf?.stream === current.copyOf?.stream)
    return (state.copyOf?.lsn ?? 0) > (current.copyOf?.lsn ?? 0);
  return state.promoted !== true && current.promoted === true;
}

/** A write's dedupe key and its sender's accept request, when it has them. */
function carried(m: { dedupe?: string; accept?: { shard: number; rid: number }; at?: number }): {
  dedupe?: string;
  accept?: { shard: number; rid: number };
  at?: number;
} {
  return {
    ...(m.dedupe === undefined ? {} : { dedupe: m.dedupe }),
    ...(m.accept === undefined ? {} : { accept: m.accept }),
    ...(m.at === undefined ? {} : { at: m.at }),
  };
}

/**
 * Whether a message goes to the user's carbons-enabled resources (XEP-0280 §6); a stanza from a
 * release before `carbon` says only whether it was private (rolling upgrades).
 */
function carbonOf(stanza: RoutedStanza): boolean {
  return stanza.carbon ?? (stanza.type === "chat" && stanza.noCopy !== true);
}

/** A write handed back by a worker (session-gone), to keep for the session or send on. */
function waitingOf(
  xml: string,
  m: { storable?: boolean; dedupe?: string; accept?: { shard: number; rid: number }; at?: number },
): WaitingWrite {
  return { xml, storable: m.storable ?? false, ...carried(m) };
}

/** The session write for a kept write. */
function writeOf(w: WaitingWrite) {
  return { kind: "write" as const, xml: w.xml, isMessage: w.storable, ...carried(w) };
}

function itemElement(item: RosterItem): Element {
  const el = xml("item", {
    jid: item.jid,
    subscription: item.subscription,
    name: item.name,
    ask: item.ask ? "subscribe" : undefined,
    approved: item.approved ? "true" : undefined,
  });
  for (const group of item.groups) el.c("group").t(group);
  return el;
}

/** XEP-0203: stamp a stored message with the time it was stored. */
function addDelay(stanzaXml: string, domain: string, at: number): string {
  const stamp = new Date(at).toISOString();
  const close = stanzaXml.lastIndexOf("</");
  const delay = `<delay xmlns="${NS_DELAY}" from="${escapeXML(domain)}" stamp="${stamp}">Offline Storage</delay>`;
  if (close === -1 || !stanzaXml.endsWith(">")) {
    // Self-closing root: open it up.
    const end = stanzaXml.lastIndexOf("/>");
    return `${stanzaXml.slice(0, end)}>${delay}</message>`;
  }
  return `${stanzaXml.slice(0, close)}${delay}${stanzaXml.slice(close)}`;
}

/** XEP-0280 §5/§6: wrap a message in a carbon copy addressed to one of the user's resources. */
function wrapCarbon(direction: "sent" | "received", user: BareJid, to: FullJid, stanzaXml: string): string {
  return (
    `<message xmlns="${NS_CLIENT}" from="${escapeXML(user)}" to="${escapeXML(to)}" type="chat">` +
    `<${direction} xmlns="${NS_CARBONS}"><forwarded xmlns="${NS_FORWARD}">${stanzaXml}</forwarded></${direction}></message>`
  );
}

function readdressFrom(stanzaXml: string, to: string, from: string): string {
  const el = parseElement(stanzaXml);
  el.attrs.to = to;
  el.attrs.from = from;
  return el.toString();
}

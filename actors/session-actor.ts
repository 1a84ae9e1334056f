/** How long a shard remembers that a session moved away (writes may still be on their way). */
const MOVED_MEMORY_MS = 60_000;

function rememberMoved(moved: Map<string, number>, sid: string): void {
  const now = Date.now();
  for (const [old, at] of moved) {
    if (now - at < MOVED_MEMORY_MS) break;
    moved.delete(old);
  }
  moved.set(sid, now);
}

/**
 * SessionActor: one bound client session (a full JID), pinned to the worker that holds its
 * socket. It stamps and routes what the client sends, writes what the user's actor delivers,
 * and keeps the XEP-0198 counters and the log of unacknowledged stanzas. When the socket dies
 * with stream management enabled, the session stays detached until the client resumes it (on
 * any worker of the node) or the resumption timeout ends it.
 */
import { randomBytes } from "node:crypto";
import { type Element, escapeXML, xml } from "@xmpp/xml";
import type { Logger } from "../src/log.ts";
import { type BareJid, bareOf, type FullJid, parseJid } from "../src/xmpp/jid.ts";
import {
  NS_BLOCKING,
  NS_BLOCKING_ERRORS,
  NS_CARBONS,
  NS_CHAT_MARKERS,
  NS_CHATSTATES,
  NS_CLIENT,
  NS_HINTS,
  NS_RECEIPTS,
  NS_ROSTER,
  NS_SM,
} from "../src/xmpp/ns.ts";
import {
  errorReply,
  handledCountTooHighXml,
  readdress,
  serializeStanza,
  smFailedXml,
} from "../src/xmpp/stanza.ts";
import type { ClientLink } from "../src/xmpp/stream-host.ts";
import { bounceStanza, routedOf } from "./bounce.ts";
import type { RoutedStanza, SessionLocation, SessionMessage, SessionRegistration } from "./messages.ts";
import type { SessionContext } from "./session-context.ts";
import { handleAccountIq, handleOtherUserIq, handleServerIq } from "./session-iq.ts";
import {
  ackStanding,
  applySessionChange,
  type ChainMark,
  cloneSessionState,
  type DeferrableChange,
  newSessionState,
  RECENT_DEDUPE_KEYS,
  SEQ_MOD,
  type SessionChange,
  type SessionSnapshot,
  unackedAfter,
} from "./session-state.ts";

export type { SessionSnapshot } from "./session-state.ts";

/**
 * XEP-0198 §4: the server may request an acknowledgement at any time. Asking once this many
 * stanzas are unacknowledged (one request outstanding at a time) keeps the log short without
 * a round trip per stanza.
 */
const SM_REQUEST_ACK_AFTER = 10;

/** Answers to requests a session remembers (see `#answeredIqs`): more than the log holds in practice. */
const MAX_ANSWERED_IQS = 256;

/** RFC 6121 §5.2.2's message types. */
const MESSAGE_TYPES: ReadonlySet<string> = new Set(["chat", "error", "groupchat", "headline", "normal"]);

/** Payloads that make a message one for carbons whatever its type (XEP-0280 §6). */
const IM_PAYLOADS: ReadonlySet<string | undefined> = new Set([NS_CHATSTATES, NS_RECEIPTS, NS_CHAT_MARKERS]);

/** Recipients of directed presence remembered per session (RFC 6121 §4.6). */
const MAX_DIRECTED_PRESENCES = 1000;

/**
 * iq requests a session may have in its handlers at once (store reads and writes, password
 * hashing); past it the socket stops being read until one finishes.
 */
const MAX_IQS_IN_FLIGHT = 16;

/** The socket side of a session, provided by the c2s connection (TCP or, later, WebSocket). */
export type { ClientLink };

/** A sender's request to hear that a stanza is safe (see ShardRouter.toUser). */
export interface AcceptRequest {
  shard: number;
  rid: number;
}

/**
 * The owner's end of a session's replication (src/cluster/session-replicas.ts ReplicaStream):
 * changes are pushed as they are applied, `ackedLsn` is what every replica holds.
 */
export interface SessionReplicaStream {
  /** The stream's id (ReplicaStream.id): a write a replica passed on names the stream it copies. */
  readonly id: string;
  /** The one replica, when there is exactly one and no re-seat is under way (ReplicaStream). */
  readonly soleReplica: number | undefined;
  push(change: SessionChange): number;
  /** Pushes a change that may wait to share a batch (`cluster.replicationBatchMs`). */
  pushDeferred(change: DeferrableChange): number;
  /** Sends the changes that wait for a batch now: something waits for them. */
  hurry(): void;
  /** The last change pushed. */
  readonly lsn: number;
  readonly ackedLsn: number;
  /** Sends the whole state to every replica again (their copy may have been replaced). */
  resync(): void;
  /** Lent: no re-initialisation of silent replicas meanwhile (they may hold the taker's copy). */
  quiet: boolean;
  end(): void;
}

/**
 * How long a session lent to a resumption elsewhere waits for the taker to confirm before it
 * becomes resumable here again (the taker asks for RESUME_TAKE_TIMEOUT_MS, 3 s, and confirms
 * once its own replicas hold the session).
 */
const LEND_TIMEOUT_MS = 10_000;

/** One session as an operator's listing shows it. */
export interface SessionOverview {
  jid: FullJid;
  /** The client's address; absent while the session waits for resumption. */
  address?: string;
  /** A client is connected to it now (false: waiting for XEP-0198 resumption). */
  connected: boolean;
  resumable: boolean;
  available: boolean;
  priority: number;
}

/** A bound session. */
export class SessionActor {
  readonly full: FullJid;
  readonly bare: BareJid;
  /** This session's id on its worker (see SessionLocation.sid). */
  readonly sid: string;
  readonly #ctx: SessionContext;
  readonly #log: Logger;
  #link: ClientLink | undefined;
  /**
   * The state that survives this worker (actors/session-state.ts), changed only through
   * {@link #change}; `handledIn` counts the client's stanzas that are accepted (safe).
   */
  #s: SessionSnapshot;
  // XEP-0198 state that stays here
  #smEnabled = false;
  #token: string | undefined;
  /** Stanzas received from the client (accepted or not). */
  #received = 0;
  /** Sequence numbers of received stanzas still waiting to be accepted, ascending. */
  #inPending: number[] = [];
  /** A `<r/>` from the client waits for an answer (see {@link #answerAck}). */
  #ackWanted = false;
  #ackTimer: NodeJS.Timeout | undefined;
  #ackRequested = false;
  /**
   * The requests the client answered lately ("<requester>\n<id>"), oldest first: one still in
   * the log when the session ends is not answered with an error too (RFC 6120 §8.2.3: one
   * response per request).
   */
  #answeredIqs = new Map<string, number>();
  /** UTF-8 bytes of the stanzas in the XEP-0198 log, against `limits.smMaxUnackedBytes`. */
  #unackedBytes = 0;
  #resumeTimer: NodeJS.Timeout | undefined;
  // Replication (src/cluster/session-replicas.ts)
  #stream: SessionReplicaStream | undefined;
  /** Stanzas written but not yet on every replica: [lsn, xml or undefined when detached, accept]. */
  #unreplicated: [number, string | undefined, AcceptRequest | undefined][] = [];
  /** The last pushed inbound count and its lsn; replicated once the replicas hold that lsn. */
  #inPushed: [number, number] = [0, 0];
  #inReplicated = 0;
  #inPushScheduled = false;
  // Derived lookups
  #blocklist = new Set<string>();
  #dedupe: Set<string> | undefined;
  #ended = false;
  #iqsInFlight = 0;
  /**
   * For a replica promoted after its owner died and not adopted by a client yet: its outbound
   * count at promotion. What it logged after that reached no one if it turns out a ghost.
   */
  #promotedAt: number | undefined;
  /** For a promoted replica: the owner's stream and the lsn its copy held (SessionRegistration.copyOf). */
  #copyOf: { stream: string; lsn: number } | undefined;
  /** Lent to a resumption on another connection until it confirms ({@link lendForResume}). */
  #lentTimer: NodeJS.Timeout | undefined;
  /** Called once the replicas hold what was pushed by then: [lsn, callback]. */
  #replicatedWaiters: [number, () => void][] = [];
  /** Writes waiting for {@link release} (while binding). */
  #held: [string, boolean, string | undefined, AcceptRequest | undefined, number | undefined][] | undefined;

  /**
   * A session on `link`, or, with a `snapshot` and no link, a detached session (a resumption
   * that lost its new socket, or a replica promoted after its owner died).
   */
  constructor(
    full: FullJid,
    ctx: SessionContext,
    link: ClientLink | undefined,
    snapshot?: SessionSnapshot,
    options: {
      hold?: boolean;
      promoted?: boolean;
      copyOf?: { stream: string; lsn: number };
      /**
       * For a session made of a replica's copy (promoted, or taken by a resumption): tells the
       * copy's holder it may drop it. Called once, when the replicas hold the session or it ends.
       */
      releaseCopy?: () => void;
      /** For a copy promoted again: the dead adopter it replaces (SessionRegistration.replaces). */
      replaces?: string;
    } = {},
  ) {
    if (options.hold) this.#held = [];
    if (options.promoted) this.#promotedAt = snapshot?.sentOut ?? 0;
    this.#copyOf = options.copyOf;
    this.#replaces = options.replaces;
    this.full = full;
    this.bare = bareOf(parseJid(full)!);
    this.sid = ctx.nextSid();
    this.#ctx = ctx;
    this.#link = link;
    this.#log = ctx.log.child({ jid: full });
    this.#s = snapshot ?? newSessionState(full, "");
    for (const [, xml] of this.#s.unacked) this.#unackedBytes += Buffer.byteLength(xml);
    if (snapshot !== undefined) {
      this.#smEnabled = true;
      this.#token = snapshot.token;
      this.#received = snapshot.handledIn;
      this.#inReplicated = snapshot.handledIn;
      // What the snapshot's count stands for once the new replicas hold it: an acknowledgement
      // of the initial state must not take the count back to 0 (h went back after a resumption
      // until the client's next stanza; sim seed 3231).
      this.#inPushed = [0, snapshot.handledIn];
      this.#blocklist = new Set(snapshot.blocklist);
      // A copy promoted beside a live session of the same id here stays out: a ghost, unless it
      // is ahead of that session (client-stream-host.ts adoptCopy puts it in then).
      if (options.promoted !== true || !ctx.resumable.has(snapshot.token))
        ctx.resumable.set(snapshot.token, this);
      this.#startReplication();
      if (options.releaseCopy !== undefined) {
        // Make before break: the copy stays where it was until our replicas hold the session,
        // so a crash of this worker before then loses nothing (sim seed 3941).
        this.#releaseCopy = options.releaseCopy;
        this.whenReplicated(this.#copyReleased);
      }
    }
  }

  /** See the constructor's `replaces`. */
  readonly #replaces: string | undefined;

  /** See the constructor's `releaseCopy`. */
  #releaseCopy: (() => void) | undefined;

  readonly #copyReleased = (): void => {
    const release = this.#releaseCopy;
    this.#releaseCopy = undefined;
    release?.();
  };

  /** The XEP-0198 resumption id, when resumption is enabled. */
  get token(): string | undefined {
    return this.#token;
  }

  /**
   * Restored after a lend that was never confirmed, and not registered yet as the session of its
   * full JID: a resumption is told "pending" (the taker may hold the session), and its end, if
   * it comes to that, is quiet (what it held went with the snapshot). See UserActor standby.
   */
  get standby(): boolean {
    return this.#standby;
  }

  #standby = false;

  /** What an operator's session listing shows of this session (`GET /api/sessions`). */
  summary(): SessionOverview {
    return {
      jid: this.full,
      ...(this.#link === undefined ? {} : { address: this.#link.remoteAddress }),
      connected: this.#link !== undefined,
      resumable: this.#token !== undefined,
      available: this.#s.presence !== undefined,
      priority: this.#s.priority,
    };
  }

  /**
   * Whether a copy of this session (`other`, promoted elsewhere) supersedes this one: it moved
   * more often. At an equal count the UserActor keeps a session a client bound or resumed over
   * a promoted copy (user-actor.ts `supersedes`), whatever either wrote.
   */
  isBehind(other: SessionSnapshot): boolean {
    return other.moves > this.#s.moves;
  }

  /** What the UserActor must know to rebuild its entry for this session. */
  registration(): SessionRegistration {
    return {
      presence: this.#s.presence,
      priority: this.#s.priority,
      carbons: this.#s.carbons,
      rosterInterest: this.#s.rosterInterest,
      blocklistInterest: this.#s.blocklistInterest,
      resumable: this.#token !== undefined,
      moves: this.#s.moves,
      ...(this.#promotedAt === undefined
        ? {}
        : { promoted: true, ...(this.#copyOf === undefined ? {} : { copyOf: this.#copyOf }) }),
      // Promoted or taken by a resumption, the copy given back by a dead taker replaces it.
      ...(this.#replaces === undefined ? {} : { replaces: this.#replaces }),
      ...(this.#standby ? { restored: true } : {}),
    };
  }

  /** Applies a change here and streams it to the replicas; returns its lsn (0: not replicated). */
  #change(change: SessionChange): number {
    applySessionChange(this.#s, change);
    return this.#stream?.push(change) ?? 0;
  }

  /** {@link #change} for a change that may wait to share a batch with other sessions'. */
  #changeLater(change: DeferrableChange): number {
    applySessionChange(this.#s, change);
    return this.#stream?.pushDeferred(change) ?? 0;
  }

  /** Starts streaming to replicas (once resumption is enabled, or on a resumed session). */
  #startReplication(): void {
    this.#stream = this.#ctx.replication.open(
      this.#s,
      (lsn) => this.#onReplicated(lsn),
      this.#promotedAt === undefined ? undefined : this.#copyOf,
    );
  }

  /** Every replica holds the changes up to `lsn`: what waited for them goes out. */
  #onReplicated(lsn: number): void {
    let done = 0;
    for (const [at, text, accept] of this.#unreplicated) {
      if (at > lsn) break;
      done++;
      if (text !== undefined) this.#sendToClient(text);
      if (accept !== undefined) this.#ctx.router.accept(accept);
    }
    if (done > 0) this.#unreplicated.splice(0, done);
    if (this.#inPushed[0] <= lsn) this.#inReplicated = this.#inPushed[1];
    this.#answerAck();
    while (this.#replicatedWaiters.length > 0 && this.#replicatedWaiters[0]![0] <= lsn) {
      this.#replicatedWaiters.shift()![1]();
    }
  }

  /** Runs `then` once every replica holds everything pushed so far (at once without replicas). */
  whenReplicated(then: () => void): void {
    const stream = this.#stream;
    if (stream === undefined || stream.ackedLsn >= stream.lsn) return then();
    this.#replicatedWaiters.push([stream.lsn, then]);
    stream.hurry();
  }

  /**
   * A resumption that this session refused (its `h` did not fit the log) found no other holder:
   * the session ends as if its window had passed (its unacknowledged stanzas go to offline
   * storage), so a client that counts wrong starts afresh rather than leave a ghost of itself
   * online for the window. False when it is lent or ended meanwhile.
   */
  endRefused(): boolean {
    if (this.#ended || this.#lentTimer !== undefined || this.#standby) return false;
    this.#log.info({ sid: this.sid }, "a resumption refused this session's log; the session ends");
    const old = this.#link;
    this.#link = undefined;
    this.#expire();
    old?.closeWithError("conflict", "resumed on another connection");
    return true;
  }

  /** Applies the blocklist sent with the bind reply. */
  setBlocklist(list: string[]): void {
    this.#change({ c: "flags", blocklist: list });
    this.#blocklist = new Set(list);
  }

  // --- inbound from the client ----------------------------------------------------------

  /** Handles one stanza or XEP-0198 element from the client. */
  handle(el: Element): void {
    if (el.attrs.xmlns === NS_SM) return this.#onSmElement(el);
    if (el.name !== "message" && el.name !== "presence" && el.name !== "iq") {
      this.#link?.closeWithError("unsupported-stanza-type", `<${el.name}/> is not a stanza`);
      return;
    }
    if (!this.#smEnabled) return this.#handleStanza(el);
    // XEP-0198: the stanza counts in 'h' once it is safe; routing may defer that (#acceptLater).
    this.#received = (this.#received + 1) % SEQ_MOD;
    const seq = this.#received;
    this.#inPending.push(seq);
    this.#deferredIn = false;
    try {
      this.#handleStanza(el);
    } finally {
      if (!this.#deferredIn) this.#acceptIn(seq);
    }
  }

  /** Set while a stanza's acceptance is left to whoever it was routed to. */
  #deferredIn = false;

  /**
   * For the stanza being handled: a key that names it across resumptions (the session's token
   * and the stanza's XEP-0198 number, so a copy the client re-sends after a crash is dropped by
   * the recipient) and a callback that accepts it, or nothing when stream management is off.
   */
  #acceptLater(): { key: string; onAccepted: () => void } | undefined {
    if (!this.#smEnabled || this.#inPending.length === 0) return undefined;
    const seq = this.#inPending[this.#inPending.length - 1]!;
    this.#deferredIn = true;
    return {
      key: `${this.#s.token === "" ? this.sid : this.#s.token}#${seq}`,
      onAccepted: () => this.#acceptIn(seq),
    };
  }

  /** Stanza `seq` from the client is safe: 'h' may count it once everything before it is. */
  #acceptIn(seq: number): void {
    const at = this.#inPending.indexOf(seq);
    if (at < 0) return;
    this.#inPending.splice(at, 1);
    const accepted =
      this.#inPending.length === 0 ? this.#received : (this.#inPending[0]! - 1 + SEQ_MOD) % SEQ_MOD;
    if (this.#ended) {
      // Accepted after the session ended (it ended at once, at a limit): a late <resume/> gets
      // <failed h/> with it counted, or the client re-sends it under a new key, and it arrives twice.
      this.#s.handledIn = accepted;
      const remembered = this.#token === undefined ? undefined : this.#ctx.expiredResumable.get(this.#token);
      if (remembered !== undefined) remembered.handledIn = accepted;
      return;
    }
    if (accepted === this.#s.handledIn) return;
    if (this.#stream === undefined) {
      applySessionChange(this.#s, { c: "in", handledIn: accepted });
      this.#inReplicated = accepted;
      this.#answerAck();
      return;
    }
    this.#s.handledIn = accepted;
    // One replicated count per turn, not one per stanza.
    if (this.#inPushScheduled) return;
    this.#inPushScheduled = true;
    queueMicrotask(() => {
      this.#inPushScheduled = false;
      if (this.#stream === undefined || this.#ended) return;
      const value = this.#s.handledIn;
      this.#inPushed = [this.#stream.pushDeferred({ c: "in", handledIn: value }), value];
      // A client waiting for <a/> waits for this count: it goes now, not with the batch.
      if (this.#ackWanted) this.#stream.hurry();
      // With no replica at the moment, nothing will acknowledge it: it is as safe as it gets.
      if (this.#inPushed[0] <= this.#stream.ackedLsn) this.#onReplicated(this.#stream.ackedLsn);
    });
  }

  /** The client's stanzas that are accepted and, with replicas, whose count they hold. */
  get #safeIn(): number {
    return this.#stream === undefined ? this.#s.handledIn : this.#inReplicated;
  }

  /**
   * Answers a pending `<r/>` once every stanza received so far is accepted and replicated, so
   * an acknowledged stanza survives any single failure (CLUSTER.md "Hot replication"); after
   * `cluster.requestTimeoutMs` it answers with what is safe by then.
   */
  #answerAck(): void {
    if (!this.#ackWanted || this.#link === undefined) return;
    const safe = this.#safeIn;
    if (safe !== this.#received) {
      // Every stanza is accepted and only their count waits, for the replication batch: it goes
      // now (a count still waiting for a stanza's acceptance goes when it is pushed).
      if (this.#inPending.length === 0) this.#stream?.hurry();
      if (this.#ackTimer === undefined) {
        this.#ackTimer = setTimeout(() => {
          this.#ackTimer = undefined;
          if (!this.#ackWanted) return;
          this.#ackWanted = false;
          this.#link?.send(`<a xmlns="${NS_SM}" h="${this.#safeIn}"/>`);
        }, this.#ctx.config.cluster.requestTimeoutMs);
        this.#ackTimer.unref();
      }
      return;
    }
    this.#ackWanted = false;
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#link.send(`<a xmlns="${NS_SM}" h="${safe}"/>`);
  }

  #handleStanza(el: Element): void {
    // RFC 6120 §8.1.2.1: the server stamps the full JID as 'from'.
    const claimed = el.attrs.from;
    if (claimed !== undefined && claimed !== this.full && claimed !== this.bare) {
      this.#link?.closeWithError("invalid-from", "the 'from' address does not match the stream's JID");
      return;
    }
    el.attrs.from = this.full;
    const toAttr = el.attrs.to;
    const to = toAttr === undefined ? undefined : parseJid(toAttr);
    if (toAttr !== undefined && to === undefined) {
      if (el.attrs.type !== "error") this.#reply(errorReply(el, "jid-malformed"));
      return;
    }
    if (to !== undefined) el.attrs.to = formatTo(to);
    if (el.name === "iq" && (el.attrs.type === "result" || el.attrs.type === "error") && this.#smEnabled) {
      // With the number of the last stanza written then: a later request reusing the id is not it.
      const key = `${el.attrs.to ?? ""}\n${el.attrs.id ?? ""}`;
      this.#answeredIqs.delete(key);
      this.#answeredIqs.set(key, this.#s.sentOut);
      if (this.#answeredIqs.size > MAX_ANSWERED_IQS)
        this.#answeredIqs.delete(this.#answeredIqs.keys().next().value!);
    }
    if (to !== undefined && to.domain !== this.#ctx.config.domain) {
      // There is no server-to-server federation yet.
      if (el.attrs.type !== "error") this.#reply(errorReply(el, "remote-server-not-found"));
      return;
    }
    switch (el.name) {
      case "message":
        return this.#onMessage(el, to);
      case "presence":
        return this.#onPresence(el, to);
      case "iq":
        if (++this.#iqsInFlight === MAX_IQS_IN_FLIGHT) this.#link?.pauseReading();
        return void this.#onIq(el, to).finally(() => {
          if (this.#iqsInFlight-- === MAX_IQS_IN_FLIGHT) this.#link?.resumeReading();
        });
    }
  }

  #onMessage(el: Element, to: ReturnType<typeof parseJid>): void {
    // RFC 6121 §5.2.2: a type nobody understands means "normal"; it is routed (and stored
    // offline, and copied) as one, and leaves without it, as ejabberd does.
    if (el.attrs.type !== undefined && !MESSAGE_TYPES.has(el.attrs.type)) delete el.attrs.type;
    const type = el.attrs.type ?? "normal";
    if (to === undefined) {
      el.attrs.to = this.bare;
      to = parseJid(this.bare)!;
    }
    if (to.local === "") {
      // Messages to the server itself have no handler.
      if (type !== "error" && type !== "headline" && type !== "groupchat") {
        this.#reply(errorReply(el, "service-unavailable"));
      }
      return;
    }
    if (this.#isBlocked(to) && type !== "error") {
      // XEP-0191 §3.5: sending to a blocked contact is refused with <blocked/>.
      return this.#reply(
        errorReply(el, "not-acceptable", { extra: xml("blocked", { xmlns: NS_BLOCKING_ERRORS }) }),
      );
    }
    const noCopy =
      el.getChild("private", NS_CARBONS) !== undefined || el.getChild("no-copy", NS_HINTS) !== undefined;
    const carbon =
      !noCopy &&
      (type === "chat" ||
        (type === "normal" && el.getChild("body") !== undefined) ||
        (type !== "error" &&
          type !== "groupchat" &&
          el.getChildElements().some((child) => IM_PAYLOADS.has(child.attrs.xmlns))));
    const storable =
      (type === "chat" || type === "normal") &&
      (el.getChild("body") !== undefined || el.getChild("store", NS_HINTS) !== undefined) &&
      el.getChild("no-store", NS_HINTS) === undefined;
    const stanza: RoutedStanza = {
      name: "message",
      type: el.attrs.type ?? "",
      from: this.full,
      to: el.attrs.to!,
      id: el.attrs.id ?? "",
      xml: serializeStanza(el),
      storable,
      carbon,
      ...(noCopy ? { noCopy } : {}),
    };
    const later = this.#acceptLater();
    this.#ctx.router.toUser(
      later === undefined
        ? { kind: "stanza", user: bareOf(to), stanza }
        : { kind: "stanza", user: bareOf(to), stanza, key: later.key },
      later?.onAccepted,
    );
    const otherCarbons = this.#s.carbonPeers - (this.#s.carbons ? 1 : 0);
    if (carbon && otherCarbons > 0) {
      this.#ctx.router.toUser({
        kind: "carbon-sent",
        user: this.bare,
        session: this.location(),
        xml: stanza.xml,
      });
    }
  }

  #onPresence(el: Element, to: ReturnType<typeof parseJid>): void {
    const type = el.attrs.type ?? "";
    if (to === undefined) {
      if (type !== "" && type !== "unavailable") return;
      const available = type === "";
      const priorityText = el.getChildText("priority");
      const priority = priorityText === null ? 0 : Number.parseInt(priorityText, 10);
      // RFC 6121 §4.7.2.3: priority is an integer between -128 and +127.
      if (!Number.isInteger(priority) || priority < -128 || priority > 127) {
        return this.#reply(errorReply(el, "bad-request"));
      }
      const xmlText = serializeStanza(el);
      this.#change({ c: "presence", presence: available ? xmlText : undefined, priority });
      this.#ctx.router.toUser({
        kind: "presence",
        user: this.bare,
        session: this.location(),
        xml: xmlText,
        priority,
        available,
      });
      if (!available) this.#sendUnavailableToDirected(xmlText);
      return;
    }
    const target = bareOf(to);
    if (type === "subscribe" || type === "subscribed" || type === "unsubscribe" || type === "unsubscribed") {
      // RFC 6121 §3.1.2: subscription requests are addressed to and stamped with bare JIDs.
      el.attrs.to = target;
      el.attrs.from = this.bare;
      this.#ctx.router.toUser({
        kind: "subscription-out",
        user: this.bare,
        session: this.location(),
        to: target,
        type,
        xml: serializeStanza(el),
      });
      return;
    }
    if (type === "probe") return; // Clients do not probe; the server does on their behalf.
    if (type !== "" && type !== "unavailable" && type !== "error") {
      return this.#reply(errorReply(el, "bad-request"));
    }
    if (this.#isBlocked(to) && type !== "error") return;
    // Directed presence (RFC 6121 §4.6).
    // The directed-presence set is bounded; beyond it no unavailable is sent on logout.
    if (type === "" && this.#s.directed.length < MAX_DIRECTED_PRESENCES) {
      if (!this.#s.directed.includes(el.attrs.to!)) this.#change({ c: "directed", add: el.attrs.to! });
    } else if (this.#s.directed.includes(el.attrs.to!)) this.#change({ c: "directed", remove: el.attrs.to! });
    this.#ctx.router.toUser({
      kind: "stanza",
      user: target,
      stanza: {
        name: "presence",
        type,
        from: this.full,
        to: el.attrs.to!,
        id: el.attrs.id ?? "",
        xml: serializeStanza(el),
      },
    });
  }

  #sendUnavailableToDirected(xmlText: string): void {
    for (const target of this.#s.directed) {
      const jid = parseJid(target);
      if (jid === undefined || jid.local === "") continue;
      this.#ctx.router.toUser({
        kind: "stanza",
        user: bareOf(jid),
        stanza: {
          name: "presence",
          type: "unavailable",
          from: this.full,
          to: target,
          id: "",
          xml: readdress(xmlText, target),
        },
      });
    }
    if (this.#s.directed.length > 0) this.#change({ c: "directed", clear: true });
  }

  async #onIq(el: Element, to: ReturnType<typeof parseJid>): Promise<void> {
    const type = el.attrs.type;
    const isRequest = type === "get" || type === "set";
    if (!isRequest && type !== "result" && type !== "error") {
      return this.#reply(
        errorReply(el, "bad-request", { text: "iq type must be get, set, result or error" }),
      );
    }
    if (isRequest && (el.getChildElements().length !== 1 || el.attrs.id === undefined)) {
      // RFC 6120 §8.2.3: a get or set has exactly one payload element and an id.
      return this.#reply(errorReply(el, "bad-request"));
    }
    try {
      if (to === undefined || (to.local !== "" && bareOf(to) === this.bare && to.resource === "")) {
        if (!isRequest) return;
        const payload = el.getChildElements()[0]!;
        if (payload.attrs.xmlns === NS_ROSTER || payload.attrs.xmlns === NS_BLOCKING) {
          // Remembered here too, so a re-registration restores who gets pushes.
          if (type === "get" && payload.attrs.xmlns === NS_ROSTER && !this.#s.rosterInterest)
            this.#change({ c: "flags", rosterInterest: true });
          if (type === "get" && payload.name === "blocklist" && !this.#s.blocklistInterest)
            this.#change({ c: "flags", blocklistInterest: true });
          this.#ctx.router.toUser({
            kind: "iq",
            user: this.bare,
            session: this.location(),
            xml: serializeStanza(el),
          });
          return;
        }
        if (
          payload.attrs.xmlns === NS_CARBONS &&
          type === "set" &&
          (payload.name === "enable" || payload.name === "disable")
        ) {
          await this.setCarbons(payload.name === "enable");
          return this.#reply(xml("iq", { type: "result", id: el.attrs.id, to: this.full }));
        }
        return this.#reply(await handleAccountIq(this.#ctx, this, el));
      }
      if (to.local === "") {
        if (!isRequest) return; // Answers to the server's own pings.
        return this.#reply(await handleServerIq(this.#ctx, this, el));
      }
      if (to.resource === "") {
        if (!isRequest) return;
        return this.#reply(await handleOtherUserIq(this.#ctx, this, el, bareOf(to)));
      }
      if (this.#isBlocked(to) && isRequest) {
        return this.#reply(
          errorReply(el, "not-acceptable", { extra: xml("blocked", { xmlns: NS_BLOCKING_ERRORS }) }),
        );
      }
      this.#ctx.router.toUser({
        kind: "stanza",
        user: bareOf(to),
        stanza: {
          name: "iq",
          type: type!,
          from: this.full,
          to: el.attrs.to!,
          id: el.attrs.id ?? "",
          xml: serializeStanza(el),
        },
      });
    } catch (error) {
      // A handler failure is internal-server-error for the client, logged once here.
      this.#log.error({ err: error }, "iq handler failed");
      if (isRequest) this.#reply(errorReply(el, "internal-server-error"));
    }
  }

  #isBlocked(to: NonNullable<ReturnType<typeof parseJid>>): boolean {
    if (this.#blocklist.size === 0) return false;
    const bare = bareOf(to);
    return (
      this.#blocklist.has(bare) ||
      this.#blocklist.has(to.domain) ||
      (to.resource !== "" && this.#blocklist.has(`${bare}/${to.resource}`))
    );
  }

  /** Where the UserActor reaches this session. */
  location(): SessionLocation {
    return { full: this.full, shard: this.#ctx.index, sid: this.sid };
  }

  /** Writes a reply the server generated to the client (counted by XEP-0198 like any stanza). */
  #reply(el: Element): void {
    if (el.attrs.to === undefined) el.attrs.to = this.full;
    this.write(el.toString(), false);
  }

  // --- outbound to the client -------------------------------------------------------------

  /** Whether a retained stanza with this key was written already (a re-sent copy). */
  #seen(key: string): boolean {
    this.#dedupe ??= new Set(this.#s.dedupe);
    return this.#dedupe.has(key);
  }

  /** Handles a message addressed to this session by an actor. */
  deliver(msg: SessionMessage): void {
    switch (msg.kind) {
      case "write":
        if (msg.chain !== undefined) {
          if (this.#writeChained(msg, msg.chain)) return;
          // Not by this route: the replica's copy of the write goes, and the write waits for the
          // replicas like any other (nothing accepts it before they hold it).
          this.#unchain(msg.chain);
        }
        if (msg.dedupe !== undefined && this.#seen(msg.dedupe)) {
          // Already written (and logged): safe once what is logged so far is replicated.
          if (msg.accept !== undefined) this.#acceptWhenReplicated(msg.accept);
          return;
        }
        return this.write(msg.xml, msg.isMessage ?? false, msg.dedupe, msg.accept, msg.at);
      case "conflict":
        // RFC 6120 §7.7.2.2: the replaced session gets <conflict/>.
        this.#ended = true;
        this.#rememberEnded();
        this.#link?.closeWithError("conflict", "Replaced by new connection");
        this.#finish(false);
        return;
      case "kick":
        // Ended, not detached: nothing to resume (the site signed the user out).
        this.#ended = true;
        this.#rememberEnded();
        this.#link?.closeWithError("policy-violation", msg.reason);
        this.#finish(false);
        return;
      case "stale":
        this.#endStale();
        return;
      case "active":
        this.#standby = false;
        return;
      case "carbon-peers":
        if (msg.enabled !== this.#s.carbonPeers) this.#change({ c: "flags", carbonPeers: msg.enabled });
        return;
      case "blocklist":
        this.setBlocklist(msg.list);
        return;
      default: {
        const never: never = msg;
        throw new TypeError(`unknown session message ${JSON.stringify(never)}`);
      }
    }
  }

  /** Sends what arrived while binding, after the bind result. */
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    const stored: string[] = [];
    const writtenAt: number[] = [];
    for (const [text, storable, key, accept, at] of held) {
      if (!this.#ended) {
        this.write(text, storable, key, accept, at);
        continue;
      }
      // The session ended on the way (its log passed a limit): the rest go where its log went.
      if (storable) {
        stored.push(text);
        writtenAt.push(at ?? 0);
      }
      if (accept !== undefined) this.#ctx.router.accept(accept);
    }
    if (stored.length > 0) {
      this.#ctx.router.toUser({ kind: "store-offline", user: this.bare, stanzas: stored, writtenAt });
    }
  }

  /**
   * Writes a stanza, logging it for XEP-0198 when enabled. A replicated session writes it to
   * the socket (and accepts it for its sender) only once every replica holds it. `at`: when the
   * user's actor routed it (see the session write message).
   */
  write(xmlText: string, storable: boolean, key?: string, accept?: AcceptRequest, at?: number): void {
    if (this.#ended) return;
    if (this.#held !== undefined) {
      this.#held.push([xmlText, storable, key, accept, at]);
      return;
    }
    // The oldest key leaves the window when a new one comes in (session-state.ts).
    const evicted =
      key !== undefined && this.#s.dedupe.length >= RECENT_DEDUPE_KEYS ? this.#s.dedupe[0] : undefined;
    if (!this.#smEnabled && key !== undefined) {
      // Without XEP-0198 nothing is logged, but a re-sent copy must still be dropped.
      this.#s.dedupe.push(key);
      if (evicted !== undefined) this.#s.dedupe.shift();
    }
    if (key !== undefined && this.#dedupe !== undefined) {
      this.#dedupe.add(key);
      if (evicted !== undefined) this.#dedupe.delete(evicted);
    }
    if (this.#smEnabled) {
      const lsn = this.#change(
        // A stanza that may end in offline storage keeps when the user's actor routed it (`at`,
        // that actor's clock, never this worker's: the actor compares it with bind times it
        // took): its delay stamp then says when delivery failed (XEP-0198 §4), not when the
        // session ended. A write from a release before `at` keeps none (stamped when stored).
        {
          c: "out",
          xml: xmlText,
          storable,
          ...(key === undefined ? {} : { key }),
          ...(storable && at !== undefined ? { at } : {}),
        },
      );
      this.#unackedBytes += Buffer.byteLength(xmlText);
      const limits = this.#ctx.config.limits;
      if (
        this.#s.unacked.length > limits.smMaxUnackedStanzas ||
        this.#unackedBytes > limits.smMaxUnackedBytes
      ) {
        // The client stopped acknowledging: end the session rather than grow without bound. The
        // byte limit also keeps the whole state, which a resumption sends to the replicas at
        // once, within what a peer link takes (config: at most a quarter of its budget); a state
        // larger than the link's budget overflowed it at every try, for ever. It ends now, not
        // resumable: a stream left to close would log (and replicate) every write until the
        // client answered or the close timed out, and the session would then wait for
        // <resume/> with all of it. Its log, this write included, goes to offline storage, so
        // this write's sender is answered with the others' (#finish); unanswered, the router
        // re-sent it 3 s later and it was delivered twice.
        // (A standby copy ends quietly, its log not stored: its sender hears nothing and re-sends.)
        if (accept !== undefined && !this.#standby) this.#unreplicated.push([lsn, undefined, accept]);
        const link = this.#link;
        this.#link = undefined;
        this.#expire();
        link?.closeWithError("policy-violation", "too many unacknowledged stanzas");
        return;
      }
      if (this.#stream !== undefined && lsn > this.#stream.ackedLsn) {
        this.#unreplicated.push([lsn, this.#link === undefined ? undefined : xmlText, accept]);
        return;
      }
    }
    if (accept !== undefined) this.#ctx.router.accept(accept);
    if (this.#link !== undefined) this.#sendToClient(xmlText);
  }

  /**
   * XEP-0280: copies on or off for this session; resolves once the UserActor has applied it and
   * told the other sessions, so a message sent from another resource right after is copied.
   */
  async setCarbons(enabled: boolean): Promise<void> {
    this.#change({ c: "flags", carbons: enabled });
    await this.#ctx.router.requestUser(
      (reqId) => ({ kind: "carbons", user: this.bare, session: this.location(), enabled, reqId }),
      this.#ctx.config.cluster.requestTimeoutMs,
    );
  }

  get smEnabled(): boolean {
    return this.#smEnabled;
  }

  #sendToClient(xmlText: string): void {
    if (this.#link === undefined) return;
    this.#link.send(xmlText);
    if (this.#smEnabled && !this.#ackRequested && this.#s.unacked.length >= SM_REQUEST_ACK_AFTER) {
      this.#ackRequested = true;
      this.#link.send(`<r xmlns="${NS_SM}"/>`);
    }
  }

  /**
   * A write the session's replica passed on (chain replication, src/cluster/session-replicas.ts
   * `ReplicaHost.chain`): the replica holds it, so when that replica is still the session's only
   * one, it is written to the client and accepted for its sender at once, with no round trip to
   * the replica; the replica learns it was written in the next batch (a deferred `out` change
   * with the mark). Returns false, having changed nothing, when it must go as an ordinary write:
   * the replica changed or is being replaced, the write is not the next one that replica passed
   * on (one before it never came here: were it written, the replica would append that one ahead
   * of it at a promotion), the session is not plainly live (binding, lent, a standby, ended), a
   * write still waits for the replicas (it would overtake it on the socket), it is a re-sent copy,
   * or it would pass the log's limits.
   */
  #writeChained(
    msg: Extract<SessionMessage, { kind: "write" }>,
    chain: NonNullable<typeof msg.chain>,
  ): boolean {
    const stream = this.#stream;
    if (
      this.#ended ||
      this.#held !== undefined ||
      !this.#smEnabled ||
      this.#standby ||
      this.#lentTimer !== undefined ||
      stream === undefined ||
      stream.quiet ||
      stream.id !== chain.stream ||
      stream.soleReplica !== chain.replica ||
      chain.seq !== (this.#s.chained?.via === chain.via ? this.#s.chained.seq + 1 : 1) ||
      this.#unreplicated.length > 0 ||
      msg.dedupe === undefined ||
      this.#seen(msg.dedupe)
    )
      return false;
    const bytes = Buffer.byteLength(msg.xml);
    const limits = this.#ctx.config.limits;
    if (
      this.#s.unacked.length + 1 > limits.smMaxUnackedStanzas ||
      this.#unackedBytes + bytes > limits.smMaxUnackedBytes
    )
      return false;
    const key = msg.dedupe;
    if (this.#s.dedupe.length >= RECENT_DEDUPE_KEYS) this.#dedupe?.delete(this.#s.dedupe[0]!);
    this.#dedupe?.add(key);
    const storable = msg.isMessage ?? false;
    const change = {
      c: "out" as const,
      xml: msg.xml,
      storable,
      key,
      ...(storable && msg.at !== undefined ? { at: msg.at } : {}),
      chain: { via: chain.via, seq: chain.seq },
    };
    applySessionChange(this.#s, change);
    stream.pushDeferred(change);
    this.#unackedBytes += bytes;
    if (msg.accept !== undefined) this.#ctx.router.accept(msg.accept);
    if (this.#link !== undefined) this.#sendToClient(msg.xml);
    return true;
  }

  /** Tells the replica that a write it passed on is not written by that route. */
  #unchain(chain: ChainMark): void {
    if (this.#stream === undefined || this.#ended) return;
    this.#changeLater({ c: "unchain", chain: { via: chain.via, seq: chain.seq } });
  }

  /** Accepts once everything logged so far is on every replica. */
  #acceptWhenReplicated(accept: AcceptRequest): void {
    const lsn = this.#stream?.lsn ?? 0;
    if (this.#stream === undefined || lsn <= this.#stream.ackedLsn) this.#ctx.router.accept(accept);
    else this.#unreplicated.push([lsn, undefined, accept]);
  }

  // --- XEP-0198 ---------------------------------------------------------------------------

  /**
   * Enables XEP-0198 (§3), resumable when asked, and returns the answer: `<enabled/>`, or
   * `<failed/>` when it already is. The stream sends it, or puts it in XEP-0386's `<bound/>`.
   */
  enableSm(resume: boolean): string {
    if (this.#smEnabled) {
      return smFailedXml("unexpected-request");
    }
    this.#smEnabled = true;
    if (!resume) return `<enabled xmlns="${NS_SM}"/>`;
    const max = this.#ctx.config.limits.smResumeTimeoutSeconds;
    this.#token = `${this.#ctx.index}.${randomBytes(18).toString("base64url")}`;
    this.#s.token = this.#token;
    this.#ctx.resumable.set(this.#token, this);
    this.#startReplication();
    // The UserActor learns the session is resumable: if its node dies, its contacts keep
    // seeing it while a replica takes it over.
    this.#ctx.router.toUser({
      kind: "relocate",
      user: this.bare,
      session: this.location(),
      state: this.registration(),
    });
    return `<enabled xmlns="${NS_SM}" id="${this.#token}" resume="true" max="${max}"/>`;
  }

  /** The client acknowledged up to `h` (a possible one): the log drops what it covers. */
  #ack(h: number, later: boolean): void {
    const drop = this.#s.unacked.length - Math.max(0, unackedAfter(this.#s, h));
    for (let i = 0; i < drop; i++) this.#unackedBytes -= Buffer.byteLength(this.#s.unacked[i]![1]);
    if (later) this.#changeLater({ c: "ack", h });
    else this.#change({ c: "ack", h });
  }

  #onSmElement(el: Element): void {
    switch (el.name) {
      case "enable":
        this.#link?.send(this.enableSm(el.attrs.resume === "true" || el.attrs.resume === "1"));
        return;
      case "r":
        if (!this.#smEnabled) return;
        this.#ackWanted = true;
        this.#answerAck();
        return;
      case "a": {
        if (!this.#smEnabled) return;
        const h = Number(el.attrs.h);
        switch (ackStanding(this.#s, h)) {
          case "ok":
            this.#ack(h, true);
            this.#ackRequested = false;
            return;
          case "stale":
            // Below an earlier acknowledgement: it tells nothing new, and XEP-0198 §4 asks for an
            // error only when h is too high (ejabberd ignores such an <a/> too). It still answers
            // our <r/>, so the next one may be asked.
            this.#log.debug({ h, sent: this.#s.sentOut }, "an <a/> below an earlier one; ignored");
            this.#ackRequested = false;
            return;
          case "too-high":
            // XEP-0198 §4, §6: a protocol error, with the counts for whoever debugs the client.
            this.#link?.closeWithError(
              "undefined-condition",
              "acknowledged more stanzas than were sent",
              handledCountTooHighXml(h, this.#s.sentOut),
            );
            return;
          case "invalid":
            this.#link?.closeWithError("undefined-condition", "an <a/> whose h is not a 32-bit count");
            return;
        }
        return;
      }
      case "resume":
        // After binding (XEP-0198 §5: resume instead of binding); §6: errors on <enable/> and
        // <resume/> are <failed/>, not stream errors.
        this.#link?.send(smFailedXml("unexpected-request"));
        return;
      default:
        this.#link?.closeWithError("unsupported-stanza-type", `unexpected <${el.name}/>`);
    }
  }

  /**
   * The socket closed. With resumption enabled the session waits for `<resume/>`; otherwise it
   * ends now. `clean` is true when the client closed the stream itself.
   */
  onLinkClosed(clean: boolean): void {
    if (this.#ended) return;
    this.#link = undefined;
    // Writes waiting for their replicas stay in the log; the resumed socket gets them from there.
    for (const entry of this.#unreplicated) entry[1] = undefined;
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#ackWanted = false;
    // Lent to a resumption: the taker or restore() decides what happens to it, not a timer.
    if (this.#lentTimer !== undefined) return;
    if (this.#token !== undefined && !clean) {
      const timeoutMs = this.#ctx.config.limits.smResumeTimeoutSeconds * 1000;
      // Once: a stream's end and its connection's each report it, and so does a lent session's
      // return (restore).
      if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
      this.#resumeTimer = setTimeout(() => this.#expire(), timeoutMs);
      this.#resumeTimer.unref();
      return;
    }
    this.#expire();
  }

  #expire(): void {
    if (this.#standby) return this.#endStale();
    if (this.#ended) return;
    this.#ended = true;
    this.#rememberEnded();
    this.#finish(true);
  }

  /**
   * A late `<resume/>` of this session gets `<failed h/>` with the count of the client's stanzas
   * handled (XEP-0198 1.6), so the client re-sends only the others: without it, a client whose
   * session was replaced or ended re-sent everything, and its contacts got the handled ones twice.
   */
  #rememberEnded(): void {
    if (this.#token !== undefined) rememberExpired(this.#ctx, this.#token, this.bare, this.#s.handledIn);
  }

  /** Ends the session: unacked messages go offline (XEP-0198 §5), presence goes unavailable. */
  #finish(unbind: boolean): void {
    this.#copyReleased();
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    // Another session of this id may hold the entry (a copy adopted ahead of this one).
    if (this.#token !== undefined && this.#ctx.resumable.get(this.#token) === this)
      this.#ctx.resumable.delete(this.#token);
    this.#ctx.sessions.delete(this.sid);
    this.#stream?.end();
    this.#stream = undefined;
    // Senders waiting for these writes: they are stored offline below or were written.
    for (const [, , accept] of this.#unreplicated) if (accept !== undefined) this.#ctx.router.accept(accept);
    this.#unreplicated = [];
    const stored: string[] = [];
    const writtenAt: number[] = [];
    for (const [seq, text, storable, at] of this.#s.unacked) {
      if (storable) {
        stored.push(text);
        writtenAt.push(at ?? 0);
      } else if (text.startsWith("<iq")) {
        // XEP-0198 §4 via RFC 6121 §8.5.3.2.1: a request to a resource that is gone gets an
        // error, or its sender waits for an answer that never comes.
        const iq = routedOf(text);
        const answeredAt = iq === undefined ? undefined : this.#answeredIqs.get(`${iq.from}\n${iq.id}`);
        // Answered if the answer came after this request was written (counts wrap at 2^32).
        const answered = answeredAt !== undefined && (answeredAt - seq + SEQ_MOD) % SEQ_MOD < SEQ_MOD / 2;
        if ((iq?.type === "get" || iq?.type === "set") && !answered)
          bounceStanza(this.#ctx.router, iq, "service-unavailable");
      }
    }
    this.#s.unacked = [];
    this.#unackedBytes = 0;
    if (stored.length > 0)
      this.#ctx.router.toUser({ kind: "store-offline", user: this.bare, stanzas: stored, writtenAt });
    // What waited for the replicas to hold the state (a lender's confirmation, a copy's release)
    // is over too: the state is in offline storage now. A lender left waiting came back after
    // its timeout as a ghost of this session, with the same log.
    const waiters = this.#replicatedWaiters;
    this.#replicatedWaiters = [];
    for (const [, then] of waiters) then();
    if (!unbind) return;
    const unavailable = `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(this.full)}"/>`;
    if (this.#s.presence !== undefined) this.#sendUnavailableToDirected(unavailable);
    this.#ctx.router.toUser({
      kind: "unbind",
      user: this.bare,
      session: this.location(),
      unavailable,
      directed: [],
    });
  }

  /**
   * The UserActor holds a newer registration of this full JID: this session is a ghost (a copy
   * promoted beside the session a client resumed from the same owner) or was left behind by a
   * move. It ends quietly: the live session speaks for the resource, so no unavailable presence
   * and no unbind, and its log is not stored offline (the live session holds or delivered it).
   * Only what a promoted ghost logged after its promotion reached no client: that goes back to
   * the UserActor, which follows the live session with it.
   */
  #endStale(): void {
    // Lent to a resumption: the taker's registration superseding this one is the expected
    // outcome; this session ends when the taker confirms, its log travelled with the snapshot.
    if (this.#ended || this.#lentTimer !== undefined) return;
    this.#ended = true;
    this.#copyReleased();
    this.#log.info({ sid: this.sid }, "a newer registration of this session exists; ending quietly");
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    if (this.#token !== undefined && this.#ctx.resumable.get(this.#token) === this)
      this.#ctx.resumable.delete(this.#token);
    this.#ctx.sessions.delete(this.sid);
    this.#stream?.end();
    this.#stream = undefined;
    for (const [, , accept] of this.#unreplicated) if (accept !== undefined) this.#ctx.router.accept(accept);
    this.#unreplicated = [];
    if (this.#promotedAt !== undefined) {
      const after = (this.#s.sentOut - this.#promotedAt + SEQ_MOD) % SEQ_MOD;
      for (const [, text, storable, at] of this.#s.unacked.slice(
        Math.max(0, this.#s.unacked.length - after),
      )) {
        this.#ctx.router.toUser({
          kind: "session-gone",
          user: this.bare,
          session: this.location(),
          xml: text,
          storable,
          ...(at === undefined ? {} : { at }),
        });
      }
    }
    this.#s.unacked = [];
    this.#unackedBytes = 0;
    this.#link?.closeWithError("conflict", "this session continues on another connection");
    this.#link = undefined;
  }

  /** Ends the session on server shutdown or connection teardown without resumption. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#finish(true);
  }

  /**
   * Lends the session to a resumption on another connection (XEP-0198 §5): trims what the
   * client acknowledged with `h` and returns the state; this instance goes quiet but keeps its
   * replicas until the taker confirms that it (and its own replicas) hold the session
   * ({@link confirmMoved}), and becomes resumable here again if the taker gives up or never
   * answers ({@link restore}): a reply lost with a paused node or a cut link loses nothing.
   * Returns undefined when the session is lent already or `h` is no 32-bit count. An `h` the
   * log cannot take (above what was sent, or below an earlier acknowledgement) is refused, with
   * the counts and nothing changed: another holder of the session (a copy ahead of this one)
   * may take it; if none does, the resumption asks this one to end ({@link endRefused}).
   */
  lendForResume(
    h: number,
  ): SessionSnapshot | { refused: "too-high" | "stale"; sent: number; handled: number } | undefined {
    if (this.#ended || this.#token === undefined || this.#lentTimer !== undefined) return undefined;
    const standing = ackStanding(this.#s, h);
    if (standing === "invalid") return undefined;
    if (standing !== "ok") {
      this.#log.info({ h, sent: this.#s.sentOut }, "resumption with an h the log cannot take; refused");
      return { refused: standing, sent: this.#s.sentOut, handled: this.#s.handledIn };
    }
    this.#ack(h, false);
    const old = this.#link;
    this.#link = undefined;
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    if (this.#ackTimer !== undefined) clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#ackWanted = false;
    this.#ctx.resumable.delete(this.#token);
    this.#ctx.sessions.delete(this.sid);
    this.#ctx.lent.set(this.sid, this);
    rememberMoved(this.#ctx.movedSids, this.sid);
    // Writes still waiting for replicas travel in the snapshot's log; their senders are
    // answered once the taker's replicas (or, if it comes back, ours) hold them.
    for (const entry of this.#unreplicated) entry[1] = undefined;
    if (this.#stream !== undefined) this.#stream.quiet = true;
    this.#lentTimer = setTimeout(() => this.restore(), LEND_TIMEOUT_MS);
    this.#lentTimer.unref();
    // XEP-0198 §5: a resumed session replaces a connection the server still believed alive.
    old?.closeWithError("conflict", "resumed on another connection");
    const snapshot = cloneSessionState(this.#s);
    snapshot.moves++;
    // The taker tells the client `<resumed h>` from this count, and its fallback if it dies is
    // our replicas: only what they hold may be claimed, or h would go back (sim seed 3231: a
    // replica paused while the client sent; h=4 claimed, then 1 from the promoted copy). The
    // stanzas above it were handled; the client sends them again under the same numbers, and
    // their recipients drop the copies by key.
    if (this.#stream !== undefined) snapshot.handledIn = this.#inReplicated;
    return snapshot;
  }

  /** The taker holds the session now, its replicas too: this one ends quietly. */
  confirmMoved(): void {
    if (this.#lentTimer === undefined) return;
    // The taker's replicas hold the session: whatever it was made of is not needed any more.
    this.#copyReleased();
    clearTimeout(this.#lentTimer);
    this.#lentTimer = undefined;
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    this.#ctx.lent.delete(this.sid);
    this.#ended = true;
    this.#stream?.end();
    this.#stream = undefined;
    for (const [, , accept] of this.#unreplicated) if (accept !== undefined) this.#ctx.router.accept(accept);
    this.#unreplicated = [];
  }

  /**
   * The resumption that took this session gave up or never confirmed: it is resumable here
   * again, registered with its actor as `restored` (it wins over a taker on a dead node), its
   * replicas re-initialised (the taker's may have replaced their copy).
   */
  restore(): void {
    if (this.#lentTimer === undefined) return;
    clearTimeout(this.#lentTimer);
    this.#lentTimer = undefined;
    this.#ctx.lent.delete(this.sid);
    if (this.#ended || this.#token === undefined) return;
    this.#log.warn(
      { sid: this.sid },
      "a resumption took this session but never confirmed; resumable here again",
    );
    // Its log went with the snapshot: if the taker turns out alive, nothing is handed back.
    this.#promotedAt = undefined;
    this.#standby = true;
    this.#ctx.sessions.set(this.sid, this);
    if (!this.#ctx.resumable.has(this.#token)) this.#ctx.resumable.set(this.#token, this);
    this.#ctx.movedSids.delete(this.sid);
    if (this.#stream !== undefined) this.#stream.quiet = false;
    this.#stream?.resync();
    this.#ctx.router.toUser({
      kind: "relocate",
      user: this.bare,
      session: this.location(),
      state: { ...this.registration(), restored: true, deadNodes: this.#ctx.router.goneNodes() },
    });
    this.onLinkClosed(false);
  }

  /** Sends `<resumed/>` and re-sends every unacknowledged stanza (XEP-0198 §5). */
  resumeOn(previd: string, sendResumed?: (resumed: string) => void): void {
    const resumed = `<resumed xmlns="${NS_SM}" h="${this.#s.handledIn}" previd="${escapeXML(previd)}"/>`;
    // What an operator looks for after a node died: who came back, and how much went again.
    this.#log.info(
      { event: "resumed", sid: this.sid, handled: this.#s.handledIn, resent: this.#s.unacked.length },
      "session resumed",
    );
    if (sendResumed === undefined) this.#link?.send(resumed);
    else sendResumed(resumed);
    // The log goes out once the new replicas hold it, like any write (the old ones dropped it).
    const lsn = this.#stream?.lsn ?? 0;
    const gated = this.#stream !== undefined && lsn > this.#stream.ackedLsn;
    for (const [, text] of this.#s.unacked) {
      if (gated) this.#unreplicated.push([lsn, text, undefined]);
      else this.#link?.send(text);
    }
    if (this.#s.unacked.length > 0) {
      this.#ackRequested = true;
      this.#link?.send(`<r xmlns="${NS_SM}"/>`);
    }
  }

  /** A detached session (promoted replica): waits for `<resume/>` like one whose socket closed. */
  detach(): void {
    this.onLinkClosed(false);
  }
}

function formatTo(jid: NonNullable<ReturnType<typeof parseJid>>): string {
  const bare = jid.local === "" ? jid.domain : `${jid.local}@${jid.domain}`;
  return jid.resource === "" ? bare : `${bare}/${jid.resource}`;
}

/** Expired resumption ids remembered per shard for `<failed h=…/>`; the oldest go first. */
const MAX_EXPIRED_RESUMABLE = 10_000;

function rememberExpired(ctx: SessionContext, token: string, user: string, handledIn: number): void {
  ctx.expiredResumable.set(token, { user, handledIn });
  if (ctx.expiredResumable.size > MAX_EXPIRED_RESUMABLE) {
    ctx.expiredResumable.delete(ctx.expiredResumable.keys().next().value!);
  }
}

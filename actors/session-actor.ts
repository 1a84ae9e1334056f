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

/** Retained-stanza keys a session remembers to drop re-sent copies. */
const RECENT_DEDUPE_KEYS = 1024;

/**
 * SessionActor: one bound client session (a full JID), pinned to the worker that holds its
 * socket. It stamps and routes what the client sends, writes what the user's actor delivers,
 * and keeps the XEP-0198 counters and the log of unacknowledged stanzas. When the socket dies
 * with stream management enabled, the session stays detached until the client resumes it (on
 * any worker of the node) or the resumption timeout ends it.
 */
import { randomBytes } from "node:crypto";
import { type Element, escapeXML, xml } from "@xmpp/xml";
import type { ShardContext } from "../src/cluster/shard-context.ts";
import type { StreamErrorCondition } from "../src/errors.ts";
import type { Logger } from "../src/log.ts";
import { handleAccountIq, handleOtherUserIq, handleServerIq } from "../src/xmpp/iq-handlers.ts";
import { type BareJid, bareOf, type FullJid, parseJid } from "../src/xmpp/jid.ts";
import {
  NS_BLOCKING,
  NS_BLOCKING_ERRORS,
  NS_CARBONS,
  NS_CLIENT,
  NS_HINTS,
  NS_ROSTER,
  NS_SM,
} from "../src/xmpp/ns.ts";
import { errorReply, readdress, serializeStanza } from "../src/xmpp/stanza.ts";
import type { RoutedStanza, SessionLocation, SessionMessage, SessionRegistration } from "./messages.ts";

/**
 * XEP-0198 §4: the server may request an acknowledgement at any time. Asking once this many
 * stanzas are unacknowledged (one request outstanding at a time) keeps the log short without
 * a round trip per stanza.
 */
const SM_REQUEST_ACK_AFTER = 10;

/** Recipients of directed presence remembered per session (RFC 6121 §4.6). */
const MAX_DIRECTED_PRESENCES = 1000;

/**
 * iq requests a session may have in its handlers at once (store reads and writes, password
 * hashing); past it the socket stops being read until one finishes.
 */
const MAX_IQS_IN_FLIGHT = 16;

/** The socket side of a session, provided by the c2s connection (TCP or, later, WebSocket). */
export interface ClientLink {
  send(xmlText: string): void;
  closeWithError(condition: StreamErrorCondition, text?: string): void;
  /** Closes the stream without an error (`</stream:stream>`). */
  close(): void;
  /** Stops reading the socket (inbound flow control) until {@link resumeReading}. */
  pauseReading(): void;
  resumeReading(): void;
  readonly remoteAddress: string;
}

/** Everything a session needs to continue on another worker (XEP-0198 resumption). */
export interface SessionSnapshot {
  full: FullJid;
  token: string;
  handledIn: number;
  sentOut: number;
  /** Unacknowledged outbound stanzas: [sequence number, xml, storable offline]. */
  unacked: [number, string, boolean][];
  presence: string | undefined;
  priority: number;
  carbons: boolean;
  carbonPeers: number;
  blocklist: string[];
  directed: string[];
  rosterInterest: boolean;
  blocklistInterest: boolean;
}

/** A bound session. */
export class SessionActor {
  readonly full: FullJid;
  readonly bare: BareJid;
  /** This session's id on its worker (see SessionLocation.sid). */
  readonly sid: string;
  readonly #ctx: ShardContext;
  readonly #log: Logger;
  #link: ClientLink | undefined;
  // XEP-0198 state
  #smEnabled = false;
  #token: string | undefined;
  #handledIn = 0;
  #sentOut = 0;
  #unacked: [number, string, boolean][] = [];
  #ackRequested = false;
  #resumeTimer: NodeJS.Timeout | undefined;
  // Presence and per-session flags
  #presence: string | undefined;
  #priority = 0;
  #carbons = false;
  #carbonPeers = 0;
  #blocklist = new Set<string>();
  #directed = new Set<string>();
  #rosterInterest = false;
  #blocklistInterest = false;
  #ended = false;
  #iqsInFlight = 0;
  /** Keys of recent retained-stanza writes: a copy re-sent after a node died is written once. */
  #recentDedupe: Set<string> | undefined;
  /** Writes waiting for {@link release} (while binding). */
  #held: [string, boolean][] | undefined;

  constructor(
    full: FullJid,
    ctx: ShardContext,
    link: ClientLink,
    snapshot?: SessionSnapshot,
    options: { hold?: boolean } = {},
  ) {
    if (options.hold) this.#held = [];
    this.full = full;
    this.bare = bareOf(parseJid(full)!);
    this.sid = ctx.nextSid();
    this.#ctx = ctx;
    this.#link = link;
    this.#log = ctx.log.child({ jid: full });
    if (snapshot !== undefined) {
      this.#smEnabled = true;
      this.#token = snapshot.token;
      ctx.resumable.set(snapshot.token, this);
      this.#handledIn = snapshot.handledIn;
      this.#sentOut = snapshot.sentOut;
      this.#unacked = snapshot.unacked;
      this.#presence = snapshot.presence;
      this.#priority = snapshot.priority;
      this.#carbons = snapshot.carbons;
      this.#carbonPeers = snapshot.carbonPeers;
      this.#blocklist = new Set(snapshot.blocklist);
      this.#directed = new Set(snapshot.directed);
      this.#rosterInterest = snapshot.rosterInterest;
      this.#blocklistInterest = snapshot.blocklistInterest;
    }
  }

  /** What the UserActor must know to rebuild its entry for this session. */
  registration(): SessionRegistration {
    return {
      presence: this.#presence,
      priority: this.#priority,
      carbons: this.#carbons,
      rosterInterest: this.#rosterInterest,
      blocklistInterest: this.#blocklistInterest,
    };
  }

  /** Applies the blocklist sent with the bind reply. */
  setBlocklist(list: string[]): void {
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
    if (this.#smEnabled) this.#handledIn = (this.#handledIn + 1) % 2 ** 32;

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
      noCopy,
    };
    this.#ctx.router.toUser({ kind: "stanza", user: bareOf(to), stanza });
    const otherCarbons = this.#carbonPeers - (this.#carbons ? 1 : 0);
    if (type === "chat" && !noCopy && otherCarbons > 0) {
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
      this.#priority = priority;
      const xmlText = serializeStanza(el);
      this.#presence = available ? xmlText : undefined;
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
    if (type === "" && this.#directed.size < MAX_DIRECTED_PRESENCES) this.#directed.add(el.attrs.to!);
    else this.#directed.delete(el.attrs.to!);
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
    for (const target of this.#directed) {
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
    this.#directed.clear();
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
          if (type === "get" && payload.attrs.xmlns === NS_ROSTER) this.#rosterInterest = true;
          if (type === "get" && payload.name === "blocklist") this.#blocklistInterest = true;
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
          this.#carbons = payload.name === "enable";
          // Answer once the UserActor has applied it and told the other sessions, so a message
          // sent from another resource right after the result is already copied.
          const enabled = this.#carbons;
          await this.#ctx.router.requestUser(
            (reqId) => ({ kind: "carbons", user: this.bare, session: this.location(), enabled, reqId }),
            this.#ctx.config.cluster.requestTimeoutMs,
          );
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

  #seen(key: string): boolean {
    this.#recentDedupe ??= new Set();
    if (this.#recentDedupe.has(key)) return true;
    this.#recentDedupe.add(key);
    // Re-sends follow a node's death within seconds; a window of recent keys is enough.
    if (this.#recentDedupe.size > RECENT_DEDUPE_KEYS) {
      this.#recentDedupe.delete(this.#recentDedupe.values().next().value!);
    }
    return false;
  }

  /** Handles a message addressed to this session by an actor. */
  deliver(msg: SessionMessage): void {
    switch (msg.kind) {
      case "write":
        if (msg.dedupe !== undefined && this.#seen(msg.dedupe)) return;
        return this.write(msg.xml, msg.isMessage ?? false);
      case "conflict":
        // RFC 6120 §7.7.2.2: the replaced session gets <conflict/>.
        this.#ended = true;
        this.#link?.closeWithError("conflict", "Replaced by new connection");
        this.#finish(false);
        return;
      case "carbon-peers":
        this.#carbonPeers = msg.enabled;
        return;
      case "blocklist":
        this.#blocklist = new Set(msg.list);
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
    for (const [text, storable] of held) this.write(text, storable);
  }

  /** Writes a stanza, logging it for XEP-0198 when enabled. */
  write(xmlText: string, storable: boolean): void {
    if (this.#ended) return;
    if (this.#held !== undefined) {
      this.#held.push([xmlText, storable]);
      return;
    }
    if (this.#smEnabled) {
      this.#sentOut = (this.#sentOut + 1) % 2 ** 32;
      this.#unacked.push([this.#sentOut, xmlText, storable]);
      if (this.#unacked.length > this.#ctx.config.limits.smMaxUnackedStanzas) {
        // The client stopped acknowledging: end the session rather than grow without bound.
        if (this.#link !== undefined)
          this.#link.closeWithError("policy-violation", "too many unacknowledged stanzas");
        else this.#expire();
        return;
      }
    }
    if (this.#link === undefined) return;
    this.#link.send(xmlText);
    if (this.#smEnabled && !this.#ackRequested && this.#unacked.length >= SM_REQUEST_ACK_AFTER) {
      this.#ackRequested = true;
      this.#link.send(`<r xmlns="${NS_SM}"/>`);
    }
  }

  // --- XEP-0198 ---------------------------------------------------------------------------

  #onSmElement(el: Element): void {
    switch (el.name) {
      case "enable": {
        if (this.#smEnabled) {
          this.#link?.send(
            `<failed xmlns="${NS_SM}"><unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`,
          );
          return;
        }
        this.#smEnabled = true;
        const resume = el.attrs.resume === "true" || el.attrs.resume === "1";
        if (resume) {
          this.#token = `${this.#ctx.index}.${randomBytes(18).toString("base64url")}`;
          this.#ctx.resumable.set(this.#token, this);
        }
        const max = this.#ctx.config.limits.smResumeTimeoutSeconds;
        this.#link?.send(
          resume
            ? `<enabled xmlns="${NS_SM}" id="${this.#token}" resume="true" max="${max}"/>`
            : `<enabled xmlns="${NS_SM}"/>`,
        );
        return;
      }
      case "r":
        if (this.#smEnabled) this.#link?.send(`<a xmlns="${NS_SM}" h="${this.#handledIn}"/>`);
        return;
      case "a": {
        if (!this.#smEnabled) return;
        const h = Number(el.attrs.h);
        if (!this.#acknowledge(h)) {
          // XEP-0198 §4: an h above what was sent is a protocol error.
          this.#link?.closeWithError("undefined-condition", "acknowledged more stanzas than were sent");
        }
        this.#ackRequested = false;
        return;
      }
      default:
        this.#link?.closeWithError("unsupported-stanza-type", `unexpected <${el.name}/>`);
    }
  }

  /** Drops stanzas the client acknowledged; false when `h` is impossible. */
  #acknowledge(h: number): boolean {
    if (!Number.isInteger(h) || h < 0 || h >= 2 ** 32) return false;
    const unackedCount = (this.#sentOut - h + 2 ** 32) % 2 ** 32;
    if (unackedCount > this.#unacked.length) return false;
    this.#unacked.splice(0, this.#unacked.length - unackedCount);
    return true;
  }

  /**
   * The socket closed. With resumption enabled the session waits for `<resume/>`; otherwise it
   * ends now. `clean` is true when the client closed the stream itself.
   */
  onLinkClosed(clean: boolean): void {
    if (this.#ended) return;
    this.#link = undefined;
    if (this.#token !== undefined && !clean) {
      const timeoutMs = this.#ctx.config.limits.smResumeTimeoutSeconds * 1000;
      this.#resumeTimer = setTimeout(() => this.#expire(), timeoutMs);
      this.#resumeTimer.unref();
      return;
    }
    this.#expire();
  }

  #expire(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#token !== undefined) rememberExpired(this.#ctx, this.#token, this.bare, this.#handledIn);
    this.#finish(true);
  }

  /** Ends the session: unacked messages go offline (XEP-0198 §5), presence goes unavailable. */
  #finish(unbind: boolean): void {
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    if (this.#token !== undefined) this.#ctx.resumable.delete(this.#token);
    this.#ctx.sessions.delete(this.sid);
    const stored = this.#unacked.filter(([, , storable]) => storable).map(([, text]) => text);
    this.#unacked = [];
    if (stored.length > 0)
      this.#ctx.router.toUser({ kind: "store-offline", user: this.bare, stanzas: stored });
    if (!unbind) return;
    const unavailable = `<presence xmlns="${NS_CLIENT}" type="unavailable" from="${escapeXML(this.full)}"/>`;
    if (this.#presence !== undefined) this.#sendUnavailableToDirected(unavailable);
    this.#ctx.router.toUser({
      kind: "unbind",
      user: this.bare,
      session: this.location(),
      unavailable,
      directed: [],
    });
  }

  /** Ends the session on server shutdown or connection teardown without resumption. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#finish(true);
  }

  /**
   * Hands the session over for resumption: trims what the client acknowledged with `h` and
   * returns the state; this instance goes quiet. Returns undefined when `h` is impossible.
   */
  takeForResume(h: number): SessionSnapshot | undefined {
    if (this.#ended || this.#token === undefined) return undefined;
    if (!this.#acknowledge(h)) return undefined;
    const old = this.#link;
    this.#link = undefined;
    this.#ended = true;
    if (this.#resumeTimer !== undefined) clearTimeout(this.#resumeTimer);
    this.#ctx.resumable.delete(this.#token);
    this.#ctx.sessions.delete(this.sid);
    rememberMoved(this.#ctx.movedSids, this.sid);
    // XEP-0198 §5: a resumed session replaces a connection the server still believed alive.
    old?.closeWithError("conflict", "resumed on another connection");
    return {
      full: this.full,
      token: this.#token,
      handledIn: this.#handledIn,
      sentOut: this.#sentOut,
      unacked: this.#unacked,
      presence: this.#presence,
      priority: this.#priority,
      carbons: this.#carbons,
      carbonPeers: this.#carbonPeers,
      blocklist: [...this.#blocklist],
      directed: [...this.#directed],
      rosterInterest: this.#rosterInterest,
      blocklistInterest: this.#blocklistInterest,
    };
  }

  /** After resumption: registers the token and re-sends every unacknowledged stanza. */
  resumeOn(previd: string): void {
    this.#link?.send(`<resumed xmlns="${NS_SM}" h="${this.#handledIn}" previd="${escapeXML(previd)}"/>`);
    for (const [, text] of this.#unacked) this.#link?.send(text);
    if (this.#unacked.length > 0) {
      this.#ackRequested = true;
      this.#link?.send(`<r xmlns="${NS_SM}"/>`);
    }
  }
}

function formatTo(jid: NonNullable<ReturnType<typeof parseJid>>): string {
  const bare = jid.local === "" ? jid.domain : `${jid.local}@${jid.domain}`;
  return jid.resource === "" ? bare : `${bare}/${jid.resource}`;
}

/** Expired resumption ids remembered per shard for `<failed h=…/>`; the oldest go first. */
const MAX_EXPIRED_RESUMABLE = 10_000;

function rememberExpired(ctx: ShardContext, token: string, user: string, handledIn: number): void {
  ctx.expiredResumable.set(token, { user, handledIn });
  if (ctx.expiredResumable.size > MAX_EXPIRED_RESUMABLE) {
    ctx.expiredResumable.delete(ctx.expiredResumable.keys().next().value!);
  }
}

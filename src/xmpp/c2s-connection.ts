/**
 * One client stream over TCP (RFC 6120): stream headers and features, STARTTLS, SASL, resource
 * binding and XEP-0198 resumption; once bound it hands stanzas to its {@link SessionActor}.
 * It owns the socket: write coalescing, the outbound buffer limit, the auth timeout, keepalive
 * pings, stream errors and the close handshake.
 */
import { randomBytes } from "node:crypto";
import type { Socket } from "node:net";
import { StringDecoder } from "node:string_decoder";
import { TLSSocket } from "node:tls";
import { type Element, escapeXML, xml } from "@xmpp/xml";
import {
  type ClientLink,
  SessionActor,
  type SessionActor as SessionActorType,
  type SessionSnapshot,
} from "../../actors/session-actor.ts";
import type { BindReply } from "../../actors/user-actor.ts";
import { createAccountRecordAsync } from "../auth/scram.ts";
import type { ShardContext } from "../cluster/shard-context.ts";
import { StreamError, type StreamErrorCondition } from "../errors.ts";
import type { Logger } from "../log.ts";
import { type BareJid, fullJid, normalizeLocal, normalizeResource, parseJid } from "./jid.ts";
import {
  NS_BIND,
  NS_CLIENT,
  NS_PRE_APPROVAL,
  NS_REGISTER,
  NS_REGISTER_FEATURE,
  NS_ROSTER_VER,
  NS_SASL,
  NS_SESSION,
  NS_SM,
  NS_STREAM,
  NS_TLS,
} from "./ns.ts";
import {
  createSaslMechanism,
  SASL_MECHANISMS,
  type SaslServerMechanism,
  type SaslStep,
} from "./sasl/mechanism.ts";
import { errorReply, iqResult, seeOtherHostXml, streamErrorXml } from "./stanza.ts";
import { StreamParser } from "./stream-parser.ts";

/** How long a `<resume/>` waits for the shard that holds the session. */
const RESUME_TAKE_TIMEOUT_MS = 3_000;

let nextConnectionId = 1;

/** Options for one connection. */
export interface C2sConnectionOptions {
  /** XEP-0368: TLS from the first byte. */
  directTls: boolean;
}

/** One client connection. */
export class C2sConnection implements ClientLink {
  readonly #ctx: ShardContext;
  readonly #raw: Socket;
  #socket: Socket;
  readonly #log: Logger;
  readonly remoteAddress: string;
  #parser: StreamParser | undefined;
  #decoder = new StringDecoder("utf8");
  #out: string[] = [];
  #flushScheduled = false;
  #headerSent = false;
  #closing = false;
  #closed = false;
  #secure: boolean;
  #jid: BareJid | undefined;
  #sasl: SaslServerMechanism | undefined;
  #session: SessionActorType | undefined;
  #binding = false;
  #authTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #lastInbound = Date.now();

  constructor(socket: Socket, ctx: ShardContext, options: C2sConnectionOptions) {
    this.#ctx = ctx;
    this.#raw = socket;
    this.#socket = socket;
    this.#secure = options.directTls;
    this.remoteAddress = socket.remoteAddress ?? "unknown";
    this.#log = ctx.log.child({ conn: nextConnectionId++, remote: this.remoteAddress });
    ctx.counters.connections++;
    socket.setNoDelay(true);
    this.#listen(socket);
    socket.on("close", () => this.#onClosed());
    this.#resetParser();
    this.#authTimer = setTimeout(
      () => this.closeWithError("connection-timeout", "authentication took too long"),
      ctx.config.limits.authTimeoutMs,
    );
    this.#authTimer.unref();
  }

  #listen(socket: Socket): void {
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#log.debug({ err: error }, "socket error"));
  }

  #resetParser(): void {
    this.#decoder = new StringDecoder("utf8");
    this.#parser = new StreamParser(
      {
        onStreamOpen: (attrs, name) => this.#onStreamOpen(attrs, name),
        onStanza: (el) => this.#onElement(el),
        onStreamClose: () => this.#onStreamClose(),
      },
      this.#ctx.config.limits,
    );
  }

  #onData(chunk: Buffer): void {
    if (this.#closing) return;
    this.#lastInbound = Date.now();
    try {
      this.#parser?.write(this.#decoder.write(chunk));
    } catch (error) {
      if (error instanceof StreamError) {
        this.#log.warn({ code: error.code, condition: error.condition }, error.message);
        this.closeWithError(error.condition, error.message);
      } else {
        this.#log.error({ err: error }, "connection handler failed");
        this.closeWithError("internal-server-error");
      }
    }
  }

  // --- output -----------------------------------------------------------------------------

  /** Queues XML for the client; written once per event-loop turn. */
  send(text: string): void {
    if (this.#closed) return;
    this.#out.push(text);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.#flush());
    }
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#out.length === 0) return;
    const data = this.#out.length === 1 ? this.#out[0]! : this.#out.join("");
    this.#out = [];
    this.#socket.write(data);
    // A client that does not read must not make the server hold its output forever.
    if (this.#socket.writableLength > this.#ctx.config.limits.maxOutboundBufferBytes) {
      this.#log.warn({ buffered: this.#socket.writableLength }, "client is not reading; disconnecting");
      this.#destroy();
    }
  }

  /** Sends a stream error (RFC 6120 §4.9) and closes the stream. */
  closeWithError(condition: StreamErrorCondition, text?: string): void {
    this.#closeWithErrorXml(streamErrorXml(condition, text));
  }

  #closeWithErrorXml(errorXml: string): void {
    if (this.#closing) return;
    if (!this.#headerSent) this.#sendHeader(undefined);
    this.send(errorXml);
    this.close();
  }

  /** Closes the stream: `</stream:stream>`, then the socket once the peer answers or a timeout passes. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.send("</stream:stream>");
    this.#flush();
    if (!this.#closed) {
      this.#socket.end();
      setTimeout(() => this.#destroy(), 5000).unref();
    }
  }

  #destroy(): void {
    this.#socket.destroy();
    this.#raw.destroy();
  }

  // --- stream -----------------------------------------------------------------------------

  #sendHeader(id: string | undefined): void {
    this.#headerSent = true;
    const idAttr = id === undefined ? "" : ` id="${id}"`;
    this.send(
      `<?xml version="1.0"?><stream:stream xmlns="${NS_CLIENT}" xmlns:stream="${NS_STREAM}"${idAttr} from="${escapeXML(this.#ctx.config.domain)}" version="1.0" xml:lang="en">`,
    );
  }

  #onStreamOpen(attrs: Record<string, string>, name: string): void {
    this.#sendHeader(randomBytes(12).toString("hex"));
    // RFC 6120 §4.9.3.10/§4.8: the stream element must be <stream:stream> in the streams namespace.
    if (name !== "stream:stream" || attrs["xmlns:stream"] !== NS_STREAM) {
      return this.closeWithError("invalid-namespace");
    }
    if (attrs.xmlns !== NS_CLIENT) return this.closeWithError("invalid-namespace");
    const to = attrs.to === undefined ? undefined : parseJid(attrs.to);
    if (to === undefined || to.domain !== this.#ctx.config.domain || to.local !== "" || to.resource !== "") {
      return this.closeWithError("host-unknown");
    }
    // RFC 6120 §4.7.5: a missing version means pre-1.0, which we do not speak.
    const major = Number.parseInt((attrs.version ?? "0").split(".")[0] ?? "0", 10);
    if (!(major >= 1)) return this.closeWithError("unsupported-version");
    this.send(this.#features());
  }

  #features(): string {
    const parts: string[] = [];
    if (this.#jid === undefined) {
      const required = this.#ctx.config.tls.requireBeforeAuth;
      if (!this.#secure)
        parts.push(`<starttls xmlns="${NS_TLS}">${required ? "<required/>" : ""}</starttls>`);
      if (this.#secure || !required) {
        parts.push(
          `<mechanisms xmlns="${NS_SASL}">${SASL_MECHANISMS.map((m) => `<mechanism>${m}</mechanism>`).join("")}</mechanisms>`,
        );
        if (this.#ctx.config.registration.allow) parts.push(`<register xmlns="${NS_REGISTER_FEATURE}"/>`);
      }
    } else {
      parts.push(`<bind xmlns="${NS_BIND}"/>`);
      // RFC 3921 session, marked optional (RFC 6121 Appendix E) for clients that still send it.
      parts.push(`<session xmlns="${NS_SESSION}"><optional/></session>`);
      parts.push(`<sm xmlns="${NS_SM}"/>`);
      parts.push(`<ver xmlns="${NS_ROSTER_VER}"/>`);
      parts.push(`<sub xmlns="${NS_PRE_APPROVAL}"/>`);
    }
    return `<stream:features>${parts.join("")}</stream:features>`;
  }

  #onStreamClose(): void {
    // RFC 6120 §4.4: answer the peer's close with ours, then close the socket.
    this.#session?.onLinkClosed(true);
    this.#session = undefined;
    this.close();
  }

  #onElement(el: Element): void {
    this.#ctx.counters.stanzasIn++;
    if (this.#session !== undefined) return this.#session.handle(el);
    const ns = el.attrs.xmlns;
    if (this.#jid === undefined) {
      if (el.name === "starttls" && ns === NS_TLS) return this.#onStartTls();
      if (ns === NS_SASL) return this.#guard(this.#onSasl(el));
      if (
        el.name === "iq" &&
        el.getChild("query", NS_REGISTER) !== undefined &&
        this.#ctx.config.registration.allow
      ) {
        return this.#guard(this.#onRegister(el));
      }
      // RFC 6120 §6.4.7 / §7.1: nothing but negotiation before authentication.
      return this.closeWithError("not-authorized", "authenticate first");
    }
    if (el.name === "resume" && ns === NS_SM) return this.#guard(this.#onResume(el));
    if (el.name === "iq" && el.getChild("bind", NS_BIND) !== undefined && el.attrs.type === "set") {
      return this.#guard(this.#onBind(el));
    }
    if (el.name === "enable" && ns === NS_SM) {
      return this.send(
        `<failed xmlns="${NS_SM}"><unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`,
      );
    }
    // RFC 6120 §7.1: stanzas before binding get <not-authorized/>.
    this.closeWithError("not-authorized", "bind a resource first");
  }

  /** A failed async handler is this connection's problem only: log it once and close. */
  #guard(work: Promise<void>): void {
    work.catch((error: unknown) => {
      this.#log.error({ err: error }, "connection handler failed");
      this.closeWithError("internal-server-error");
    });
  }

  // --- STARTTLS (RFC 6120 §5) -------------------------------------------------------------

  #onStartTls(): void {
    if (this.#secure) return this.closeWithError("policy-violation", "TLS is already established");
    this.send(`<proceed xmlns="${NS_TLS}"/>`);
    this.#flush();
    this.#parser = undefined;
    this.#raw.removeAllListeners("data");
    const secure = new TLSSocket(this.#raw, { isServer: true, secureContext: this.#ctx.tlsContext });
    this.#socket = secure;
    this.#secure = true;
    secure.on("secure", () => {
      this.#headerSent = false;
      this.#resetParser();
    });
    this.#listen(secure);
    secure.on("close", () => this.#onClosed());
  }

  // --- SASL (RFC 6120 §6) -----------------------------------------------------------------

  async #onSasl(el: Element): Promise<void> {
    if (!this.#secure && this.#ctx.config.tls.requireBeforeAuth) {
      return this.#saslFailure("encryption-required");
    }
    if (el.name === "abort") {
      this.#sasl = undefined;
      return this.#saslFailure("aborted");
    }
    let step: SaslStep;
    if (el.name === "auth") {
      const throttled = await this.#ctx.loginThrottle.check(this.remoteAddress);
      if (!throttled.allowed)
        return this.#saslFailure("temporary-auth-failure", "too many failed attempts; try later");
      const mechanism = createSaslMechanism(el.attrs.mechanism ?? "", {
        domain: this.#ctx.config.domain,
        auth: this.#ctx.auth,
      });
      if (mechanism === undefined) return this.#saslFailure("invalid-mechanism");
      this.#sasl = mechanism;
      const text = el.text();
      const initial = text === "" ? undefined : decodeBase64(text);
      if (initial === null) return this.#saslFailure("incorrect-encoding");
      step = await mechanism.start(initial);
    } else if (el.name === "response" && this.#sasl !== undefined) {
      const data = decodeBase64(el.text());
      if (data === null) return this.#saslFailure("incorrect-encoding");
      step = await this.#sasl.next(data ?? Buffer.alloc(0));
    } else {
      return this.#saslFailure("malformed-request");
    }
    if (this.#closing) return;
    switch (step.kind) {
      case "challenge":
        return this.send(`<challenge xmlns="${NS_SASL}">${step.data.toString("base64") || "="}</challenge>`);
      case "failure": {
        this.#sasl = undefined;
        this.#ctx.counters.loginFailures++;
        void this.#ctx.loginThrottle.recordFailure(this.remoteAddress, step.jid).catch(() => {});
        return this.#saslFailure(step.condition, step.text);
      }
      case "success": {
        this.#sasl = undefined;
        const admitted = await this.#ctx.loginThrottle.admit(this.remoteAddress, step.jid);
        if (!admitted.allowed) {
          return this.#saslFailure("temporary-auth-failure", "too many failed attempts; try later");
        }
        this.#ctx.counters.logins++;
        this.#jid = step.jid;
        if (this.#authTimer !== undefined) clearTimeout(this.#authTimer);
        const data = step.data === undefined ? "" : step.data.toString("base64");
        this.send(`<success xmlns="${NS_SASL}">${data}</success>`);
        // RFC 6120 §6.4.6: the stream restarts after success.
        this.#headerSent = false;
        this.#resetParser();
        return;
      }
    }
  }

  #saslFailure(condition: string, text?: string): void {
    const textXml = text === undefined ? "" : `<text xml:lang="en">${escapeXML(text)}</text>`;
    this.send(`<failure xmlns="${NS_SASL}"><${condition}/>${textXml}</failure>`);
  }

  // --- resource binding (RFC 6120 §7) -----------------------------------------------------

  async #onBind(iq: Element): Promise<void> {
    if (this.#binding) return this.send(errorReply(iq, "not-allowed").toString());
    this.#binding = true;
    const requested = iq.getChild("bind", NS_BIND)?.getChildText("resource");
    let resource: string | undefined;
    if (requested === null || requested === undefined || requested.trim() === "") {
      resource = randomBytes(8).toString("hex");
    } else {
      resource = normalizeResource(requested);
      if (resource === undefined) {
        this.#binding = false;
        return this.send(errorReply(iq, "bad-request", { text: "invalid resource" }).toString());
      }
    }
    const jid = this.#jid!;
    const full = fullJid(jid, resource);
    // Registered before the UserActor hears of it, so nothing it sends right after binding is
    // lost; held until the bind result has gone out, so nothing precedes it.
    const session = new SessionActor(full, this.#ctx, this, undefined, { hold: true });
    this.#ctx.sessions.set(session.sid, session);
    try {
      const reply = await this.#ctx.router.requestUser<BindReply>(
        (reqId) => ({ kind: "bind", user: jid, session: session.location(), reqId }),
        this.#ctx.config.cluster.requestTimeoutMs,
      );
      session.setBlocklist(reply.blocklist);
    } catch (error) {
      this.#log.warn({ err: error, user: jid }, "bind not answered; the client may retry");
      this.#ctx.sessions.delete(session.sid);
      this.#binding = false;
      // The actor may still register the bind later: tell it this session never came to be.
      this.#ctx.router.toUser({ kind: "unbind", user: jid, session: session.location(), directed: [] });
      // RFC 6120 §7.6.2 / §8.3.3.18: the server is busy (partitions moving); retry later.
      return this.send(
        errorReply(iq, "resource-constraint", { text: "the server is busy; try binding again" }).toString(),
      );
    }
    if (this.#closed) {
      session.end();
      return;
    }
    this.#attach(session);
    this.send(iqResult(iq, undefined, xml("bind", { xmlns: NS_BIND }, xml("jid", {}, full))).toString());
    session.release();
  }

  #attach(session: SessionActorType): void {
    this.#session = session;
    this.#ctx.sessions.set(session.sid, session);
    this.#startPings();
  }

  // --- XEP-0198 resumption ----------------------------------------------------------------

  async #onResume(el: Element): Promise<void> {
    // One bind or resume per stream (XEP-0198 §5: resume instead of binding).
    if (this.#binding) {
      return this.send(
        `<failed xmlns="${NS_SM}"><unexpected-request xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`,
      );
    }
    this.#binding = true;
    const previd = el.attrs.previd ?? "";
    const h = Number(el.attrs.h);
    const home = Number.parseInt(previd.split(".")[0] ?? "", 10);
    let snapshot: SessionSnapshot | undefined;
    let lender: { shard: number; sid: string } | undefined;
    let expired: number | undefined;
    if (Number.isInteger(home) && home >= 0 && Number.isInteger(h)) {
      // The id names the shard (of any node) that issued it; a session resumed before may live
      // elsewhere now (the id survives resumptions), so this node's workers are asked next and
      // then, at once, every other shard of the cluster (a rare path: after a drain, say).
      const take = (shard: number) =>
        this.#takeFrom(shard, previd, h).catch((error: unknown) => {
          // A shard of a node that died is expected after a crash (its replica answers instead).
          if (this.#ctx.router.isOnGoneNode(shard))
            this.#log.debug({ err: error, shard }, "resumption request to a dead node failed");
          else this.#log.warn({ err: error, shard }, "resumption request failed");
          return undefined;
        });
      let pending = false;
      const note = (found: ResumeTake) => {
        if (found !== undefined && "snapshot" in found) {
          if (snapshot === undefined) {
            snapshot = found.snapshot;
            lender = found.lender;
          } else if (found.lender !== undefined) this.#answerLender(found.lender, false);
        } else if (found !== undefined && "expired" in found) expired = found.expired;
        else if (found !== undefined) pending = true;
      };
      const search = async () => {
        const asked = new Set<number>();
        for (const shard of [home, ...this.#ctx.localShards]) {
          if (asked.has(shard)) continue;
          asked.add(shard);
          note(await take(shard));
          if (snapshot !== undefined) return;
        }
        const others = this.#ctx.router.liveShards().filter((shard) => !asked.has(shard));
        // At most one holder has the session, and taking it is what the request does.
        for (const found of await Promise.all(others.map(take))) note(found);
      };
      await search();
      // A replica holds the session but its owner's death is not known yet (the client came
      // back faster than the cluster decided, or than a crashed worker was restarted): ask
      // again at the next owner table, or soon, until `requestTimeoutMs` has passed.
      const deadline = Date.now() + this.#ctx.config.cluster.requestTimeoutMs;
      for (let stepMs = 200; snapshot === undefined && pending && Date.now() < deadline; stepMs *= 2) {
        pending = false;
        await this.#ctx.router.nextTable(Math.min(stepMs, deadline - Date.now()));
        await search();
      }
    }
    if (snapshot === undefined) {
      this.#binding = false;
      // XEP-0198 §5: an unknown or expired session is <item-not-found/>. For one whose window
      // ended here, 'h' tells the client how many of its stanzas the server handled, so that it
      // re-sends only the others (XEP-0198 1.6).
      const handled = expired === undefined ? "" : ` h="${expired}"`;
      if (expired !== undefined) {
        this.#log.info(
          { user: this.#jid, handled: expired },
          "resumption after its window; told the client what was handled",
        );
      } else {
        // Its holder and every replica died with it (or the id was never this user's): nobody
        // alive knows how many of the client's stanzas were handled, so `h` is left out.
        this.#log.info({ user: this.#jid }, "resumption of a session no live node holds; failed without h");
      }
      return this.send(
        `<failed xmlns="${NS_SM}"${handled}><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>`,
      );
    }
    const session = new SessionActor(snapshot.full, this.#ctx, this, snapshot);
    this.#ctx.sessions.set(session.sid, session);
    this.#ctx.router.toUser({
      kind: "relocate",
      user: session.bare,
      session: session.location(),
      state: session.registration(),
    });
    // The lender keeps its copy (and its replicas) until ours hold the session.
    const from = lender;
    if (from !== undefined) session.whenReplicated(() => this.#answerLender(from, true));
    if (this.#closed) {
      // The new socket died while the session moved: keep it resumable rather than lose it.
      session.onLinkClosed(false);
      return;
    }
    this.#attach(session);
    session.resumeOn(previd);
  }

  /** Tells the shard that lent a session whether this resumption holds it (`ok`) or gave it back. */
  #answerLender(lender: { shard: number; sid: string }, ok: boolean): void {
    this.#ctx.router.send(lender.shard, { t: "worker", msg: { kind: "resume-done", sid: lender.sid, ok } });
  }

  #takeFrom(shard: number, token: string, h: number): Promise<ResumeTake> {
    const user = this.#jid!;
    // This shard too answers through its router, so a replica held here is considered as well.
    return this.#ctx.router.requestShard<ResumeTake>(
      shard,
      (reqId) => ({
        t: "worker",
        msg: {
          kind: "resume-take",
          token,
          h,
          toShard: this.#ctx.index,
          reqId,
          user,
          gone: this.#ctx.router.goneNodes(),
        },
      }),
      // The holder may be a node that just died: answer the client soon, it will log in again.
      RESUME_TAKE_TIMEOUT_MS,
    );
  }

  // --- in-band registration (XEP-0077) ----------------------------------------------------

  async #onRegister(iq: Element): Promise<void> {
    const query = iq.getChild("query", NS_REGISTER)!;
    const domain = this.#ctx.config.domain;
    if (!this.#secure && this.#ctx.config.tls.requireBeforeAuth) {
      return this.send(
        errorReply(iq, "not-authorized", { from: domain, text: "TLS is required" }).toString(),
      );
    }
    if (iq.attrs.type === "get") {
      const form = xml(
        "query",
        { xmlns: NS_REGISTER },
        xml("instructions", {}, "Choose a username and password."),
        xml("username"),
        xml("password"),
      );
      return this.send(iqResult(iq, domain, form).toString());
    }
    if (iq.attrs.type !== "set") return this.send(errorReply(iq, "bad-request", { from: domain }).toString());
    const username = query.getChildText("username");
    const password = query.getChildText("password");
    const local = username === null ? undefined : normalizeLocal(username);
    if (local === undefined || password === null || password === "") {
      return this.send(errorReply(iq, "not-acceptable", { from: domain }).toString());
    }
    const allowListed = this.#ctx.config.registration.allowList.includes(this.remoteAddress);
    if (!allowListed) {
      const decision = await this.#ctx.registrationThrottle.check(this.remoteAddress);
      if (!decision.allowed) {
        return this.send(
          errorReply(iq, "resource-constraint", { from: domain, text: "too many registrations" }).toString(),
        );
      }
    }
    const jid = `${local}@${domain}` as BareJid;
    const created = await this.#ctx.store.createAccount(await createAccountRecordAsync(jid, password));
    if (!created) return this.send(errorReply(iq, "conflict", { from: domain }).toString());
    if (!allowListed) await this.#ctx.registrationThrottle.recordFailure(this.remoteAddress);
    this.#log.info({ jid }, "account registered in-band");
    this.send(iqResult(iq, domain).toString());
  }

  // --- keepalive (XEP-0199) ---------------------------------------------------------------

  #startPings(): void {
    const interval = this.#ctx.config.limits.clientPingIntervalMs;
    const timeout = this.#ctx.config.limits.clientPingTimeoutMs;
    let pingSentAt = 0;
    this.#pingTimer = setInterval(
      () => {
        const now = Date.now();
        if (pingSentAt !== 0 && this.#lastInbound < pingSentAt && now - pingSentAt >= timeout) {
          this.#log.debug("client did not answer ping; closing");
          this.closeWithError("connection-timeout");
          return;
        }
        if (now - this.#lastInbound >= interval && (pingSentAt === 0 || this.#lastInbound >= pingSentAt)) {
          pingSentAt = now;
          this.send(
            `<iq xmlns="${NS_CLIENT}" type="get" id="ping-${now}" from="${escapeXML(this.#ctx.config.domain)}" to="${escapeXML(
              this.#session?.full ?? "",
            )}"><ping xmlns="urn:xmpp:ping"/></iq>`,
          );
        }
      },
      Math.max(100, Math.min(interval, timeout) / 2),
    );
    this.#pingTimer.unref();
  }

  // --- teardown ---------------------------------------------------------------------------

  #onClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#ctx.counters.connections--;
    if (this.#authTimer !== undefined) clearTimeout(this.#authTimer);
    if (this.#pingTimer !== undefined) clearInterval(this.#pingTimer);
    const session = this.#session;
    this.#session = undefined;
    session?.onLinkClosed(false);
  }

  /** Inbound flow control: the session has too much in flight. */
  pauseReading(): void {
    this.#socket.pause();
  }

  resumeReading(): void {
    this.#socket.resume();
  }

  /** Closes the connection for server shutdown. */
  shutdown(): void {
    this.closeWithError("system-shutdown");
  }

  /**
   * The node is leaving the cluster: close the stream so the client reconnects to another node.
   * An XEP-0198 session stays here, detached, until the client resumes it there.
   */
  moveAway(seeOtherHost?: string): void {
    const text = "this node is leaving the cluster; reconnect (and resume) elsewhere";
    if (seeOtherHost === undefined) return this.closeWithError("system-shutdown", text);
    // RFC 6120 §4.9.3.19: the client reconnects there (and resumes its XEP-0198 session).
    this.#closeWithErrorXml(seeOtherHostXml(seeOtherHost, text));
  }
}

/** Takes a resumable session held by this shard, for a `<resume/>` that arrived anywhere. */
export function takeResumable(ctx: ShardContext, token: string, h: number, user: BareJid): ResumeTake {
  const session = ctx.resumable.get(token);
  if (session === undefined) {
    // Lent to another resumption that has not confirmed yet: ask again shortly.
    for (const lent of ctx.lent.values())
      if (lent.token === token && lent.bare === user) return { pending: true };
    const expired = ctx.expiredResumable.get(token);
    // Only the session's own user learns anything of it.
    return expired !== undefined && expired.user === user ? { expired: expired.handledIn } : undefined;
  }
  // The session must belong to the user who authenticated the new stream.
  if (session.bare !== user) return undefined;
  // A lender's copy waiting to learn whether its taker lives: ask again shortly.
  if (session.standby) return { pending: true };
  const snapshot = session.lendForResume(h);
  return snapshot === undefined ? undefined : { snapshot, lender: { shard: ctx.index, sid: session.sid } };
}

/**
 * What a shard answers a resumption: the session (lent by `lender`, which waits for a
 * `resume-done`; a replica taken over has none), only its handled count when it expired, or
 * "pending" while the death of the node that held it is not known yet.
 */
export type ResumeTake =
  | { snapshot: SessionSnapshot; lender?: { shard: number; sid: string } }
  | { expired: number }
  | { pending: true }
  | undefined;

/** Decodes a SASL payload; "=" is an empty response (RFC 6120 §6.4.2). */
function decodeBase64(text: string): Buffer | null {
  const trimmed = text.trim();
  if (trimmed === "=") return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(trimmed) || trimmed.length % 4 !== 0) return null;
  return Buffer.from(trimmed, "base64");
}

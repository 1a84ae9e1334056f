/**
 * One client stream (RFC 6120), whatever carries it: the stream header and its checks, the
 * features offered at each stage, the dispatch of negotiation elements to their steps
 * (negotiation/), stream errors and the close handshake, the authentication timeout and
 * keepalive pings (XEP-0199). Once bound or resumed it hands every stanza to its session.
 *
 * Bytes, framing, TLS and buffers are the transport's (stream-transport.ts); accounts and
 * sessions are the host's (stream-host.ts).
 */
import { randomUUID } from "node:crypto";
import { type Element, escapeXML } from "@xmpp/xml";
import { StreamError, type StreamErrorCondition } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { BareJid } from "./jid.ts";
import { parseJid } from "./jid.ts";
import { bindFeatures, boundFeatures, isBindRequest, onBind } from "./negotiation/bind.ts";
import type { NegotiatingStream } from "./negotiation/negotiating-stream.ts";
import { isRegisterRequest, onRegister, registerFeature } from "./negotiation/register.ts";
import { onEnableBeforeBind, onResume } from "./negotiation/resume.ts";
import { SaslNegotiation, sasl2Feature, saslFeature } from "./negotiation/sasl.ts";
import { onStartTls, startTlsFeature } from "./negotiation/starttls.ts";
import { NS_CLIENT, NS_SASL, NS_SASL2, NS_SM, NS_STREAM, NS_TLS } from "./ns.ts";
import { seeOtherHostXml, streamErrorXml } from "./stanza.ts";
import type { StreamHost, StreamSession } from "./stream-host.ts";
import type { ClientTarget, StreamEvents, StreamTransport } from "./stream-transport.ts";

/** One client stream. */
export class XmppStream implements NegotiatingStream, StreamEvents {
  readonly host: StreamHost;
  readonly log: Logger;
  readonly #transport: StreamTransport;
  readonly #sasl: SaslNegotiation;
  #headerSent = false;
  #closing = false;
  /** Our end of the stream (its footer, `<close/>`, a BOSH terminate) is out: nothing may follow. */
  #ended = false;
  #closed = false;
  #jid: BareJid | undefined;
  #session: StreamSession | undefined;
  binding = false;
  /** A login step of this stream waits for its turn (login-steps.ts). */
  #loginWaiting = false;
  #authTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #lastInbound = Date.now();

  /** `log` carries the connection's bindings (its number, the client's address). */
  constructor(transport: StreamTransport, host: StreamHost, log: Logger) {
    this.host = host;
    this.#transport = transport;
    this.log = log;
    this.#sasl = new SaslNegotiation(this);
    host.counters.connections++;
    this.#authTimer = setTimeout(
      () => this.closeWithError("connection-timeout", "authentication took too long"),
      host.config.limits.authTimeoutMs,
    );
    this.#authTimer.unref();
    transport.attach(this);
  }

  get remoteAddress(): string {
    return this.#transport.remoteAddress;
  }

  get secure(): boolean {
    return this.#transport.secure;
  }

  get closing(): boolean {
    return this.#closing;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get jid(): BareJid | undefined {
    return this.#jid;
  }

  // --- output -----------------------------------------------------------------------------

  /**
   * Queues XML for the client. Nothing goes after the end of our stream (RFC 6120 §4.4, RFC 7395
   * §3.6): the session was let go at that end (#detachSession), and whatever else is sent late
   * is dropped here rather than taken by a client (Converse.js acknowledged such stanzas on a
   * stream nobody read any more).
   */
  send(text: string): void {
    if (this.#closed || this.#ended) return;
    this.host.counters.stanzasOut++;
    this.#transport.send(text);
  }

  flush(): void {
    if (!this.#closed) this.#transport.flush();
  }

  /** Sends a stream error (RFC 6120 §4.9) and closes the stream. */
  closeWithError(condition: StreamErrorCondition, text?: string, appCondition?: string): void {
    this.#closeWithErrorXml(streamErrorXml(condition, text, appCondition));
  }

  #closeWithErrorXml(errorXml: string): void {
    if (this.#closing) return;
    if (!this.#headerSent) this.#sendHeader(undefined);
    this.send(errorXml);
    this.close();
  }

  /** Closes the stream: our footer, then the connection once the peer answers or a timeout passes. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#detachSession();
    this.send(this.#transport.footer);
    this.#ended = true;
    // The transport sends what is queued as it ends: BOSH must know it is ending to put a stream
    // error in a terminate body (XEP-0206 §7).
    if (!this.#closed) this.#transport.end();
  }

  // --- stream -----------------------------------------------------------------------------

  #sendHeader(id: string | undefined): void {
    this.#headerSent = true;
    this.send(this.#transport.header(this.host.config.domain, id));
  }

  opened(attrs: Record<string, string>, name: string): void {
    if (this.#closing) return;
    // RFC 6120 §4.7.3: unique and unpredictable. randomUUID draws on a cached block of the
    // CSPRNG's output (122 random bits): 0.1–0.5 against 2.0–3.6 µs for randomBytes(12) in hex,
    // and a STARTTLS login opens three streams.
    this.#sendHeader(randomUUID());
    // RFC 6120 §4.9.3.10/§4.8: the stream element must be <stream:stream> in the streams namespace.
    if (name !== "stream:stream" || attrs["xmlns:stream"] !== NS_STREAM) {
      return this.closeWithError("invalid-namespace");
    }
    if (attrs.xmlns !== NS_CLIENT) return this.closeWithError("invalid-namespace");
    const to = attrs.to === undefined ? undefined : parseJid(attrs.to);
    const domain = this.host.config.domain;
    if (to === undefined || to.domain !== domain || to.local !== "" || to.resource !== "") {
      return this.closeWithError("host-unknown");
    }
    // RFC 6120 §4.7.5: a missing version means pre-1.0, which we do not speak.
    const major = Number.parseInt((attrs.version ?? "0").split(".")[0] ?? "0", 10);
    if (!(major >= 1)) return this.closeWithError("unsupported-version");
    this.send(this.featuresXml());
  }

  featuresXml(): string {
    const parts: string[] = [];
    if (this.#jid === undefined) {
      const { config } = this.host;
      const required = config.tls.requireBeforeAuth;
      if (!this.secure && this.#transport.canStartTls) parts.push(startTlsFeature(required));
      if (this.secure || !required) {
        parts.push(saslFeature(this.host.auth), sasl2Feature(this.host.auth));
        if (config.registration.allow && this.host.auth.managesAccounts) parts.push(registerFeature());
      }
    } else if (this.#session === undefined && !this.binding) {
      parts.push(bindFeatures());
    } else {
      parts.push(boundFeatures(this.#session?.smEnabled ?? false));
    }
    return `<stream:features>${parts.join("")}</stream:features>`;
  }

  closedByPeer(): void {
    if (this.#closing) return;
    // RFC 6120 §4.4: answer the peer's close with ours, then close the connection.
    this.#session?.onLinkClosed(true);
    this.#session = undefined;
    this.close();
  }

  failed(error: unknown): void {
    if (this.#closing) return;
    if (error instanceof StreamError) {
      this.log.warn({ code: error.code, condition: error.condition }, error.message);
      this.closeWithError(error.condition, error.message);
    } else {
      this.log.error({ err: error }, "connection handler failed");
      this.closeWithError("internal-server-error");
    }
  }

  active(): void {
    this.#lastInbound = Date.now();
  }

  element(el: Element): void {
    if (this.#closing) return;
    this.host.counters.stanzasIn++;
    if (this.#session !== undefined) return this.#session.handle(el);
    const ns = el.attrs.xmlns;
    if (this.#jid === undefined) {
      if (el.name === "starttls" && ns === NS_TLS) return onStartTls(this);
      if (ns === NS_SASL || ns === NS_SASL2) return this.#loginStep(() => this.#sasl.handle(el));
      if (isRegisterRequest(el) && this.host.config.registration.allow && this.host.auth.managesAccounts)
        return this.#guard(onRegister(this, el));
      // RFC 6120 §6.4.7 / §7.1: nothing but negotiation before authentication.
      return this.closeWithError("not-authorized", "authenticate first");
    }
    if (el.name === "resume" && ns === NS_SM) return this.#loginStep(() => onResume(this, el));
    if (isBindRequest(el)) return this.#loginStep(() => onBind(this, el));
    if (el.name === "enable" && ns === NS_SM) return onEnableBeforeBind(this);
    // RFC 6120 §7.1: stanzas before binding get <not-authorized/>.
    this.closeWithError("not-authorized", "bind a resource first");
  }

  /**
   * A login step, in the turn the worker starts it (login-steps.ts); until then this stream is
   * not read. The client waits for each step's answer before its next login element (RFC 6120
   * §6.4, §7): one that comes while a step waits (it was sent with it) ends the stream, as a
   * second SASL element does (negotiation/sasl.ts), rather than queue behind it.
   */
  #loginStep(step: () => Promise<void>): void {
    if (this.#loginWaiting) {
      return this.closeWithError("policy-violation", "a login element before the answer to the previous one");
    }
    this.#guard(
      this.host.loginSteps.run(
        // A stream that closed while it waited has nothing to do.
        () => (this.#closing || this.#closed ? Promise.resolve() : step()),
        () => {
          this.#loginWaiting = true;
          this.#transport.holdForLogin();
        },
        () => {
          this.#loginWaiting = false;
          this.#transport.releaseForLogin();
        },
      ),
    );
  }

  /** A failed async step is this stream's problem only: log it once and close. */
  #guard(work: Promise<void>): void {
    work.catch((error: unknown) => {
      this.log.error({ err: error }, "connection handler failed");
      this.closeWithError("internal-server-error");
    });
  }

  // --- what the negotiation steps change ---------------------------------------------------

  authenticated(jid: BareJid, restart = true): void {
    this.#jid = jid;
    if (this.#authTimer !== undefined) clearTimeout(this.#authTimer);
    if (restart) this.#restart();
  }

  startTls(): void {
    this.#transport.startTls();
  }

  /** The transport is secure now (after STARTTLS; it restarted its parser): a new stream follows. */
  secured(): void {
    this.#headerSent = false;
  }

  #restart(): void {
    this.#headerSent = false;
    this.#transport.restart();
  }

  attach(session: StreamSession): void {
    this.#session = session;
    this.#startPings();
  }

  // --- keepalive (XEP-0199) ---------------------------------------------------------------

  #startPings(): void {
    const { clientPingIntervalMs: interval, clientPingTimeoutMs: timeout } = this.host.config.limits;
    let pingSentAt = 0;
    this.#pingTimer = setInterval(
      () => {
        const now = Date.now();
        if (pingSentAt !== 0 && this.#lastInbound < pingSentAt && now - pingSentAt >= timeout) {
          this.log.debug("client did not answer ping; closing");
          this.closeWithError("connection-timeout");
          return;
        }
        if (now - this.#lastInbound >= interval && (pingSentAt === 0 || this.#lastInbound >= pingSentAt)) {
          pingSentAt = now;
          const ping = `<iq xmlns="${NS_CLIENT}" type="get" id="ping-${now}" from="${escapeXML(this.host.config.domain)}" to="${escapeXML(
            this.#session?.full ?? "",
          )}"><ping xmlns="urn:xmpp:ping"/></iq>`;
          // Through the session, which counts it for XEP-0198: sent beside it, a client's <a h/>
          // counting the ping was one above the server's count, and the session was ended as
          // "acknowledged more stanzas than were sent".
          if (this.#session !== undefined) this.#session.write(ping, false);
          else this.send(ping);
        }
      },
      Math.max(100, Math.min(interval, timeout) / 2),
    );
    this.#pingTimer.unref();
  }

  // --- teardown ---------------------------------------------------------------------------

  /**
   * The stream is ending, or its connection is gone: its session stops writing to it now (when
   * we end the stream, not up to the close grace later, when the connection goes). A resumable
   * session waits for `<resume/>` with what comes meanwhile in its log; any other ends, and what
   * comes meanwhile is stored or bounced as for an unavailable resource.
   */
  #detachSession(): void {
    const session = this.#session;
    this.#session = undefined;
    session?.onLinkClosed(false);
  }

  gone(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.host.counters.connections--;
    if (this.#authTimer !== undefined) clearTimeout(this.#authTimer);
    if (this.#pingTimer !== undefined) clearInterval(this.#pingTimer);
    this.#detachSession();
  }

  /** Inbound flow control: the session has too much in flight. */
  pauseReading(): void {
    this.#transport.pause();
  }

  resumeReading(): void {
    this.#transport.resume();
  }

  /** Closes the stream for server shutdown. */
  shutdown(): void {
    this.closeWithError("system-shutdown");
  }

  /**
   * The node is leaving the cluster: close the stream so the client reconnects to another node
   * (`target`: where a TCP client and a web client should go; none: `<system-shutdown/>`).
   * An XEP-0198 session stays here, detached, until the client resumes it there.
   */
  moveAway(target?: ClientTarget): void {
    const text = "this node is leaving the cluster; reconnect (and resume) elsewhere";
    // RFC 6120 §4.9.3.19: the client reconnects there (and resumes its XEP-0198 session).
    if (target?.host !== undefined && this.#transport.canRedirect) {
      return this.#closeWithErrorXml(seeOtherHostXml(target.host, text));
    }
    // A web client is sent to another node's web listener the way its transport says.
    if (target?.web !== undefined && this.#transport.redirect !== undefined && !this.#closing) {
      this.#closing = true;
      this.#detachSession();
      this.#ended = true;
      this.#transport.redirect(target.web);
      return;
    }
    this.closeWithError("system-shutdown", text);
  }
}

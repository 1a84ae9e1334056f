/**
 * What a client stream (xmpp-stream.ts) needs from the transport under it: framing in both
 * directions and the connection's life. A transport (src/transport/: TCP today, WebSocket and
 * BOSH next) turns bytes into stream events, and the stream's output into bytes, so every rule of
 * the protocol is written once, in the stream and its negotiation steps.
 */
import type { Element } from "@xmpp/xml";

/** What a transport tells the stream it carries. */
export interface StreamEvents {
  /** The client opened (or, after a restart, re-opened) the stream: its header's attributes. */
  opened(attrs: Record<string, string>, name: string): void;
  /** One top-level element: a stanza or a negotiation element. */
  element(el: Element): void;
  /** The client closed its stream (RFC 6120 §4.4). */
  closedByPeer(): void;
  /**
   * Handling the client's input failed: a StreamError (malformed XML, a limit) is answered with
   * its condition, anything else with internal-server-error.
   */
  failed(error: unknown): void;
  /** The transport is encrypted now (after STARTTLS): the client opens a new stream. */
  secured(): void;
  /** The connection is gone; nothing more can be sent. */
  gone(): void;
  /** Input arrived (for keepalive: a client that sends is alive). */
  active(): void;
}

/** One client connection's transport. */
export interface StreamTransport {
  readonly remoteAddress: string;
  /** Encrypted now (direct TLS, or after STARTTLS). */
  readonly secure: boolean;
  /** Whether STARTTLS (RFC 6120 §5) can upgrade this transport. */
  readonly canStartTls: boolean;
  /**
   * Whether `<see-other-host/>` (RFC 6120 §4.9.3.19, a host and port) can send the client
   * elsewhere; a WebSocket client needs a URI instead (RFC 7395 §3.3.2).
   */
  readonly canRedirect: boolean;
  /**
   * Sends the client to another node's web listener (`https://host:port`) and ends the
   * connection: a web transport's own redirection (RFC 7395 §3.6.1 `see-other-uri`, XEP-0124
   * §17 `see-other-uri`); absent on transports that have none.
   */
  redirect?(webBase: string): void;
  /** Starts delivering to `events`. */
  attach(events: StreamEvents): void;
  /** The stream header we send (RFC 6120 §4.7), with our stream id when we answer an open. */
  header(from: string, id: string | undefined): string;
  /** What closes our stream (RFC 6120 §4.4). */
  readonly footer: string;
  /** Queues XML for the client; the transport decides how to frame and when to write it. */
  send(text: string): void;
  /** Writes what is queued now. */
  flush(): void;
  /** After SASL success or TLS: the client opens a new stream on the same connection. */
  restart(): void;
  /** Upgrades to TLS after `<proceed/>` was written; the stream restarts once it is secure. */
  startTls(): void;
  /**
   * Sends what is queued (in its terminating answer, on BOSH) and ends the connection once the
   * client closes too, or after a grace period.
   */
  end(): void;
  /** Cuts the connection now. */
  destroy(): void;
  /** Stops reading (inbound flow control) until {@link resume}. */
  pause(): void;
  resume(): void;
  /**
   * Stops reading while a login step of the stream waits for its turn (login-steps.ts), until
   * {@link releaseForLogin}; independent of {@link pause}, which a bound session uses.
   */
  holdForLogin(): void;
  releaseForLogin(): void;
}

/** Where a client of a leaving node should go: another member's client and web addresses. */
export interface ClientTarget {
  /** "host:port" of its client listener (RFC 6120 `<see-other-host/>`). */
  host?: string;
  /** `https://host:port` of its web listener (WebSocket and BOSH redirections). */
  web?: string;
}

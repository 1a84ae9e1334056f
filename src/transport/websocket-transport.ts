/**
 * A client stream over WebSocket (RFC 7395): subprotocol `xmpp`, one complete XML element per
 * text message, `<open/>` and `<close/>` in the framing namespace instead of the stream
 * element's start and end tags.
 *
 * Input goes through the same stream parser as TCP (the same size, depth and restricted-XML
 * rules), primed with a stream header so that each message is parsed as one element of a
 * stream: `<open/>` becomes the stream's open (the header in its own clothes, §3.3.2),
 * `<close/>` its close, anything else a stanza or negotiation element. A message that is not
 * exactly one element is `<not-well-formed/>` (§3.3.3).
 *
 * Output: every element is its own message. Stanzas carry `xmlns="jabber:client"` and stream
 * elements declare the `stream` prefix, since a message has no enclosing stream element
 * (§3.3.3, §3.4).
 */
import { escapeXML } from "@xmpp/xml";
import type WebSocket from "ws";
import type { Config } from "../config/defaults.ts";
import { StreamError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { NS_CLIENT, NS_FRAMING, NS_STREAM } from "../xmpp/ns.ts";
import { StreamParser } from "../xmpp/stream-parser.ts";
import type { StreamEvents, StreamTransport } from "../xmpp/stream-transport.ts";
import { InputShaper, PacedInput } from "./input-shaper.ts";
import { SlicedInput } from "./parse-slices.ts";
import { standaloneElement } from "./standalone-element.ts";
import { webSocketUrlOf } from "./web-paths.ts";

/** The header the parser is primed with: a stream whose elements are the messages. */
const PRIMER = `<stream:stream xmlns="${NS_CLIENT}" xmlns:stream="${NS_STREAM}">`;

/** How long a closed stream waits before the WebSocket is closed (our `<close/>` leaves first). */
const CLOSE_DELAY_MS = 100;
/** After that, how long a client over its input budget has to answer before it is cut off. */
const OVER_BUDGET_CLOSE_MS = 1_000;

/** Options for {@link WebSocketTransport}. */
export interface WebSocketTransportOptions {
  remoteAddress: string;
  /** Encrypted: the listener has TLS, or is the loopback side of a proxy that has. */
  secure: boolean;
  limits: Readonly<Config["limits"]>;
  log: Logger;
}

/** One WebSocket connection's transport. */
export class WebSocketTransport implements StreamTransport {
  readonly remoteAddress: string;
  readonly secure: boolean;
  readonly canStartTls = false;
  /** Other nodes' WebSocket URIs are not known here: a leaving node's clients reconnect as configured. */
  readonly canRedirect = false;
  readonly footer = `<close xmlns="${NS_FRAMING}"/>`;
  readonly #ws: WebSocket;
  readonly #options: WebSocketTransportOptions;
  #events: StreamEvents | undefined;
  #parser: StreamParser | undefined;
  /** Elements the message being parsed has produced so far (counted from the last message's end). */
  #elements = 0;
  #closed = false;
  /** The stream ended on our side; the connection is closing. */
  #ending = false;
  /** Reading, at the pace of `limits.inputBytesPerSecond` and `limits.inputBurstBytes`. */
  readonly #input: PacedInput;
  /** Messages parsed a slice per turn, in order (a message may be a megabyte). */
  readonly #sliced: SlicedInput;

  constructor(ws: WebSocket, options: WebSocketTransportOptions) {
    this.#ws = ws;
    this.#options = options;
    this.remoteAddress = options.remoteAddress;
    this.secure = options.secure;
    this.#input = new PacedInput(
      ws,
      new InputShaper(options.limits.inputBytesPerSecond, options.limits.inputBurstBytes),
    );
    this.#sliced = new SlicedInput({
      hold: () => this.#input.hold("parse"),
      release: () => this.#input.release("parse"),
      failed: (error) => this.#events?.failed(error),
    });
  }

  attach(events: StreamEvents): void {
    this.#events = events;
    this.#parser = new StreamParser(
      {
        onStreamOpen: () => {},
        onStanza: (el) => {
          this.#elements++;
          if (el.attrs.xmlns !== NS_FRAMING) return events.element(el);
          if (el.name === "open") {
            // The stream's open, as RFC 6120 §4.7 would see it: the checks are the stream's.
            const { xmlns: _framing, ...attrs } = el.attrs as Record<string, string>;
            return events.opened({ ...attrs, xmlns: NS_CLIENT, "xmlns:stream": NS_STREAM }, "stream:stream");
          }
          if (el.name === "close") return events.closedByPeer();
          events.failed(
            new StreamError(
              "XSRV_XML_NOT_WELL_FORMED",
              "not-well-formed",
              `<${el.name}/> is not a framing element`,
            ),
          );
        },
        onStreamClose: () => {},
      },
      this.#options.limits,
    );
    this.#parser.write(PRIMER);
    this.#ws.on("message", (data, isBinary) => this.#onMessage(data, isBinary));
    this.#ws.on("error", (error) => this.#options.log.debug({ err: error }, "websocket error"));
    this.#ws.on("close", () => this.#onClosed());
  }

  #onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    if (this.#ending) {
      // After the stream's end only the close frame matters; the rest still spends the budget.
      if (!this.#closed) this.#input.received(byteLength(data));
      return;
    }
    const events = this.#events!;
    events.active();
    if (isBinary) {
      // RFC 7395 §3.2: XMPP travels in text messages.
      events.failed(new StreamError("XSRV_XML_NOT_WELL_FORMED", "not-well-formed", "a binary message"));
      return;
    }
    const text = data.toString();
    this.#sliced.push(
      text,
      (slice) => this.#parser!.write(slice),
      () => this.#endOfMessage(text),
    );
    if (!this.#closed) this.#input.received(byteLength(data));
  }

  /** §3.3.3: each message is exactly one complete element (whitespace alone is a keepalive). */
  #endOfMessage(text: string): void {
    const leftover = text.slice(Math.max(0, text.length - this.#parser!.sinceLastElement));
    const elements = this.#elements;
    this.#elements = 0;
    if (leftover.trim() !== "" || elements > 1) {
      throw new StreamError(
        "XSRV_XML_NOT_WELL_FORMED",
        "not-well-formed",
        "a message must hold one complete element",
      );
    }
  }

  header(from: string, id: string | undefined): string {
    const idAttr = id === undefined ? "" : ` id="${id}"`;
    return `<open xmlns="${NS_FRAMING}"${idAttr} from="${escapeXML(from)}" version="1.0" xml:lang="en"/>`;
  }

  send(text: string): void {
    if (this.#closed) return;
    this.#ws.send(standaloneElement(text));
    // A client that does not read must not make the server hold its output forever.
    if (this.#ws.bufferedAmount > this.#options.limits.maxOutboundBufferBytes) {
      this.#options.log.warn({ buffered: this.#ws.bufferedAmount }, "client is not reading; disconnecting");
      this.destroy();
    }
  }

  /** Each element is sent as its own message already. */
  flush(): void {}

  /** Nothing to reset: every message is parsed as one element of the primed stream. */
  restart(): void {}

  startTls(): void {
    throw new Error("STARTTLS is not offered over WebSocket");
  }

  /** RFC 7395 §3.6.1: `<close see-other-uri/>` names the endpoint to reconnect to. */
  redirect(webBase: string): void {
    this.send(`<close xmlns="${NS_FRAMING}" see-other-uri="${escapeXML(webSocketUrlOf(webBase))}"/>`);
    this.end();
  }

  end(): void {
    if (this.#closed || this.#ending) return;
    this.#ending = true;
    // The stream ignores what comes after its end, but the client's close frame must be read:
    // only the input budget holds reading now. A client over its budget (one cut off for a huge
    // message) is not read faster for being cut off: it gets a second, then the connection goes.
    this.#sliced.stop();
    this.#input.finish();
    // RFC 7395 §3.6: after the stream's close, the server closes the WebSocket connection.
    setTimeout(() => {
      if (!this.#closed) this.#ws.close(1000);
    }, CLOSE_DELAY_MS).unref();
    const graceMs = this.#input.held ? CLOSE_DELAY_MS + OVER_BUDGET_CLOSE_MS : 5_000;
    setTimeout(() => this.destroy(), graceMs).unref();
  }

  destroy(): void {
    this.#ws.terminate();
  }

  pause(): void {
    this.#input.pause();
  }

  resume(): void {
    this.#input.resume();
  }

  holdForLogin(): void {
    this.#input.hold("login");
  }

  releaseForLogin(): void {
    this.#input.release("login");
  }

  #onClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#sliced.stop();
    this.#input.stop();
    this.#events?.gone();
  }
}

/** The bytes of a message as ws delivers it (a Buffer, a list of fragments, or an ArrayBuffer). */
function byteLength(data: WebSocket.RawData): number {
  if (Array.isArray(data)) return data.reduce((sum, part) => sum + part.length, 0);
  return data.byteLength;
}

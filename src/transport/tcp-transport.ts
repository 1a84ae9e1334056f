/**
 * A client stream over TCP (RFC 6120 §3), plain with STARTTLS or TLS from the first byte
 * (XEP-0368): bytes in through a UTF-8 decoder and the stream parser (with its limits) at the
 * pace the input shaper allows, elements out to the stream; output coalesced into one write per
 * event-loop turn, with a bound on what a client that does not read may make us buffer.
 */
import type { Socket } from "node:net";
import { StringDecoder } from "node:string_decoder";
import { type SecureContext, TLSSocket } from "node:tls";
import { escapeXML } from "@xmpp/xml";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import { NS_CLIENT, NS_STREAM } from "../xmpp/ns.ts";
import { StreamParser } from "../xmpp/stream-parser.ts";
import type { StreamEvents, StreamTransport } from "../xmpp/stream-transport.ts";
import { InputShaper, PacedInput } from "./input-shaper.ts";
import { afterParseTurn, PARSE_SLICE_SIZE } from "./parse-slices.ts";

/** How long a closed stream waits for the client to close its side before the socket is cut. */
const CLOSE_GRACE_MS = 5_000;

/** Options for {@link TcpTransport}. */
export interface TcpTransportOptions {
  /** XEP-0368: TLS from the first byte (the socket is a TLSSocket already). */
  directTls: boolean;
  /** For STARTTLS. */
  tlsContext: SecureContext;
  limits: Readonly<Config["limits"]>;
  log: Logger;
}

/** One TCP connection's transport. */
export class TcpTransport implements StreamTransport {
  readonly remoteAddress: string;
  readonly footer = "</stream:stream>";
  readonly canRedirect = true;
  readonly #raw: Socket;
  #socket: Socket;
  readonly #options: TcpTransportOptions;
  #events: StreamEvents | undefined;
  #parser: StreamParser | undefined;
  #decoder = new StringDecoder("utf8");
  #out: string[] = [];
  #flushScheduled = false;
  #secure: boolean;
  #closed = false;
  /** Our end of the stream is out: what the client sends now is read (for its FIN), not parsed. */
  #ending = false;
  /** Reading, at the pace of `limits.inputBytesPerSecond` and `limits.inputBurstBytes`. */
  readonly #input: PacedInput;

  constructor(socket: Socket, options: TcpTransportOptions) {
    this.#raw = socket;
    this.#socket = socket;
    this.#options = options;
    this.#secure = options.directTls;
    this.remoteAddress = socket.remoteAddress ?? "unknown";
    // The socket of the moment: STARTTLS replaces it with the TLS socket.
    this.#input = new PacedInput(
      { pause: () => this.#socket.pause(), resume: () => this.#socket.resume() },
      new InputShaper(options.limits.inputBytesPerSecond, options.limits.inputBurstBytes),
    );
    socket.setNoDelay(true);
  }

  get secure(): boolean {
    return this.#secure;
  }

  get canStartTls(): boolean {
    return !this.#secure;
  }

  attach(events: StreamEvents): void {
    this.#events = events;
    this.#listen(this.#raw);
    this.#raw.on("close", () => this.#onClosed());
    this.restart();
  }

  header(from: string, id: string | undefined): string {
    const idAttr = id === undefined ? "" : ` id="${id}"`;
    return `<?xml version="1.0"?><stream:stream xmlns="${NS_CLIENT}" xmlns:stream="${NS_STREAM}"${idAttr} from="${escapeXML(from)}" version="1.0" xml:lang="en">`;
  }

  #listen(socket: Socket): void {
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => this.#options.log.debug({ err: error }, "socket error"));
  }

  restart(): void {
    const events = this.#events!;
    this.#decoder = new StringDecoder("utf8");
    // Only the current parser speaks for the stream: after STARTTLS or a restart, what the old
    // one still finds in the read it was given is not the client's new stream (RFC 6120 §5.4.3.3:
    // plaintext sent after <starttls/> must not be taken for the encrypted stream's).
    const parser: StreamParser = new StreamParser(
      {
        onStreamOpen: (attrs, name) => this.#parser === parser && events.opened(attrs, name),
        onStanza: (el) => this.#parser === parser && events.element(el),
        onStreamClose: () => this.#parser === parser && events.closedByPeer(),
      },
      this.#options.limits,
    );
    this.#parser = parser;
  }

  #onData(chunk: Buffer): void {
    this.#events!.active();
    if (!this.#closed) this.#input.received(chunk.length);
    if (this.#ending) return;
    this.#parseFrom(chunk);
  }

  /**
   * Parses a slice of `chunk` now and, with reading held, the rest in later turns, with the
   * parser it was read for: when STARTTLS or a stream restart replaced that parser meanwhile, the
   * rest is dropped (it was sent before the client could know the new stream had begun).
   */
  #parseFrom(chunk: Buffer): void {
    const parser = this.#parser;
    const slice = chunk.length > PARSE_SLICE_SIZE ? chunk.subarray(0, PARSE_SLICE_SIZE) : chunk;
    try {
      parser?.write(this.#decoder.write(slice));
    } catch (error) {
      this.#input.release("parse");
      this.#events!.failed(error);
      return;
    }
    // Held until the read's last slice is parsed (or the rest is dropped), not slice by slice.
    if (slice.length === chunk.length || this.#closed || this.#ending || this.#parser !== parser) {
      this.#input.release("parse");
      return;
    }
    this.#input.hold("parse");
    afterParseTurn(() => {
      if (!this.#closed && !this.#ending && this.#parser === parser)
        this.#parseFrom(chunk.subarray(PARSE_SLICE_SIZE));
      else this.#input.release("parse");
    });
  }

  send(text: string): void {
    if (this.#closed) return;
    this.#out.push(text);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.#flushScheduled = false;
    if (this.#closed || this.#out.length === 0) return;
    const data = this.#out.length === 1 ? this.#out[0]! : this.#out.join("");
    this.#out = [];
    this.#socket.write(data);
    // A client that does not read must not make the server hold its output forever.
    if (this.#socket.writableLength > this.#options.limits.maxOutboundBufferBytes) {
      this.#options.log.warn(
        { buffered: this.#socket.writableLength },
        "client is not reading; disconnecting",
      );
      this.destroy();
    }
  }

  startTls(): void {
    // Nothing is parsed during the handshake; the client opens a new stream once it is secure.
    this.#parser = undefined;
    this.#raw.removeAllListeners("data");
    const secure = new TLSSocket(this.#raw, { isServer: true, secureContext: this.#options.tlsContext });
    this.#socket = secure;
    this.#secure = true;
    // A hold taken on the plain socket (the shaper's) holds the TLS socket from now on.
    if (this.#input.held) secure.pause();
    secure.on("secure", () => {
      this.restart();
      this.#events?.secured();
    });
    this.#listen(secure);
    secure.on("close", () => this.#onClosed());
  }

  end(): void {
    if (this.#closed) return;
    this.flush();
    // The client's closing tag and FIN must be read even if the session had paused reading;
    // nothing more is parsed (the stream is over), as WebSocketTransport.end does.
    this.#ending = true;
    this.#input.finish();
    this.#socket.end();
    setTimeout(() => this.destroy(), CLOSE_GRACE_MS).unref();
  }

  destroy(): void {
    this.#socket.destroy();
    this.#raw.destroy();
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
    this.#input.stop();
    this.#events?.gone();
  }
}

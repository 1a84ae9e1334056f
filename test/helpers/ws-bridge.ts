/**
 * Carries a raw client's TCP-style XML stream over XMPP-over-WebSocket (RFC 7395), so the
 * integration suite runs unchanged over both transports (`STARLING_TEST_TRANSPORT=websocket`).
 *
 * Outbound, the text of each write is cut into top-level elements, each sent as one message:
 * the `<stream:stream>` header becomes `<open/>` and `</stream:stream>` becomes `<close/>`; what
 * is left of a write that does not complete an element (broken or endless XML, on purpose) goes
 * as one message of its own, which the server must refuse. Inbound, `<open/>` becomes a stream
 * header and `<close/>` the stream's end, so the client's stream parser sees what it would see
 * over TCP.
 */
import { Duplex } from "node:stream";
import WebSocket from "ws";
import { withTimeout } from "./wait-for.ts";

const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_CLIENT = "jabber:client";
const NS_STREAM = "http://etherx.jabber.org/streams";

/** Attributes of a start tag's text, e.g. `to='x' version="1.0"`. */
function attributesOf(tag: string): string {
  return tag
    .replace(/^<[^\s/>]+/, "")
    .replace(/\/?>$/, "")
    .replace(/\s+xmlns(:stream)?=(['"])[^'"]*\2/g, "")
    .trim();
}

/** Splits XML text into complete top-level pieces; returns them and what is left incomplete. */
export function splitTopLevel(text: string): { pieces: string[]; rest: string } {
  const pieces: string[] = [];
  let depth = 0;
  let start = -1;
  let i = 0;
  while (i < text.length) {
    const lt = text.indexOf("<", i);
    if (lt < 0) break;
    if (depth === 0 && start < 0) start = lt;
    const next = text[lt + 1];
    let end: number;
    if (text.startsWith("<!--", lt)) end = text.indexOf("-->", lt) + 3;
    else if (text.startsWith("<![CDATA[", lt)) end = text.indexOf("]]>", lt) + 3;
    else if (next === "?") end = text.indexOf("?>", lt) + 2;
    else {
      // A tag: find its '>' outside quoted attribute values.
      let j = lt + 1;
      let quote: string | undefined;
      for (; j < text.length; j++) {
        const c = text[j]!;
        if (quote !== undefined) {
          if (c === quote) quote = undefined;
        } else if (c === "'" || c === '"') quote = c;
        else if (c === ">") break;
      }
      end = j < text.length ? j + 1 : 0;
    }
    if (end <= 0 || end <= lt) break; // incomplete
    const token = text.slice(lt, end);
    if (next === "?" || next === "!") {
      if (depth === 0) {
        pieces.push(token);
        start = -1;
      }
    } else if (next === "/") {
      if (depth === 0) {
        pieces.push(token); // </stream:stream>
        start = -1;
      } else if (--depth === 0) {
        pieces.push(text.slice(start, end));
        start = -1;
      }
    } else if (token.endsWith("/>")) {
      if (depth === 0) {
        pieces.push(token);
        start = -1;
      }
    } else if (depth === 0 && /^<stream:stream[\s>]/.test(token)) {
      pieces.push(token);
      start = -1;
    } else depth++;
    i = end;
  }
  return { pieces, rest: start >= 0 ? text.slice(start) : depth === 0 ? "" : text };
}

/** A Duplex that looks like the client's socket, over one WebSocket connection. */
class WebSocketStream extends Duplex {
  readonly #ws: WebSocket;

  constructor(ws: WebSocket) {
    super();
    this.#ws = ws;
    ws.on("message", (data) => {
      const text = data.toString();
      // RFC 7395 §3.3.3: every message is one complete element that stands on its own (its
      // namespaces declared in it). Anything else is the server's fault: fail the connection.
      const { pieces, rest } = splitTopLevel(text);
      const undeclared =
        (/^<stream:/.test(text) && !/^<stream:[^>]*\sxmlns:stream=/.test(text)) ||
        (/^<[A-Za-z][\w.-]*[\s/>]/.test(text) && !/^<[^>]*\sxmlns=/.test(text));
      if (pieces.length !== 1 || rest.trim() !== "" || undeclared) {
        this.destroy(
          new Error(
            `RFC 7395 §3.3.3: a WebSocket message must be one element with its namespaces declared; got ${JSON.stringify(text.slice(0, 300))}`,
          ),
        );
        ws.close();
        return;
      }
      if (/^<open[\s/]/.test(text) && text.includes(NS_FRAMING)) {
        this.push(`<stream:stream xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}' ${attributesOf(text)}>`);
      } else if (/^<close[\s/]/.test(text) && text.includes(NS_FRAMING)) {
        this.push("</stream:stream>");
      } else this.push(text);
    });
    ws.on("close", () => {
      this.push(null);
      this.destroy();
    });
    ws.on("error", (error) => this.destroy(error));
  }

  override _read(): void {}

  override _write(
    chunk: Buffer | string,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    const { pieces, rest } = splitTopLevel(chunk.toString());
    if (rest.trim() !== "") pieces.push(rest);
    for (const piece of pieces) {
      if (piece.startsWith("<?xml")) continue;
      if (/^<stream:stream[\s>]/.test(piece)) {
        this.#ws.send(`<open xmlns='${NS_FRAMING}' ${attributesOf(piece)}/>`);
      } else if (piece === "</stream:stream>") this.#ws.send(`<close xmlns='${NS_FRAMING}'/>`);
      else this.#ws.send(piece);
    }
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#ws.terminate();
    callback(error);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#ws.close(1000);
    callback();
  }

  /** Stops reading the WebSocket itself (not only this stream), as a client that stops reading. */
  override pause(): this {
    this.#ws.pause();
    return super.pause();
  }

  override resume(): this {
    this.#ws.resume();
    return super.resume();
  }

  setNoDelay(): this {
    return this;
  }
}

/** Opens an XMPP-over-WebSocket connection and returns it as a socket-like stream. */
export async function connectWebSocket(url: string): Promise<Duplex & { setNoDelay(): unknown }> {
  const ws = new WebSocket(url, ["xmpp"], { rejectUnauthorized: false });
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    }),
    `WebSocket connect to ${url}`,
  );
  return new WebSocketStream(ws);
}

/** Whether the integration suite runs over WebSocket (`STARLING_TEST_TRANSPORT=websocket`). */
export function overWebSocket(): boolean {
  return process.env.STARLING_TEST_TRANSPORT === "websocket";
}

/**
 * For a test of what exists on TCP only (STARTTLS, the stream element's own namespaces, a stanza
 * split over several writes): skips it, saying why, when the suite runs over WebSocket.
 */
export function tcpOnly(t: { skip(message?: string): void }, why: string): boolean {
  if (!overWebSocket()) return false;
  t.skip(`TCP only: ${why}`);
  return true;
}

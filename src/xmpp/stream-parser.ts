/**
 * Parses one XML stream into stream-open, stanza and stream-close events, enforcing XMPP's
 * restrictions and Starling's limits. The tokenizer is saxes (a conformant XML parser);
 * elements are @xmpp/xml (ltx) elements so the rest of the server has one element type.
 *
 * RFC 6120 §11.1: "An XMPP entity MUST NOT ... send ... comments, processing instructions,
 * internal or external DTD subsets, internal or external entity references (with the exception
 * of the predefined entities)". A receiver that gets one closes the stream with
 * `<restricted-xml/>`.
 */
import { Element } from "@xmpp/xml";
import { SaxesParser } from "saxes";
import { StreamError } from "../errors.ts";

/** Limits applied while parsing. */
export interface StreamParserLimits {
  /** Largest stanza, in characters of XML text (close to bytes for ASCII-heavy traffic). */
  maxStanzaBytes: number;
  /** Deepest nesting inside a stanza (the stanza itself is depth 1). */
  maxStanzaDepth: number;
}

/** What the parser reports. */
export interface StreamParserEvents {
  onStreamOpen(attrs: Record<string, string>, name: string): void;
  onStanza(stanza: Element): void;
  onStreamClose(): void;
}

/**
 * One stream's parser. `write()` throws a {@link StreamError} with the RFC condition on a
 * violation; the caller sends it and closes. A stream restart (after STARTTLS or SASL) needs a
 * new parser.
 */
export class StreamParser {
  readonly #events: StreamParserEvents;
  readonly #limits: StreamParserLimits;
  readonly #saxes: SaxesParser;
  #stack: Element[] = [];
  #opened = false;
  #closed = false;
  /** Characters fed so far. */
  #written = 0;
  /**
   * Position where the current top-level stanza began, or where the last one ended. saxes'
   * `position` is exact inside its callbacks (and only there), which is where this is set.
   */
  #mark = 0;
  #pendingError: StreamError | undefined;
  /** Namespace prefixes declared on the stream header (other than `stream`). */
  #rootPrefixes: Record<string, string> = {};

  constructor(events: StreamParserEvents, limits: StreamParserLimits) {
    this.#events = events;
    this.#limits = limits;
    // Namespace processing makes an undeclared prefix an error, as RFC 6120 §11.2 requires.
    const saxes = new SaxesParser({ position: true, xmlns: true });
    this.#saxes = saxes;
    saxes.on("doctype", () => this.#restricted("a DTD"));
    saxes.on("processinginstruction", () => this.#restricted("a processing instruction"));
    saxes.on("comment", () => this.#restricted("a comment"));
    saxes.on("error", (error) => {
      if (/doctype/i.test(error.message)) return this.#restricted("a DTD");
      this.#pendingError ??= /unbound namespace prefix/.test(error.message)
        ? new StreamError("XSRV_XML_NOT_WELL_FORMED", "bad-namespace-prefix", error.message)
        : new StreamError("XSRV_XML_NOT_WELL_FORMED", "not-well-formed", error.message);
    });
    saxes.on("opentag", (tag) => {
      const attrs: Record<string, string> = {};
      for (const [name, attr] of Object.entries(tag.attributes)) attrs[name] = attr.value;
      this.#open(tag.name, attrs);
    });
    saxes.on("closetag", (tag) => this.#close(tag.name));
    saxes.on("text", (text) => this.#text(text));
    saxes.on("cdata", (text) => this.#text(text));
  }

  /**
   * Characters fed since the last top-level element (or the stream header) ended: a framing
   * that carries whole elements (RFC 7395) checks that only whitespace is left over.
   */
  get sinceLastElement(): number {
    return this.#written - this.#mark;
  }

  /** Feeds a chunk; throws a StreamError on the first violation. */
  write(chunk: string): void {
    if (this.#closed) return;
    this.#saxes.write(chunk);
    this.#written += chunk.length;
    this.#throwPending();
    // Characters received since the current stanza began (or the previous one ended): this
    // also bounds text between stanzas, which saxes would otherwise buffer.
    if (this.#written - this.#mark > this.#limits.maxStanzaBytes) {
      throw new StreamError(
        "XSRV_STANZA_TOO_LARGE",
        "policy-violation",
        `stanza exceeds maxStanzaBytes (${this.#limits.maxStanzaBytes})`,
      );
    }
  }

  #throwPending(): void {
    const error = this.#pendingError;
    if (error !== undefined) {
      this.#closed = true;
      throw error;
    }
  }

  #restricted(what: string): void {
    this.#pendingError ??= new StreamError(
      "XSRV_XML_RESTRICTED",
      "restricted-xml",
      `the stream contained ${what}`,
    );
  }

  #open(name: string, attrs: Record<string, string>): void {
    if (this.#pendingError) return;
    if (!this.#opened) {
      this.#opened = true;
      this.#mark = this.#saxes.position;
      for (const [key, value] of Object.entries(attrs)) {
        if (key.startsWith("xmlns:") && key !== "xmlns:stream") this.#rootPrefixes[key] = value;
      }
      this.#events.onStreamOpen(attrs, name);
      return;
    }
    if (this.#stack.length >= this.#limits.maxStanzaDepth) {
      this.#pendingError = new StreamError(
        "XSRV_STANZA_TOO_DEEP",
        "policy-violation",
        `stanza nests deeper than maxStanzaDepth (${this.#limits.maxStanzaDepth})`,
      );
      return;
    }
    const parent = this.#stack.at(-1);
    // A stanza travels on its own, away from the stream header: it carries the prefixes the
    // header declared, or namespace-aware receivers could not read it.
    const element = new Element(name, parent === undefined ? { ...this.#rootPrefixes, ...attrs } : attrs);
    if (parent !== undefined) parent.cnode(element);
    this.#stack.push(element);
  }

  #close(name: string): void {
    if (this.#pendingError) return;
    const element = this.#stack.pop();
    if (element === undefined) {
      // The stream root itself closed.
      this.#closed = true;
      void name;
      this.#events.onStreamClose();
      return;
    }
    if (this.#stack.length === 0) {
      // A whole stanza can arrive in one chunk (a large TCP read, a WebSocket message): the
      // size is checked at its end too, not only between chunks.
      if (this.#saxes.position - this.#mark > this.#limits.maxStanzaBytes) {
        this.#pendingError = new StreamError(
          "XSRV_STANZA_TOO_LARGE",
          "policy-violation",
          `stanza exceeds maxStanzaBytes (${this.#limits.maxStanzaBytes})`,
        );
        return;
      }
      this.#mark = this.#saxes.position;
      this.#events.onStanza(element);
    }
  }

  #text(text: string): void {
    if (this.#pendingError) return;
    const parent = this.#stack.at(-1);
    // Whitespace between stanzas is keepalive (RFC 6120 §4.6.1); other text there is dropped.
    if (parent !== undefined) parent.t(text);
  }
}

/** Parses one serialised element (a stanza that travelled as a string). Throws on bad XML. */
export function parseElement(text: string): Element {
  let root: Element | undefined;
  const stack: Element[] = [];
  const saxes = new SaxesParser({ position: false });
  saxes.on("error", (error) => {
    throw error;
  });
  saxes.on("opentag", (tag) => {
    const element = new Element(tag.name, tag.attributes as Record<string, string>);
    stack.at(-1)?.cnode(element);
    root ??= element;
    stack.push(element);
  });
  saxes.on("closetag", () => void stack.pop());
  saxes.on("text", (t) => void stack.at(-1)?.t(t));
  saxes.write(text).close();
  if (root === undefined) throw new SyntaxError("no element");
  return root;
}

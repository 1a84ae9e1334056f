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

/** saxes with the options every stream uses. */
type StreamSaxesOptions = { position: true; xmlns: true };

/**
 * saxes' parser with its handler slots declared up front. `on()` stores each handler under a
 * computed name (`this[name] = handler`), and V8 turns an object that gains several properties by
 * computed names into a dictionary: with the eight handlers a stream sets, every read of the
 * parser's state (a dozen per character) became a hash lookup, and each parser carried a 3 KB
 * hash table for the garbage collector to trace. Declared by plain assignment, the slots exist
 * before `on()` and the parser keeps fast properties: parsing a chat message took 25 instead of
 * 42 µs (test/unit/stream-parser.test.ts checks that `on()` adds no property).
 */
export class DeclaredSaxesParser extends SaxesParser<StreamSaxesOptions> {
  constructor() {
    super({ position: true, xmlns: true });
    // The names of saxes' EVENT_NAME_TO_HANDLER_NAME (saxes 6).
    const slots = this as unknown as Record<string, unknown>;
    slots.xmldeclHandler = undefined;
    slots.textHandler = undefined;
    slots.piHandler = undefined;
    slots.doctypeHandler = undefined;
    slots.commentHandler = undefined;
    slots.openTagStartHandler = undefined;
    slots.attributeHandler = undefined;
    slots.openTagHandler = undefined;
    slots.closeTagHandler = undefined;
    slots.cdataHandler = undefined;
    slots.errorHandler = undefined;
    slots.endHandler = undefined;
    slots.readyHandler = undefined;
  }

  /**
   * Drops what saxes keeps of a top-level element once it has closed: its tag, with attribute
   * objects and namespace map. saxes holds it until the next tag, which on a quiet connection
   * comes seconds later, so each message's tag outlived the young generation and was promoted,
   * to become old-generation garbage (docs/benchmarks.md). saxes sets both afresh at the next
   * tag before it reads them.
   */
  forgetTag(): void {
    const slots = this as unknown as Record<string, unknown>;
    slots.tag = null;
    slots.topNS = null;
  }

  /** As {@link forgetTag}, for the chunk saxes keeps after `write()` returns (never during it). */
  forgetChunk(): void {
    (this as unknown as Record<string, unknown>).chunk = "";
  }
}

/** Limits applied while parsing. */
export interface StreamParserLimits {
  /** Largest stanza, in characters of XML text (close to bytes for ASCII-heavy traffic). */
  maxStanzaBytes: number;
  /** Deepest nesting inside a stanza (the stanza itself is depth 1). */
  maxStanzaDepth: number;
  /** Most elements in one stanza, the stanza itself included. */
  maxStanzaElements: number;
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
 *
 * A violation stops the parse where it is found, not at the end of the chunk: saxes resolves
 * namespaces through a chain as deep as the nesting, so finishing a 60 KB chunk of 10,000
 * nested elements after the depth limit fired took seconds of one worker's time (bench/abuse.ts).
 */
export class StreamParser {
  readonly #events: StreamParserEvents;
  readonly #limits: StreamParserLimits;
  readonly #saxes: DeclaredSaxesParser;
  #stack: Element[] = [];
  /** Elements of the stanza being parsed so far. */
  #elements = 0;
  #opened = false;
  #closed = false;
  /** Characters fed so far. */
  #written = 0;
  /**
   * Position where the current top-level stanza began, or where the last one ended. saxes'
   * `position` is exact inside its callbacks (and only there), which is where this is set.
   */
  #mark = 0;
  /** Namespace prefixes declared on the stream header (other than `stream`). */
  #rootPrefixes: Record<string, string> = {};
  /**
   * A top-level element that has closed but is not emitted yet (it closed at {@link #mark}).
   * saxes hands a closing tag to the handler before it checks that the names match (`<message>…
   * </iq>`), so an element is emitted only at the parser's next event, or when the chunk is
   * done, once no error came at the position where it closed (RFC 6120 §11.4: not well-formed
   * XML ends the stream, and is not acted upon).
   */
  #finished: Element | undefined;

  constructor(events: StreamParserEvents, limits: StreamParserLimits) {
    this.#events = events;
    this.#limits = limits;
    // Namespace processing makes an undeclared prefix an error, as RFC 6120 §11.2 requires.
    const saxes = new DeclaredSaxesParser();
    this.#saxes = saxes;
    saxes.on("doctype", () => this.#restricted("a DTD"));
    saxes.on("processinginstruction", () => this.#restricted("a processing instruction"));
    saxes.on("comment", () => this.#restricted("a comment"));
    saxes.on("error", (error) => {
      // An error where the held element closed is about its closing tag: it is dropped.
      if (this.#saxes.position === this.#mark) this.#finished = undefined;
      if (/doctype/i.test(error.message)) return this.#restricted("a DTD");
      this.#stop(
        /unbound namespace prefix/.test(error.message)
          ? new StreamError("XSRV_XML_NOT_WELL_FORMED", "bad-namespace-prefix", error.message)
          : new StreamError("XSRV_XML_NOT_WELL_FORMED", "not-well-formed", error.message),
      );
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

  /** Characters parsed: after a violation, where parsing stopped. */
  get position(): number {
    return this.#saxes.position;
  }

  /** Feeds a chunk; throws a StreamError on the first violation. */
  write(chunk: string): void {
    if (this.#closed) return;
    this.#saxes.write(chunk);
    this.#saxes.forgetChunk();
    this.#emitFinished();
    this.#written += chunk.length;
    // Characters received since the current stanza began (or the previous one ended): this
    // also bounds text between stanzas, which saxes would otherwise buffer.
    this.#checkSize(this.#written);
  }

  /** Throws when the stanza begun at the mark is larger than the limit at `position`. */
  #checkSize(position: number): void {
    if (position - this.#mark > this.#limits.maxStanzaBytes) {
      this.#stop(
        new StreamError(
          "XSRV_STANZA_TOO_LARGE",
          "policy-violation",
          `stanza exceeds maxStanzaBytes (${this.#limits.maxStanzaBytes})`,
        ),
      );
    }
  }

  /**
   * Ends the parse at a violation: thrown from inside saxes' callback, the error leaves
   * `saxes.write` at once, with the rest of the chunk unread (the parser is closed for good).
   */
  #stop(error: StreamError): never {
    // A complete element before the violation was well-formed: it counts, as it did when it
    // came in an earlier chunk.
    this.#emitFinished();
    this.#closed = true;
    throw error;
  }

  /** Emits the top-level element held since it closed (see {@link #finished}). */
  #emitFinished(): void {
    const element = this.#finished;
    if (element === undefined) return;
    this.#finished = undefined;
    this.#events.onStanza(element);
  }

  #restricted(what: string): never {
    this.#stop(new StreamError("XSRV_XML_RESTRICTED", "restricted-xml", `the stream contained ${what}`));
  }

  #open(name: string, attrs: Record<string, string>): void {
    this.#emitFinished();
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
      this.#stop(
        new StreamError(
          "XSRV_STANZA_TOO_DEEP",
          "policy-violation",
          `stanza nests deeper than maxStanzaDepth (${this.#limits.maxStanzaDepth})`,
        ),
      );
    }
    // A stanza of many small parts is stopped as soon as it is too large, not at its end.
    if (this.#stack.length > 0) this.#checkSize(this.#saxes.position);
    this.#elements = this.#stack.length === 0 ? 1 : this.#elements + 1;
    if (this.#elements > this.#limits.maxStanzaElements) {
      // Parsed and held, `<x/>` takes 155 bytes of heap for its four: five clients whose
      // stanzas of 100,000 of them sat half-built (about 10 MB each at the byte limit) while the
      // input shaper paced them grew a worker's heap, and its GC pauses, enough to hold other
      // users up (bench/abuse.ts).
      this.#stop(
        new StreamError(
          "XSRV_STANZA_TOO_WIDE",
          "policy-violation",
          `stanza has more than maxStanzaElements (${this.#limits.maxStanzaElements}) elements`,
        ),
      );
    }
    const parent = this.#stack.at(-1);
    // A stanza travels on its own, away from the stream header: it carries the prefixes the
    // header declared, or namespace-aware receivers could not read it.
    const element = new Element(name, parent === undefined ? { ...this.#rootPrefixes, ...attrs } : attrs);
    if (parent !== undefined) parent.cnode(element);
    this.#stack.push(element);
  }

  #close(name: string): void {
    this.#emitFinished();
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
      this.#checkSize(this.#saxes.position);
      this.#mark = this.#saxes.position;
      this.#saxes.forgetTag();
      this.#finished = element;
    }
  }

  #text(text: string): void {
    this.#emitFinished();
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

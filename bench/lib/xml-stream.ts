/**
 * A cheap XMPP stream reader for load clients: the ltx SAX parser (the one @xmpp/xml wraps)
 * below a minimal element tree. It yields the stream header once and then each top-level
 * element (stanza or nonza) whole; whitespace keepalives between them are dropped.
 *
 * RFC 6120 §4.2: "the initiating entity MUST send an opening stream header"; every later
 * first-level child of <stream:stream> is a complete XML element, so the tree only needs
 * to live until its closing tag.
 */
import { StringDecoder } from "node:string_decoder";
import SaxLtx from "ltx/src/parsers/ltx.js";

/** One parsed element: its qualified name, attributes as sent, and children in order. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: (XmlElement | string)[];
  parent: XmlElement | undefined;
}

/** Callbacks for {@link XmlStreamReader}; plain functions rather than events to keep the hot path lean. */
export interface XmlStreamHandlers {
  /** The opening `<stream:stream>` tag, with its attributes (including `xmlns:*` declarations). */
  onStreamStart(attrs: Record<string, string>): void;
  /** A complete first-level child of the stream. */
  onElement(element: XmlElement): void;
  /** The closing `</stream:stream>` tag. */
  onStreamEnd(): void;
  /** Malformed input: a mismatched closing tag, a bad entity, or an element beyond the size limit. */
  onError(error: Error): void;
}

/** Options for {@link XmlStreamReader}. */
export interface XmlStreamReaderOptions {
  /** Largest first-level element accepted, in UTF-16 code units of its text; protects the load generator. */
  maxElementChars?: number;
}

/** Returns the first child element named `name` (qualified name as sent), optionally in namespace `xmlns`. */
export function childOf(element: XmlElement, name: string, xmlns?: string): XmlElement | undefined {
  for (const child of element.children) {
    if (typeof child === "string" || child.name !== name) continue;
    if (xmlns === undefined || namespaceOf(child) === xmlns) return child;
  }
  return undefined;
}

/** Concatenated text children of an element (entities already decoded by the parser). */
export function textOf(element: XmlElement): string {
  let text = "";
  for (const child of element.children) if (typeof child === "string") text += child;
  return text;
}

/**
 * The default namespace in scope for an element: its own `xmlns`, else the nearest ancestor's.
 * Prefixed names are resolved by {@link resolvePrefix}; load clients only meet the `stream:` prefix.
 */
export function namespaceOf(element: XmlElement): string | undefined {
  for (let e: XmlElement | undefined = element; e; e = e.parent) {
    const ns = e.attrs.xmlns;
    if (ns !== undefined) return ns;
  }
  return undefined;
}

/** Splits `prefix:local`, returning the namespace bound to the prefix by `declarations` (stream header attributes). */
export function resolvePrefix(
  qualifiedName: string,
  declarations: Record<string, string>,
): { ns: string | undefined; local: string } {
  const colon = qualifiedName.indexOf(":");
  if (colon < 0) return { ns: undefined, local: qualifiedName };
  const prefix = qualifiedName.slice(0, colon);
  return { ns: declarations[`xmlns:${prefix}`], local: qualifiedName.slice(colon + 1) };
}

const DEFAULT_MAX_ELEMENT_CHARS = 1 << 20;

/**
 * Incremental reader for one XML stream. Feed it bytes with {@link write}; call {@link reset}
 * after a stream restart (RFC 6120 §4.3.3: after STARTTLS and SASL success both sides start a
 * new stream, "discarding any knowledge obtained" from the old one).
 */
export class XmlStreamReader {
  #handlers: XmlStreamHandlers;
  #maxElementChars: number;
  #decoder = new StringDecoder("utf8");
  #parser!: SaxLtx;
  #depth = 0;
  #current: XmlElement | undefined;
  #elementChars = 0;
  #failed = false;

  constructor(handlers: XmlStreamHandlers, options: XmlStreamReaderOptions = {}) {
    this.#handlers = handlers;
    this.#maxElementChars = options.maxElementChars ?? DEFAULT_MAX_ELEMENT_CHARS;
    this.reset();
  }

  /** Starts a fresh parser, as required at every stream restart. */
  reset(): void {
    const parser = new SaxLtx();
    parser.on("startElement", (name, attrs) => this.#onStart(name, attrs));
    parser.on("endElement", (name) => this.#onEnd(name));
    parser.on("text", (text) => this.#onText(text));
    this.#parser = parser;
    this.#depth = 0;
    this.#current = undefined;
    this.#elementChars = 0;
    this.#failed = false;
  }

  /** Feeds raw bytes; a UTF-8 sequence split across chunks is held back until complete. */
  write(chunk: Buffer): void {
    if (this.#failed) return;
    const text = this.#decoder.write(chunk);
    if (text.length === 0) return;
    if (this.#depth > 0) {
      // Characters since the last complete first-level element: bounds one element plus one chunk.
      this.#elementChars += text.length;
      if (this.#elementChars > this.#maxElementChars) {
        this.#fail(new RangeError(`Element exceeds ${this.#maxElementChars} characters`));
        return;
      }
    }
    try {
      this.#parser.write(text);
    } catch (error) {
      // ltx throws from unescapeXML on an unknown entity or an illegal character reference.
      this.#fail(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #fail(error: Error): void {
    this.#failed = true;
    this.#handlers.onError(error);
  }

  #onStart(name: string, attrs: Record<string, string>): void {
    if (this.#failed) return;
    if (this.#depth === 0) {
      this.#depth = 1;
      this.#handlers.onStreamStart(attrs);
      return;
    }
    const element: XmlElement = { name, attrs, children: [], parent: this.#current };
    this.#current?.children.push(element);
    this.#current = element;
    this.#depth++;
  }

  #onEnd(name: string): void {
    if (this.#failed) return;
    const current = this.#current;
    if (current === undefined) {
      // Closing tag at depth 1 is the end of the stream itself.
      this.#depth = 0;
      this.#handlers.onStreamEnd();
      return;
    }
    if (current.name !== name) {
      this.#fail(new SyntaxError(`Closing tag </${name}> does not match <${current.name}>`));
      return;
    }
    this.#depth--;
    this.#current = current.parent;
    if (current.parent === undefined) {
      this.#elementChars = 0;
      this.#handlers.onElement(current);
    }
  }

  #onText(text: string): void {
    if (this.#failed || this.#current === undefined) return;
    this.#current.children.push(text);
  }
}

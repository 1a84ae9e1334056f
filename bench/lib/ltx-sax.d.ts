/**
 * Types for the SAX parser inside ltx (a dependency of @xmpp/xml), which ships no declarations.
 * Only the surface that xml-stream.ts uses is declared.
 */
declare module "ltx/src/parsers/ltx.js" {
  import type { EventEmitter } from "node:events";

  /** ltx's own streaming SAX parser: fast, non-validating, entity-decoding. */
  export default class SaxLtx extends EventEmitter {
    write(data: string): void;
    end(data?: string): void;
    on(event: "startElement", listener: (name: string, attrs: Record<string, string>) => void): this;
    on(event: "endElement", listener: (name: string, selfClosing: boolean) => void): this;
    on(event: "text", listener: (text: string) => void): this;
  }
}

declare module "ltx/src/escape.js" {
  /** Escapes `& < > " '` for use in attribute values and text. */
  export function escapeXML(s: string): string;
  /** Decodes the five predefined entities and character references. */
  export function unescapeXML(s: string): string;
}

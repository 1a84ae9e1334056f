// Types for the parts of @xmpp/xml (ltx elements) Starling uses; the package ships none.
declare module "@xmpp/xml" {
  export type Node = Element | string;
  export class Element {
    constructor(name: string, attrs?: Record<string, string | undefined>);
    name: string;
    attrs: Record<string, string>;
    children: Node[];
    parent: Element | null;
    is(name: string, xmlns?: string): boolean;
    getName(): string;
    getNS(): string | undefined;
    attr(name: string): string | undefined;
    attr(name: string, value: string | undefined): this;
    getChild(name: string, xmlns?: string): Element | undefined;
    getChildren(name: string, xmlns?: string): Element[];
    getChildElements(): Element[];
    getChildText(name: string, xmlns?: string): string | null;
    getText(): string;
    text(): string;
    c(name: string, attrs?: Record<string, string | undefined>): Element;
    t(text: string): this;
    up(): Element;
    append(...nodes: Node[]): this;
    cnode(child: Element): Element;
    remove(el: Element | string, xmlns?: string): this;
    clone(): Element;
    toString(): string;
  }
  export function xml(
    name: string,
    attrs?: Record<string, string | undefined> | null,
    ...children: (Node | Node[] | undefined | null | false)[]
  ): Element;
  /** A streaming parser: `start` (the root), `element` (each child of the root), `end`, `error`. */
  export class Parser {
    on(event: "element" | "start", listener: (el: Element) => void): this;
    on(event: "error", listener: (error: Error) => void): this;
    on(event: "end", listener: () => void): this;
    write(data: string): void;
    end(data?: string): void;
  }
  export function escapeXML(s: string): string;
  export function escapeXMLText(s: string): string;
  export default xml;
}

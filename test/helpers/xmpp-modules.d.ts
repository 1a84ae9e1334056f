/**
 * Type declarations for the parts of xmpp.js the test helpers use. The @xmpp packages ship
 * JavaScript only; these declarations describe just what the helpers call, so that `tsc
 * --noEmit` checks our side of that boundary.
 */

// "@xmpp/xml" itself (Element, xml, escapeXML) is declared in src/types/xmpp-xml.d.ts.

declare module "@xmpp/xml/lib/Parser.js" {
  import type { EventEmitter } from "node:events";
  /** Streaming parser: `start` (stream header), `element` (each top-level child), `end`, `error`. */
  export default class Parser extends EventEmitter {
    write(data: string): void;
    end(data?: string): void;
  }
}

declare module "@xmpp/jid" {
  /** A parsed JID. */
  export class JID {
    local: string;
    domain: string;
    resource: string;
    bare(): JID;
    toString(): string;
  }
  export default function jid(value: string): JID;
}

declare module "@xmpp/client-core" {
  import type { EventEmitter } from "node:events";
  import type { JID } from "@xmpp/jid";
  import type { Element } from "@xmpp/xml";

  /** The connection state machine of xmpp.js (`connect`, `open`, `online`, `offline`, ...). */
  export class Client extends EventEmitter {
    constructor(options: { service: string; domain: string; timeout?: number });
    jid: JID | null;
    status: string;
    transports: unknown[];
    // biome-ignore lint/suspicious/noExplicitAny: the raw net/tls socket or its xmpp.js wrapper
    socket: any;
    options: { service: string; domain: string };
    start(): Promise<JID>;
    stop(): Promise<Element | undefined>;
    restart(): Promise<void>;
    disconnect(): Promise<Element | undefined>;
    send(element: Element): Promise<void>;
    sendReceive(element: Element, timeoutMs?: number): Promise<Element>;
    isSecure(): boolean;
    _attachSocket(socket: unknown): void;
  }
  export { default as jid } from "@xmpp/jid";
  export { xml } from "@xmpp/xml";
}

declare module "@xmpp/middleware" {
  import type { Client } from "@xmpp/client-core";
  import type { Element } from "@xmpp/xml";
  /** Incoming middleware context. */
  export interface IncomingContext {
    stanza: Element;
    entity: Client;
  }
  export interface Middleware {
    use(fn: (ctx: IncomingContext, next: () => Promise<unknown>) => unknown): unknown;
    filter(fn: (ctx: IncomingContext, next: () => Promise<unknown>) => unknown): unknown;
  }
  export default function middleware(args: { entity: Client }): Middleware;
}

declare module "@xmpp/stream-features" {
  import type { Client } from "@xmpp/client-core";
  import type { Middleware } from "@xmpp/middleware";
  import type { Element } from "@xmpp/xml";
  export interface StreamFeatures {
    use(
      name: string,
      xmlns: string,
      handler: (
        ctx: { entity: Client; stanza: Element },
        next: () => Promise<unknown>,
        feature: Element,
      ) => unknown,
    ): unknown;
  }
  export default function streamFeatures(args: { middleware: Middleware }): StreamFeatures;
}

declare module "@xmpp/iq/caller.js" {
  import type { Client } from "@xmpp/client-core";
  import type { Middleware } from "@xmpp/middleware";
  import type { Element } from "@xmpp/xml";
  export interface IqCaller {
    request(stanza: Element, timeoutMs?: number): Promise<Element>;
    get(element: Element, to?: string, timeoutMs?: number): Promise<Element>;
    set(element: Element, to?: string, timeoutMs?: number): Promise<Element>;
  }
  export default function iqCaller(args: { middleware: Middleware; entity: Client }): IqCaller;
}

declare module "@xmpp/iq/callee.js" {
  import type { Client } from "@xmpp/client-core";
  import type { Middleware } from "@xmpp/middleware";
  import type { Element } from "@xmpp/xml";
  export interface IqCallee {
    get(ns: string, name: string, handler: (ctx: unknown) => Element | Record<string, never>): void;
  }
  export default function iqCallee(args: { middleware: Middleware; entity: Client }): IqCallee;
}

declare module "@xmpp/tcp" {
  import type { Client } from "@xmpp/client-core";
  export default function tcp(args: { entity: Client }): void;
}

declare module "@xmpp/websocket" {
  import type { Client } from "@xmpp/client-core";
  export default function tcp(args: { entity: Client }): void;
}

declare module "@xmpp/tls/lib/Connection.js" {
  /** The direct-TLS transport class; its `socketParameters()` is what `tls.connect()` receives. */
  export default class ConnectionTLS {
    socketParameters(service: string): Record<string, unknown> | undefined;
  }
}

declare module "@xmpp/tls/lib/Socket.js" {
  import type { EventEmitter } from "node:events";
  /** xmpp.js' TLS socket wrapper: `connect(options)` calls `tls.connect(options)`. */
  export default class Socket extends EventEmitter {
    secure: boolean;
    connect(options: Record<string, unknown>): void;
  }
}

declare module "@xmpp/sasl" {
  import type { StreamFeatures } from "@xmpp/stream-features";
  export type Authenticate = (
    credentials: { username: string; password: string },
    mechanism: string,
  ) => Promise<void>;
  export default function sasl(
    args: { streamFeatures: StreamFeatures; saslFactory: unknown },
    onAuthenticate: (authenticate: Authenticate, mechanisms: string[]) => Promise<void>,
  ): void;
}

declare module "@xmpp/resource-binding" {
  import type { IqCaller } from "@xmpp/iq/caller.js";
  import type { StreamFeatures } from "@xmpp/stream-features";
  export default function resourceBinding(
    args: { streamFeatures: StreamFeatures; iqCaller: IqCaller },
    resource: string | undefined,
  ): void;
}

declare module "@xmpp/stream-management" {
  import type { EventEmitter } from "node:events";
  import type { Client } from "@xmpp/client-core";
  import type { Middleware } from "@xmpp/middleware";
  import type { StreamFeatures } from "@xmpp/stream-features";
  /** XEP-0198 state as xmpp.js keeps it. */
  export interface StreamManagement extends EventEmitter {
    enabled: boolean;
    id: string;
    inbound: number;
    outbound: number;
    outbound_q: unknown[];
    max: string | null;
    timeout: number;
    requestAckInterval: number;
  }
  export default function streamManagement(args: {
    streamFeatures: StreamFeatures;
    entity: Client;
    middleware: Middleware;
    /** With these, XEP-0198 is enabled inside Bind 2 and resumed inside SASL2. */
    sasl2?: unknown;
    bind2?: unknown;
  }): StreamManagement;
}

declare module "@xmpp/sasl2" {
  import type { StreamFeatures } from "@xmpp/stream-features";
  import type { Element } from "@xmpp/xml";
  /** XEP-0388 as xmpp.js speaks it; `setup` takes its XEP-0484 part (unused here, but required). */
  export interface Sasl2 {
    setup(parts: { fast: unknown }): void;
  }
  export type Sasl2Authenticate = (
    credentials: { username: string; password: string },
    mechanism: string,
    userAgent: Element,
  ) => Promise<void>;
  export default function sasl2(
    args: { streamFeatures: StreamFeatures; saslFactory: unknown },
    onAuthenticate: (authenticate: Sasl2Authenticate, mechanisms: string[]) => Promise<void>,
  ): Sasl2;
}

declare module "@xmpp/client-core/src/bind2/bind2.js" {
  import type { Client } from "@xmpp/client-core";
  /** XEP-0386: binds inside SASL2's <authenticate/>, the resource made from `tag`. */
  export default function bind2(args: { sasl2: unknown; entity: Client }, tag: string): unknown;
}

declare module "@xmpp/client-core/src/fast/fast.js" {
  import type { Client } from "@xmpp/client-core";
  /** XEP-0484 tokens; without a token it leaves SASL2 to the password. */
  export default function fast(args: { sasl2: unknown; entity: Client }): unknown;
}

declare module "@xmpp/sasl-scram-sha-1" {
  export default function scramsha1(factory: unknown): void;
}

declare module "@xmpp/sasl-plain" {
  export default function plain(factory: unknown): void;
}

declare module "saslmechanisms" {
  /** The mechanism registry xmpp.js' SASL uses. */
  export default class SASLFactory {
    use(mechanism: unknown): this;
    _mechs: Array<{ name: string }>;
  }
}

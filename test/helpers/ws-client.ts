/**
 * A raw XMPP-over-WebSocket client (RFC 7395) for the protocol edges: every text message is
 * parsed on its own, as a browser client does (here with ltx, independent of the server's
 * saxes-based parser), and kept with its raw text, so tests can check the framing itself.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type { Element } from "@xmpp/xml";
import Parser from "@xmpp/xml/lib/Parser.js";
import WebSocket from "ws";
import type { TestUser } from "./fixtures.ts";
import { DEFAULT_TIMEOUT_MS } from "./wait-for.ts";

export const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";

/** Parses one message as a standalone XML document. */
export function parseMessage(text: string): Element {
  const parser = new Parser();
  let root: Element | undefined;
  let failure: Error | undefined;
  parser.on("element", (el: Element) => {
    root = el;
  });
  parser.on("error", (error: Error) => {
    failure = error;
  });
  // ltx emits the children of the document's root as "element": wrap the message in one.
  parser.write(`<root>${text}</root>`);
  if (failure !== undefined) throw failure;
  if (root === undefined) throw new Error(`no element in ${JSON.stringify(text)}`);
  return root;
}

/** How {@link WsClient.connect} connects. */
export interface WsConnectOptions {
  /** Subprotocols offered; default `["xmpp"]`. */
  protocols?: string[];
  origin?: string;
  /** The only CA a `wss://` server's certificate is checked against; without it, not checked. */
  ca?: string;
  /** The client's own address (127.0.0.2 tells a proxied client apart from the proxy). */
  localAddress?: string;
}

/** One WebSocket connection with everything it received. */
export class WsClient {
  readonly ws: WebSocket;
  /** Every text message, raw. */
  readonly messages: string[] = [];
  /** Every message parsed. */
  readonly received: Element[] = [];
  closeCode: number | undefined;
  readonly #waiters = new Set<() => void>();

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on("message", (data) => {
      const text = Buffer.from(data as Buffer).toString("utf8");
      this.messages.push(text);
      this.received.push(parseMessage(text));
      for (const wake of this.#waiters) wake();
    });
    ws.on("close", (code) => {
      this.closeCode = code;
      for (const wake of this.#waiters) wake();
    });
    ws.on("error", () => {});
  }

  /** Opens a connection with the `xmpp` subprotocol (or `protocols`). */
  static async connect(url: string, options: WsConnectOptions = {}): Promise<WsClient> {
    const ws = new WebSocket(url, options.protocols ?? ["xmpp"], {
      ...(options.ca === undefined ? { rejectUnauthorized: false } : { ca: options.ca }),
      ...(options.origin === undefined ? {} : { origin: options.origin }),
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
    });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
      ws.once("unexpected-response", (_request, response) =>
        reject(new Error(`HTTP ${response.statusCode}`)),
      );
    });
    return new WsClient(ws);
  }

  send(text: string): void {
    this.ws.send(text);
  }

  /** Sends the framing `<open/>` for `domain`. */
  open(domain: string): void {
    this.send(`<open xmlns="${NS_FRAMING}" to="${domain}" version="1.0"/>`);
  }

  /** Resolves with the first received element (from index `from`) that matches. */
  async waitFor(
    predicate: (el: Element) => boolean,
    what: string,
    from = 0,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<Element> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.received.slice(from).find(predicate);
      if (found !== undefined) return found;
      if (this.closeCode !== undefined)
        throw new Error(
          `connection closed (${this.closeCode}) before ${what}; got ${this.messages.join(" | ")}`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; got ${this.messages.join(" | ")}`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.#waiters.delete(wake);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(wake, left);
        this.#waiters.add(wake);
      });
    }
  }

  /** Resolves once the server closed the WebSocket connection. */
  async closed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    if (this.closeCode !== undefined) return this.closeCode;
    const [code] = (await Promise.race([
      new Promise((resolve) => this.ws.once("close", (c) => resolve([c]))),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error("the server did not close the connection")), timeoutMs),
      ),
    ])) as [number];
    return code;
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export const NS_STREAM = "http://etherx.jabber.org/streams";
export const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";

/**
 * Connects over WebSocket, authenticates with PLAIN and opens the stream again (RFC 6120 §6.4.6):
 * the client waits at the features after SASL, to bind or to resume.
 */
export async function wsAuthenticate(
  url: string,
  domain: string,
  user: TestUser,
  options: WsConnectOptions = {},
): Promise<WsClient> {
  const client = await WsClient.connect(url, options);
  client.open(domain);
  await client.waitFor((el) => el.is("features", NS_STREAM), "stream features");
  const auth = Buffer.from(`\0${user.username}\0${user.password}`).toString("base64");
  client.send(`<auth xmlns="${NS_SASL}" mechanism="PLAIN">${auth}</auth>`);
  await client.waitFor((el) => el.is("success", NS_SASL), "<success/>");
  const mark = client.received.length;
  client.open(domain);
  await client.waitFor((el) => el.is("features", NS_STREAM), "features after SASL", mark);
  return client;
}

/** Logs in over WebSocket with PLAIN and binds `resource`; returns the client and its full JID. */
export async function wsLogin(
  url: string,
  domain: string,
  user: TestUser,
  resource = "web",
  options: WsConnectOptions = {},
): Promise<{ client: WsClient; full: string }> {
  const client = await wsAuthenticate(url, domain, user, options);
  client.send(
    `<iq xmlns="jabber:client" type="set" id="b1"><bind xmlns="${NS_BIND}"><resource>${resource}</resource></bind></iq>`,
  );
  const bound = await client.waitFor((el) => el.is("iq") && el.attrs.id === "b1", "the bind result");
  assert.equal(bound.attrs.type, "result", bound.toString());
  return { client, full: bound.getChild("bind")!.getChildText("jid")! };
}

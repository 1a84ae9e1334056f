/**
 * A raw XMPP client for protocol edges: it writes exactly the bytes a test gives it and parses
 * what arrives with the @xmpp/xml streaming parser into elements. Tests await the next element
 * that matches a predicate; stream errors, the server's `</stream:stream>` and the socket close
 * are all observable. Helpers cover stream open, STARTTLS, SASL (PLAIN, SCRAM), bind and session.
 */
import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import { type Element, escapeXML } from "@xmpp/xml";
import Parser from "@xmpp/xml/lib/Parser.js";
import { ScramClient, type ScramMechanism } from "./scram.ts";
import type { StartedNode } from "./start-node.ts";
import { DEFAULT_TIMEOUT_MS, WaitTimeoutError, withTimeout } from "./wait-for.ts";
import { connectWebSocket, overWebSocket } from "./ws-bridge.ts";

export const NS_CLIENT = "jabber:client";
export const NS_STREAM = "http://etherx.jabber.org/streams";
export const NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams";
export const NS_STANZAS_ERROR = "urn:ietf:params:xml:ns:xmpp-stanzas";
export const NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls";
export const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
export const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";
export const NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session";
export const NS_SASL2 = "urn:xmpp:sasl:2";
export const NS_BIND2 = "urn:xmpp:bind:0";
export const NS_SM = "urn:xmpp:sm:3";
export const NS_ROSTER = "jabber:iq:roster";
export const NS_PING = "urn:xmpp:ping";

/** Options for {@link RawClient.connect}. */
export interface RawConnectOptions {
  port: number;
  host?: string;
  /** Connect with TLS from the first byte (XEP-0368) instead of plain TCP. */
  directTls?: boolean;
  /** The domain used in stream headers, SNI and JIDs; default `localhost`. */
  domain?: string;
  /** Label used in failure messages, e.g. "alice". */
  label?: string;
  /** XMPP over WebSocket at this URL (RFC 7395) instead of TCP; `port` and `directTls` are ignored. */
  websocket?: string;
  /**
   * The local address to connect from, e.g. `127.0.0.2` to be another client address on one
   * machine (Linux routes all of 127/8 to the loopback interface). TCP and direct TLS only.
   */
  localAddress?: string;
}

/** Options for {@link RawClient.login}. */
export interface RawLoginOptions {
  /** Default `SCRAM-SHA-1`. */
  mechanism?: "PLAIN" | ScramMechanism;
  /** Requested resource; the server picks one when absent. */
  resource?: string;
  /** Negotiate STARTTLS when offered; default true. */
  starttls?: boolean;
  /** Send the legacy session iq after bind; default false. */
  session?: boolean;
}

type Predicate = (element: Element) => boolean;

interface Waiter {
  predicate: Predicate;
  resolve: (element: Element) => void;
  reject: (error: Error) => void;
}

/** The stream-error condition carried by a `<stream:error/>`, or undefined. */
export function streamErrorCondition(element: Element): string | undefined {
  return element
    .getChildElements()
    .find((child) => child.getNS() === NS_STREAMS_ERROR && child.getName() !== "text")
    ?.getName();
}

/** The stanza-error condition and type of an error stanza, or undefined when it has none. */
export function stanzaError(
  element: Element,
): { type: string | undefined; condition: string | undefined } | undefined {
  const error = element.getChild("error");
  if (!error) return undefined;
  const condition = error
    .getChildElements()
    .find((child) => child.getNS() === NS_STANZAS_ERROR && child.getName() !== "text")
    ?.getName();
  return { type: error.attrs.type, condition };
}

/** Matches a stanza by name plus any attribute values given (undefined in `attrs` = must be absent). */
export function isStanza(name: string, attrs: Record<string, string | undefined> = {}): Predicate {
  return (el) =>
    el.getName() === name &&
    el.getNS() === NS_CLIENT &&
    Object.entries(attrs).every(([key, value]) => el.attrs[key] === value);
}

/** Escapes text for XML content and attributes. */
export function esc(text: string): string {
  return escapeXML(text);
}

/** The bare part of a JID. */
export function bareJid(jid: string): string {
  const slash = jid.indexOf("/");
  return slash < 0 ? jid : jid.slice(0, slash);
}

/**
 * The transport the suite runs over: TCP, or with `STARLING_TEST_TRANSPORT=websocket` the
 * node's plain WebSocket listener for every connection that does not ask for direct TLS.
 */
export function suiteTransport(node: StartedNode, directTls?: boolean): { websocket?: string } {
  if (!overWebSocket() || directTls === true || node.ports.webPlain == null) return {};
  return { websocket: `ws://${node.host}:${node.ports.webPlain}/xmpp-websocket` };
}

let idCounter = 0;
/** A unique stanza id. */
export function nextId(prefix = "t"): string {
  idCounter += 1;
  return `${prefix}${idCounter}-${Date.now().toString(36)}`;
}

/** One raw client connection. */
export class RawClient {
  readonly domain: string;
  readonly label: string;
  /** The full JID after bind. */
  jid: string | undefined;
  /** Every element received, in order (consumed or not). */
  readonly received: Element[] = [];
  /** The last stream header received. */
  header: Element | undefined;
  /** The `<stream:error/>` received, if any. */
  streamError: Element | undefined;
  /** True once the server sent `</stream:stream>`. */
  streamEnded = false;
  /** True once the socket has closed. */
  closed = false;
  /** Bytes read from the socket. */
  bytesReceived = 0;
  /** A socket error, if one happened (ECONNRESET after a cut-off is expected in some tests). */
  socketError: Error | undefined;
  /**
   * Automatic answers a real client gives: an empty result to roster pushes (RFC 6121 §2.1.6,
   * "the client SHOULD send an IQ result") and to the server's XEP-0199 pings. Off by default:
   * raw tests see the bare exchange.
   */
  readonly autoReply = { rosterPush: false, ping: false };
  /**
   * XEP-0198 inbound counter: stanzas received since `<enabled/>` (or the value given to
   * {@link startSmCounting}); undefined while stream management is off.
   */
  smInbound: number | undefined;
  /** Answer the server's `<r/>` with `<a h=smInbound/>` automatically. */
  smAutoAck = false;
  #smResumeH: number | undefined;
  /** Raw text received, for debugging failures (bounded). */
  #transcript = "";
  #socket: net.Socket;
  #parser: Parser | undefined;
  #inbox: Element[] = [];
  #waiters = new Set<Waiter>();
  #parseError: Error | undefined;
  readonly #closedPromise: Promise<void>;
  #resolveClosed!: () => void;
  #onData = (data: Buffer) => this.#handleData(data);
  #onClose = () => this.#handleClose();
  #onError = (error: Error) => {
    this.socketError = error;
  };

  private constructor(socket: net.Socket, domain: string, label: string) {
    this.#socket = socket;
    this.domain = domain;
    this.label = label;
    this.#closedPromise = new Promise((resolve) => {
      this.#resolveClosed = resolve;
    });
    this.#attach(socket);
    this.#resetParser();
  }

  /** Opens a TCP (or direct TLS) connection; the stream is not opened yet. */
  static async connect(options: RawConnectOptions): Promise<RawClient> {
    const host = options.host ?? "127.0.0.1";
    const domain = options.domain ?? "localhost";
    let socket: net.Socket;
    if (options.websocket !== undefined) {
      // The bridge is socket-like for everything this client does with a socket.
      socket = (await connectWebSocket(options.websocket)) as unknown as net.Socket;
    } else if (options.directTls) {
      // The node's certificate is self-signed; tests pin nothing here, the stream tests check it.
      socket = tls.connect({
        port: options.port,
        host,
        servername: domain,
        rejectUnauthorized: false,
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      });
      await withTimeout(once(socket, "secureConnect"), `TLS handshake with ${host}:${options.port}`);
    } else {
      socket = net.connect({
        port: options.port,
        host,
        ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      });
      await withTimeout(once(socket, "connect"), `TCP connect to ${host}:${options.port}`);
    }
    socket.setNoDelay(true);
    const client = new RawClient(socket, domain, options.label ?? "client");
    client.#overWebSocket = options.websocket !== undefined;
    return client;
  }

  /** Connects to a started node's STARTTLS port (or its direct TLS port). */
  static connectTo(
    node: StartedNode,
    options: { directTls?: boolean; label?: string; localAddress?: string } = {},
  ): Promise<RawClient> {
    return RawClient.connect({
      port: options.directTls ? node.ports.tls : node.ports.c2s,
      host: node.host,
      domain: node.domain,
      directTls: options.directTls ?? false,
      label: options.label ?? "client",
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      ...suiteTransport(node, options.directTls),
    });
  }

  /** The underlying socket (plain or TLS). */
  get socket(): net.Socket {
    return this.#socket;
  }

  /**
   * True when the connection is TLS (direct or after STARTTLS), or WebSocket through the node's
   * loopback proxy port (the proxy's side of a TLS connection, as the server counts it).
   */
  get secure(): boolean {
    return this.#overWebSocket || this.#socket instanceof tls.TLSSocket;
  }

  #overWebSocket = false;

  /** Resolves when the socket has closed. */
  get whenClosed(): Promise<void> {
    return this.#closedPromise;
  }

  #attach(socket: net.Socket) {
    socket.on("data", this.#onData);
    socket.on("close", this.#onClose);
    socket.on("error", this.#onError);
  }

  #detach(socket: net.Socket) {
    socket.off("data", this.#onData);
    socket.off("close", this.#onClose);
  }

  #resetParser() {
    const parser = new Parser();
    parser.on("start", (header: Element) => {
      this.header = header;
    });
    parser.on("element", (element: Element) => this.#handleElement(element));
    parser.on("end", () => {
      this.streamEnded = true;
      this.#rejectAll(`the server closed its stream`);
    });
    parser.on("error", (error: Error) => {
      this.#parseError = error;
      this.#rejectAll(`the server sent XML the client cannot parse (${error.message})`);
    });
    this.#parser = parser;
  }

  #handleData(data: Buffer) {
    this.bytesReceived += data.length;
    const text = data.toString("utf8");
    if (this.#transcript.length < 200_000) this.#transcript += text;
    try {
      this.#parser?.write(text);
    } catch (error) {
      this.#parseError = error as Error;
      this.#rejectAll(`the parser threw (${(error as Error).message})`);
    }
  }

  #handleElement(element: Element) {
    this.received.push(element);
    if (element.is("error", NS_STREAM)) this.streamError = element;
    const isStanzaElement =
      ["message", "presence", "iq"].includes(element.getName()) && element.getNS() === NS_CLIENT;
    // XEP-0198 §4: "h" counts the stanzas handled since <enabled/>; <enabled/> itself starts it.
    if (isStanzaElement && this.smInbound !== undefined) this.smInbound += 1;
    if (element.is("enabled", NS_SM) && this.smInbound === undefined) this.smInbound = 0;
    // After <resumed/>, counting continues from the h the client claimed (set synchronously: the
    // resent stanzas may arrive in the same read as <resumed/>).
    if (element.is("resumed", NS_SM) && this.#smResumeH !== undefined) this.smInbound = this.#smResumeH;
    // XEP-0388/XEP-0386: the same answers, inside SASL2's <success/> (and Bind 2's <bound/>).
    if (element.is("success", NS_SASL2)) {
      if (element.getChild("bound", NS_BIND2)?.getChild("enabled", NS_SM) !== undefined) this.smInbound = 0;
      if (element.getChild("resumed", NS_SM) !== undefined && this.#smResumeH !== undefined)
        this.smInbound = this.#smResumeH;
    }
    if (element.is("r", NS_SM) && this.smAutoAck && this.smInbound !== undefined && !this.#socket.destroyed) {
      this.#socket.write(`<a xmlns='${NS_SM}' h='${this.smInbound}'/>`);
    }
    if (
      isStanzaElement &&
      element.getName() === "iq" &&
      element.attrs.type === "set" &&
      this.autoReply.rosterPush
    ) {
      const from = element.attrs.from;
      if (
        element.getChild("query", NS_ROSTER) &&
        (from === undefined || (this.jid && from === bareJid(this.jid)))
      ) {
        this.#socket.write(`<iq type='result' id='${esc(element.attrs.id ?? "")}'/>`);
      }
    }
    if (
      isStanzaElement &&
      element.getName() === "iq" &&
      element.attrs.type === "get" &&
      this.autoReply.ping
    ) {
      if (element.getChild("ping", NS_PING)) {
        const to = element.attrs.from ? ` to='${esc(element.attrs.from)}'` : "";
        this.#socket.write(`<iq type='result' id='${esc(element.attrs.id ?? "")}'${to}/>`);
      }
    }
    for (const waiter of this.#waiters) {
      if (waiter.predicate(element)) {
        this.#waiters.delete(waiter);
        waiter.resolve(element);
        return;
      }
    }
    this.#inbox.push(element);
  }

  #handleClose() {
    this.closed = true;
    this.#rejectAll("the connection closed");
    this.#resolveClosed();
  }

  #rejectAll(reason: string) {
    for (const waiter of this.#waiters) {
      this.#waiters.delete(waiter);
      waiter.reject(new Error(reason));
    }
  }

  /** A description of the connection's state for failure messages. */
  describe(): string {
    const error = this.streamError ? ` stream error <${streamErrorCondition(this.streamError)}/>;` : "";
    const last = this.received
      .slice(-5)
      .map((el) => el.toString().slice(0, 400))
      .join("\n    ");
    return `[${this.label}${this.jid ? ` ${this.jid}` : ""}]${error} closed=${this.closed} ended=${this.streamEnded}; last received:\n    ${last || "(nothing)"}`;
  }

  /** Raw text received so far (first 200 kB). */
  get transcript(): string {
    return this.#transcript;
  }

  /** Writes raw text (or bytes) exactly as given. */
  write(data: string | Buffer): void {
    if (this.#socket.destroyed) throw new Error(`${this.label}: cannot write, the socket is destroyed`);
    this.#socket.write(data);
  }

  /** Writes raw text and resolves once the socket has flushed it to the kernel. */
  writeAndFlush(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#socket.write(data, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Sends an element or an XML string. */
  send(stanza: Element | string): void {
    this.write(typeof stanza === "string" ? stanza : stanza.toString());
  }

  /**
   * Resolves with the next element (already received and not yet consumed, or arriving later)
   * that satisfies `predicate`, and consumes it. Rejects on timeout, stream end or close, with
   * what was received so far.
   */
  waitFor(
    predicate: Predicate,
    what = "a matching element",
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<Element> {
    const index = this.#inbox.findIndex(predicate);
    if (index >= 0) {
      const [element] = this.#inbox.splice(index, 1);
      return Promise.resolve(element!);
    }
    if (this.closed || this.streamEnded || this.#parseError) {
      return Promise.reject(new Error(`${this.label}: no ${what}: already closed. ${this.describe()}`));
    }
    let waiter: Waiter | undefined;
    const promise = new Promise<Element>((resolve, reject) => {
      waiter = { predicate, resolve, reject };
      this.#waiters.add(waiter);
    });
    return withTimeout(promise, `${this.label}: ${what}`, timeoutMs)
      .catch((error: unknown) => {
        const message =
          error instanceof WaitTimeoutError ? error.message : `${what}: ${(error as Error).message}`;
        throw new Error(`${this.label}: ${message}. ${this.describe()}`, { cause: error });
      })
      .finally(() => {
        if (waiter) this.#waiters.delete(waiter);
      });
  }

  /**
   * Waits for an element matching `predicate` and also returns every element that arrived before
   * it and was not consumed (they are consumed too). Used as an ordering barrier: "nothing else
   * arrived before the marker".
   */
  async collectUntil(
    predicate: Predicate,
    what = "a matching element",
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<{ match: Element; before: Element[] }> {
    const match = await this.waitFor(predicate, what, timeoutMs);
    const matchIndex = this.received.lastIndexOf(match);
    const before = this.#inbox.filter((el) => this.received.indexOf(el) < matchIndex);
    this.#inbox = this.#inbox.filter((el) => !before.includes(el));
    return { match, before };
  }

  /** Elements received and not consumed by any wait, in order; `take` empties the inbox. */
  pending(take = false): Element[] {
    const out = [...this.#inbox];
    if (take) this.#inbox = [];
    return out;
  }

  /**
   * Waits for an element matching `predicate`, or for the stream error that ends the stream
   * instead: resolves `{ element }` or `{ streamError: condition }`.
   */
  async waitForElementOrStreamError(
    predicate: Predicate,
    what = "a matching element",
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<{ element: Element; streamError?: undefined } | { element?: undefined; streamError: string }> {
    try {
      return { element: await this.waitFor(predicate, what, timeoutMs) };
    } catch (error) {
      if (this.streamError)
        return { streamError: streamErrorCondition(this.streamError) ?? "(no condition)" };
      throw error;
    }
  }

  /** Waits for a `<stream:error/>` and returns its condition (e.g. "not-well-formed"). */
  async waitForStreamError(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
    if (this.streamError) return streamErrorCondition(this.streamError) ?? "(no condition)";
    try {
      const element = await this.waitFor((el) => el.is("error", NS_STREAM), "a stream error", timeoutMs);
      return streamErrorCondition(element) ?? "(no condition)";
    } catch (error) {
      // The stream may have ended right after the error element; it is still recorded.
      if (this.streamError) return streamErrorCondition(this.streamError) ?? "(no condition)";
      throw error;
    }
  }

  /** Waits until the socket closes. */
  async waitForClose(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    await withTimeout(
      this.#closedPromise,
      `${this.label}: the connection to close. ${this.describe()}`,
      timeoutMs,
    );
  }

  /** Sends the initial stream header and resolves with the `<stream:features/>` that follows. */
  async openStream(options: { to?: string; from?: string; version?: string | null } = {}): Promise<Element> {
    this.#resetParser();
    const to = options.to ?? this.domain;
    const from = options.from ? ` from='${esc(options.from)}'` : "";
    const version = options.version === null ? "" : ` version='${options.version ?? "1.0"}'`;
    this.write(
      `<?xml version='1.0'?><stream:stream to='${esc(to)}'${from}${version} xml:lang='en' xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}'>`,
    );
    return this.waitFor((el) => el.is("features", NS_STREAM), "stream features");
  }

  /** Negotiates STARTTLS (RFC 6120 §5) and reopens the stream; resolves with the new features. */
  async startTls(): Promise<Element> {
    if (this.#overWebSocket) {
      // TLS is below the WebSocket (wss://, or the proxy in front): the stream goes on as if
      // STARTTLS had been negotiated, with the features it has.
      const features = this.received.findLast((el) => el.is("features", NS_STREAM));
      if (features === undefined) throw new Error(`${this.label}: no stream features yet`);
      return features;
    }
    this.send(`<starttls xmlns='${NS_TLS}'/>`);
    const answer = await this.waitFor(
      (el) => el.getNS() === NS_TLS && (el.getName() === "proceed" || el.getName() === "failure"),
      "<proceed/> or <failure/> (STARTTLS)",
    );
    if (answer.getName() !== "proceed")
      throw new Error(`${this.label}: STARTTLS refused: ${answer.toString()}`);
    const plain = this.#socket;
    this.#detach(plain);
    const secure = tls.connect({ socket: plain, servername: this.domain, rejectUnauthorized: false });
    secure.on("error", this.#onError);
    await withTimeout(once(secure, "secureConnect"), `${this.label}: TLS handshake after <proceed/>`);
    this.#socket = secure;
    this.#attach(secure);
    return this.openStream();
  }

  /** Sends SASL PLAIN and resolves with `<success/>` or `<failure/>` (no stream restart). */
  async authPlain(username: string, password: string, authzid = ""): Promise<Element> {
    const payload = Buffer.from(`${authzid}\0${username}\0${password}`, "utf8").toString("base64");
    this.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${payload}</auth>`);
    return this.#saslOutcome();
  }

  /**
   * Runs a SCRAM exchange and resolves with `<success/>` (whose server signature was verified) or
   * `<failure/>` (no stream restart).
   */
  async authScram(mechanism: ScramMechanism, username: string, password: string): Promise<Element> {
    const scram = new ScramClient(mechanism, username, password);
    const first = Buffer.from(scram.clientFirst()).toString("base64");
    this.send(`<auth xmlns='${NS_SASL}' mechanism='${mechanism}'>${first}</auth>`);
    const challenge = await this.waitFor(
      (el) => el.getNS() === NS_SASL && ["challenge", "failure", "success"].includes(el.getName()),
      `SCRAM server-first (${mechanism})`,
    );
    if (challenge.getName() !== "challenge") return challenge;
    const serverFirst = Buffer.from(challenge.text(), "base64").toString("utf8");
    const final = Buffer.from(scram.clientFinal(serverFirst)).toString("base64");
    this.send(`<response xmlns='${NS_SASL}'>${final}</response>`);
    let outcome = await this.waitFor(
      (el) => el.getNS() === NS_SASL && ["challenge", "failure", "success"].includes(el.getName()),
      `SCRAM outcome (${mechanism})`,
    );
    // RFC 6120 §6.3.10: the server-final-message goes in <success/>; an older style sends it as a
    // last <challenge/> answered by an empty <response/>.
    if (outcome.getName() === "challenge") {
      scram.verifyServerFinal(Buffer.from(outcome.text(), "base64").toString("utf8"));
      this.send(`<response xmlns='${NS_SASL}'/>`);
      outcome = await this.#saslOutcome();
      return outcome;
    }
    if (outcome.getName() === "success") {
      scram.verifyServerFinal(Buffer.from(outcome.text(), "base64").toString("utf8"));
    }
    return outcome;
  }

  /**
   * XEP-0388 (SASL2): one `<authenticate/>` with a SCRAM exchange and `inner` beside it (XEP-0386
   * `<bind/>`, XEP-0198 `<resume/>`, `<user-agent/>`); resolves with SASL2's `<success/>` (its
   * server signature verified) or `<failure/>`. No stream restart follows. `resumeH`: the `h` of
   * an inline `<resume/>`, from which inbound counting continues once resumed.
   */
  async authSasl2(
    mechanism: ScramMechanism,
    username: string,
    password: string,
    inner = "",
    options: { autoAck?: boolean; resumeH?: number } = {},
  ): Promise<Element> {
    this.smAutoAck = options.autoAck ?? false;
    this.#smResumeH = options.resumeH;
    const scram = new ScramClient(mechanism, username, password);
    const first = Buffer.from(scram.clientFirst()).toString("base64");
    this.send(
      `<authenticate xmlns='${NS_SASL2}' mechanism='${mechanism}'><initial-response>${first}</initial-response>${inner}</authenticate>`,
    );
    const isAnswer = (el: Element) =>
      el.getNS() === NS_SASL2 && ["challenge", "failure", "success"].includes(el.getName());
    const challenge = await this.waitFor(isAnswer, `SASL2 server-first (${mechanism})`);
    if (challenge.getName() !== "challenge") return challenge;
    const serverFirst = Buffer.from(challenge.text(), "base64").toString("utf8");
    const final = Buffer.from(scram.clientFinal(serverFirst)).toString("base64");
    this.send(`<response xmlns='${NS_SASL2}'>${final}</response>`);
    const outcome = await this.waitFor(
      (el) => el.getNS() === NS_SASL2 && ["failure", "success"].includes(el.getName()),
      `SASL2 outcome (${mechanism})`,
    );
    if (outcome.getName() === "success") {
      const data = outcome.getChildText("additional-data") ?? "";
      scram.verifyServerFinal(Buffer.from(data, "base64").toString("utf8"));
      const identifier = outcome.getChildText("authorization-identifier") ?? "";
      if (identifier.includes("/")) this.jid = identifier;
    }
    return outcome;
  }

  #saslOutcome(): Promise<Element> {
    return this.waitFor(
      (el) => el.getNS() === NS_SASL && (el.getName() === "success" || el.getName() === "failure"),
      "SASL <success/> or <failure/>",
    );
  }

  /** Binds a resource (RFC 6120 §7); resolves with the full JID the server assigned. */
  async bind(resource?: string): Promise<string> {
    const inner = resource === undefined ? "" : `<resource>${esc(resource)}</resource>`;
    const result = await this.iq("set", `<bind xmlns='${NS_BIND}'>${inner}</bind>`);
    if (result.attrs.type !== "result") throw new Error(`${this.label}: bind failed: ${result.toString()}`);
    const jid = result.getChild("bind", NS_BIND)?.getChildText("jid");
    if (!jid) throw new Error(`${this.label}: bind result without <jid/>: ${result.toString()}`);
    this.jid = jid;
    return jid;
  }

  /**
   * Sends an iq and resolves with the reply (result or error) that carries its id.
   * `payload` is raw XML; `attrs` may set `to` and `id`.
   */
  async iq(
    type: "get" | "set",
    payload: string,
    attrs: { to?: string; id?: string; from?: string } = {},
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<Element> {
    const id = attrs.id ?? nextId("iq");
    const to = attrs.to ? ` to='${esc(attrs.to)}'` : "";
    const from = attrs.from ? ` from='${esc(attrs.from)}'` : "";
    this.send(`<iq type='${type}' id='${esc(id)}'${to}${from}>${payload}</iq>`);
    return this.waitFor(
      (el) =>
        el.getName() === "iq" &&
        el.attrs.id === id &&
        (el.attrs.type === "result" || el.attrs.type === "error"),
      `the reply to iq ${id}`,
      timeoutMs,
    );
  }

  /**
   * The whole login: open the stream, STARTTLS when offered (unless disabled), SASL, restart,
   * bind, and the legacy session iq when asked. Resolves with the bound full JID.
   */
  async login(username: string, password: string, options: RawLoginOptions = {}): Promise<string> {
    let features = await this.openStream();
    if (options.starttls !== false && !this.secure && features.getChild("starttls", NS_TLS)) {
      features = await this.startTls();
    }
    const mechanism = options.mechanism ?? "SCRAM-SHA-1";
    const outcome =
      mechanism === "PLAIN"
        ? await this.authPlain(username, password)
        : await this.authScram(mechanism, username, password);
    if (outcome.getName() !== "success") {
      throw new Error(`${this.label}: ${mechanism} login as ${username} failed: ${outcome.toString()}`);
    }
    features = await this.openStream();
    if (!features.getChild("bind", NS_BIND)) {
      throw new Error(`${this.label}: no <bind/> in post-auth features: ${features.toString()}`);
    }
    const jid = await this.bind(options.resource);
    if (options.session) {
      const reply = await this.iq("set", `<session xmlns='${NS_SESSION}'/>`);
      if (reply.attrs.type !== "result")
        throw new Error(`${this.label}: session iq failed: ${reply.toString()}`);
    }
    return jid;
  }

  /**
   * Sends XEP-0198 `<enable/>` and resolves with `<enabled/>` or `<failed/>`; counting of
   * inbound stanzas starts at `<enabled/>`.
   */
  async enableSm(options: { resume?: boolean; autoAck?: boolean } = {}): Promise<Element> {
    this.smAutoAck = options.autoAck ?? false;
    this.send(`<enable xmlns='${NS_SM}'${options.resume === false ? "" : " resume='true'"}/>`);
    return this.waitFor(
      (el) => el.getNS() === NS_SM && (el.getName() === "enabled" || el.getName() === "failed"),
      "XEP-0198 <enabled/> or <failed/>",
    );
  }

  /**
   * Sends XEP-0198 `<resume/>` and resolves with `<resumed/>` or `<failed/>`. On `<resumed/>`
   * the inbound counter continues from `h`.
   */
  async resumeSm(previd: string, h: number, options: { autoAck?: boolean } = {}): Promise<Element> {
    this.smAutoAck = options.autoAck ?? false;
    this.#smResumeH = h;
    this.send(`<resume xmlns='${NS_SM}' previd='${esc(previd)}' h='${h}'/>`);
    const answer = await this.waitFor(
      (el) => el.getNS() === NS_SM && (el.getName() === "resumed" || el.getName() === "failed"),
      "XEP-0198 <resumed/> or <failed/>",
    );
    return answer;
  }

  /** Sends `<r/>` and resolves with the server's `<a h=.../>` count. */
  async requestAck(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<number> {
    this.send(`<r xmlns='${NS_SM}'/>`);
    const answer = await this.waitFor((el) => el.is("a", NS_SM), "XEP-0198 <a/>", timeoutMs);
    return Number(answer.attrs.h);
  }

  /**
   * Closes cleanly: sends `</stream:stream>` and waits for the server's own close and the socket
   * close (RFC 6120 §4.4). Resolves even if the server had already closed.
   */
  async close(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    if (this.closed) return;
    if (!this.#socket.destroyed) this.#socket.write("</stream:stream>");
    try {
      await this.waitForClose(timeoutMs);
    } finally {
      this.destroy();
    }
  }

  /** Stops reading from the socket (the server's output then accumulates). */
  pauseReading(): void {
    this.#socket.pause();
  }

  /** Resumes reading. */
  resumeReading(): void {
    this.#socket.resume();
  }

  /** Destroys the socket at once (a dead network, from the server's point of view after it notices). */
  destroy(): void {
    this.#socket.destroy();
  }

  /**
   * Drops the connection without closing the XML stream: a TCP RST on a plain socket; on a TLS
   * socket (whose handle Node cannot reset) the socket is destroyed without a TLS close_notify
   * being awaited. Either way the server sees the transport end without `</stream:stream>`.
   */
  reset(): void {
    if (this.#socket instanceof tls.TLSSocket || !(this.#socket instanceof net.Socket))
      this.#socket.destroy();
    else this.#socket.resetAndDestroy();
  }
}

/**
 * Opens a stream to `node`, upgrades it with STARTTLS when offered, and tries SASL PLAIN:
 * the client, the features offered after TLS (the mechanisms) and the SASL outcome.
 */
export async function tryPlainOverTls(
  node: StartedNode,
  user: string,
  password: string,
): Promise<{ client: RawClient; secured: Element; outcome: Element }> {
  const client = await RawClient.connectTo(node);
  const features = await client.openStream();
  const secured = features.getChild("starttls") === undefined ? features : await client.startTls();
  const outcome = await client.authPlain(user, password);
  return { client, secured, outcome };
}

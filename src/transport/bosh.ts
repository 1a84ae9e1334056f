/**
 * BOSH (XEP-0124, with XEP-0206 for XMPP): a client stream carried by HTTP requests, for clients
 * that cannot keep a WebSocket open. Each session is a {@link BoshTransport} under the same
 * {@link XmppStream} as TCP and WebSocket.
 *
 * - The session creation request (no `sid`) opens the stream; its answer carries the session's
 *   parameters and the stream features. `xmpp:restart='true'` restarts the stream (XEP-0206 §5)
 *   and `type='terminate'` closes it.
 * - Requests are handled in `rid` order: one ahead of the next expected waits for the gap
 *   (within `requests`), one already answered gets the same answer again (§14.3 retransmission).
 * - The connection manager holds at most `hold` requests (1), answering the oldest when a newer
 *   one comes (§11); a held request is answered when the stream has output, or empty after
 *   `wait` seconds. A session with no request for `inactivity` seconds is gone (§8): a stream
 *   with XEP-0198 then waits for resumption like a dropped TCP connection.
 *
 * Session ids start with the number of the worker that holds the session, so a request that
 * reaches another worker of the node is handed to it (web-listener.ts); across nodes, a load
 * balancer in front must keep a session's requests on one node (sticky by the `sid`, or by the
 * client's address).
 */
import { randomBytes } from "node:crypto";
import { type Element, escapeXML } from "@xmpp/xml";
import type { Config } from "../config/defaults.ts";
import { StreamError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { NS_CLIENT, NS_STREAM } from "../xmpp/ns.ts";
import type { StreamHost } from "../xmpp/stream-host.ts";
import { StreamParser } from "../xmpp/stream-parser.ts";
import type { StreamEvents, StreamTransport } from "../xmpp/stream-transport.ts";
import { XmppStream } from "../xmpp/xmpp-stream.ts";
import { InputShaper } from "./input-shaper.ts";
import { writeInSlices } from "./parse-slices.ts";
import { standaloneElement } from "./standalone-element.ts";
import { boshUrlOf } from "./web-paths.ts";

export const NS_HTTPBIND = "http://jabber.org/protocol/httpbind";
export const NS_XBOSH = "urn:xmpp:xbosh";

/** The longest a request is held (seconds): the client's `wait`, at most this. */
const MAX_WAIT_S = 60;
/** Requests held at once (§11): one, the common choice of connection managers. */
const HOLD = 1;
/** `requests` = hold + 1: the client may have one more in flight to send while one is held. */
const REQUESTS = HOLD + 1;
/** Seconds without a request after which the session is gone (§8). */
const INACTIVITY_S = 30;

/** An answer to one HTTP request: its body (always a `<body/>`). */
export type BoshAnswer = string;

/** A terminal error body (§17.2). */
export function terminateBody(condition: string): string {
  return `<body type="terminate" condition="${condition}" xmlns="${NS_HTTPBIND}"/>`;
}

/** What the sessions need. */
export interface BoshOptions {
  host: StreamHost;
  config: Readonly<Config>;
  log: Logger;
  /** The number of this worker: it starts the ids of the sessions it holds. */
  shard: number;
  /** Streams are added here while open (the worker's fence, drain and stop reach them). */
  connections: Set<XmppStream>;
}

/** The BOSH sessions one worker holds. */
export class BoshSessions {
  readonly #options: BoshOptions;
  readonly #sessions = new Map<string, BoshTransport>();

  constructor(options: BoshOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#sessions.size;
  }

  /** The worker that holds session `sid` (its id's prefix), or undefined for a malformed id. */
  static shardOf(sid: string): number | undefined {
    const shard = Number.parseInt(sid.split(".")[0] ?? "", 10);
    return Number.isInteger(shard) && shard >= 0 ? shard : undefined;
  }

  /**
   * Handles one request's text (already within the size limit); resolves with the answer when it
   * is due (at once, or when the stream has output, or after `wait`). `secure` and `remote`
   * describe the HTTP connection, for a session it creates.
   */
  async handle(text: string, connection: { secure: boolean; remoteAddress: string }): Promise<BoshAnswer> {
    // A session's requests are paced by its input shaper before they are parsed, as a TCP
    // connection's reads are: the client waits, nothing is lost.
    const sid = boshSidOf(text);
    const session = sid === undefined ? undefined : this.#sessions.get(sid);
    if (sid !== undefined && session === undefined) return terminateBody("item-not-found");
    await session?.paced(Buffer.byteLength(text));
    let body: Element;
    try {
      body = await parseBody(text, this.#options.config.limits);
    } catch {
      return terminateBody("bad-request");
    }
    // The sid that paced the request must be the body's own.
    if (body.attrs.sid !== sid) return terminateBody("bad-request");
    if (session === undefined) return this.#create(body, connection);
    return session.request(body);
  }

  #create(
    body: Element,
    connection: { secure: boolean; remoteAddress: string },
  ): Promise<BoshAnswer> | BoshAnswer {
    const rid = Number(body.attrs.rid);
    if (!Number.isSafeInteger(rid) || rid < 0) return terminateBody("bad-request");
    const { config, log, shard } = this.#options;
    const sid = `${shard}.${randomBytes(12).toString("hex")}`;
    const requestedWait = Number(body.attrs.wait);
    const wait =
      Number.isFinite(requestedWait) && requestedWait > 0 ? Math.min(requestedWait, MAX_WAIT_S) : MAX_WAIT_S;
    const transport = new BoshTransport(sid, rid, wait, {
      remoteAddress: connection.remoteAddress,
      secure: connection.secure,
      limits: config.limits,
      log: log.child({ conn: `bosh-${sid.slice(0, 12)}`, remote: connection.remoteAddress }),
      gone: () => this.#sessions.delete(sid),
    });
    this.#sessions.set(sid, transport);
    const stream = new XmppStream(transport, this.#options.host, transport.log);
    this.#options.connections.add(stream);
    transport.whenGone(() => this.#options.connections.delete(stream));
    return transport.create(body);
  }

  /** Ends every session (the worker stops). */
  closeAll(): void {
    for (const session of this.#sessions.values()) session.destroy();
  }
}

/**
 * The session a request names: the first `sid` attribute of its text, found before parsing (to
 * route it to the worker holding the session and to pace it); the parsed body must agree.
 */
export function boshSidOf(text: string): string | undefined {
  return /\ssid=["']([^"']+)["']/.exec(text)?.[1];
}

/**
 * Parses one request body: a `<body/>` in the httpbind namespace, with the stream's limits, a
 * slice per event-loop turn (a body may be half a megabyte of tiny elements).
 */
async function parseBody(text: string, limits: Readonly<Config["limits"]>): Promise<Element> {
  let body: Element | undefined;
  const parser = new StreamParser(
    {
      onStreamOpen: () => {},
      onStanza: (el) => {
        body ??= el;
      },
      onStreamClose: () => {},
    },
    // The body is one element around the stanzas: one level deeper, a few stanzas larger.
    {
      maxStanzaBytes: limits.maxStanzaBytes * 2 + 8192,
      maxStanzaDepth: limits.maxStanzaDepth + 1,
      maxStanzaElements: limits.maxStanzaElements * 2 + 1,
    },
  );
  parser.write(`<stream:stream xmlns:stream="${NS_STREAM}">`);
  await writeInSlices(text, (slice) => parser.write(slice));
  if (body === undefined || body.name !== "body" || body.attrs.xmlns !== NS_HTTPBIND) {
    throw new StreamError("XSRV_XML_NOT_WELL_FORMED", "bad-format", "not a BOSH <body/>");
  }
  return body;
}

interface BoshTransportOptions {
  remoteAddress: string;
  secure: boolean;
  limits: Readonly<Config["limits"]>;
  log: Logger;
  gone: () => void;
}

interface Held {
  rid: number;
  answer: (body: BoshAnswer) => void;
  timer: NodeJS.Timeout;
}

/** One BOSH session: the transport under one stream. */
export class BoshTransport implements StreamTransport {
  readonly sid: string;
  readonly remoteAddress: string;
  readonly secure: boolean;
  readonly canStartTls = false;
  readonly canRedirect = false;
  readonly footer = "";
  readonly log: Logger;
  readonly #options: BoshTransportOptions;
  readonly #wait: number;
  /** The creation request's rid: its answer carries the session's parameters. */
  readonly #creationRid: number;
  #events: StreamEvents | undefined;
  /** The last rid handled. */
  #rid: number;
  /** Requests ahead of the next rid, waiting for the gap to fill. */
  readonly #ahead = new Map<number, { body: Element; resolve: (answer: BoshAnswer) => void }>();
  /** Answers already given, by rid, for retransmissions (§14.3). */
  readonly #answered = new Map<number, BoshAnswer>();
  readonly #held: Held[] = [];
  #out: string[] = [];
  #streamId: string | undefined;
  /** The stream ended on our side: the next answer terminates the session. */
  #ending = false;
  #gone = false;
  readonly #goneListeners: (() => void)[] = [];
  #inactivity: NodeJS.Timeout | undefined;
  #paused = false;
  /** The stream's open attributes, from the creation request (for restarts). */
  #openAttrs: Record<string, string> = {};
  /** The session's input budget (`limits.inputBytesPerSecond`, `limits.inputBurstBytes`). */
  readonly #shaper: InputShaper;
  /** Requests waiting for the budget ({@link paced}). */
  #pacing = 0;

  constructor(sid: string, rid: number, wait: number, options: BoshTransportOptions) {
    this.sid = sid;
    this.#rid = rid;
    this.#creationRid = rid;
    this.#wait = wait;
    this.#options = options;
    this.remoteAddress = options.remoteAddress;
    this.secure = options.secure;
    this.log = options.log;
    this.#shaper = new InputShaper(options.limits.inputBytesPerSecond, options.limits.inputBurstBytes);
  }

  /**
   * Counts a request of `bytes` against the session's input budget; past it, resolves once the
   * excess has drained (each request over budget waits longer, so they stay in order of arrival).
   * A client cannot get around it with more requests: at most `requests` are in flight (§11).
   */
  paced(bytes: number): Promise<void> | undefined {
    const waitMs = this.#shaper.take(bytes);
    if (waitMs === 0) return undefined;
    // A request waiting for the budget is a request the session has: no inactivity meanwhile.
    this.#pacing++;
    clearTimeout(this.#inactivity);
    return new Promise((resolve) =>
      setTimeout(() => {
        this.#pacing--;
        this.#touch();
        resolve();
      }, waitMs),
    );
  }

  attach(events: StreamEvents): void {
    this.#events = events;
  }

  /** The creation request: opens the stream; its answer carries the session and the features. */
  create(body: Element): Promise<BoshAnswer> {
    const to = body.attrs.to;
    this.#openAttrs = {
      xmlns: NS_CLIENT,
      "xmlns:stream": NS_STREAM,
      version: body.attrs["xmpp:version"] ?? "1.0",
      ...(to === undefined ? {} : { to }),
      ...(body.attrs["xml:lang"] === undefined ? {} : { "xml:lang": body.attrs["xml:lang"] }),
    };
    const answer = this.#hold(this.#rid);
    this.#events!.active();
    this.#events!.opened(this.#openAttrs, "stream:stream");
    this.#touch();
    return answer;
  }

  /** A request of this session. */
  request(body: Element): Promise<BoshAnswer> | BoshAnswer {
    // Gone while the request waited for its budget or its parse.
    if (this.#gone) return terminateBody("item-not-found");
    const rid = Number(body.attrs.rid);
    if (!Number.isSafeInteger(rid)) return terminateBody("bad-request");
    if (rid <= this.#rid) {
      // A retransmission of a request we answered: the same answer (§14.3); older: gone.
      return this.#answered.get(rid) ?? terminateBody("item-not-found");
    }
    if (rid > this.#rid + REQUESTS) {
      this.log.info({ rid, expected: this.#rid + 1 }, "BOSH request too far ahead; session ended");
      this.#terminate("item-not-found");
      return terminateBody("item-not-found");
    }
    return new Promise<BoshAnswer>((resolve) => {
      this.#ahead.set(rid, { body, resolve });
      this.#drainAhead();
    });
  }

  /** Handles the requests whose turn it is, in rid order. */
  #drainAhead(): void {
    for (
      let next = this.#ahead.get(this.#rid + 1);
      next !== undefined;
      next = this.#ahead.get(this.#rid + 1)
    ) {
      this.#ahead.delete(this.#rid + 1);
      this.#rid++;
      const rid = this.#rid;
      this.#hold(rid).then(next.resolve, () => next.resolve(terminateBody("internal-server-error")));
      this.#deliver(next.body);
    }
  }

  /** Hands a request's payload to the stream. */
  #deliver(body: Element): void {
    const events = this.#events!;
    this.#touch();
    events.active();
    if (this.#ending || this.#gone) return;
    for (const child of body.getChildElements()) {
      // A stanza inherits the client namespace, as inside a <stream:stream> on TCP.
      if (child.attrs.xmlns === undefined || child.attrs.xmlns === NS_HTTPBIND) child.attrs.xmlns = NS_CLIENT;
      events.element(child);
      if (this.#ending || this.#gone) return;
    }
    if (body.attrs["xmpp:restart"] === "true") events.opened(this.#openAttrs, "stream:stream");
    if (body.attrs.type === "terminate") events.closedByPeer();
  }

  /** Holds request `rid` until output, `wait`, or a newer request; resolves with its answer. */
  #hold(rid: number): Promise<BoshAnswer> {
    return new Promise((resolve) => {
      const held: Held = {
        rid,
        answer: resolve,
        timer: setTimeout(() => this.#answer(held), this.#wait * 1000),
      };
      this.#held.push(held);
      if (this.log.isLevelEnabled("debug")) this.log.debug({ sid: this.sid, rid }, "BOSH request held");
      // §11: never more than `hold` held; the oldest is answered (empty if nothing is queued).
      while (this.#held.length > HOLD) this.#answer(this.#held[0]!);
      // Output already queued (or due this turn) goes out at once.
      if (this.#out.length > 0 || this.#ending) setImmediate(() => this.flush());
    });
  }

  #answer(held: Held): void {
    const at = this.#held.indexOf(held);
    if (at < 0) return;
    this.#held.splice(at, 1);
    clearTimeout(held.timer);
    const payload = this.#paused ? "" : this.#out.join("");
    if (!this.#paused) this.#out = [];
    const answer = this.#bodyWith(payload, held.rid);
    this.#answered.set(held.rid, answer);
    this.#answered.delete(held.rid - REQUESTS);
    held.answer(answer);
    this.#touch();
    if (this.#ending) this.#end();
  }

  #bodyWith(payload: string, rid: number): string {
    const attrs: string[] = [`xmlns="${NS_HTTPBIND}"`];
    if (this.#ending && this.#redirectTo !== undefined) {
      // XEP-0124 §17: the terminal condition see-other-uri, with the URI to use instead.
      attrs.unshift('type="terminate" condition="see-other-uri"');
      payload = `<uri>${escapeXML(this.#redirectTo)}</uri>${payload}`;
    } else if (this.#ending) {
      // XEP-0206 §7: a stream error travels in a terminate body of condition remote-stream-error.
      attrs.unshift(
        payload.includes("<stream:error")
          ? 'type="terminate" condition="remote-stream-error"'
          : 'type="terminate"',
      );
    }
    if (rid === this.#creationRid) {
      // The session's parameters (§7.1), and the stream's id and version (XEP-0206 §5).
      attrs.push(
        `sid="${this.sid}"`,
        `wait="${this.#wait}"`,
        `requests="${REQUESTS}"`,
        `hold="${HOLD}"`,
        `inactivity="${INACTIVITY_S}"`,
        `polling="2"`,
        `ver="1.6"`,
        `secure="${this.secure}"`,
        `xmpp:version="1.0"`,
        `xmlns:xmpp="${NS_XBOSH}"`,
        `xmlns:stream="${NS_STREAM}"`,
      );
      if (this.#streamId !== undefined) attrs.push(`authid="${this.#streamId}"`);
      if (this.#from !== undefined) attrs.push(`from="${this.#from}"`);
    }
    return `<body ${attrs.join(" ")}>${payload}</body>`;
  }

  #from: string | undefined;

  header(from: string, id: string | undefined): string {
    // The stream header of BOSH is the creation answer's attributes (XEP-0206 §5).
    this.#from = from;
    if (id !== undefined) this.#streamId ??= id;
    return "";
  }

  send(text: string): void {
    if (this.#gone || text === "") return;
    this.#out.push(standaloneElement(text));
    if (this.#out.length === 1) setImmediate(() => this.flush());
  }

  /** Answers the held request with what is queued. */
  flush(): void {
    if (this.#gone || this.#paused) return;
    if (this.#held.length > 0 && (this.#out.length > 0 || this.#ending)) this.#answer(this.#held[0]!);
  }

  restart(): void {}

  startTls(): void {
    throw new Error("STARTTLS is not offered over BOSH");
  }

  /** Where {@link redirect} sends the client; the terminating answer names it. */
  #redirectTo: string | undefined;

  /** Sends the client to another node's BOSH endpoint (XEP-0124 §17 see-other-uri). */
  redirect(webBase: string): void {
    this.#redirectTo = boshUrlOf(webBase);
    this.end();
  }

  /** The stream closed on our side: the next answer says terminate, then the session is gone. */
  end(): void {
    if (this.#gone) return;
    this.#ending = true;
    // The terminating answer carries what is queued, a stream error included, even when the
    // session had paused its output (its read pause ends with the stream).
    this.#paused = false;
    if (this.#held.length > 0) setImmediate(() => this.flush());
    // A client that sends no more requests does not keep the session.
    setTimeout(() => this.destroy(), 5_000).unref();
  }

  destroy(): void {
    for (const held of [...this.#held]) this.#answer(held);
    this.#end();
  }

  /** Stops answering with output (inbound flow control is the client's next request). */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.flush();
  }

  /**
   * Nothing to hold: a BOSH client sends its next request when this one is answered, and the
   * elements of one body are delivered together (a second login element among them ends the
   * stream, as it would on TCP).
   */
  holdForLogin(): void {}

  releaseForLogin(): void {}

  #terminate(condition: string): void {
    for (const held of [...this.#held]) {
      clearTimeout(held.timer);
      held.answer(terminateBody(condition));
    }
    this.#held.length = 0;
    this.#end();
  }

  #touch(): void {
    if (this.#gone) return;
    clearTimeout(this.#inactivity);
    // Inactivity counts only while no request is held or paced (§8).
    if (this.#held.length === 0 && this.#pacing === 0) {
      this.#inactivity = setTimeout(() => {
        this.log.debug("BOSH session inactive; gone");
        this.#end();
      }, INACTIVITY_S * 1000);
      this.#inactivity.unref();
    }
  }

  #end(): void {
    if (this.#gone) return;
    this.#gone = true;
    clearTimeout(this.#inactivity);
    for (const { resolve } of this.#ahead.values()) resolve(terminateBody("item-not-found"));
    this.#ahead.clear();
    this.#options.gone();
    this.#events?.gone();
    for (const listener of this.#goneListeners) listener();
  }

  whenGone(listener: () => void): void {
    if (this.#gone) listener();
    else this.#goneListeners.push(listener);
  }
}

/**
 * A lean raw-socket XMPP client for load generation: thousands of these share one process, so
 * it keeps no per-stanza promises, builds outgoing XML as strings and parses incoming XML with
 * the ltx SAX parser (see xml-stream.ts). It speaks just enough of RFC 6120/6121 to log in the
 * way real clients do — STARTTLS, SASL SCRAM-SHA-1 or PLAIN, resource binding, the legacy
 * session IQ where a server still requires it, XEP-0198 and initial presence — and can create
 * its own account with XEP-0077 in-band registration, for servers without a bulk admin API.
 *
 * Given an {@link SmSession} (failover benchmark), it also tracks what it sends for XEP-0198:
 * it enables resumption, keeps every stanza until the server's `<a h/>` covers it, resumes
 * that session on its next connection (`<resume previd h/>`) and, when resumption fails,
 * binds a new session and sends the unacknowledged messages again.
 */
import { createHash, createHmac, createSecretKey, pbkdf2, randomBytes } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { escapeXML } from "ltx/src/escape.js";
import {
  NS_BIND,
  NS_BIND2,
  NS_CLIENT,
  NS_PING,
  NS_REGISTER,
  NS_ROSTER,
  NS_SASL,
  NS_SASL2,
  NS_SESSION,
  NS_SM,
  NS_STREAM,
  NS_STREAMS_ERROR,
  NS_TLS,
} from "../../src/xmpp/ns.ts";
import { SmSession, type UnackedStanza } from "./sm-session.ts";
import {
  childOf,
  namespaceOf,
  resolvePrefix,
  textOf,
  type XmlElement,
  XmlStreamReader,
} from "./xml-stream.ts";

/**
 * HMAC(key, data), the client's own (not the server's helper, so that a mistake in one does not
 * agree with itself): the key as a KeyObject, which Node 24 takes much faster than a Buffer.
 */
function hmac(hash: string, key: Buffer, data: string): Buffer {
  return createHmac(hash, createSecretKey(key)).update(data).digest();
}

/** SASL mechanisms this client implements. */
export type SaslMechanism = "SCRAM-SHA-1" | "PLAIN";

/** Stable codes for {@link LoadClientError}; branch on these, not on messages. */
export const LoadClientErrorCodes = {
  LOAD_CONNECT: "the TCP or TLS connection failed or closed early",
  LOAD_TIMEOUT: "login, registration or close did not finish in time",
  LOAD_STREAM_ERROR: "the server sent a stream error",
  LOAD_XML: "the server sent XML the reader could not parse",
  LOAD_FEATURE_MISSING: "the server did not offer a required feature (STARTTLS, mechanism, bind)",
  LOAD_SASL: "SASL authentication failed or the server's SCRAM signature did not verify",
  LOAD_BIND: "resource binding or the session IQ failed",
  LOAD_REGISTER: "in-band registration failed",
  LOAD_DESTROYED: "the client was destroyed by its owner",
} as const;

/** A {@link LoadClientError} code. */
export type LoadClientErrorCode = keyof typeof LoadClientErrorCodes;

/** Every failure of a {@link LoadClient} carries a code and, for XMPP errors, the condition. */
export class LoadClientError extends Error {
  readonly code: LoadClientErrorCode;
  readonly condition: string | undefined;
  /** Text of the condition element, e.g. the `host:port` of a `<see-other-host/>` stream error. */
  readonly detail: string | undefined;
  constructor(
    code: LoadClientErrorCode,
    message: string,
    condition?: string,
    options?: { cause?: unknown; detail?: string },
  ) {
    super(message, options);
    this.name = "LoadClientError";
    this.code = code;
    this.condition = condition;
    this.detail = options?.detail;
  }
}

/** Salted-password derivatives, cached per (password, salt, iterations) as RFC 5802 §5.1 allows. */
interface ScramKeys {
  clientKey: Buffer;
  serverKey: Buffer;
}

/**
 * Cache of SCRAM key derivations. RFC 5802 §5.1: "the client can cache ClientKey/ServerKey ...
 * for subsequent authentication exchanges" — real clients do, and without it the load
 * generator would spend its CPU on PBKDF2 instead of loading the server, which only verifies
 * HMACs. Derivation runs on libuv's thread pool so the event loop keeps serving sockets.
 */
export class ScramKeyCache {
  #entries = new Map<string, Promise<ScramKeys>>();
  #maxEntries: number;
  /** Number of PBKDF2 derivations actually computed (cache misses). */
  derivations = 0;

  constructor(maxEntries = 200_000) {
    this.#maxEntries = maxEntries;
  }

  /** Returns ClientKey and ServerKey for SCRAM-SHA-1, deriving them once per distinct input. */
  keys(password: string, salt: Buffer, iterations: number): Promise<ScramKeys> {
    const key = `${iterations}\0${salt.toString("base64")}\0${password}`;
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      if (this.#entries.size >= this.#maxEntries) this.#entries.clear();
      this.derivations++;
      entry = new Promise<ScramKeys>((resolve, reject) => {
        // RFC 5802 §2.2: Hi(str, salt, i) is PBKDF2 with HMAC as the PRF; RFC 4013 SASLprep is
        // approximated by NFKC, which is exact for the ASCII passwords load tests use.
        pbkdf2(
          Buffer.from(password.normalize("NFKC"), "utf8"),
          salt,
          iterations,
          20,
          "sha1",
          (err, salted) => {
            if (err) return reject(err);
            resolve({
              clientKey: hmac("sha1", salted, "Client Key"),
              serverKey: hmac("sha1", salted, "Server Key"),
            });
          },
        );
      });
      entry.catch(() => this.#entries.delete(key));
      this.#entries.set(key, entry);
    }
    return entry;
  }
}

/**
 * A source address of its own for user `n` when the server is on loopback (all of 127/8 is the
 * loopback interface on Linux): real clients come from many addresses, and a server that limits
 * what one address may do at once (Starling's `limits.loginAttemptsInFlightPerAddress`) would
 * otherwise see every simulated user as one office behind one NAT. 127.1.0.1 onwards, clear of
 * the 127.0.0.x addresses the failover harness gives its nodes; none for any other server.
 */
export function loopbackSourceFor(host: string, n: number): Pick<LoadClientOptions, "localAddress"> {
  if (!host.startsWith("127.")) return {};
  return { localAddress: `127.${1 + Math.floor(n / 62_500)}.${Math.floor(n / 250) % 250}.${1 + (n % 250)}` };
}

/** Options for {@link LoadClient}. */
export interface LoadClientOptions {
  host: string;
  port: number;
  /** The local address to connect from (see {@link loopbackSourceFor}); the kernel's choice when absent. */
  localAddress?: string;
  /** The XMPP domain (the `to` of the stream header and the domainpart of the JID). */
  domain: string;
  /** Localpart of the account. */
  username: string;
  password: string;
  /** Resource to request at bind; the server may assign another. Default "load". */
  resource?: string;
  /** Negotiate STARTTLS (RFC 6120 §5) before authenticating; fail if not offered. Default false. */
  starttls?: boolean;
  /** Default "SCRAM-SHA-1". */
  mechanism?: SaslMechanism;
  /** Enable XEP-0198 when offered. Default true. */
  streamManagement?: boolean;
  /** Send initial presence after binding (RFC 6121 §4.2). Default true. */
  initialPresence?: boolean;
  /** Upper bound for login, registration and graceful close. Default 30,000. */
  timeoutMs?: number;
  /** Shared SCRAM key cache; each client gets its own when absent. */
  scramCache?: ScramKeyCache;
  /**
   * XEP-0198 state shared across this user's connections: when given, the client asks for a
   * resumable session, tracks outbound stanzas until acknowledged, and resumes the session on
   * the next connection. Without it, stream management (if on) only answers `<r/>`.
   */
  sm?: SmSession;
  /** With `sm`: try `<resume/>` when the session has an id. Default true. */
  resume?: boolean;
  /**
   * Log in with XEP-0388 SASL2 when offered, as Conversations and Monal do: one `<authenticate/>`
   * carries the resumption (`<resume/>`) and XEP-0386 Bind 2 with XEP-0198 enabled inline, and
   * no stream restart follows. Default false (RFC 6120 SASL, restart, bind, enable).
   */
  sasl2?: boolean;
  /** Fetch the roster (RFC 6121 §2.1.3) before initial presence, as real clients do. Default false. */
  fetchRoster?: boolean;
  /** Called for each message stanza once bound; keep it cheap. */
  onMessage?: (client: LoadClient, message: XmlElement) => void;
  /** Called for each presence stanza once bound (subscription requests, contacts' presence). */
  onPresence?: (client: LoadClient, presence: XmlElement) => void;
  /** Called for each roster push (RFC 6121 §2.1.6), after the client has answered it. */
  onRosterPush?: (client: LoadClient, item: XmlElement) => void;
  /** Called once when the connection ends, with the error if it ended abnormally. */
  onClose?: (client: LoadClient, error: LoadClientError | undefined) => void;
}

/** Where a client is in its life. */
export type LoadClientStatus = "idle" | "negotiating" | "online" | "closing" | "closed";

type Step =
  | "await-features"
  | "starttls"
  | "sasl-first"
  | "sasl-final"
  | "resume"
  | "bind"
  | "session"
  | "sm-enable"
  | "roster"
  | "register"
  | "online";

/** How a login ended: a new session was bound, or a previous one was resumed (XEP-0198 §5). */
export type LoginOutcome = "bound" | "resumed";

type Goal = "login" | "register";

/** State of one SCRAM exchange (RFC 5802 §3). */
interface ScramState {
  clientNonce: string;
  clientFirstBare: string;
  expectedServerSignature: Buffer | undefined;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** RFC 5802 §5.1: "The characters ',' or '=' in usernames are sent as '=2C' and '=3D' respectively." */
function saslName(username: string): string {
  return username.replaceAll("=", "=3D").replaceAll(",", "=2C");
}

function parseScramAttributes(message: string): Map<string, string> {
  const attributes = new Map<string, string>();
  for (const part of message.split(",")) {
    if (part.length >= 2 && part[1] === "=") attributes.set(part[0]!, part.slice(2));
  }
  return attributes;
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** First child element's local name, e.g. the defined condition inside a stream or stanza error. */
function firstChildName(element: XmlElement | undefined, exclude = "text"): string | undefined {
  if (element === undefined) return undefined;
  for (const child of element.children) {
    if (typeof child !== "string" && child.name !== exclude) return child.name;
  }
  return undefined;
}

/**
 * One XMPP client connection. {@link login} (or {@link register}) resolves once; after that
 * the owner sends with {@link sendMessage} and receives through `onMessage`.
 */
export class LoadClient {
  readonly options: Readonly<LoadClientOptions>;
  /** The bound full JID once online. */
  jid = "";
  status: LoadClientStatus = "idle";
  /** Message stanzas received while online. */
  messagesReceived = 0;
  /** Set when login succeeds. */
  outcome: LoginOutcome | undefined;
  /** The roster, when `fetchRoster` was set: each contact's bare JID and subscription state. */
  roster: { jid: string; subscription: string }[] = [];
  /** When the last `<r/>` this client sent was written, or 0 when none is outstanding. */
  ackRequestedAt = 0;

  #socket: net.Socket | undefined;
  #reader: XmlStreamReader;
  #streamDeclarations: Record<string, string> = {};
  #step: Step = "await-features";
  #goal: Goal = "login";
  #secured = false;
  /** This connection authenticates with XEP-0388 (options.sasl2, and the server offers it). */
  #sasl2 = false;
  /** Its `<authenticate/>` carried a `<resume/>`. */
  #resumeInline = false;
  #authenticated = false;
  #sessionRequired = false;
  #smOffered = false;
  /** Stream management is enabled (or resumed) on this connection. */
  #smActive = false;
  /** This connection resumed a session (rather than binding a new one). */
  #resumed = false;
  #sm: SmSession;
  /** Tracked messages of an abandoned session, sent again once the new one is online. */
  #carry: UnackedStanza[] = [];
  /** The features of the stream a `<resume/>` was sent on, for binding if it fails. */
  #bindFeatures: XmlElement | undefined;
  #scram: ScramState | undefined;
  #timer: NodeJS.Timeout | undefined;
  #settle: { resolve: () => void; reject: (error: LoadClientError) => void } | undefined;
  #registerOutcome: "created" | "exists" = "created";
  #closeWaiter: (() => void) | undefined;
  #error: LoadClientError | undefined;

  constructor(options: LoadClientOptions) {
    this.options = options;
    this.#sm = options.sm ?? new SmSession();
    this.#reader = new XmlStreamReader({
      onStreamStart: (attrs) => {
        this.#streamDeclarations = attrs;
      },
      onElement: (element) => this.#onElement(element),
      onStreamEnd: () => this.#onStreamEnd(),
      onError: (error) =>
        this.#fail(new LoadClientError("LOAD_XML", `Unparseable XML from server: ${error.message}`)),
    });
  }

  /** Bytes queued in the socket that the kernel has not accepted yet: the client-side backlog. */
  get writableLength(): number {
    return this.#socket?.writableLength ?? 0;
  }

  /** Connects and logs in; resolves when bound, XEP-0198 settled and initial presence sent. */
  login(): Promise<void> {
    return this.#start("login");
  }

  /** Creates the account with XEP-0077 in-band registration; `"exists"` when it already did. */
  async register(): Promise<"created" | "exists"> {
    await this.#start("register");
    await this.close();
    return this.#registerOutcome;
  }

  /**
   * Sends a chat message; `to` and `body` must already be XML-escaped (callers reuse them).
   * Returns false when the socket's buffer is over its high-water mark.
   */
  sendMessage(to: string, body: string): boolean {
    return this.#write(`<message to='${to}' type='chat'><body>${body}</body></message>`);
  }

  /** Sends raw XML on the current stream. */
  sendRaw(xml: string): boolean {
    return this.#write(xml);
  }

  /**
   * Sends a stanza and, with an {@link SmSession}, keeps it until the server acknowledges it;
   * `tag` (≥ 0) is reported to the session's `onAcked` then. Without stream management on this
   * connection there is no acknowledgement to wait for: the stanza counts as acknowledged once
   * written. Returns false when the socket's buffer is over its high-water mark.
   */
  sendTracked(xml: string, tag: number): boolean {
    if (this.#smActive && this.options.sm !== undefined) {
      this.#sm.push(xml, tag);
      return this.#write(xml);
    }
    const written = this.#write(xml);
    if (tag >= 0) this.#sm.onAcked(tag);
    return written;
  }

  /** Stream management is on for this connection (enabled or resumed). */
  get managed(): boolean {
    return this.#smActive;
  }

  /**
   * Asks the server for an acknowledgement (XEP-0198 `<r/>`) unless one is outstanding.
   * Returns false when stream management is off or a request is already pending.
   */
  requestAck(now: number): boolean {
    if (!this.#smActive || this.status !== "online" || this.ackRequestedAt !== 0) return false;
    this.ackRequestedAt = now;
    return this.#write(`<r xmlns='${NS_SM}'/>`);
  }

  /**
   * Closes the stream the RFC 6120 §4.4 way: send `</stream:stream>`, wait for the server's,
   * then end TCP. Bounded by `timeoutMs`, after which the socket is destroyed.
   */
  close(): Promise<void> {
    if (this.status === "closed") return Promise.resolve();
    const socket = this.#socket;
    if (socket === undefined || this.status === "idle") {
      this.destroy();
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.destroy(), this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      this.#closeWaiter = () => {
        clearTimeout(timer);
        resolve();
      };
      if (this.status !== "closing") {
        this.#write("</stream:stream>");
        // RFC 6120 §4.4: after its closing tag an entity MUST NOT send further data on the stream.
        this.status = "closing";
      }
    });
  }

  /**
   * Stops reading from the socket (a client that no longer reads, for abuse scenarios): what the
   * server writes piles up in the kernel's buffers and then in the server's own.
   */
  pauseReading(): void {
    this.#socket?.pause();
  }

  /** Tears the connection down at once. */
  destroy(): void {
    this.#fail(new LoadClientError("LOAD_DESTROYED", "Client destroyed"));
  }

  #start(goal: Goal): Promise<void> {
    if (this.status !== "idle") throw new TypeError(`Cannot start a client in status "${this.status}"`);
    this.#goal = goal;
    this.status = "negotiating";
    const { host, port } = this.options;
    return new Promise<void>((resolve, reject) => {
      this.#settle = { resolve, reject };
      this.#timer = setTimeout(() => {
        this.#fail(new LoadClientError("LOAD_TIMEOUT", `${goal} did not finish in time`));
      }, this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      const { localAddress } = this.options;
      const socket = net.connect({
        host,
        port,
        noDelay: true,
        ...(localAddress === undefined ? {} : { localAddress }),
      });
      this.#attach(socket);
      socket.once("connect", () => this.#openStream());
    });
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    socket.on("data", (chunk: Buffer) => this.#reader.write(chunk));
    socket.on("error", (error) =>
      this.#fail(
        new LoadClientError("LOAD_CONNECT", `Socket error: ${error.message}`, undefined, { cause: error }),
      ),
    );
    socket.on("close", () => this.#onSocketClose(socket));
  }

  #onSocketClose(socket: net.Socket): void {
    // After STARTTLS the plain socket's close is reported by the TLS socket wrapping it.
    if (socket !== this.#socket) return;
    if (this.status === "closing") this.#finish(undefined);
    else this.#fail(new LoadClientError("LOAD_CONNECT", "Connection closed by server"));
  }

  /** RFC 6120 §4.7: the initial stream header, with `to` and `version='1.0'`. */
  #openStream(): void {
    this.#reader.reset();
    this.#step = "await-features";
    this.#write(
      `<?xml version='1.0'?><stream:stream to='${escapeXML(this.options.domain)}' version='1.0' ` +
        `xml:lang='en' xmlns='${NS_CLIENT}' xmlns:stream='${NS_STREAM}'>`,
    );
  }

  #write(xml: string): boolean {
    const socket = this.#socket;
    if (socket === undefined || socket.destroyed || this.status === "closing") return false;
    return socket.write(xml);
  }

  #onStreamEnd(): void {
    if (this.status === "closing") {
      this.#socket?.end();
      return;
    }
    this.#fail(new LoadClientError("LOAD_CONNECT", "Server closed the stream"));
  }

  #onElement(element: XmlElement): void {
    const { ns: prefixNs, local } = resolvePrefix(element.name, this.#streamDeclarations);
    const ns = prefixNs ?? element.attrs.xmlns ?? this.#streamDeclarations.xmlns;
    if (ns === NS_STREAM) {
      if (local === "error") return this.#onStreamError(element);
      if (local === "features") return this.#onFeatures(element);
      return;
    }
    if (this.#smActive && (local === "message" || local === "presence" || local === "iq")) {
      // XEP-0198 §4: h counts every stanza handled since management was enabled.
      this.#sm.inbound = (this.#sm.inbound + 1) % 4294967296;
    }
    if (this.#step === "online") return this.#onOnline(element, local, ns);
    if (this.#authenticated && (local === "message" || local === "presence")) {
      // Stanzas can reach a bound session before its login finishes (a full-JID message
      // during <enable/>): they are received like any other, not dropped.
      return this.#onOnline(element, local, ns);
    }
    switch (this.#step) {
      case "starttls":
        return this.#onStartTlsReply(local, ns);
      case "sasl-first":
      case "sasl-final":
        if (ns === NS_SASL || (ns === NS_SASL2 && this.#sasl2)) this.#onSaslReply(element, local);
        return;
      case "bind":
      case "session":
      case "register":
        if (local === "iq") this.#onIqReply(element);
        return;
      case "sm-enable":
        if (ns === NS_SM && (local === "enabled" || local === "failed")) {
          if (local === "enabled") this.#onEnabled(element);
          this.#afterEnable();
        }
        return;
      case "resume":
        if (ns === NS_SM && (local === "resumed" || local === "failed")) this.#onResumeReply(element, local);
        return;
      case "roster":
        if (local === "iq" && element.attrs.id === "roster1") {
          const query = childOf(element, "query", NS_ROSTER);
          if (query !== undefined) {
            for (const item of query.children) {
              if (typeof item !== "string" && item.name === "item" && item.attrs.jid !== undefined) {
                this.roster.push({ jid: item.attrs.jid, subscription: item.attrs.subscription ?? "none" });
              }
            }
          }
          this.#goOnline();
          return;
        }
        return this.#onOnline(element, local, ns);
      case "await-features":
        return;
      default: {
        const exhaustive: never = this.#step;
        return exhaustive;
      }
    }
  }

  #onStreamError(element: XmlElement): void {
    let condition: string | undefined;
    let detail: string | undefined;
    for (const child of element.children) {
      if (typeof child !== "string" && child.attrs.xmlns === NS_STREAMS_ERROR && child.name !== "text") {
        condition = child.name;
        // RFC 6120 §4.9.3.19: <see-other-host/> carries the alternate "host:port" as its text.
        detail = textOf(child).trim() || undefined;
        break;
      }
    }
    this.#fail(
      new LoadClientError(
        "LOAD_STREAM_ERROR",
        `Stream error: ${condition}`,
        condition,
        detail === undefined ? undefined : { detail },
      ),
    );
  }

  #onFeatures(features: XmlElement): void {
    if (this.#step !== "await-features") return;
    if (this.options.starttls && !this.#secured) {
      if (childOf(features, "starttls", NS_TLS) === undefined) {
        return this.#fail(new LoadClientError("LOAD_FEATURE_MISSING", "Server does not offer STARTTLS"));
      }
      this.#step = "starttls";
      this.#write(`<starttls xmlns='${NS_TLS}'/>`);
      return;
    }
    if (this.#goal === "register") {
      this.#step = "register";
      const { username, password } = this.options;
      this.#write(
        `<iq type='set' id='reg1'><query xmlns='${NS_REGISTER}'><username>${escapeXML(username)}</username>` +
          `<password>${escapeXML(password)}</password></query></iq>`,
      );
      return;
    }
    if (!this.#authenticated) return this.#startSasl(features);
    this.#smOffered = childOf(features, "sm", NS_SM) !== undefined;
    const sm = this.options.sm;
    if (sm !== undefined && sm.id !== undefined) {
      if (this.#smOffered && this.options.resume !== false) {
        // XEP-0198 §5: resume instead of binding, reporting the stanzas this client handled.
        this.#step = "resume";
        this.#write(`<resume xmlns='${NS_SM}' previd='${escapeXML(sm.id)}' h='${sm.inbound}'/>`);
        this.#bindFeatures = features;
        return;
      }
      this.#carry = sm.abandon();
    }
    this.#bind(features);
  }

  #bind(features: XmlElement): void {
    if (childOf(features, "bind", NS_BIND) === undefined) {
      return this.#fail(
        new LoadClientError("LOAD_FEATURE_MISSING", "Server does not offer resource binding"),
      );
    }
    // RFC 6121 Appendix E: the session IQ is obsolete; servers that still list the feature
    // mark it <optional/> unless they require it (draft-cridland-xmpp-session-01).
    const session = childOf(features, "session", NS_SESSION);
    this.#sessionRequired = session !== undefined && childOf(session, "optional") === undefined;
    this.#step = "bind";
    const resource = escapeXML(this.options.resource ?? "load");
    this.#write(
      `<iq type='set' id='bind1'><bind xmlns='${NS_BIND}'><resource>${resource}</resource></bind></iq>`,
    );
  }

  #onStartTlsReply(local: string, ns: string | undefined): void {
    if (ns !== NS_TLS) return;
    if (local !== "proceed") {
      return this.#fail(new LoadClientError("LOAD_CONNECT", "Server refused STARTTLS", local));
    }
    const plain = this.#socket!;
    plain.removeAllListeners("data");
    plain.removeAllListeners("close");
    // RFC 6120 §5.4.3.3: after <proceed/> the client starts the TLS handshake on the same TCP
    // connection. Load tests run against self-signed certificates, hence no verification.
    const secure = tls.connect({ socket: plain, rejectUnauthorized: false, servername: this.options.domain });
    this.#attach(secure);
    secure.once("secureConnect", () => {
      this.#secured = true;
      // RFC 6120 §5.4.3.3: "the initiating entity MUST initiate a new stream" over the TLS layer.
      this.#openStream();
    });
  }

  /** The namespace of this connection's SASL elements (XEP-0388's or RFC 6120's). */
  get #saslNs(): string {
    return this.#sasl2 ? NS_SASL2 : NS_SASL;
  }

  #startSasl(features: XmlElement): void {
    const wanted = this.options.mechanism ?? "SCRAM-SHA-1";
    this.#sasl2 = this.options.sasl2 === true && childOf(features, "authentication", NS_SASL2) !== undefined;
    const mechanisms = childOf(features, this.#sasl2 ? "authentication" : "mechanisms", this.#saslNs);
    const offered = mechanisms?.children.some((c) => typeof c !== "string" && textOf(c) === wanted) ?? false;
    if (!offered) {
      return this.#fail(new LoadClientError("LOAD_FEATURE_MISSING", `Server does not offer SASL ${wanted}`));
    }
    const { username, password } = this.options;
    let initial: string;
    if (wanted === "PLAIN") {
      // RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
      initial = Buffer.from(`\0${username}\0${password}`, "utf8").toString("base64");
      this.#step = "sasl-final";
    } else {
      const clientNonce = randomBytes(18).toString("base64");
      const clientFirstBare = `n=${saslName(username)},r=${clientNonce}`;
      this.#scram = { clientNonce, clientFirstBare, expectedServerSignature: undefined };
      // RFC 5802 §7: gs2-header "n,," — no channel binding, no authzid.
      initial = Buffer.from(`n,,${clientFirstBare}`, "utf8").toString("base64");
      this.#step = "sasl-first";
    }
    this.#write(
      this.#sasl2
        ? this.#authenticate(features, wanted, initial)
        : `<auth xmlns='${NS_SASL}' mechanism='${wanted}'>${initial}</auth>`,
    );
  }

  /**
   * XEP-0388's `<authenticate/>`: the initial response, a user agent whose id is stable per
   * account (so the server's Bind 2 gives a reconnecting client the same resource), an inline
   * `<resume/>` when there is a session to resume, and Bind 2 with XEP-0198 enabled.
   */
  #authenticate(features: XmlElement, mechanism: string, initial: string): string {
    const inline = childOf(childOf(features, "authentication", NS_SASL2)!, "inline");
    const sm = this.options.sm;
    let inner = `<user-agent id='${createHash("sha256").update(this.options.username).digest("hex").slice(0, 32)}'><software>starling-bench</software></user-agent>`;
    // Without an inline <resume/>, the session is abandoned once SASL succeeds (#onSasl2Success).
    this.#resumeInline =
      sm?.id !== undefined &&
      this.options.resume !== false &&
      inline !== undefined &&
      childOf(inline, "sm", NS_SM) !== undefined;
    if (this.#resumeInline)
      inner += `<resume xmlns='${NS_SM}' previd='${escapeXML(sm!.id!)}' h='${sm!.inbound}'/>`;
    const smWanted = this.options.streamManagement !== false;
    const resumable = sm !== undefined && this.options.resume !== false;
    const enable = !smWanted
      ? ""
      : resumable
        ? `<enable xmlns='${NS_SM}' resume='true'/>`
        : `<enable xmlns='${NS_SM}'/>`;
    inner += `<bind xmlns='${NS_BIND2}'><tag>${escapeXML(this.options.resource ?? "load")}</tag>${enable}</bind>`;
    return `<authenticate xmlns='${NS_SASL2}' mechanism='${mechanism}'><initial-response>${initial}</initial-response>${inner}</authenticate>`;
  }

  /** XEP-0198 §4: `<enabled/>` (on its own or in Bind 2's `<bound/>`): both counters start at zero. */
  #onEnabled(enabled: XmlElement): void {
    const resumable = enabled.attrs.resume === "true" || enabled.attrs.resume === "1";
    this.#sm.begin(resumable ? enabled.attrs.id : undefined, enabled.attrs.location);
    this.#smActive = true;
  }

  /**
   * SASL2's `<success/>`: no restart; it says whether the session was resumed (`<resumed/>`) or
   * bound (`<bound/>`, with `<enabled/>`), or neither (bind the RFC 6120 way on the features
   * that follow).
   */
  #onSasl2Success(success: XmlElement): void {
    const sm = this.#sm;
    const resumed = childOf(success, "resumed", NS_SM);
    if (resumed !== undefined) {
      this.jid = textOf(childOf(success, "authorization-identifier") ?? success).trim();
      return this.#onResumeReply(resumed, "resumed");
    }
    const failed = childOf(success, "failed", NS_SM);
    if (failed !== undefined) {
      const h = failed.attrs.h === undefined ? undefined : Number(failed.attrs.h);
      this.#carry = sm.abandon(Number.isInteger(h) ? h : undefined);
    } else if (!this.#resumeInline && sm.id !== undefined) {
      // A session this connection did not try to resume: its unacknowledged stanzas go again.
      this.#carry = sm.abandon();
    }
    const bound = childOf(success, "bound", NS_BIND2);
    if (bound === undefined) {
      // Not bound: the features that follow offer RFC 6120 binding.
      this.#step = "await-features";
      return;
    }
    this.jid = textOf(childOf(success, "authorization-identifier") ?? success).trim();
    const enabled = childOf(bound, "enabled", NS_SM);
    if (enabled !== undefined) this.#onEnabled(enabled);
    this.#afterEnable();
  }

  #onSaslReply(element: XmlElement, local: string): void {
    if (local === "failure") {
      const condition = firstChildName(element);
      return this.#fail(new LoadClientError("LOAD_SASL", `SASL failure: ${condition}`, condition));
    }
    // XEP-0388 §2.6.1: SASL2's server-final-message is the <success/>'s <additional-data/>.
    const payload = this.#sasl2 && local === "success" ? childOf(element, "additional-data") : element;
    const data = Buffer.from(payload === undefined ? "" : textOf(payload).trim(), "base64").toString("utf8");
    if (local === "challenge") {
      if (this.#step === "sasl-first") {
        this.#scramFinal(data).catch((error: unknown) =>
          this.#fail(
            new LoadClientError("LOAD_SASL", "SCRAM key derivation failed", undefined, { cause: error }),
          ),
        );
        return;
      }
      // Some servers send the server signature in a final challenge instead of <success/>.
      if (this.#verifyServerSignature(data)) this.#write(`<response xmlns='${this.#saslNs}'/>`);
      return;
    }
    if (local !== "success") return;
    if (this.#scram !== undefined) {
      const alreadyVerified = this.#scram.expectedServerSignature === undefined;
      if (!alreadyVerified && !this.#verifyServerSignature(data)) return;
    }
    this.#authenticated = true;
    if (this.#sasl2) return this.#onSasl2Success(element);
    // RFC 6120 §6.4.6: on success "the initiating entity MUST initiate a new stream".
    this.#openStream();
  }

  async #scramFinal(serverFirst: string): Promise<void> {
    const scram = this.#scram!;
    const attributes = parseScramAttributes(serverFirst);
    const nonce = attributes.get("r");
    const salt = attributes.get("s");
    const iterations = Number(attributes.get("i"));
    // RFC 5802 §5.1: the client MUST verify that the nonce starts with its own.
    if (
      attributes.has("m") ||
      nonce === undefined ||
      salt === undefined ||
      !nonce.startsWith(scram.clientNonce)
    ) {
      return this.#fail(new LoadClientError("LOAD_SASL", "Malformed SCRAM server-first-message"));
    }
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > 1_000_000) {
      return this.#fail(new LoadClientError("LOAD_SASL", `Unacceptable SCRAM iteration count ${iterations}`));
    }
    const cache = this.options.scramCache ?? new ScramKeyCache(1);
    const { clientKey, serverKey } = await cache.keys(
      this.options.password,
      Buffer.from(salt, "base64"),
      iterations,
    );
    if (this.status !== "negotiating") return;
    const clientFinalWithoutProof = `c=biws,r=${nonce}`;
    const authMessage = `${scram.clientFirstBare},${serverFirst},${clientFinalWithoutProof}`;
    const storedKey = createHash("sha1").update(clientKey).digest();
    const clientSignature = hmac("sha1", storedKey, authMessage);
    const proof = xor(clientKey, clientSignature).toString("base64");
    scram.expectedServerSignature = hmac("sha1", serverKey, authMessage);
    this.#step = "sasl-final";
    const response = Buffer.from(`${clientFinalWithoutProof},p=${proof}`, "utf8").toString("base64");
    this.#write(`<response xmlns='${this.#saslNs}'>${response}</response>`);
  }

  /** RFC 5802 §3: the client authenticates the server by checking ServerSignature. */
  #verifyServerSignature(serverFinal: string): boolean {
    const scram = this.#scram;
    const expected = scram?.expectedServerSignature;
    if (scram === undefined || expected === undefined) {
      this.#fail(new LoadClientError("LOAD_SASL", "Unexpected SCRAM server-final-message"));
      return false;
    }
    const attributes = parseScramAttributes(serverFinal);
    const verifier = attributes.get("v");
    if (verifier === undefined || !Buffer.from(verifier, "base64").equals(expected)) {
      const error = attributes.get("e");
      this.#fail(
        new LoadClientError("LOAD_SASL", `SCRAM server signature did not verify (${error ?? "no v="})`),
      );
      return false;
    }
    scram.expectedServerSignature = undefined;
    return true;
  }

  #onIqReply(iq: XmlElement): void {
    const type = iq.attrs.type;
    if (type !== "result" && type !== "error") return;
    const id = iq.attrs.id;
    const condition = type === "error" ? firstChildName(childOf(iq, "error")) : undefined;
    if (this.#step === "register" && id === "reg1") {
      if (type === "result") this.#registerOutcome = "created";
      else if (condition === "conflict") this.#registerOutcome = "exists";
      else
        return this.#fail(
          new LoadClientError("LOAD_REGISTER", `Registration failed: ${condition}`, condition),
        );
      this.#succeed();
      return;
    }
    if (this.#step === "bind" && id === "bind1") {
      if (type === "error") {
        return this.#fail(new LoadClientError("LOAD_BIND", `Bind failed: ${condition}`, condition));
      }
      const jid = childOf(iq, "bind");
      const jidElement = jid === undefined ? undefined : childOf(jid, "jid");
      this.jid = jidElement === undefined ? "" : textOf(jidElement);
      if (this.#sessionRequired) {
        this.#step = "session";
        this.#write(`<iq type='set' id='sess1'><session xmlns='${NS_SESSION}'/></iq>`);
        return;
      }
      return this.#afterBind();
    }
    if (this.#step === "session" && id === "sess1") {
      if (type === "error") {
        return this.#fail(new LoadClientError("LOAD_BIND", `Session failed: ${condition}`, condition));
      }
      this.#afterBind();
    }
  }

  #afterBind(): void {
    if (this.options.streamManagement !== false && this.#smOffered) {
      this.#step = "sm-enable";
      const resume = this.options.sm !== undefined && this.options.resume !== false;
      this.#write(resume ? `<enable xmlns='${NS_SM}' resume='true'/>` : `<enable xmlns='${NS_SM}'/>`);
      return;
    }
    this.#afterEnable();
  }

  #afterEnable(): void {
    if (this.options.fetchRoster) {
      this.#step = "roster";
      this.sendTracked(`<iq type='get' id='roster1'><query xmlns='${NS_ROSTER}'/></iq>`, -1);
      return;
    }
    this.#goOnline();
  }

  #onResumeReply(element: XmlElement, local: string): void {
    const sm = this.#sm;
    const h = element.attrs.h === undefined ? undefined : Number(element.attrs.h);
    if (local === "resumed") {
      // XEP-0198 §5: h acknowledges what the server handled; the client re-sends the rest.
      if (h !== undefined) sm.ack(h);
      this.#smActive = true;
      this.#resumed = true;
      for (const entry of sm.pending()) this.#write(entry.xml);
      if (!sm.available) return this.#afterEnable();
      this.#step = "online";
      this.outcome = "resumed";
      this.#succeed();
      return;
    }
    // XEP-0198 §5: after <failed/> the client may bind a new session on this stream; a server
    // that still knows the old session's count says so in 'h', which saves needless re-sends.
    this.#carry = sm.abandon(Number.isInteger(h) ? h : undefined);
    this.#bind(this.#bindFeatures!);
  }

  #goOnline(): void {
    this.#step = "online";
    // RFC 6121 §4.2.1: initial presence makes the session available for messages to the bare JID.
    if (this.options.initialPresence !== false) {
      this.sendTracked("<presence/>", -1);
      if (this.#smActive) this.#sm.available = true;
    }
    const carry = this.#carry;
    this.#carry = [];
    for (const entry of carry) this.sendTracked(entry.xml, entry.tag);
    this.outcome = this.#resumed ? "resumed" : "bound";
    this.#succeed();
  }

  #onOnline(element: XmlElement, local: string, ns: string | undefined): void {
    if (ns === NS_SM) {
      // XEP-0198 §4: "When an <r/> element is received, the recipient MUST respond with an <a/> element".
      if (local === "r") this.#write(`<a xmlns='${NS_SM}' h='${this.#sm.inbound}'/>`);
      else if (local === "a" && this.#smActive) {
        this.ackRequestedAt = 0;
        if (this.options.sm !== undefined) this.#sm.ack(Number(element.attrs.h));
      }
      return;
    }
    if (local === "message") {
      this.messagesReceived++;
      this.options.onMessage?.(this, element);
      return;
    }
    if (local === "presence") {
      this.options.onPresence?.(this, element);
      return;
    }
    if (local === "iq") this.#answerIq(element);
  }

  /** RFC 6120 §8.2.3: an entity that receives a get or set MUST reply with result or error. */
  /**
   * Writes a stanza this client generates itself (iq answers). XEP-0198 §4 counts every stanza,
   * so on a managed stream it joins the unacknowledged queue like any other, or the server's
   * `h` would run ahead of this client's count.
   */
  #writeStanza(xml: string): void {
    this.sendTracked(xml, -1);
  }

  #answerIq(iq: XmlElement): void {
    const type = iq.attrs.type;
    if (type !== "get" && type !== "set") return;
    const id = escapeXML(iq.attrs.id ?? "");
    const to = iq.attrs.from === undefined ? "" : ` to='${escapeXML(iq.attrs.from)}'`;
    const ping = iq.children.find(
      (c) => typeof c !== "string" && c.name === "ping" && namespaceOf(c) === NS_PING,
    );
    if (ping !== undefined) {
      this.#writeStanza(`<iq type='result' id='${id}'${to}/>`);
      return;
    }
    const rosterPush = type === "set" ? childOf(iq, "query", NS_ROSTER) : undefined;
    if (rosterPush !== undefined) {
      // RFC 6121 §2.1.6: the client MUST acknowledge a roster push with a result.
      this.#writeStanza(`<iq type='result' id='${id}'${to}/>`);
      for (const item of rosterPush.children) {
        if (typeof item !== "string" && item.name === "item") this.options.onRosterPush?.(this, item);
      }
      return;
    }
    this.#writeStanza(
      `<iq type='error' id='${id}'${to}><error type='cancel'>` +
        `<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
    );
  }

  #succeed(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const settle = this.#settle;
    this.#settle = undefined;
    if (this.#goal === "login") this.status = "online";
    settle?.resolve();
  }

  #fail(error: LoadClientError): void {
    if (this.status === "closed") return;
    this.#error = error;
    this.#finish(error);
  }

  #finish(error: LoadClientError | undefined): void {
    if (this.status === "closed") return;
    this.status = "closed";
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#socket?.destroy();
    const settle = this.#settle;
    this.#settle = undefined;
    settle?.reject(error ?? new LoadClientError("LOAD_CONNECT", "Closed before login finished"));
    const waiter = this.#closeWaiter;
    this.#closeWaiter = undefined;
    waiter?.();
    this.options.onClose?.(this, error);
  }

  /** The error that ended the client, if any. */
  get error(): LoadClientError | undefined {
    return this.#error;
  }
}

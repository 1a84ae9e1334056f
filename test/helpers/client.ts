/**
 * A full client built from xmpp.js (@xmpp/client 0.14 and the packages it is made of), for the
 * flows a real client runs: STARTTLS (or direct TLS), SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN),
 * resource binding and XEP-0198.
 *
 * It is composed the way `@xmpp/client`'s own `client()` composes it, with one part replaced: its
 * STARTTLS and direct-TLS transports call `tls.connect()` without options a caller could set, so
 * a self-signed certificate would be refused. Here the TLS options (`rejectUnauthorized: false`,
 * SNI) are given per connection, and nothing process-wide such as NODE_TLS_REJECT_UNAUTHORIZED is
 * touched. SCRAM-SHA-256, which xmpp.js 0.14 lacks, is added from ./scram.ts.
 */
import { randomUUID } from "node:crypto";
import net from "node:net";
import tls from "node:tls";
import { Client, xml } from "@xmpp/client-core";
import _bind2 from "@xmpp/client-core/src/bind2/bind2.js";
import _fast from "@xmpp/client-core/src/fast/fast.js";
import _iqCallee from "@xmpp/iq/callee.js";
import _iqCaller, { type IqCaller } from "@xmpp/iq/caller.js";
import _middleware from "@xmpp/middleware";
import _resourceBinding from "@xmpp/resource-binding";
import _sasl from "@xmpp/sasl";
import plain from "@xmpp/sasl-plain";
import scramsha1 from "@xmpp/sasl-scram-sha-1";
import _sasl2, { type Sasl2 } from "@xmpp/sasl2";
import _streamFeatures from "@xmpp/stream-features";
import _streamManagement, { type StreamManagement } from "@xmpp/stream-management";
import _tcp from "@xmpp/tcp";
import ConnectionTLS from "@xmpp/tls/lib/Connection.js";
import TlsSocket from "@xmpp/tls/lib/Socket.js";
import _websocket from "@xmpp/websocket";
import type { Element } from "@xmpp/xml";
import SASLFactory from "saslmechanisms";
import { NS_TLS, suiteTransport } from "./raw-client.ts";
import { ScramSha256Mechanism } from "./scram.ts";
import type { AfterHook, StartedNode } from "./start-node.ts";
import { DEFAULT_TIMEOUT_MS, waitForMatchingEvent, withTimeout } from "./wait-for.ts";

const NS_SM = "urn:xmpp:sm:3";
const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_BIND2 = "urn:xmpp:bind:0";

/** TLS options for the node's self-signed certificate, for one connection. */
function tlsOptions(domain: string): tls.ConnectionOptions {
  return { servername: domain, rejectUnauthorized: false };
}

/** The direct-TLS transport, with this connection's TLS options. */
function selfSignedTlsTransport(domain: string): typeof ConnectionTLS {
  return class SelfSignedConnectionTLS extends ConnectionTLS {
    override socketParameters(service: string): Record<string, unknown> | undefined {
      const params = super.socketParameters(service);
      return params && { ...params, ...tlsOptions(domain) };
    }
  };
}

/** Options for {@link connectClient}. */
export interface XmppClientOptions {
  /** Local part or bare JID. */
  username: string;
  password: string;
  resource?: string;
  /** The SASL mechanism to insist on; default SCRAM-SHA-256. */
  mechanism?: "SCRAM-SHA-256" | "SCRAM-SHA-1" | "PLAIN";
  /** Connect to the direct TLS port (XEP-0368) instead of STARTTLS. */
  directTls?: boolean;
  /** Enable XEP-0198 after bind (with resumption); default true. */
  streamManagement?: boolean;
  /** Per-step timeout; default 5 s. */
  timeoutMs?: number;
  /**
   * Log in with XEP-0388 SASL2 and XEP-0386 Bind 2 (this is the tag the resource is made from),
   * XEP-0198 enabled or resumed inline, as xmpp.js' own `client()` does when offered them.
   */
  sasl2?: string;
}

/** A logged-in xmpp.js client plus the stanzas it received. */
export interface XmppClient {
  readonly entity: Client;
  readonly iqCaller: IqCaller;
  /** XEP-0198 state, when enabled. */
  readonly sm: StreamManagement | undefined;
  /** The bound full JID. */
  readonly jid: string;
  /** The `<enabled/>` element of XEP-0198, when the server enabled it. */
  readonly smEnabled: Element | undefined;
  /** Every stanza received. */
  readonly stanzas: Element[];
  /** Every `error` event the entity emitted. */
  readonly errors: Error[];
  /** Sends a stanza. */
  send(stanza: Element): Promise<void>;
  /** Resolves with the next received (not yet consumed) stanza matching `predicate`. */
  waitForStanza(predicate: (el: Element) => boolean, what?: string, timeoutMs?: number): Promise<Element>;
  /** Closes the stream and the socket. */
  stop(): Promise<void>;
}

/**
 * Connects, authenticates and binds with xmpp.js, insisting on `mechanism`, and enables XEP-0198
 * unless told not to. Registers `stop()` on `t` when given.
 */
export async function connectClient(
  node: StartedNode,
  options: XmppClientOptions,
  t?: AfterHook,
): Promise<XmppClient> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const domain = node.domain;
  const { websocket } = suiteTransport(node, options.directTls);
  const service =
    websocket ??
    (options.directTls ? `xmpps://${node.host}:${node.ports.tls}` : `xmpp://${node.host}:${node.ports.c2s}`);
  const entity = new Client({ service, domain, timeout: timeoutMs });
  _tcp({ entity });
  // XMPP over WebSocket (RFC 7395) with the runtime's WebSocket, as in a browser.
  _websocket({ entity });
  entity.transports.push(selfSignedTlsTransport(domain));

  const middleware = _middleware({ entity });
  const streamFeatures = _streamFeatures({ middleware });
  const iqCaller = _iqCaller({ middleware, entity });
  const iqCallee = _iqCallee({ middleware, entity });
  // XEP-0199: answer the server's pings, as @xmpp/client does.
  iqCallee.get("urn:xmpp:ping", "ping", () => ({}));

  // RFC 6120 §5.4: the same negotiation as @xmpp/starttls, with this connection's TLS options.
  streamFeatures.use("starttls", NS_TLS, async ({ entity: e }, next) => {
    const socket = e.socket;
    if (!(socket instanceof net.Socket) || socket instanceof tls.TLSSocket) return next();
    const answer = await e.sendReceive(xml("starttls", { xmlns: NS_TLS }));
    if (!answer.is("proceed", NS_TLS)) throw new Error(`STARTTLS refused: ${answer.toString()}`);
    const secure = new TlsSocket();
    const connected = new Promise<void>((resolve, reject) => {
      secure.once("connect", () => resolve());
      secure.once("error", reject);
    });
    secure.connect({ socket, host: domain, ...tlsOptions(domain) });
    await connected;
    e._attachSocket(secure);
    await e.restart();
  });

  const saslFactory = new SASLFactory();
  saslFactory.use(ScramSha256Mechanism);
  scramsha1(saslFactory);
  plain(saslFactory);
  const wanted = options.mechanism ?? "SCRAM-SHA-256";
  const username = options.username.includes("@") ? options.username.split("@")[0]! : options.username;
  let offered: string[] = [];
  const choose = (mechanisms: string[]): void => {
    offered = mechanisms;
    if (!mechanisms.includes(wanted)) {
      throw new Error(
        `The server does not offer ${wanted}; usable offers: ${mechanisms.join(", ") || "none"}`,
      );
    }
  };
  let sasl2: Sasl2 | undefined;
  let bind2: unknown;
  if (options.sasl2 === undefined) {
    _sasl({ streamFeatures, saslFactory }, async (authenticate, mechanisms) => {
      choose(mechanisms);
      await authenticate({ username, password: options.password }, wanted);
    });
  } else {
    // As @xmpp/client composes them: SASL2, its (unused) XEP-0484 part, Bind 2 with the tag.
    const userAgent = xml("user-agent", { id: randomUUID() }, xml("software", {}, "Starling tests"));
    sasl2 = _sasl2({ streamFeatures, saslFactory }, async (authenticate, mechanisms) => {
      choose(mechanisms);
      await authenticate({ username, password: options.password }, wanted, userAgent);
    });
    sasl2.setup({ fast: _fast({ sasl2, entity }) });
    bind2 = _bind2({ sasl2, entity }, options.sasl2);
  }

  // Same order as @xmpp/client: stream management wraps resource binding (it enables after bind).
  const sm =
    options.streamManagement === false
      ? undefined
      : _streamManagement({ streamFeatures, entity, middleware, sasl2, bind2 });
  if (sm) {
    // Tests keep control of acknowledgement timing: no periodic <r/> of xmpp.js' own.
    sm.requestAckInterval = 0;
    sm.timeout = 0;
  }
  if (options.sasl2 === undefined) _resourceBinding({ iqCaller, streamFeatures }, options.resource);

  const errors: Error[] = [];
  entity.on("error", (error: Error) => {
    errors.push(error);
  });
  const stanzas: Element[] = [];
  const inbox: Element[] = [];
  entity.on("stanza", (stanza: Element) => {
    stanzas.push(stanza);
    inbox.push(stanza);
    entity.emit("test:stanza", stanza);
  });

  const smOutcome = sm
    ? waitForMatchingEvent<[Element]>(
        entity,
        "nonza",
        (el) =>
          (el.getNS() === NS_SM && (el.getName() === "enabled" || el.getName() === "failed")) ||
          el.is("success", NS_SASL2),
        "XEP-0198 <enabled/> or <failed/>",
        timeoutMs * 3,
      ).then(([el]) => {
        // With Bind 2 the answer is inside SASL2's <success/> (XEP-0386 §3.2).
        if (!el.is("success", NS_SASL2)) return el;
        const bound = el.getChild("bound", NS_BIND2);
        return bound?.getChild("enabled", NS_SM) ?? bound?.getChild("failed", NS_SM) ?? el;
      })
    : undefined;
  // Keep a rejection from going unhandled if start() fails first.
  smOutcome?.catch(() => undefined);

  try {
    await withTimeout(entity.start(), `${username} to log in with ${wanted}`, timeoutMs * 3);
  } catch (error) {
    await entity.disconnect().catch(() => undefined);
    const detail = errors.map((e) => e.message).join("; ");
    throw new Error(
      `xmpp.js login as ${username} (${wanted}, offered: ${offered.join(",") || "?"}) failed: ${(error as Error).message}${detail ? ` [${detail}]` : ""}`,
      { cause: error },
    );
  }
  const smEnabled = smOutcome ? await smOutcome : undefined;

  const waitForStanza = async (
    predicate: (el: Element) => boolean,
    what = "a matching stanza",
    waitMs = timeoutMs,
  ): Promise<Element> => {
    const index = inbox.findIndex(predicate);
    if (index >= 0) return inbox.splice(index, 1)[0]!;
    const [el] = await waitForMatchingEvent<[Element]>(
      entity,
      "test:stanza",
      predicate,
      `${username}: ${what}`,
      waitMs,
    );
    inbox.splice(inbox.indexOf(el), 1);
    return el;
  };

  let stopped = false;
  const client: XmppClient = {
    entity,
    iqCaller,
    sm,
    jid: entity.jid?.toString() ?? "",
    smEnabled: smEnabled?.is("enabled", NS_SM) ? smEnabled : undefined,
    stanzas,
    errors,
    send: (stanza) => entity.send(stanza),
    waitForStanza,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await entity.stop().catch(() => undefined);
    },
  };
  t?.after(() => client.stop());
  return client;
}

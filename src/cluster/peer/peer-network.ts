/**
 * The peer links of one node: a WebSocket server that other nodes dial, and one outbound link
 * that this node keeps dialled to each other node. Links are one-way: a node sends only on its
 * outbound links, and its inbound links only deliver (carrying acks and pongs back), so each
 * direction is one ordered stream.
 *
 * Guarantees, per (sender, receiver) pair:
 * - encrypted with TLS unless plain links were asked for, the dialler checking the peer's
 *   certificate against the fingerprint its member row pins (and a CA, if given) (peer-tls.ts);
 * - authenticated both ways with the shared secret, which never travels (protocol.ts);
 * - versioned: the link speaks the lower of both protocol versions, refused outside both ranges;
 * - ordered and exactly once to the application, across reconnects to the same incarnation
 *   (numbered frames, cumulative acks, resend from the receiver's watermark);
 * - bounded: past maxUnackedBytes held for one peer the link fails with "overflow" and its
 *   queue is dropped, so a slow peer cannot exhaust our memory;
 * - a hung peer is detected by app-level pings ("timeout"), and every lost link is redialled.
 * Messages to a peer that restarted (new incarnation) are dropped: "peer-restarted" says so.
 */
import { EventEmitter, once } from "node:events";
import type { Server as HttpServer, IncomingMessage } from "node:http";
import type { Server as HttpsServer } from "node:https";
import type WebSocket from "ws";
import { WebSocketServer } from "ws";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { runDialerHandshake } from "./dialer-handshake.ts";
import { InboundLink, type ReceiverState } from "./inbound-link.ts";
import { OutboundLink } from "./outbound-link.ts";
import {
  certificateSha256,
  createPeerServer,
  dialPeer,
  NO_PEER_TRUST,
  type PeerTlsOptions,
  type PeerTrust,
} from "./peer-tls.ts";
import {
  HANDSHAKE_TIMEOUT_MS,
  type HelloFrame,
  MAX_PEER_FRAME_BYTES,
  newSession,
  PEER_CLOSE,
  PEER_PATH,
  PEER_PROTOCOL_MIN,
  PEER_PROTOCOL_VERSION,
  type PeerIdentity,
  peerUrl,
} from "./protocol.ts";

export { PEER_PROTOCOL_MIN, PEER_PROTOCOL_VERSION, type PeerIdentity, type PeerTlsOptions, type PeerTrust };

/** Options for {@link PeerNetwork}. */
export interface PeerNetworkOptions {
  /** This node, as told to peers. `self.protocol` is normally PEER_PROTOCOL_VERSION. */
  self: PeerIdentity;
  /** The cluster secret both sides prove they know. */
  secret: string;
  /**
   * TLS for every link: the certificate the server presents, and the CA dialled peers must
   * chain to (if any). null: plain links (a trusted network, by the operator's explicit choice).
   */
  tls: PeerTlsOptions | null;
  /** Interface the peer server listens on. */
  host: string;
  /** Port of the peer server; 0 picks a free one. */
  port: number;
  log: Logger;
  /** App-level ping period on each outbound link (default 1000). */
  pingIntervalMs?: number;
  /** A link with no pong this long after a ping is dead: peer-down "timeout" (default 1000). */
  pingTimeoutMs?: number;
  /** Unacknowledged plus queued bytes one link may hold before it fails (default 64 MiB). */
  maxUnackedBytes?: number;
  /** First redial delay; doubles per failed attempt, with jitter (default 100). */
  reconnectMinMs?: number;
  /** Longest redial delay (default 5000). */
  reconnectMaxMs?: number;
  /** Oldest protocol version this node still speaks (default PEER_PROTOCOL_MIN). */
  protocolMin?: number;
  /** A handshake not complete by then is abandoned (default 5000). */
  handshakeTimeoutMs?: number;
  /** Source address of outbound links ("" = the system's choice). */
  localAddress?: string;
}

/** Every default of {@link PeerNetworkOptions}, in one place. */
export const PEER_NETWORK_DEFAULTS = Object.freeze({
  pingIntervalMs: 1_000,
  pingTimeoutMs: 1_000,
  maxUnackedBytes: 64 * 1024 * 1024,
  reconnectMinMs: 100,
  reconnectMaxMs: 5_000,
  protocolMin: PEER_PROTOCOL_MIN,
  handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
  localAddress: "",
});

/** Events of a {@link PeerNetwork}, with their arguments. */
export interface PeerNetworkEvents {
  /** Our outbound link to `peer` is handshaken (also after each reconnect). */
  "peer-up": [peer: PeerIdentity];
  /**
   * Our outbound link to `node` was lost: "closed", "timeout", "overflow" (its queue was
   * dropped, also while it was down), "protocol-error", "refused" (for good),
   * "disconnected" (by disconnect()). Links that are not stopped redial by themselves.
   */
  "peer-down": [node: string, reason: string];
  /** A reconnect found a new incarnation of the node; the queue for the old one was dropped. */
  "peer-restarted": [peer: PeerIdentity];
  /** A message from `node` arrived on an inbound link, in send order, once. */
  message: [node: string, message: unknown];
  /** The node at `addr` refused us (XSRV_PEER_REFUSED, XSRV_CLUSTER_INCOMPATIBLE, ...); no more dialling. */
  refused: [addr: string, error: XmppServerError];
}

/** Handshakes in progress on the server beyond this are turned away (1013, try again later). */
const MAX_PENDING_HANDSHAKES = 64;
/** Inbound links beyond this are turned away: far more than any cluster has nodes. */
const MAX_INBOUND_LINKS = 1_024;
/** Dialler sessions remembered for resumption; the oldest without a live link go first. */
const MAX_RECEIVER_STATES = 1_024;

type ResolvedOptions = Required<PeerNetworkOptions>;

function resolveOptions(options: PeerNetworkOptions): ResolvedOptions {
  const resolved: ResolvedOptions = { ...PEER_NETWORK_DEFAULTS, ...options };
  for (const key of [
    "pingIntervalMs",
    "pingTimeoutMs",
    "maxUnackedBytes",
    "reconnectMinMs",
    "reconnectMaxMs",
    "handshakeTimeoutMs",
  ] as const) {
    if (!Number.isFinite(resolved[key]) || resolved[key] <= 0) {
      throw new RangeError(`PeerNetwork option ${key} must be a positive number, got ${resolved[key]}`);
    }
  }
  if (resolved.reconnectMaxMs < resolved.reconnectMinMs) {
    throw new RangeError("PeerNetwork option reconnectMaxMs must not be below reconnectMinMs");
  }
  if (!Number.isSafeInteger(resolved.protocolMin) || resolved.protocolMin > resolved.self.protocol) {
    throw new RangeError(
      `PeerNetwork protocolMin ${resolved.protocolMin} must be an integer not above self.protocol ${resolved.self.protocol}`,
    );
  }
  return resolved;
}

/** The peer links of one node. Runs in the node's main thread. */
export class PeerNetwork extends EventEmitter<PeerNetworkEvents> {
  readonly #options: ResolvedOptions;
  readonly #log: Logger;
  #server: WebSocketServer | undefined;
  #httpServer: HttpServer | HttpsServer | undefined;
  #closed = false;
  readonly #byAddr = new Map<string, OutboundLink>();
  /** What each dialled address's member row publishes (see connect()). */
  readonly #trust = new Map<string, PeerTrust>();
  readonly #byNode = new Map<string, OutboundLink>();
  readonly #inbound = new Set<InboundLink>();
  /** Delivery watermarks by `${node}\n${session}`, in insertion order (oldest first). */
  readonly #receivers = new Map<string, ReceiverState>();

  constructor(options: PeerNetworkOptions) {
    super();
    this.#options = resolveOptions(options);
    this.#log = options.log.child({ component: "peer-network", node: options.self.node });
  }

  /** This node's identity. */
  get self(): PeerIdentity {
    return this.#options.self;
  }

  /** The fingerprint of the certificate this node's peer server presents (null: plain links). */
  get certSha256(): string | null {
    const { tls } = this.#options;
    return tls === null ? null : certificateSha256(tls.cert);
  }

  /** Starts the peer server (path "/starling-peer") and resolves the bound port. */
  async listen(): Promise<number> {
    if (this.#server !== undefined || this.#closed)
      throw new Error("PeerNetwork.listen() was already called");
    const { tls, host, handshakeTimeoutMs } = this.#options;
    const httpServer = createPeerServer(tls, handshakeTimeoutMs, this.#log);
    this.#httpServer = httpServer;
    const server = new WebSocketServer({
      server: httpServer,
      path: PEER_PATH,
      perMessageDeflate: false,
      maxPayload: MAX_PEER_FRAME_BYTES,
      clientTracking: false,
    });
    this.#server = server;
    httpServer.listen(this.#options.port, host);
    await once(httpServer, "listening");
    httpServer.on("error", (error) => this.#log.error({ err: error }, "peer server error"));
    server.on("connection", (ws, request) => this.#accept(ws, request));
    const address = httpServer.address();
    const port = typeof address === "object" && address !== null ? address.port : this.#options.port;
    this.#log.info({ host, port, tls: tls !== null }, "peer server listening");
    return port;
  }

  /**
   * Keeps an outbound link to the node at "host:port", redialling with jittered exponential
   * backoff until disconnect() or close(), or until that node refuses us. Idempotent per addr;
   * `trust` is what that node's member row publishes, and a later call updates it (the next
   * dial checks the new fingerprint).
   */
  connect(addr: string, trust: PeerTrust = NO_PEER_TRUST): void {
    if (this.#closed) throw new Error("PeerNetwork is closed");
    peerUrl(addr); // throws a TypeError on a malformed address
    this.#trust.set(addr, trust);
    if (this.#byAddr.has(addr)) return;
    const options = this.#options;
    const link = new OutboundLink({
      addr,
      self: options.self,
      secret: options.secret,
      protocolMin: options.protocolMin,
      log: this.#log,
      pingIntervalMs: options.pingIntervalMs,
      pingTimeoutMs: options.pingTimeoutMs,
      maxUnackedBytes: options.maxUnackedBytes,
      reconnectMinMs: options.reconnectMinMs,
      reconnectMaxMs: options.reconnectMaxMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      localAddress: options.localAddress,
      tls: options.tls,
      trust: () => this.#trust.get(addr) ?? NO_PEER_TRUST,
      hooks: {
        up: (l, peer, previous) => this.#onUp(l, peer, previous),
        down: (l, node, reason) => {
          if (this.#byNode.get(node) === l) this.#emit("peer-down", node, reason);
        },
        refused: (l, error) => this.#onRefused(l, error),
      },
    });
    this.#byAddr.set(addr, link);
    link.start();
  }

  /**
   * Stops dialling a node and closes our outbound link to it. Takes the node's name, or the
   * addr given to connect() (for a link that never came up, whose node name is unknown).
   */
  disconnect(node: string): void {
    const links = new Set<OutboundLink>();
    const bound = this.#byNode.get(node);
    if (bound !== undefined) links.add(bound);
    for (const link of this.#byAddr.values()) {
      if (link.addr === node || link.peer?.node === node) links.add(link);
    }
    for (const link of links) {
      const wasUp = link.isUp;
      link.stop();
      this.#byAddr.delete(link.addr);
      this.#trust.delete(link.addr);
      const name = link.peer?.node;
      if (name !== undefined && this.#byNode.get(name) === link) {
        this.#byNode.delete(name);
        this.#log.info({ peer: name, addr: link.addr }, "peer link disconnected");
        if (wasUp) this.#emit("peer-down", name, "disconnected");
      }
    }
  }

  /**
   * Queues a message on our outbound link to `node` (named in its handshake). Returns false
   * when there is no such link: never dialled, not yet handshaken once, disconnected or refused.
   * A true return is not a delivery promise: see "peer-down" "overflow" and "peer-restarted".
   */
  send(node: string, message: unknown): boolean {
    return this.#byNode.get(node)?.send(message) ?? false;
  }

  /** Whether our outbound link to `node` is handshaken and alive. */
  isUp(node: string): boolean {
    return this.#byNode.get(node)?.isUp ?? false;
  }

  /** The protocol version negotiated on our outbound link to `node` (undefined if none). */
  protocolOf(node: string): number | undefined {
    const link = this.#byNode.get(node);
    return link === undefined || link.protocol === 0 ? undefined : link.protocol;
  }

  /**
   * Whether `node` has a link to us open (its outbound, our inbound): until it closes, what the
   * node sent may still be on its way (a stopping node flushes its links before it closes them).
   */
  hasInboundFrom(node: string): boolean {
    for (const link of this.#inbound) if (link.peer?.node === node) return true;
    return false;
  }

  /** Bytes held (unacknowledged or unsent) on our outbound link to `node`. */
  queuedBytes(node: string): number {
    return this.#byNode.get(node)?.queuedBytes ?? 0;
  }

  /** Identities of the nodes our outbound links are up to. */
  peers(): PeerIdentity[] {
    const peers: PeerIdentity[] = [];
    for (const link of this.#byNode.values()) if (link.isUp && link.peer !== undefined) peers.push(link.peer);
    return peers;
  }

  /** Closes the server and every link and stops every timer. Emits nothing more. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const link of this.#byAddr.values()) link.stop();
    this.#byAddr.clear();
    this.#byNode.clear();
    for (const link of this.#inbound) link.terminate();
    this.#inbound.clear();
    const server = this.#server;
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
    const httpServer = this.#httpServer;
    if (httpServer !== undefined) {
      const closed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
      // Sockets still in their TLS or HTTP handshake are not links yet: nothing to wait for.
      httpServer.closeAllConnections();
      await closed;
    }
    this.#log.info("peer network closed");
  }

  #emit<K extends keyof PeerNetworkEvents>(event: K, ...args: PeerNetworkEvents[K]): void {
    if (this.#closed) return;
    // biome-ignore lint/suspicious/noExplicitAny: EventEmitter's generic emit cannot take a spread of a keyed tuple
    (this.emit as (event: K, ...args: any[]) => boolean)(event, ...args);
  }

  #onUp(link: OutboundLink, peer: PeerIdentity, previous: PeerIdentity | undefined): void {
    if (previous !== undefined && previous.node !== peer.node && this.#byNode.get(previous.node) === link) {
      this.#log.warn(
        { addr: link.addr, was: previous.node, now: peer.node },
        "the node at a peer address changed",
      );
      this.#byNode.delete(previous.node);
    }
    const other = this.#byNode.get(peer.node);
    if (other !== undefined && other !== link) {
      // Two addresses lead to one node name (it moved, or was listed twice): send on the newest.
      this.#log.warn(
        { peer: peer.node, addr: link.addr, other: other.addr },
        "two peer links lead to one node",
      );
    }
    this.#byNode.set(peer.node, link);
    if (previous?.node === peer.node && previous.incarnation !== peer.incarnation) {
      this.#log.info(
        { peer: peer.node, was: previous.incarnation, now: peer.incarnation },
        "peer restarted; dropped its queue",
      );
      this.#emit("peer-restarted", peer);
    }
    this.#emit("peer-up", peer);
  }

  #onRefused(link: OutboundLink, error: XmppServerError): void {
    if (this.#byAddr.get(link.addr) === link) this.#byAddr.delete(link.addr);
    this.#emit("refused", link.addr, error);
    const name = link.peer?.node;
    if (name !== undefined && this.#byNode.get(name) === link) {
      this.#byNode.delete(name);
      this.#emit("peer-down", name, "refused");
    }
  }

  #accept(ws: WebSocket, request: IncomingMessage): void {
    const remote = `${request.socket.remoteAddress}:${request.socket.remotePort}`;
    let handshaking = 0;
    for (const link of this.#inbound) if (link.handshaking) handshaking++;
    if (this.#closed || handshaking >= MAX_PENDING_HANDSHAKES || this.#inbound.size >= MAX_INBOUND_LINKS) {
      this.#log.warn({ remote, handshaking, links: this.#inbound.size }, "turned away a peer connection");
      ws.on("error", () => {});
      ws.close(PEER_CLOSE.tryAgainLater, "too many peer connections");
      ws.terminate();
      return;
    }
    const link = new InboundLink({
      ws,
      remote,
      self: this.#options.self,
      secret: this.#options.secret,
      protocolMin: this.#options.protocolMin,
      handshakeTimeoutMs: this.#options.handshakeTimeoutMs,
      log: this.#log,
      hooks: {
        accept: (l, hello) => this.#receiverFor(l, hello),
        deliver: (node, messages) => this.#deliver(node, messages),
        closed: (l) => this.#inbound.delete(l),
      },
    });
    this.#inbound.add(link);
  }

  /** The delivery state of the dialler session in `hello`; a newer socket of it supersedes older ones. */
  #receiverFor(link: InboundLink, hello: HelloFrame): ReceiverState {
    const { node, incarnation } = hello.identity;
    const key = `${node}\n${hello.session}`;
    let state = this.#receivers.get(key);
    if (state !== undefined && state.incarnation !== incarnation) state = undefined;
    if (state === undefined) {
      // An older incarnation of the node can never resume: forget its idle sessions.
      for (const [k, s] of this.#receivers) {
        if (s.node === node && s.incarnation !== incarnation && s.link === undefined)
          this.#receivers.delete(k);
      }
      state = { node, incarnation, session: hello.session, lastDelivered: 0, fresh: true, link: undefined };
      this.#receivers.delete(key);
      this.#receivers.set(key, state);
      for (const [k, s] of this.#receivers) {
        if (this.#receivers.size <= MAX_RECEIVER_STATES) break;
        if (s.link === undefined) this.#receivers.delete(k);
      }
    } else if (state.link !== undefined && state.link !== link) {
      state.link.supersede();
    }
    state.link = link;
    return state;
  }

  #deliver(node: string, messages: unknown[]): void {
    for (const message of messages) {
      if (this.#closed) return;
      try {
        this.emit("message", node, message);
      } catch (error) {
        // A throwing listener must not break the link: the message counts as delivered.
        this.#log.error({ err: error, peer: node }, "a peer message listener threw");
      }
    }
  }
}

/** Options for {@link probePeer}. */
export interface ProbePeerOptions {
  self: PeerIdentity;
  secret: string;
  /** This node's TLS settings; null: plain links. */
  tls: PeerTlsOptions | null;
  /** What the probed node's member row publishes (default: nothing). */
  trust?: PeerTrust;
  /** Give up after this long (default 5000). */
  timeoutMs?: number;
  /** Oldest protocol version we speak (default PEER_PROTOCOL_MIN). */
  protocolMin?: number;
}

/**
 * One-shot handshake with the node at "host:port", then close: resolves its identity, or
 * rejects with XSRV_PEER_REFUSED, XSRV_CLUSTER_INCOMPATIBLE, XSRV_CLUSTER_NAME_TAKEN,
 * XSRV_PEER_UNTRUSTED or XSRV_CLUSTER_UNREACHABLE. Touches no delivery state on the remote side.
 */
export function probePeer(addr: string, options: ProbePeerOptions): Promise<PeerIdentity> {
  const timeoutMs = options.timeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const ws = dialPeer(addr, {
      tls: options.tls,
      trust: options.trust ?? NO_PEER_TRUST,
      maxPayload: 1024 * 1024,
      handshakeTimeoutMs: timeoutMs,
    });
    if (ws instanceof XmppServerError) {
      reject(ws);
      return;
    }
    ws.on("error", () => {}); // reported by the handshake, through "close"
    runDialerHandshake(
      ws,
      {
        addr,
        self: options.self,
        secret: options.secret,
        protocolMin: options.protocolMin ?? PEER_PROTOCOL_MIN,
        session: newSession(),
        probe: true,
        pingIntervalMs: 0,
        timeoutMs,
      },
      (outcome) => {
        if (outcome.kind === "failed") {
          reject(outcome.error);
          return;
        }
        ws.terminate();
        resolve(outcome.result.identity);
      },
    );
  });
}

/**
 * The sending end of one peer link: the WebSocket this node keeps dialled to the node at one
 * address. Messages are batched per event-loop turn into numbered data frames and kept until
 * the receiver acknowledges them, so a reconnect to the same incarnation resends exactly what
 * was not delivered, in order. The link pings to detect a hung peer, redials with jittered
 * exponential backoff, and gives up its queue (overflow) rather than grow without bound.
 */
import type WebSocket from "ws";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import type { DialerHandshakeResult } from "./dialer-handshake.ts";
import { runDialerHandshake } from "./dialer-handshake.ts";
import { dialPeer, type PeerTlsOptions, type PeerTrust } from "./peer-tls.ts";
import { decodeFrame, encodeFrame, MAX_PEER_FRAME_BYTES, newSession, type PeerIdentity } from "./protocol.ts";

/** A turn's batch is flushed at once when it reaches this many messages. */
export const MAX_BATCH_MESSAGES = 512;

/** Stop handing frames to ws past this many buffered bytes; go on once they are written. */
const WRITE_HIGH_WATER_BYTES = 1024 * 1024;

/** How an outbound link reports to the network that owns it. */
export interface OutboundLinkHooks {
  /** Handshaken; `previous` is the identity of the last handshake, if any. */
  up(link: OutboundLink, peer: PeerIdentity, previous: PeerIdentity | undefined): void;
  /** An up link was lost, or a known peer's queue overflowed. The link redials. */
  down(link: OutboundLink, node: string, reason: string): void;
  /** The remote refused us for good; the link has stopped. */
  refused(link: OutboundLink, error: XmppServerError): void;
}

/** Options for {@link OutboundLink}. */
export interface OutboundLinkOptions {
  addr: string;
  self: PeerIdentity;
  secret: string;
  protocolMin: number;
  log: Logger;
  pingIntervalMs: number;
  pingTimeoutMs: number;
  maxUnackedBytes: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  handshakeTimeoutMs: number;
  /** Source address to dial from ("" = the system's choice). */
  localAddress: string;
  /** TLS settings of this node; null: plain links. */
  tls: PeerTlsOptions | null;
  /** What the peer's member row publishes now; read at every dial (a restarted peer may have a new certificate). */
  trust(): PeerTrust;
  hooks: OutboundLinkHooks;
}

interface QueuedFrame {
  seq: number;
  data: Buffer;
}

/** One dialled link, alive from connect() to disconnect(), across any number of sockets. */
export class OutboundLink {
  readonly addr: string;
  readonly #options: OutboundLinkOptions;
  readonly #log: Logger;
  #status: "dialling" | "up" | "waiting" | "stopped" = "waiting";
  #ws: WebSocket | undefined;
  #cancelHandshake: (() => void) | undefined;
  #peer: PeerIdentity | undefined;
  #protocol = 0;

  // The sequence-number space. A new session restarts numbering; the receiver keeps one
  // delivery watermark per session.
  #session = newSession();
  #nextSeq = 1;
  #outbox: unknown[] = [];
  #flushImmediate: NodeJS.Immediate | undefined;
  /** Packed frames not yet acknowledged (written or not), in seq order from #head. */
  #frames: (QueuedFrame | undefined)[] = [];
  #head = 0;
  #queuedBytes = 0;
  /** Highest seq handed to the current socket. */
  #writtenSeq = 0;
  #drainWait = false;

  #attempt = 0;
  #redialTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  #pongTimer: NodeJS.Timeout | undefined;
  #pingId = 0;

  constructor(options: OutboundLinkOptions) {
    this.#options = options;
    this.addr = options.addr;
    this.#log = options.log.child({ addr: options.addr });
  }

  /** The identity learned in the last handshake (kept while the link is down). */
  get peer(): PeerIdentity | undefined {
    return this.#peer;
  }

  /** Whether the link is handshaken and alive. */
  get isUp(): boolean {
    return this.#status === "up";
  }

  /** The protocol version negotiated in the last handshake (0 before any). */
  get protocol(): number {
    return this.#protocol;
  }

  /** Bytes held for this link: unacknowledged and not yet sent frames. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** Starts dialling. */
  start(): void {
    if (this.#status === "waiting" && this.#redialTimer === undefined && this.#ws === undefined) this.#dial();
  }

  /** Queues a message for the peer; false once the link has stopped. */
  send(message: unknown): boolean {
    if (this.#status === "stopped") return false;
    this.#outbox.push(message);
    if (this.#outbox.length >= MAX_BATCH_MESSAGES) this.#flush();
    else this.#flushImmediate ??= setImmediate(() => this.#flush());
    return true;
  }

  /** Stops for good: closes the socket, drops the queue, clears every timer. */
  stop(): void {
    if (this.#status === "stopped") return;
    this.#status = "stopped";
    clearTimeout(this.#redialTimer);
    this.#redialTimer = undefined;
    this.#teardown();
    this.#dropQueue();
  }

  #dial(): void {
    const options = this.#options;
    this.#status = "dialling";
    const ws = dialPeer(this.addr, {
      tls: options.tls,
      trust: options.trust(),
      maxPayload: MAX_PEER_FRAME_BYTES,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      localAddress: options.localAddress,
    });
    if (ws instanceof XmppServerError) {
      this.#refused(ws);
      return;
    }
    this.#ws = ws;
    // Kept for the socket's whole life: an "error" without a listener would throw.
    ws.on("error", (error) => this.#log.debug({ err: error }, "peer socket error"));
    this.#cancelHandshake = runDialerHandshake(
      ws,
      {
        addr: this.addr,
        self: options.self,
        secret: options.secret,
        protocolMin: options.protocolMin,
        session: this.#session,
        probe: false,
        pingIntervalMs: options.pingIntervalMs,
        timeoutMs: options.handshakeTimeoutMs,
      },
      (outcome) => {
        this.#cancelHandshake = undefined;
        if (outcome.kind === "ok") {
          this.#onHandshake(ws, outcome.result);
          return;
        }
        this.#ws = undefined;
        if (outcome.error.code === "XSRV_CLUSTER_UNREACHABLE") {
          this.#log.debug({ err: outcome.error, attempt: this.#attempt }, "peer dial failed; retrying");
          // Nothing listens on the peer port any more: its process is gone (a paused process
          // still accepts connections, and a cut network drops them rather than refusing).
          const cause = outcome.error.cause as NodeJS.ErrnoException | undefined;
          if (cause?.code === "ECONNREFUSED" && this.#peer !== undefined) {
            this.#options.hooks.down(this, this.#peer.node, "refused");
          }
          this.#scheduleRedial();
          return;
        }
        this.#refused(outcome.error);
      },
    );
  }

  /** A configuration fault (secret, ring, version, certificate): dialling again cannot fix it. */
  #refused(error: XmppServerError): void {
    const what = error.code === "XSRV_PEER_UNTRUSTED" ? "we refused its certificate" : "the link was refused";
    this.#log.error(
      { err: error, code: error.code, peer: this.#peer?.node },
      `peer ${this.addr}: ${what}: ${error.message}; not dialling it again`,
    );
    this.stop();
    this.#options.hooks.refused(this, error);
  }

  #onHandshake(ws: WebSocket, result: DialerHandshakeResult): void {
    const previous = this.#peer;
    const peer = result.identity;
    if (
      previous !== undefined &&
      (previous.node !== peer.node || previous.incarnation !== peer.incarnation)
    ) {
      // The queue was numbered for a process that is gone; the new one starts from nothing and
      // knows our session only from now on.
      this.#dropQueue();
      this.#nextSeq = 1;
    } else if (result.lastDelivered >= this.#nextSeq) {
      // The receiver claims frames we never numbered: its state is not ours. Start over.
      this.#dropQueue();
      this.#session = newSession();
      this.#nextSeq = 1;
      this.#log.warn({ peer: peer.node }, "peer reported an impossible delivery watermark; reset the link");
      this.#lost("protocol-error");
      return;
    } else {
      this.#trimAcked(result.lastDelivered);
    }
    this.#peer = peer;
    this.#protocol = result.protocol;
    this.#status = "up";
    this.#attempt = 0;
    // Everything still queued goes out again on this socket, in order.
    const first = this.#firstFrame();
    this.#writtenSeq = first === undefined ? this.#nextSeq - 1 : first.seq - 1;
    ws.on("message", (data, isBinary) => {
      if (ws === this.#ws) this.#onFrame(isBinary && Buffer.isBuffer(data) ? data : undefined);
    });
    ws.on("close", () => {
      if (ws === this.#ws) this.#lost("closed");
    });
    this.#pingTimer = setInterval(() => this.#ping(), this.#options.pingIntervalMs);
    const resend = this.#nextSeq - 1 - this.#writtenSeq;
    this.#log.info(
      { peer: peer.node, incarnation: peer.incarnation, protocol: result.protocol, resend },
      "peer link up",
    );
    this.#writeFrames();
    this.#options.hooks.up(this, peer, previous);
  }

  #onFrame(data: Buffer | undefined): void {
    const frame = data === undefined ? undefined : decodeFrame(data);
    if (frame?.kind === "ack") {
      this.#trimAcked(Math.min(frame.seq, this.#writtenSeq));
    } else if (frame?.kind === "pong") {
      clearTimeout(this.#pongTimer);
      this.#pongTimer = undefined;
    } else {
      this.#log.warn({ peer: this.#peer?.node, kind: frame?.kind }, "peer sent an unexpected frame; closing");
      this.#lost("protocol-error");
    }
  }

  #ping(): void {
    this.#ws?.send(encodeFrame({ kind: "ping", id: ++this.#pingId }));
    // The deadline runs from the oldest unanswered ping; any pong proves the peer alive.
    this.#pongTimer ??= this.#pongDeadline(this.#options.pingTimeoutMs);
  }

  #pongDeadline(ms: number): NodeJS.Timeout {
    const armedAt = performance.now();
    return setTimeout(() => {
      this.#pongTimer = undefined;
      const late = performance.now() - armedAt - ms;
      if (late > this.#options.pingTimeoutMs) {
        // Our own event loop was frozen (this process was paused, or stalled): the peer's pong
        // may be waiting unread in the socket. Give it one more timeout before calling the
        // link silent, or a node waking from a pause would report all its peers as cut off.
        this.#pongTimer = this.#pongDeadline(this.#options.pingTimeoutMs);
        return;
      }
      this.#lost("timeout");
    }, ms);
  }

  /** The current socket is gone (or must go): report, keep the queue, redial. */
  #lost(reason: string): void {
    const wasUp = this.#status === "up";
    this.#teardown();
    this.#scheduleRedial();
    if (wasUp && this.#peer !== undefined) {
      this.#log.info({ peer: this.#peer.node, reason }, "peer link down");
      this.#options.hooks.down(this, this.#peer.node, reason);
    }
  }

  #flush(): void {
    if (this.#flushImmediate !== undefined) {
      clearImmediate(this.#flushImmediate);
      this.#flushImmediate = undefined;
    }
    if (this.#outbox.length === 0 || this.#status === "stopped") return;
    const messages = this.#outbox;
    this.#outbox = [];
    const data = this.#pack(messages);
    if (data === undefined) return;
    this.#frames.push(data);
    this.#queuedBytes += data.data.length;
    if (this.#queuedBytes > this.#options.maxUnackedBytes) this.#overflow();
    else this.#writeFrames();
  }

  /** Packs a batch into the next frame; a message msgpackr cannot pack is dropped and logged. */
  #pack(messages: unknown[]): QueuedFrame | undefined {
    const seq = this.#nextSeq;
    try {
      const data = encodeFrame({ kind: "data", seq, messages });
      this.#nextSeq++;
      return { seq, data };
    } catch {
      const packable = messages.filter((message) => {
        try {
          encodeFrame({ kind: "data", seq, messages: [message] });
          return true;
        } catch (error) {
          this.#log.error(
            { err: error, peer: this.#peer?.node },
            "dropped a peer message that cannot be encoded",
          );
          return false;
        }
      });
      return packable.length === 0 ? undefined : this.#pack(packable);
    }
  }

  #writeFrames(): void {
    const ws = this.#ws;
    if (this.#status !== "up" || ws === undefined || this.#drainWait) return;
    while (this.#writtenSeq < this.#nextSeq - 1) {
      const frame = this.#frameAt(this.#writtenSeq + 1);
      this.#writtenSeq = frame.seq;
      if (ws.bufferedAmount < WRITE_HIGH_WATER_BYTES) {
        ws.send(frame.data);
        continue;
      }
      // The socket is behind: hand over this frame and wait until ws has written it, so unsent
      // frames stay counted here (and pings are not queued behind megabytes).
      this.#drainWait = true;
      ws.send(frame.data, () => {
        if (ws !== this.#ws) return;
        this.#drainWait = false;
        this.#writeFrames();
      });
      return;
    }
  }

  #overflow(): void {
    const node = this.#peer?.node;
    this.#log.warn(
      { peer: node, queuedBytes: this.#queuedBytes, maxUnackedBytes: this.#options.maxUnackedBytes },
      "peer link overflow: the peer does not keep up; dropping its queue and reconnecting",
    );
    this.#dropQueue();
    // A new session: the receiver must not expect the dropped frames' numbers.
    this.#session = newSession();
    this.#nextSeq = 1;
    this.#teardown();
    this.#scheduleRedial();
    if (node !== undefined) this.#options.hooks.down(this, node, "overflow");
  }

  #scheduleRedial(): void {
    if (this.#status === "stopped") return;
    this.#status = "waiting";
    clearTimeout(this.#redialTimer);
    const { reconnectMinMs, reconnectMaxMs } = this.#options;
    const ceiling = Math.min(reconnectMaxMs, reconnectMinMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    // Equal jitter: half fixed, half random, so nodes that lost each other at once spread out.
    const delayMs = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.#redialTimer = setTimeout(() => {
      this.#redialTimer = undefined;
      this.#dial();
    }, delayMs);
  }

  /** Drops the current socket and its heartbeat; the queue stays. */
  #teardown(): void {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    this.#pingTimer = this.#pongTimer = undefined;
    this.#cancelHandshake?.();
    this.#cancelHandshake = undefined;
    const ws = this.#ws;
    this.#ws = undefined;
    this.#drainWait = false;
    this.#writtenSeq = 0;
    // terminate(), not close(): no closing handshake to wait for, and no ws timer left behind.
    ws?.terminate();
  }

  #dropQueue(): void {
    if (this.#flushImmediate !== undefined) clearImmediate(this.#flushImmediate);
    this.#flushImmediate = undefined;
    this.#outbox = [];
    this.#frames = [];
    this.#head = 0;
    this.#queuedBytes = 0;
  }

  #firstFrame(): QueuedFrame | undefined {
    return this.#frames[this.#head];
  }

  #frameAt(seq: number): QueuedFrame {
    // Frames are numbered without gaps, so the index follows from the first one's seq.
    const first = this.#firstFrame()!;
    return this.#frames[this.#head + (seq - first.seq)]!;
  }

  /** Forgets the frames the receiver delivered. */
  #trimAcked(seq: number): void {
    let frame = this.#firstFrame();
    while (frame !== undefined && frame.seq <= seq) {
      this.#queuedBytes -= frame.data.length;
      this.#frames[this.#head++] = undefined;
      frame = this.#firstFrame();
    }
    if (this.#head > 1024 && this.#head * 2 > this.#frames.length) {
      this.#frames = this.#frames.slice(this.#head);
      this.#head = 0;
    }
  }
}

/**
 * The receiving end of one peer link: a WebSocket another node dialled to us. It runs the
 * server's half of the handshake (challenge, verify, refuse or welcome), then delivers data
 * frames in order exactly once, acknowledges them cumulatively and answers pings. It never
 * sends application messages: a node sends only on its own outbound links.
 */
import type WebSocket from "ws";
import type { ErrorCode } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import {
  type ChallengeFrame,
  checkCompatibility,
  closeReason,
  type DataFrame,
  decodeFrame,
  encodeFrame,
  type HelloFrame,
  helloMac,
  macEquals,
  newNonce,
  PEER_CLOSE,
  type PeerIdentity,
  type WelcomeFrame,
  welcomeMac,
} from "./protocol.ts";

/** Acknowledge after this many data frames... */
export const ACK_EVERY_FRAMES = 64;
/** ...or this long after the first unacknowledged one, whichever comes first. */
export const ACK_DELAY_MS = 20;
/** How long a closing peer gets to answer our close frame before its socket is dropped. */
const CLOSE_GRACE_MS = 1_000;

/**
 * What a receiver remembers of one dialler session: the highest seq it delivered. It outlives
 * sockets, so a reconnect resumes where delivery stopped and a resent frame is dropped.
 */
export interface ReceiverState {
  readonly node: string;
  readonly incarnation: number;
  readonly session: string;
  lastDelivered: number;
  /**
   * No frame of this session was delivered yet. Its first frame may then start past
   * lastDelivered + 1: a sender whose session we forgot (bounded table) resends from its
   * oldest unacknowledged frame.
   */
  fresh: boolean;
  /** The inbound link currently delivering for this session, if any. */
  link: InboundLink | undefined;
}

/** How an inbound link reaches the network that owns it. */
export interface InboundLinkHooks {
  /** A verified, compatible, non-probe hello: returns the state to deliver into. */
  accept(link: InboundLink, hello: HelloFrame): ReceiverState;
  /** Messages of one data frame, in order. */
  deliver(node: string, messages: unknown[]): void;
  /** The socket is gone. */
  closed(link: InboundLink): void;
}

/** Options for {@link InboundLink}. */
export interface InboundLinkOptions {
  ws: WebSocket;
  /** "ip:port" of the remote end, for logs. */
  remote: string;
  self: PeerIdentity;
  secret: string;
  protocolMin: number;
  handshakeTimeoutMs: number;
  log: Logger;
  hooks: InboundLinkHooks;
}

/** One accepted WebSocket from a dialling peer. */
export class InboundLink {
  readonly remote: string;
  readonly #ws: WebSocket;
  readonly #options: InboundLinkOptions;
  readonly #nonce = newNonce();
  #status: "handshaking" | "open" | "closed" = "handshaking";
  #state: ReceiverState | undefined;
  #peer: PeerIdentity | undefined;
  #protocol = 0;
  #timer: NodeJS.Timeout | undefined;
  #ackTimer: NodeJS.Timeout | undefined;
  #framesSinceAck = 0;
  #killTimer: NodeJS.Timeout | undefined;

  constructor(options: InboundLinkOptions) {
    this.#options = options;
    this.#ws = options.ws;
    this.remote = options.remote;
    this.#ws.on("message", (data, isBinary) => {
      const frame = isBinary && Buffer.isBuffer(data) ? decodeFrame(data) : undefined;
      if (frame === undefined) {
        this.#protocolError("a malformed frame");
      } else if (this.#status === "handshaking") {
        if (frame.kind === "hello") this.#onHello(frame);
        else this.#protocolError(`a "${frame.kind}" frame before its hello`);
      } else if (this.#status === "open") {
        this.#timer?.refresh();
        if (frame.kind === "data") this.#onData(frame);
        else if (frame.kind === "ping") this.#send({ kind: "pong", id: frame.id });
        else this.#protocolError(`an unexpected "${frame.kind}" frame`);
      }
    });
    this.#ws.on("error", (error) =>
      options.log.debug({ remote: this.remote, err: error }, "peer socket error"),
    );
    this.#ws.on("close", () => {
      this.#stop();
      clearTimeout(this.#killTimer);
      options.hooks.closed(this);
    });
    this.#timer = setTimeout(() => {
      options.log.warn({ remote: this.remote }, "peer handshake timed out");
      this.close(PEER_CLOSE.handshakeTimeout, "handshake timed out");
    }, options.handshakeTimeoutMs);
    const challenge: ChallengeFrame = {
      kind: "challenge",
      protocol: options.self.protocol,
      protocolMin: options.protocolMin,
      nonce: this.#nonce,
    };
    this.#send(challenge);
  }

  /** The dialler's identity, once the handshake succeeded. */
  get peer(): PeerIdentity | undefined {
    return this.#peer;
  }

  /** The negotiated protocol version (0 before the handshake). */
  get protocol(): number {
    return this.#protocol;
  }

  /** Whether the handshake is still running. */
  get handshaking(): boolean {
    return this.#status === "handshaking";
  }

  /** Closes the link with a close frame; frames still in flight are not delivered. */
  close(code: number = PEER_CLOSE.goingAway, reason = ""): void {
    if (this.#status === "closed") return;
    this.#stop();
    this.#ws.close(code, closeReason(reason));
    // A peer that does not answer the close frame must not keep the socket (or ws's 30 s close
    // timer) alive for long.
    this.#killTimer = setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS);
  }

  /** Drops the socket at once (shutdown). */
  terminate(): void {
    this.#stop();
    clearTimeout(this.#killTimer);
    this.#ws.terminate();
  }

  /** A newer socket of the same session took over: deliver nothing more from this one. */
  supersede(): void {
    this.close(PEER_CLOSE.superseded, "superseded by a newer link");
  }

  #onHello(hello: HelloFrame): void {
    const { self, secret, protocolMin, log } = this.#options;
    const remote = hello.identity;
    if (!macEquals(helloMac(secret, this.#nonce, hello), hello.mac)) {
      this.#refuse(
        "XSRV_PEER_REFUSED",
        PEER_CLOSE.refused,
        `node "${remote.node}" failed authentication: wrong cluster secret`,
      );
      return;
    }
    const negotiated = checkCompatibility(
      { identity: self, protocolMin },
      { identity: remote, protocolMin: hello.protocolMin },
    );
    if (typeof negotiated !== "number") {
      this.#refuse(negotiated.code, PEER_CLOSE.incompatible, negotiated.message);
      return;
    }
    if (remote.node === self.node && remote.incarnation !== self.incarnation) {
      this.#refuse(
        "XSRV_CLUSTER_NAME_TAKEN",
        PEER_CLOSE.nameTaken,
        `node name "${self.node}" is already used by a live node (incarnation ${self.incarnation})`,
      );
      return;
    }
    this.#peer = remote;
    this.#protocol = negotiated;
    if (hello.probe) {
      this.#welcome(hello, 0);
      this.close(PEER_CLOSE.normal, "probe answered");
      return;
    }
    this.#status = "open";
    this.#state = this.#options.hooks.accept(this, hello);
    // Past the handshake the timer watches for a silent dialler: it pings every
    // pingIntervalMs, so three missed intervals mean it hung or the path is black-holed.
    clearTimeout(this.#timer);
    this.#timer =
      hello.pingIntervalMs > 0
        ? setTimeout(
            () => {
              log.warn(
                { peer: remote.node, remote: this.remote },
                "inbound peer link went silent; closing it",
              );
              this.close(PEER_CLOSE.goingAway, "silent");
            },
            Math.max(3 * hello.pingIntervalMs + 1_000, 3_000),
          )
        : undefined;
    this.#welcome(hello, this.#state.lastDelivered);
    log.info(
      { peer: remote.node, incarnation: remote.incarnation, remote: this.remote, protocol: negotiated },
      "inbound peer link up",
    );
  }

  #welcome(hello: HelloFrame, lastDelivered: number): void {
    const { self, secret, protocolMin } = this.#options;
    const welcome: Omit<WelcomeFrame, "kind" | "mac"> = {
      identity: self,
      protocolMin,
      negotiated: this.#protocol,
      lastDelivered,
    };
    this.#send({ kind: "welcome", ...welcome, mac: welcomeMac(secret, hello.nonce, this.#nonce, welcome) });
  }

  #refuse(code: ErrorCode, closeCode: number, reason: string): void {
    this.#options.log.error({ remote: this.remote, code, reason }, `refused a peer link from ${this.remote}`);
    this.#send({ kind: "refused", protocol: this.#options.self.protocol, code, reason });
    this.close(closeCode, reason);
  }

  #onData(frame: DataFrame): void {
    const state = this.#state!;
    if (frame.seq > state.lastDelivered) {
      // Frames of one session arrive in order; a gap means a broken peer. Closing makes it
      // redial and resend from what we report as delivered.
      if (frame.seq !== state.lastDelivered + 1 && !state.fresh) {
        this.#protocolError(`data seq ${frame.seq} after ${state.lastDelivered}`);
        return;
      }
      state.lastDelivered = frame.seq;
      state.fresh = false;
      this.#options.hooks.deliver(state.node, frame.messages);
      if (this.#status !== "open") return; // a listener closed us
    }
    // A resent frame we already delivered is dropped, but still acknowledged.
    if (++this.#framesSinceAck >= ACK_EVERY_FRAMES) this.#ack();
    else this.#ackTimer ??= setTimeout(() => this.#ack(), ACK_DELAY_MS);
  }

  #ack(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#framesSinceAck = 0;
    if (this.#state !== undefined) this.#send({ kind: "ack", seq: this.#state.lastDelivered });
  }

  #protocolError(what: string): void {
    this.#options.log.warn(
      { remote: this.remote, peer: this.#peer?.node },
      `peer sent ${what}; closing the link`,
    );
    this.close(PEER_CLOSE.protocolError, "protocol error");
  }

  #send(frame: Parameters<typeof encodeFrame>[0]): void {
    if (this.#status !== "closed") this.#ws.send(encodeFrame(frame));
  }

  #stop(): void {
    if (this.#status === "closed") return;
    this.#status = "closed";
    clearTimeout(this.#timer);
    clearTimeout(this.#ackTimer);
    this.#timer = this.#ackTimer = undefined;
    if (this.#state?.link === this) this.#state.link = undefined;
  }
}

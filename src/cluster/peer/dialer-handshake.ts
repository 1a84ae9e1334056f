/**
 * The dialler's half of the peer handshake (see protocol.ts): answer the server's challenge with
 * our identity and proof, then check the server's proof and compatibility. Used by every
 * outbound link and by probePeer().
 *
 * It reports once, synchronously from the ws event that decides it, so the caller can attach
 * its own listeners before the next frame is read.
 */
import type WebSocket from "ws";
import type { ErrorCode } from "../../errors.ts";
import { XmppServerError } from "../../errors.ts";
import { tlsDialFailure } from "./peer-tls.ts";
import {
  checkCompatibility,
  decodeFrame,
  encodeFrame,
  type HelloFrame,
  helloMac,
  macEquals,
  newNonce,
  type PeerIdentity,
  welcomeMac,
} from "./protocol.ts";

/** What the dialler says about itself. */
export interface DialerHandshakeOptions {
  /** The address dialled, for error messages. */
  addr: string;
  self: PeerIdentity;
  secret: string;
  protocolMin: number;
  session: string;
  probe: boolean;
  pingIntervalMs: number;
  timeoutMs: number;
}

/** A completed handshake. */
export interface DialerHandshakeResult {
  identity: PeerIdentity;
  /** The negotiated protocol version of the link. */
  protocol: number;
  /** Highest data seq of our session the server has delivered. */
  lastDelivered: number;
}

/** The outcome of a handshake. */
export type DialerHandshakeOutcome =
  | { kind: "ok"; result: DialerHandshakeResult }
  | { kind: "failed"; error: XmppServerError };

/** Codes a refused frame may carry; anything else reads as a plain refusal. */
const REFUSAL_CODES: ReadonlySet<ErrorCode> = new Set([
  "XSRV_PEER_REFUSED",
  "XSRV_CLUSTER_INCOMPATIBLE",
  "XSRV_CLUSTER_NAME_TAKEN",
]);

/**
 * Runs the handshake on `ws` (connecting or open). `done` is called exactly once; on failure the
 * socket has been terminated. Returns a function that abandons the handshake silently.
 */
export function runDialerHandshake(
  ws: WebSocket,
  options: DialerHandshakeOptions,
  done: (outcome: DialerHandshakeOutcome) => void,
): () => void {
  const { addr } = options;
  let finished = false;
  let nonce: string | undefined;
  let serverNonce = "";
  let socketError: Error | undefined;

  const finish = (outcome: DialerHandshakeOutcome | undefined): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    ws.off("message", onMessage);
    ws.off("close", onClose);
    ws.off("error", onError);
    if (outcome === undefined) return;
    if (outcome.kind === "failed") ws.terminate();
    done(outcome);
  };
  const fail = (code: ErrorCode, message: string, cause?: unknown): void =>
    finish({ kind: "failed", error: new XmppServerError(code, message, { cause }) });

  const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
    const frame = isBinary && Buffer.isBuffer(data) ? decodeFrame(data) : undefined;
    if (frame === undefined) {
      fail("XSRV_CLUSTER_UNREACHABLE", `The peer at ${addr} sent a malformed handshake frame`);
      return;
    }
    if (frame.kind === "refused") {
      const code = REFUSAL_CODES.has(frame.code) ? frame.code : "XSRV_PEER_REFUSED";
      fail(code, `The peer at ${addr} refused the link: ${frame.reason}`);
      return;
    }
    if (frame.kind === "challenge" && nonce === undefined) {
      nonce = newNonce();
      serverNonce = frame.nonce;
      const hello: Omit<HelloFrame, "kind" | "mac"> = {
        identity: options.self,
        protocolMin: options.protocolMin,
        nonce,
        session: options.session,
        probe: options.probe,
        pingIntervalMs: options.pingIntervalMs,
      };
      ws.send(encodeFrame({ kind: "hello", ...hello, mac: helloMac(options.secret, serverNonce, hello) }));
      return;
    }
    if (frame.kind === "welcome" && nonce !== undefined) {
      if (!macEquals(welcomeMac(options.secret, nonce, serverNonce, frame), frame.mac)) {
        fail("XSRV_PEER_REFUSED", `The peer at ${addr} could not prove it knows the cluster secret`);
        return;
      }
      const negotiated = checkCompatibility(
        { identity: options.self, protocolMin: options.protocolMin },
        { identity: frame.identity, protocolMin: frame.protocolMin },
      );
      if (typeof negotiated !== "number") {
        fail(negotiated.code, `The peer at ${addr} is incompatible: ${negotiated.message}`);
        return;
      }
      if (negotiated !== frame.negotiated) {
        fail(
          "XSRV_CLUSTER_INCOMPATIBLE",
          `The peer at ${addr} chose protocol ${frame.negotiated}, expected ${negotiated}`,
        );
        return;
      }
      finish({
        kind: "ok",
        result: { identity: frame.identity, protocol: negotiated, lastDelivered: frame.lastDelivered },
      });
      return;
    }
    fail("XSRV_CLUSTER_UNREACHABLE", `The peer at ${addr} sent an unexpected "${frame.kind}" frame`);
  };
  const onError = (error: Error): void => {
    // A connect error (ECONNREFUSED...) is followed by "close", which reports it.
    socketError = error;
  };
  const onClose = (code: number): void => {
    // An untrusted certificate or a peer without TLS is a configuration fault, not a lost link.
    const fault = tlsDialFailure(socketError, addr);
    if (fault !== undefined) {
      finish({ kind: "failed", error: fault });
      return;
    }
    const why = socketError === undefined ? `connection closed (code ${code})` : socketError.message;
    fail("XSRV_CLUSTER_UNREACHABLE", `Cannot link to the peer at ${addr}: ${why}`, socketError);
  };
  const timer = setTimeout(
    () => fail("XSRV_CLUSTER_UNREACHABLE", `The handshake with the peer at ${addr} timed out`),
    options.timeoutMs,
  );
  ws.on("message", onMessage);
  ws.on("close", onClose);
  ws.on("error", onError);
  return () => finish(undefined);
}

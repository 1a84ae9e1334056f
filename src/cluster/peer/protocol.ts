/**
 * The wire protocol of peer links: frame shapes, their msgpackr codec, the HMAC proofs of the
 * handshake and the compatibility rules. Shared by both ends of a link, by probePeer() and by
 * tests that play a peer by hand.
 *
 * Every ws frame is one msgpackr value packed on its own (no shared structures), so any frame
 * can be decoded without the ones before it. The handshake frames (`challenge`, `hello`,
 * `welcome`, `refused`) keep their shape in every protocol version: they are how two releases
 * find out which version to speak. Fields may be added to them, never removed or retyped.
 *
 * The handshake, dialler D to server S:
 *   S → D  challenge {protocol, protocolMin, nonce: Ns}
 *   D → S  hello     {identity, protocolMin, nonce: Nd, session, probe, pingIntervalMs,
 *                     mac: HMAC(secret, "hello", Ns, Nd, D's fields)}
 *   S → D  welcome   {identity, protocolMin, negotiated, lastDelivered,
 *                     mac: HMAC(secret, "welcome", Nd, Ns, S's fields)}   or   refused {code, reason}
 * Each side proves it knows the secret by a MAC over the other side's fresh nonce, so the
 * secret never travels and a recorded handshake cannot be replayed.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { Packr } from "msgpackr";
import type { ErrorCode } from "../../errors.ts";
import { XmppServerError } from "../../errors.ts";

/** The peer protocol version this release speaks. */
export const PEER_PROTOCOL_VERSION = 1;

/** The oldest peer protocol version this release can still talk to (rolling upgrades). */
export const PEER_PROTOCOL_MIN = 1;

/** The HTTP path of the peer WebSocket endpoint. */
export const PEER_PATH = "/starling-peer";

/** Largest ws frame a peer accepts; a batch is at most one turn's messages of one link. */
export const MAX_PEER_FRAME_BYTES = 64 * 1024 * 1024;

/** A handshake that has not completed by then is abandoned. */
export const HANDSHAKE_TIMEOUT_MS = 5_000;

/**
 * WebSocket close codes used by peer links (RFC 6455 §7.4.2: 4000–4999 are for applications).
 * They tell the other side's logs why a link ended; behaviour never depends on them, since a
 * `refused` frame always precedes a refusal.
 */
export const PEER_CLOSE = {
  normal: 1000,
  goingAway: 1001,
  tryAgainLater: 1013,
  protocolError: 4400,
  refused: 4401,
  nameTaken: 4403,
  incompatible: 4406,
  handshakeTimeout: 4408,
  superseded: 4409,
  overflow: 4413,
} as const;

/** Who a node is, as told in the handshake. */
export interface PeerIdentity {
  /** Node name, unique in the cluster. */
  node: string;
  /** Start time in ms: a restarted node has a new one. */
  incarnation: number;
  /** Ring size; must be equal on both sides. */
  partitions: number;
  /** Ring hash function name, e.g. "sha1-64"; must be equal on both sides. */
  hash: string;
  /** The PEER_PROTOCOL_VERSION of that side. */
  protocol: number;
  /** "host:port" its peer server listens on. */
  peerAddr: string;
}

/** S → D: the first frame on every link. */
export interface ChallengeFrame {
  kind: "challenge";
  protocol: number;
  protocolMin: number;
  nonce: string;
}

/** D → S: who the dialler is, and its proof of the secret. */
export interface HelloFrame {
  kind: "hello";
  identity: PeerIdentity;
  protocolMin: number;
  nonce: string;
  /** Names the dialler's sequence-number space; a new one restarts numbering at 1. */
  session: string;
  /** A one-shot probePeer(): answer, then close; no delivery state is touched. */
  probe: boolean;
  /** How often the dialler pings, so the server can tell a silent dialler from a dead one. */
  pingIntervalMs: number;
  mac: string;
}

/** S → D: the server's identity, its proof of the secret, and where the dialler must resume. */
export interface WelcomeFrame {
  kind: "welcome";
  identity: PeerIdentity;
  protocolMin: number;
  /** The protocol version the link speaks: min of both sides' versions. */
  negotiated: number;
  /** Highest data seq of the dialler's session that the server has delivered (0: none). */
  lastDelivered: number;
  mac: string;
}

/** S → D: the link is refused; the server closes right after. */
export interface RefusedFrame {
  kind: "refused";
  protocol: number;
  code: ErrorCode;
  reason: string;
}

/** D → S: one event-loop turn's messages. */
export interface DataFrame {
  kind: "data";
  seq: number;
  messages: unknown[];
}

/** S → D: every data frame up to `seq` was delivered. */
export interface AckFrame {
  kind: "ack";
  seq: number;
}

/** D → S heartbeat. */
export interface PingFrame {
  kind: "ping";
  id: number;
}

/** S → D answer to a ping. */
export interface PongFrame {
  kind: "pong";
  id: number;
}

/** Every frame of protocol version 1. */
export type PeerFrame =
  | ChallengeFrame
  | HelloFrame
  | WelcomeFrame
  | RefusedFrame
  | DataFrame
  | AckFrame
  | PingFrame
  | PongFrame;

// One Packr per process is enough: pack() is synchronous. No records and no extension types, so
// every frame decodes on its own and in any release.
const packr = new Packr({ useRecords: false, moreTypes: false });

/** Packs one frame into the bytes of one ws message. */
export function encodeFrame(frame: PeerFrame): Buffer {
  return packr.pack(frame);
}

function isString(value: unknown, maxLength = 1024): value is string {
  return typeof value === "string" && value.length <= maxLength;
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isVersion(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1;
}

/** Whether `value` has the shape of a {@link PeerIdentity}. */
export function isPeerIdentity(value: unknown): value is PeerIdentity {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    isString(v.node, 255) &&
    v.node.length > 0 &&
    typeof v.incarnation === "number" &&
    Number.isFinite(v.incarnation) &&
    isVersion(v.partitions) &&
    isString(v.hash, 64) &&
    isVersion(v.protocol) &&
    isString(v.peerAddr, 300)
  );
}

/**
 * Decodes one ws message into a frame, or returns undefined when it is not a well-formed frame
 * (the caller closes the link: a peer that sends garbage is broken or hostile).
 */
export function decodeFrame(data: Uint8Array): PeerFrame | undefined {
  let value: unknown;
  try {
    value = packr.unpack(data);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const f = value as Record<string, unknown>;
  switch (f.kind) {
    case "data":
      return isCount(f.seq) && Array.isArray(f.messages) ? (f as unknown as DataFrame) : undefined;
    case "ack":
      return isCount(f.seq) ? (f as unknown as AckFrame) : undefined;
    case "ping":
    case "pong":
      return isCount(f.id) ? (f as unknown as PingFrame | PongFrame) : undefined;
    case "challenge":
      return isVersion(f.protocol) && isVersion(f.protocolMin) && isString(f.nonce, 128)
        ? (f as unknown as ChallengeFrame)
        : undefined;
    case "hello":
      return isPeerIdentity(f.identity) &&
        isVersion(f.protocolMin) &&
        isString(f.nonce, 128) &&
        isString(f.session, 128) &&
        typeof f.probe === "boolean" &&
        isCount(f.pingIntervalMs) &&
        isString(f.mac, 128)
        ? (f as unknown as HelloFrame)
        : undefined;
    case "welcome":
      return isPeerIdentity(f.identity) &&
        isVersion(f.protocolMin) &&
        isVersion(f.negotiated) &&
        isCount(f.lastDelivered) &&
        isString(f.mac, 128)
        ? (f as unknown as WelcomeFrame)
        : undefined;
    case "refused":
      return isString(f.code, 64) && isString(f.reason)
        ? ({ ...f, protocol: isVersion(f.protocol) ? f.protocol : 1 } as unknown as RefusedFrame)
        : undefined;
    default:
      return undefined;
  }
}

/** A fresh random nonce (256 bits, hex). */
export function newNonce(): string {
  return randomBytes(32).toString("hex");
}

/** A fresh session name for a dialler's sequence-number space. */
export function newSession(): string {
  return randomBytes(12).toString("hex");
}

function identityFields(identity: PeerIdentity): unknown[] {
  return [
    identity.node,
    identity.incarnation,
    identity.partitions,
    identity.hash,
    identity.protocol,
    identity.peerAddr,
  ];
}

function hmac(secret: string, fields: unknown[]): string {
  // JSON of an array of strings and numbers is unambiguous, so no field can bleed into another.
  return createHmac("sha256", secret).update(JSON.stringify(fields)).digest("hex");
}

/** The dialler's proof: a MAC over the server's nonce and everything the hello claims. */
export function helloMac(
  secret: string,
  serverNonce: string,
  hello: Omit<HelloFrame, "kind" | "mac">,
): string {
  return hmac(secret, [
    "starling-peer hello",
    serverNonce,
    hello.nonce,
    ...identityFields(hello.identity),
    hello.protocolMin,
    hello.session,
    hello.probe,
    hello.pingIntervalMs,
  ]);
}

/** The server's proof: a MAC over the dialler's nonce and everything the welcome claims. */
export function welcomeMac(
  secret: string,
  dialerNonce: string,
  serverNonce: string,
  welcome: Omit<WelcomeFrame, "kind" | "mac">,
): string {
  return hmac(secret, [
    "starling-peer welcome",
    dialerNonce,
    serverNonce,
    ...identityFields(welcome.identity),
    welcome.protocolMin,
    welcome.negotiated,
    welcome.lastDelivered,
  ]);
}

/** Compares two MACs in constant time. */
export function macEquals(expected: string, received: string): boolean {
  const a = Buffer.from(expected, "hex");
  const b = Buffer.from(received, "hex");
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

/** One side's view of itself for the compatibility check. */
export interface PeerVersions {
  identity: PeerIdentity;
  protocolMin: number;
}

/**
 * Checks that two nodes can share a ring and a link. Returns the protocol version they will
 * speak (the lower of both versions, when each side still supports it), or the error that
 * names which value differs, with both values.
 */
export function checkCompatibility(local: PeerVersions, remote: PeerVersions): number | XmppServerError {
  const name = `node "${remote.identity.node}"`;
  if (local.identity.partitions !== remote.identity.partitions) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `${name} has a different ring: partitions differ (local ${local.identity.partitions}, remote ${remote.identity.partitions})`,
    );
  }
  if (local.identity.hash !== remote.identity.hash) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `${name} has a different ring: hash differs (local "${local.identity.hash}", remote "${remote.identity.hash}")`,
    );
  }
  const negotiated = Math.min(local.identity.protocol, remote.identity.protocol);
  if (negotiated < Math.max(local.protocolMin, remote.protocolMin)) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `${name} speaks no common peer protocol: protocol differs (local ${local.protocolMin}..${local.identity.protocol}, remote ${remote.protocolMin}..${remote.identity.protocol})`,
    );
  }
  return negotiated;
}

const ADDR_PATTERN = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/[\]@?#]+):(\d{1,5})$/;

/**
 * The ws URL (wss when `secure`) of the peer endpoint at "host:port". Throws a TypeError on a
 * malformed address.
 */
export function peerUrl(addr: string, secure = false): string {
  const match = ADDR_PATTERN.exec(addr);
  if (match === null || Number(match[2]) > 65535) {
    throw new TypeError(`Invalid peer address "${addr}": expected "host:port"`);
  }
  return `${secure ? "wss" : "ws"}://${addr}${PEER_PATH}`;
}

/** Shortens a close reason to the 123 bytes a ws close frame can carry (RFC 6455 §5.5). */
export function closeReason(reason: string): string {
  const bytes = Buffer.from(reason);
  return bytes.length <= 123
    ? reason
    : bytes
        .subarray(0, 120)
        .toString()
        .replace(/\uFFFD$/, "");
}

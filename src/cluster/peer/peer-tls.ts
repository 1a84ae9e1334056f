/**
 * TLS on peer links (docs/cluster.md, "Encrypted peer links"). The listening side serves the
 * node's peer certificate; the dialling side checks what the peer presents as soon as the TLS
 * handshake completes, before it reads a byte of the peer's answer or sends its HMAC proof:
 * - its SHA-256 fingerprint must be the one the peer's member row publishes in PostgreSQL
 *   (the membership store every node already trusts), so a node's own self-signed
 *   certificate is enough;
 * - with `cluster.tls.caFile`, its chain must also lead to that CA.
 * Plain links (no TLS at all) are for a trusted network, only when the operator says so
 * (`cluster.plainLinks`); a TLS node and a plain node never link, and both say why.
 */
import { X509Certificate } from "node:crypto";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { Duplex } from "node:stream";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";
import WebSocket, { type ClientOptions } from "ws";
import { XmppServerError } from "../../errors.ts";
import type { Logger } from "../../log.ts";
import { peerUrl } from "./protocol.ts";

/** What a node needs to serve and dial TLS peer links. */
export interface PeerTlsOptions {
  /** PEM certificate chain the peer server presents, leaf first. */
  cert: string;
  /** PEM private key of that certificate. */
  key: string;
  /** PEM CA certificate(s) every peer's chain must lead to; undefined: the pin alone. */
  ca?: string | undefined;
}

/** What the dialler knows about one peer before it dials: taken from the peer's member row. */
export interface PeerTrust {
  /** SHA-256 fingerprint (`AB:CD:…`) of the certificate the peer publishes; null when none. */
  certSha256: string | null;
}

/** No published certificate: all a plain link, or a dialler with a CA, can be given. */
export const NO_PEER_TRUST: PeerTrust = Object.freeze({ certSha256: null });

/** The fingerprint a node publishes for its peer certificate (the leaf of a PEM chain). */
export function certificateSha256(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/** First byte of a TLS record carrying a handshake (RFC 8446 §5.1, ContentType 22). */
const TLS_HANDSHAKE_RECORD = 0x16;

/**
 * The HTTP server the peer WebSocket server runs on: HTTPS with the peer certificate, or plain
 * HTTP when `tls` is null. A dialler speaking the other way is turned away at the first bytes
 * and logged with the reason (warn: it is a misconfigured member, or a stranger).
 */
export function createPeerServer(
  tls: PeerTlsOptions | null,
  handshakeTimeoutMs: number,
  log: Logger,
): HttpServer | HttpsServer {
  if (tls === null) {
    const server = createHttpServer();
    server.on("clientError", (error: Error & { rawPacket?: Buffer }, socket: Duplex) => {
      const remote = remoteOf(socket);
      if (error.rawPacket?.[0] === TLS_HANDSHAKE_RECORD) {
        log.warn(
          { remote },
          `refused a TLS peer connection from ${remote}: this node has cluster.plainLinks on, the dialler does not; set it the same on every node`,
        );
      } else {
        log.debug({ err: error, remote }, "malformed request on the peer port");
      }
      // An answer in clear (not a silent close) is what tells a TLS dialler that this port
      // does not speak TLS: its handshake fails on a record that is not TLS (tlsDialFailure).
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
    });
    return server;
  }
  const server = createHttpsServer({ cert: tls.cert, key: tls.key, handshakeTimeout: handshakeTimeoutMs });
  server.on("tlsClientError", (error: Error & { code?: string }, socket: TLSSocket) => {
    const remote = remoteOf(socket);
    if (error.code === "ERR_SSL_HTTP_REQUEST") {
      log.warn(
        { remote },
        `refused a plain peer connection from ${remote}: this node requires TLS on peer links (the dialler has cluster.plainLinks on?); set it the same on every node`,
      );
    } else {
      // A dialler that found our certificate untrusted also ends up here; it logs why.
      log.debug({ err: error, remote }, "a TLS handshake on the peer port failed");
    }
  });
  return server;
}

function remoteOf(socket: Duplex): string {
  const { remoteAddress, remotePort } = socket as Duplex & { remoteAddress?: string; remotePort?: number };
  return `${remoteAddress}:${remotePort}`;
}

/**
 * Why the peer at `addr` cannot be dialled with this node's settings, before any byte is sent:
 * a plain node dialling a member that publishes a certificate (it serves TLS), or a TLS node
 * without a CA dialling one that publishes none (plain links there, or nothing to verify it by).
 * Both are configuration faults (XSRV_CLUSTER_INCOMPATIBLE): redialling cannot fix them.
 */
export function undialable(
  tls: PeerTlsOptions | null,
  trust: PeerTrust,
  addr: string,
): XmppServerError | undefined {
  if (tls === null && trust.certSha256 !== null) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `The peer at ${addr} serves TLS peer links (its member row publishes a certificate), but this node has cluster.plainLinks on; set it the same on every node`,
    );
  }
  if (tls !== null && tls.ca === undefined && trust.certSha256 === null) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `The peer at ${addr} publishes no certificate fingerprint (it has cluster.plainLinks on, or runs an older release) and cluster.tls.caFile is not set: there is nothing to verify it by`,
    );
  }
  return undefined;
}

/** Options for {@link dialPeer}. */
export interface DialPeerOptions {
  /** This node's TLS settings; null: plain links. */
  tls: PeerTlsOptions | null;
  /** What the peer's member row publishes. */
  trust: PeerTrust;
  maxPayload: number;
  handshakeTimeoutMs: number;
  /** Source address ("" = the system's choice). */
  localAddress?: string;
}

/**
 * Opens the WebSocket of a peer link to "host:port": `wss://` with the checks of
 * {@link peerConnector}, or `ws://` for plain links. Returns the configuration fault instead
 * when the peer cannot be dialled this way at all ({@link undialable}).
 */
export function dialPeer(addr: string, options: DialPeerOptions): WebSocket | XmppServerError {
  const { tls, trust } = options;
  const fault = undialable(tls, trust, addr);
  if (fault !== undefined) return fault;
  return new WebSocket(peerUrl(addr, tls !== null), {
    perMessageDeflate: false,
    maxPayload: options.maxPayload,
    handshakeTimeout: options.handshakeTimeoutMs,
    ...(options.localAddress === undefined || options.localAddress === ""
      ? {}
      : { localAddress: options.localAddress }),
    // @types/ws types createConnection as net's; for a wss:// URL ws calls it with tls options.
    ...(tls === null
      ? {}
      : {
          createConnection: peerConnector(tls, trust, addr) as unknown as ClientOptions["createConnection"],
        }),
  });
}

/**
 * The ws `createConnection` for a `wss://` peer URL: a TLS socket that is destroyed with an
 * XSRV_PEER_UNTRUSTED error when the handshake completes with a certificate this node does
 * not trust. "secureConnect" is emitted within the handshake's completion, before the socket
 * delivers any of the peer's data, so ws never sees the peer's answer and the handshake in
 * dialer-handshake.ts never sends our proof to an impostor.
 */
export function peerConnector(
  tls: PeerTlsOptions,
  trust: PeerTrust,
  addr: string,
): (options: ConnectionOptions) => TLSSocket {
  return (options) => {
    const socket = tlsConnect({
      ...options,
      ...(tls.ca === undefined ? {} : { ca: tls.ca }),
      // Peers are dialled by address and identified by their pinned fingerprint (and CA), so
      // there is no host name to check and no SNI to send.
      servername: "",
      checkServerIdentity: () => undefined,
      // Not "trust anything": the chain (with a CA) and the pin are checked on "secureConnect"
      // below, and an untrusted peer is cut before a byte of its answer is read.
      rejectUnauthorized: false,
    });
    socket.once("secureConnect", () => {
      const problem = distrust(socket, tls, trust);
      if (problem !== undefined) {
        socket.destroy(new XmppServerError("XSRV_PEER_UNTRUSTED", `The peer at ${addr} ${problem}`));
      }
    });
    return socket;
  };
}

/** Why the certificate `socket`'s peer presented is not trusted, or undefined when it is. */
function distrust(socket: TLSSocket, tls: PeerTlsOptions, trust: PeerTrust): string | undefined {
  const presented = socket.getPeerCertificate();
  if (presented === null || presented.fingerprint256 === undefined) return "presented no certificate";
  if (tls.ca !== undefined && !socket.authorized) {
    return `presented a certificate that does not chain to cluster.tls.caFile (${String(socket.authorizationError)})`;
  }
  const pinned = trust.certSha256;
  if (pinned !== null && presented.fingerprint256.toUpperCase() !== pinned.toUpperCase()) {
    return `presented a certificate with SHA-256 fingerprint ${presented.fingerprint256}, but its member row pins ${pinned}`;
  }
  return undefined;
}

/**
 * The error a failed TLS dial stands for, or undefined when it is an ordinary connection
 * failure (retried): an untrusted certificate, or a peer that does not speak TLS at all.
 */
export function tlsDialFailure(error: Error | undefined, addr: string): XmppServerError | undefined {
  if (error instanceof XmppServerError) return error;
  // OpenSSL's reasons for a first record that is not TLS (here: the plain server's answer),
  // reported as EPROTO or as ERR_SSL_* depending on where the handshake stood.
  if (
    error !== undefined &&
    /wrong.version.number|packet.length.too.long/i.test(
      `${(error as Error & { code?: string }).code} ${error.message}`,
    )
  ) {
    return new XmppServerError(
      "XSRV_CLUSTER_INCOMPATIBLE",
      `The peer at ${addr} does not speak TLS on its peer port (it has cluster.plainLinks on?); set it the same on every node`,
      { cause: error },
    );
  }
  return undefined;
}

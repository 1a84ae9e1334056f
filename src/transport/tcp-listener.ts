/**
 * The TCP listeners of one worker: the STARTTLS port (RFC 6120) and the direct-TLS port
 * (XEP-0368). Every worker listens on the same ports with SO_REUSEPORT, so the kernel spreads
 * new connections over all cores with no gateway thread. Each connection becomes a
 * {@link TcpTransport} under an {@link XmppStream} served by the worker's stream host.
 */
import { createServer, type Socket } from "node:net";
import { createServer as createTlsServer, type SecureContext, type TLSSocket } from "node:tls";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import type { StreamHost } from "../xmpp/stream-host.ts";
import { XmppStream } from "../xmpp/xmpp-stream.ts";
import { listenShared } from "./listen.ts";
import { TcpTransport } from "./tcp-transport.ts";

let nextConnectionId = 1;

/** The listeners of one worker. */
export interface C2sListeners {
  readonly ports: { c2s: number; tls: number };
  /** The streams open now. */
  readonly connections: Set<XmppStream>;
  /** A new certificate (a reload): for direct TLS, and `context` for STARTTLS, on new connections. */
  setCredentials(credentials: { cert: string; key: string }, context: SecureContext): void;
  /** Stops accepting; existing connections stay. */
  close(): Promise<void>;
}

/** What the listeners need besides the stream host. */
export interface C2sListenerOptions {
  host: StreamHost;
  config: Readonly<Config>;
  log: Logger;
  /** PEM certificate chain and key, for the direct-TLS port. */
  tlsCredentials: { cert: string; key: string };
  /** For STARTTLS on the plain port. */
  tlsContext: SecureContext;
}

/** Starts the c2s listeners on `ports` (0 lets the OS choose, for the first worker). */
export async function startC2sListeners(
  options: C2sListenerOptions,
  ports: { c2s: number; tls: number },
): Promise<C2sListeners> {
  const { config, log } = options;
  const connections = new Set<XmppStream>();
  let tlsContext = options.tlsContext;
  const open = (socket: Socket, directTls: boolean) => {
    const connectionLog = log.child({ conn: nextConnectionId++, remote: socket.remoteAddress ?? "unknown" });
    const transport = new TcpTransport(socket, {
      directTls,
      tlsContext,
      limits: config.limits,
      log: connectionLog,
    });
    const stream = new XmppStream(transport, options.host, connectionLog);
    connections.add(stream);
    socket.once("close", () => connections.delete(stream));
  };
  const plain = createServer({ noDelay: true }, (socket) => open(socket, false));
  const secure = createTlsServer({ ...options.tlsCredentials }, (socket: TLSSocket) => open(socket, true));
  secure.on("tlsClientError", (error) => log.debug({ err: error }, "TLS handshake failed"));
  const c2s = await listenShared(plain, config.host, ports.c2s);
  const tls = await listenShared(secure, config.host, ports.tls);
  return {
    ports: { c2s, tls },
    connections,
    setCredentials(credentials, context) {
      // New connections get the new certificate; established ones keep their session.
      secure.setSecureContext(credentials);
      tlsContext = context;
    },
    close: async () => {
      await Promise.all([
        new Promise<void>((resolve) => plain.close(() => resolve())),
        new Promise<void>((resolve) => secure.close(() => resolve())),
      ]);
    },
  };
}

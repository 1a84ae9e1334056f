/**
 * The TCP listeners of one worker: the STARTTLS port (RFC 6120) and the direct-TLS port
 * (XEP-0368). Every worker listens on the same ports with SO_REUSEPORT, so the kernel spreads
 * new connections over all cores with no gateway thread.
 */
import { createServer, type Server } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import type { ShardContext } from "../cluster/shard-context.ts";
import { C2sConnection } from "../xmpp/c2s-connection.ts";

/** The listeners of one worker. */
export interface C2sListeners {
  readonly ports: { c2s: number; tls: number };
  readonly connections: Set<C2sConnection>;
  /** Stops accepting; existing connections stay. */
  close(): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port, reusePort: true, backlog: 4096 }, () => {
      server.off("error", reject);
      const address = server.address();
      resolve(typeof address === "object" && address !== null ? address.port : port);
    });
  });
}

/** Starts the c2s listeners on `ports` (0 lets the OS choose, for the first worker). */
export async function startC2sListeners(
  ctx: ShardContext,
  ports: { c2s: number; tls: number },
): Promise<C2sListeners> {
  const connections = new Set<C2sConnection>();
  const track = (connection: C2sConnection, socket: { once(e: "close", f: () => void): unknown }) => {
    connections.add(connection);
    socket.once("close", () => connections.delete(connection));
  };
  const plain = createServer({ noDelay: true }, (socket) => {
    track(new C2sConnection(socket, ctx, { directTls: false }), socket);
  });
  const secure = createTlsServer({ ...ctx.tlsCredentials }, (socket: TLSSocket) => {
    track(new C2sConnection(socket, ctx, { directTls: true }), socket);
  });
  secure.on("tlsClientError", (error) => ctx.log.debug({ err: error }, "TLS handshake failed"));
  const c2s = await listen(plain, ctx.config.host, ports.c2s);
  const tls = await listen(secure, ctx.config.host, ports.tls);
  return {
    ports: { c2s, tls },
    connections,
    close: async () => {
      await Promise.all([
        new Promise<void>((resolve) => plain.close(() => resolve())),
        new Promise<void>((resolve) => secure.close(() => resolve())),
      ]);
    },
  };
}

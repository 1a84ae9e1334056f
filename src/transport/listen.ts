/** Binding a client listener the way every worker does: SO_REUSEPORT, a deep backlog. */
import type { Server } from "node:net";

/**
 * Listens on `host:port` with `reusePort`, so every worker of the node binds the same port and
 * the kernel spreads new connections over them; resolves the port bound (for port 0).
 */
export function listenShared(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port, reusePort: true, backlog: 4096 }, () => {
      server.off("error", reject);
      const address = server.address();
      resolve(typeof address === "object" && address !== null ? address.port : port);
    });
  });
}

/**
 * Free loopback ports for the servers tests and benches start (Starling nodes, PostgreSQL,
 * Prosody, MariaDB, nginx).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/**
 * Ports below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), where no outgoing
 * connection is ever given a source port: a port found free here stays free until someone
 * binds it on purpose. A port from `listen(0)` is an ephemeral one, and a process's connections
 * (a node's to PostgreSQL, a load generator's thousand clients) could take it before the server
 * it was meant for listens on it (seen as EADDRINUSE when a bench started its second node). The
 * risk left: another test process drawing the same port at random before this one binds it.
 */
const PORTS_FROM = 10_000;
const ephemeralFrom = (() => {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > PORTS_FROM + 1000 ? low : undefined;
  } catch {
    return undefined;
  }
})();
/** Ports this process handed out already: never twice. */
const handedOut = new Set<number>();

/** A free loopback port, outside the ephemeral range where the system has one. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; ephemeralFrom !== undefined && attempt < 50; attempt++) {
    const port = PORTS_FROM + Math.floor(Math.random() * (ephemeralFrom - PORTS_FROM));
    if (handedOut.has(port)) continue;
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => resolve(true));
    });
    if (!bound) continue;
    handedOut.add(port);
    server.close();
    await once(server, "close");
    return port;
  }
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(address !== null && typeof address === "object");
  server.close();
  await once(server, "close");
  return address.port;
}

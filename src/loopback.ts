/**
 * Whether an address or a host name stays on this machine. Shared by the config check (the
 * admin API beyond loopback needs a key), the admin API (who may call without one) and the web
 * listener (a plain port counts as encrypted only behind a local proxy).
 */
import { isIP } from "node:net";

/** Whether an address (as `socket.remoteAddress` gives it) is a loopback address. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.toLowerCase().startsWith("::ffff:") ? address.slice(7) : address;
  if (isIP(v4) === 4) return v4.startsWith("127.");
  return address === "::1";
}

/** Whether a host name or address (a bind address, a Host header without its port) is loopback. */
export function isLoopbackHost(host: string): boolean {
  return host.toLowerCase() === "localhost" || isLoopbackAddress(host);
}

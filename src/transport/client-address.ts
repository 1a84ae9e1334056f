/**
 * The address of the client behind a reverse proxy. A proxy in front of the web listener
 * (docs/web-chat.md) is the socket's peer for every browser; it names the browser in
 * `X-Forwarded-For` (each proxy appends the address it received the request from). That header
 * is believed only from `web.trustedProxies`, and then read from the right: the first address
 * that is not a trusted proxy is the client (anything left of it the client could have written
 * itself). As Prosody's `trusted_proxies`, loopback is trusted by default.
 */
import { isIP } from "node:net";

/** The client's address: the socket's peer, or what a trusted proxy says it forwarded for. */
export function clientAddressOf(
  socketAddress: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustedProxies: readonly string[],
): string {
  const peer = socketAddress ?? "unknown";
  if (forwardedFor === undefined || !isTrusted(peer, trustedProxies)) return peer;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
    .split(",")
    .map((hop) => hop.trim())
    .filter((hop) => hop !== "");
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!;
    // A malformed entry ends the trust: nothing left of it can be believed either.
    if (isIP(hop) === 0) return peer;
    if (!isTrusted(hop, trustedProxies)) return hop;
  }
  return hops[0] ?? peer;
}

function isTrusted(address: string, trustedProxies: readonly string[]): boolean {
  const bare = address.toLowerCase().startsWith("::ffff:") ? address.slice(7) : address;
  return trustedProxies.includes(address) || trustedProxies.includes(bare);
}

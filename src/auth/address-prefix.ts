/**
 * The unit the login throttle counts a client address in. One IPv4 address is one subscriber;
 * an IPv6 subscriber usually gets a whole /64 (RFC 6177 recommends at least that much per
 * site, and SLAAC needs it), so counting single IPv6 addresses would give one attacker 2^64
 * budgets. IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, what a dual-stack socket reports
 * for an IPv4 client) count as the IPv4 address they carry.
 */
import { isIPv4, isIPv6 } from "node:net";

/**
 * The throttle's key for `address`: the IPv4 address itself, or the IPv6 /64 prefix written as
 * `2001:db8:0:1::/64` (four lower-case hextets without leading zeros). Anything else (a Unix
 * socket's empty address, say) is returned as it is, so it still has a budget of its own.
 */
export function addressPrefix(address: string): string {
  if (isIPv4(address)) return address;
  // A zone index (fe80::1%eth0) names an interface, not another host.
  const bare = address.split("%")[0]!;
  if (!isIPv6(bare)) return address;
  const hextets = expandIPv6(bare.toLowerCase());
  if (hextets.slice(0, 5).every((h) => h === 0) && hextets[5] === 0xffff) {
    // RFC 4291 §2.5.5.2: ::ffff:a.b.c.d is the IPv4 address a.b.c.d.
    const [hi, lo] = [hextets[6]!, hextets[7]!];
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return `${hextets
    .slice(0, 4)
    .map((h) => h.toString(16))
    .join(":")}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (with `::` and a dotted IPv4 tail expanded). */
function expandIPv6(address: string): number[] {
  let text = address;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const parse = (part: string) => (part === "" ? [] : part.split(":").map((h) => Number.parseInt(h, 16)));
  const left = parse(head);
  if (tail === undefined) return left;
  const right = parse(tail);
  return [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
}

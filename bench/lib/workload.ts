/**
 * The failover benchmark's message workload, made deterministic by a seed: who a message goes
 * to is a pure function of (seed, sender, sequence number), so the accounting can name the
 * recipient of a lost message without anyone having stored it, and two runs with one seed send
 * the same messages to the same people.
 */

/** How recipients are chosen, and how sending is spread in time. */
export type TrafficPattern = "random" | "roster" | "burst";

/** The patterns, for option parsing. */
export const TRAFFIC_PATTERNS: readonly TrafficPattern[] = ["random", "roster", "burst"];

/** Parameters of the workload. */
export interface WorkloadSpec {
  pattern: TrafficPattern;
  seed: number;
  /** Users are numbered 1..totalUsers. */
  totalUsers: number;
  /** `roster`: users form groups of this size (their contacts); others ignore it. */
  contacts: number;
}

/** A 32-bit integer hash with good avalanche (the finaliser of MurmurHash3). */
export function mix32(value: number): number {
  let h = value | 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash of (seed, a, b) as an unsigned 32-bit integer. */
export function hash3(seed: number, a: number, b: number): number {
  return mix32(mix32(mix32(seed) ^ a) + Math.imul(b, 0x9e3779b1));
}

/** A small seeded PRNG (mulberry32) returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The contact group of user `n` under the `roster` pattern: users `first..first+size-1`.
 * A trailing group of one joins the group before it, so everyone has a contact.
 */
export function contactGroup(n: number, spec: WorkloadSpec): { first: number; size: number } {
  const k = Math.max(2, Math.min(spec.contacts, spec.totalUsers));
  let first = Math.floor((n - 1) / k) * k + 1;
  let size = Math.min(k, spec.totalUsers - first + 1);
  if (size === 1 && first > 1) {
    first -= k;
    size = k + 1;
  }
  return { first, size };
}

/** The contacts of user `n` under the `roster` pattern (everyone else in its group). */
export function contactsOf(n: number, spec: WorkloadSpec): number[] {
  const { first, size } = contactGroup(n, spec);
  const out: number[] = [];
  for (let m = first; m < first + size; m++) if (m !== n) out.push(m);
  return out;
}

/** The user that message `seq` of `sender` goes to; never the sender itself. */
export function recipientOf(sender: number, seq: number, spec: WorkloadSpec): number {
  const h = hash3(spec.seed, sender, seq);
  if (spec.pattern === "roster") {
    const { first, size } = contactGroup(sender, spec);
    if (size >= 2) {
      const r = first + (h % (size - 1));
      return r >= sender ? r + 1 : r;
    }
  }
  const r = 1 + (h % (spec.totalUsers - 1));
  return r >= sender ? r + 1 : r;
}

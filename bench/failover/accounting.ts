/**
 * Turns what every load process saw into exact message accounting (see failover-group.ts for
 * the rules): per sender, the acknowledged prefix 1..ackedUpTo is compared with the union of
 * the sequence numbers received anywhere.
 */
import type { GroupResult } from "../lib/failover-group.ts";
import { SeqBitset } from "../lib/seq-bitset.ts";
import { recipientOf, type WorkloadSpec } from "../lib/workload.ts";

/** Message figures of a run. */
export interface Accounting {
  /** Messages the server acknowledged (XEP-0198), i.e. accepted. */
  sent: number;
  /** Messages written at least once (acknowledged or not). */
  attempted: number;
  /** Written but never acknowledged by the end. */
  unackedAtEnd: number;
  /** Distinct messages received. */
  delivered: number;
  /** Acknowledged and never received. */
  lost: number;
  /** Extra copies received. */
  duplicated: number;
  /** Received although never acknowledged (the ack was lost with its connection). */
  deliveredUnacked: number;
  /** Received with a sequence number never sent: the accounting itself is broken if not 0. */
  phantom: number;
  /** Distinct (sender, recipient) pairs with at least one lost / duplicated message. */
  lostPairs: number;
  duplicatedPairs: number;
  /** Up to 50 examples each, as [sender, seq, recipient]. */
  lostSamples: [number, number, number][];
  duplicateSamples: [number, number, number][];
  outOfOrder: number;
  misrouted: number;
  foreign: number;
  /** Messages acknowledged out of order; 0 unless the server or this tool is wrong. */
  ackAnomalies: number;
  /** Server acks claiming more stanzas than the client sent. */
  impossibleAcks: number;
  ackAnomalySamples: [number, number, number][];
}

const MAX_SAMPLES = 50;

/** Merges the groups' results; `spec` names the recipients of lost messages. */
export function account(results: readonly GroupResult[], spec: WorkloadSpec): Accounting {
  const sentUpTo = new Array<number>(spec.totalUsers + 1).fill(0);
  const ackedUpTo = new Array<number>(spec.totalUsers + 1).fill(0);
  const received = new Map<number, SeqBitset>();
  const out: Accounting = {
    sent: 0,
    attempted: 0,
    unackedAtEnd: 0,
    delivered: 0,
    lost: 0,
    duplicated: 0,
    deliveredUnacked: 0,
    phantom: 0,
    lostPairs: 0,
    duplicatedPairs: 0,
    lostSamples: [],
    duplicateSamples: [],
    outOfOrder: 0,
    misrouted: 0,
    foreign: 0,
    ackAnomalies: 0,
    impossibleAcks: 0,
    ackAnomalySamples: [],
  };
  const duplicatedPairs = new Set<string>();
  for (const r of results) {
    for (let i = 0; i < r.count; i++) {
      sentUpTo[r.first + i] = r.sentUpTo[i]!;
      ackedUpTo[r.first + i] = r.ackedUpTo[i]!;
    }
    for (const [sender, bits] of r.received) {
      const set = SeqBitset.fromBase64(bits);
      const mine = received.get(sender);
      if (mine === undefined) received.set(sender, set);
      else mine.merge(set);
    }
    out.duplicated += r.duplicates;
    for (const [sender, recipient] of r.duplicatePairs) duplicatedPairs.add(`${sender}>${recipient}`);
    for (const sample of r.duplicateSamples) {
      if (out.duplicateSamples.length < MAX_SAMPLES) out.duplicateSamples.push(sample);
    }
    out.outOfOrder += r.outOfOrder;
    out.misrouted += r.misrouted;
    out.foreign += r.foreign;
    out.ackAnomalies += r.ackAnomalies;
    out.impossibleAcks += r.impossibleAcks;
    for (const sample of r.ackAnomalySamples) {
      if (out.ackAnomalySamples.length < MAX_SAMPLES) out.ackAnomalySamples.push(sample);
    }
  }
  out.duplicatedPairs = duplicatedPairs.size;
  const lostPairs = new Set<string>();
  const empty = new SeqBitset();
  for (let sender = 1; sender <= spec.totalUsers; sender++) {
    const acked = ackedUpTo[sender]!;
    const written = sentUpTo[sender]!;
    const set = received.get(sender) ?? empty;
    out.sent += acked;
    out.attempted += written;
    out.unackedAtEnd += written - acked;
    const deliveredAcked = set.countRange(1, acked);
    out.delivered += set.countRange(1, set.max);
    out.deliveredUnacked += set.countRange(acked + 1, written);
    out.phantom += set.countRange(written + 1, set.max);
    if (deliveredAcked === acked) continue;
    out.lost += acked - deliveredAcked;
    for (let seq = 1; seq <= acked; seq++) {
      if (set.has(seq)) continue;
      const recipient = recipientOf(sender, seq, spec);
      lostPairs.add(`${sender}>${recipient}`);
      if (out.lostSamples.length < MAX_SAMPLES) out.lostSamples.push([sender, seq, recipient]);
    }
  }
  out.lostPairs = lostPairs.size;
  return out;
}

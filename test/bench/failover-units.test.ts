/**
 * The pure parts of the failover harness: the received-set bitmaps, the seeded workload, the
 * client-side XEP-0198 queue, the accounting merge, the attribution of disconnects to events,
 * the CPU per message of the load phase and the replication-cost summary.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { account } from "../../bench/failover/accounting.ts";
import { parseFailoverOptions } from "../../bench/failover/options.ts";
import {
  attributedEvent,
  quantileOf,
  type Sample,
  serverCostDuringLoad,
  serverCpuBetween,
} from "../../bench/failover/report.ts";
import type { EventRecord } from "../../bench/failover/scenarios.ts";
import type { GroupResult } from "../../bench/lib/failover-group.ts";
import { SeqBitset } from "../../bench/lib/seq-bitset.ts";
import { SmSession } from "../../bench/lib/sm-session.ts";
import { contactsOf, recipientOf, type WorkloadSpec } from "../../bench/lib/workload.ts";
import { type PairFigures, runFigures, summarise, summaryText } from "../../bench/replication-cost.ts";

test("SeqBitset counts ranges, merges, and survives its base64 form", () => {
  const a = new SeqBitset();
  for (const seq of [1, 2, 3, 9, 17, 100]) assert.equal(a.add(seq), true);
  assert.equal(a.add(9), false);
  assert.equal(a.countRange(1, 100), 6);
  assert.equal(a.countRange(3, 17), 3);
  assert.equal(a.countRange(101, 200), 0);
  const b = SeqBitset.fromBase64(a.toBase64());
  assert.equal(b.max, 100);
  assert.equal(b.countRange(1, 1000), 6);
  const c = new SeqBitset();
  c.add(4);
  c.add(5000);
  c.merge(b);
  assert.equal(c.countRange(1, 5000), 8);
  assert.equal(c.has(5000) && c.has(100) && !c.has(6), true);
});

test("workload recipients are deterministic, never the sender, and stay within roster groups", () => {
  const random: WorkloadSpec = { pattern: "random", seed: 3, totalUsers: 50, contacts: 10 };
  const roster: WorkloadSpec = { ...random, pattern: "roster" };
  for (let sender = 1; sender <= 50; sender++) {
    for (let seq = 1; seq <= 40; seq++) {
      const r = recipientOf(sender, seq, random);
      assert.ok(r >= 1 && r <= 50 && r !== sender);
      assert.equal(recipientOf(sender, seq, random), r);
      assert.ok(contactsOf(sender, roster).includes(recipientOf(sender, seq, roster)));
    }
  }
  assert.notEqual(
    [1, 2, 3, 4, 5].map((seq) => recipientOf(1, seq, random)).join(),
    [1, 2, 3, 4, 5].map((seq) => recipientOf(1, seq, { ...random, seed: 4 })).join(),
  );
  // 21 users in groups of 10: the lone 21st joins the group before it.
  assert.deepEqual(contactsOf(21, { ...roster, totalUsers: 21 }), [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
});

test("SmSession acknowledges in order, refuses impossible h, and hands back unacked messages", () => {
  const acked: number[] = [];
  const sm = new SmSession((tag) => acked.push(tag));
  sm.begin("id1", undefined);
  sm.push("<presence/>", -1);
  for (const seq of [1, 2, 3]) sm.push(`<message>${seq}</message>`, seq);
  assert.equal(sm.ack(2), true);
  assert.deepEqual(acked, [1]);
  assert.equal(sm.ack(9), false, "more than was sent");
  assert.equal(sm.impossibleAcks, 1);
  assert.equal(sm.unackedMessages, 2);
  const left = sm.abandon(3);
  assert.deepEqual(acked, [1, 2]);
  assert.deepEqual(
    left.map((e) => e.tag),
    [3],
  );
  assert.equal(sm.id, undefined);
  assert.equal(sm.unacked, 0);
});

function result(
  first: number,
  sentUpTo: number[],
  ackedUpTo: number[],
  received: [number, number[]][],
): GroupResult {
  const bits = received.map(([sender, seqs]): [number, string] => {
    const set = new SeqBitset();
    for (const s of seqs) set.add(s);
    return [sender, set.toBase64()];
  });
  return {
    first,
    count: sentUpTo.length,
    sentUpTo,
    ackedUpTo,
    unacked: sentUpTo.map((s, i) => s - ackedUpTo[i]!),
    received: bits,
    duplicates: 1,
    duplicateSamples: [[1, 2, 2]],
    duplicatePairs: [[1, 2]],
    outOfOrder: 0,
    misrouted: 0,
    foreign: 0,
    ackAnomalies: 0,
    impossibleAcks: 0,
    ackAnomalySamples: [],
    latency: { counts: [], total: 0, maxMs: 0 },
    perSecond: {
      sent: [],
      acked: [],
      delivered: [],
      duplicates: [],
      disconnects: [],
      resumed: [],
      relogged: [],
      latency: [],
    },
    disconnects: [],
    neverOnline: 0,
    offlineAtEnd: 0,
    failedAttempts: 0,
    attemptErrors: {},
    notOffered: 0,
    blocked: 0,
  };
}

test("account merges received sets across processes and finds lost, unacked and phantom messages", () => {
  const spec: WorkloadSpec = { pattern: "random", seed: 1, totalUsers: 3, contacts: 10 };
  // Sender 1 sent 5 (4 acked); sender 2 sent 3 (3 acked); sender 3 sent nothing.
  const g1 = result(1, [5, 3], [4, 3], [[1, [1, 2]]]);
  const g2 = result(
    3,
    [0],
    [0],
    [
      [1, [4, 5]],
      [2, [1, 2, 3, 7]],
    ],
  );
  const a = account([g1, g2], spec);
  assert.equal(a.sent, 7);
  assert.equal(a.attempted, 8);
  assert.equal(a.unackedAtEnd, 1);
  assert.equal(a.lost, 1, "sender 1's message 3 was acked and never received");
  assert.deepEqual(a.lostSamples, [[1, 3, recipientOf(1, 3, spec)]]);
  assert.equal(a.lostPairs, 1);
  assert.equal(a.deliveredUnacked, 1, "sender 1's message 5 arrived without its ack");
  assert.equal(a.phantom, 1, "sender 2 never sent a 7th message");
  assert.equal(a.delivered, 8);
  assert.equal(a.duplicated, 2);
  assert.equal(a.duplicatedPairs, 1);
});

test("disconnects are attributed to a failing event on their node within its window only", () => {
  const kill: EventRecord = { kind: "kill", nodes: [2], startMs: 10_000, endMs: 10_050, ok: true, steps: [] };
  const join: EventRecord = { kind: "join", nodes: [3], startMs: 20_000, endMs: 22_000, ok: true, steps: [] };
  const at = (node: number, atMs: number) => ({ user: 1, node, atMs, reason: "x", attempts: 1 });
  assert.equal(attributedEvent(at(2, 10_010), [kill, join]), kill);
  assert.equal(attributedEvent(at(1, 10_010), [kill, join]), undefined, "another node");
  assert.equal(attributedEvent(at(2, 9_000), [kill, join]), undefined, "before the kill");
  assert.equal(attributedEvent(at(2, 9_999), [kill, join]), undefined, "a millisecond before the kill");
  assert.equal(attributedEvent(at(2, 30_000), [kill, join]), undefined, "long after");
  assert.equal(attributedEvent(at(3, 21_000), [kill, join]), undefined, "a join is no failure");
  assert.equal(quantileOf([1, 2, 3, 4], 0.5), 2);
  assert.equal(quantileOf([1, 2, 3, 4], 0.99), 4);
  assert.equal(quantileOf([], 0.5), null);
});

test("server CPU between two times counts each sample's interval for its overlap only", () => {
  const live = {} as Sample["live"];
  const samples: Sample[] = [
    { atMs: 1_000, live, serverCores: [null, null], serverRssKib: [] },
    { atMs: 2_000, live, serverCores: [1, 0.5], serverRssKib: [] },
    { atMs: 4_000, live, serverCores: [2, null], serverRssKib: [] },
  ];
  // [1.5 s, 3 s]: half of the first interval at 1.5 cores, half of the second at 2.
  assert.equal(serverCpuBetween(samples, 1_500, 3_000), 0.75 + 2);
  assert.equal(serverCpuBetween(samples, 1_500, 3_000, 1), 0.25, "node 1 only");
  assert.equal(serverCpuBetween(samples, 5_000, 6_000), null, "after the last sample");
  const unsampled = samples.map((s) => ({ ...s, serverCores: [null, null] }));
  assert.equal(serverCpuBetween(unsampled, 0, 10_000), null, "no server sampled: unknown, not 0");
});

test("the CPU per message of the load phase covers the load's whole seconds, CPU and deliveries alike", () => {
  const live = {} as Sample["live"];
  // t0 = 0; one node at 1 core until 3 s, then 3 cores; the load runs from 1.4 s to 4.6 s.
  const samples: Sample[] = [0, 1, 2, 3, 4, 5].map((s) => ({
    atMs: s * 1000,
    live,
    serverCores: [s === 0 ? null : s <= 3 ? 1 : 3],
    serverRssKib: [],
  }));
  // Seconds 2 and 3 only (1.4 s and 4.6 s cut partial seconds): 1 + 3 CPU-s, 100 + 300 delivered.
  const delivered = [5, 50, 100, 300, 7, 9];
  assert.deepEqual(serverCostDuringLoad(samples, delivered, 0, 1_400, 4_600), { cpuS: 4, perThousand: 10 });
  assert.equal(serverCostDuringLoad(samples, delivered, 0, 1_400, 1_900), undefined, "no whole second");
  assert.equal(
    serverCostDuringLoad(samples, [0, 0, 0, 0, 0, 0], 0, 1_000, 4_000),
    undefined,
    "nothing delivered",
  );
});

test("bench --replication-factor reaches only the nodes the bench starts", () => {
  assert.equal(parseFailoverOptions("steady", [])?.replicationFactor, undefined, "the server's default");
  assert.equal(parseFailoverOptions("steady", ["--replication-factor", "1"])?.replicationFactor, 1);
  assert.throws(
    () => parseFailoverOptions("steady", ["--replication-factor", "0"]),
    /--replication-factor must be/,
  );
  assert.throws(
    () => parseFailoverOptions("steady", ["--target", "127.0.0.1:5222", "--replication-factor", "2"]),
    /only applies to the Starling nodes/,
  );
});

test("replication-cost: each pair's ratio, the medians, and the verdict on the medians", () => {
  const run = (cpuPerThousand: number, p99Ms: number, lost = 0) => ({
    cpuPerThousand,
    p50Ms: 1,
    p99Ms,
    sent: 1000,
    lost,
    duplicated: 0,
  });
  const pair = (f2: number, f1: number, p99 = 15, lost = 0): PairFigures => ({
    replicated: run(f2, p99, lost),
    unreplicated: run(f1, 10),
    ratio: f2 / f1,
  });
  const pairs = [pair(1.2, 1.0), pair(1.4, 1.0, 25), pair(1.25, 1.0)];
  const s = summarise(pairs);
  assert.equal(s.medianRatio, 1.25);
  assert.equal(s.pairsWithinRatio, 2);
  assert.equal(s.medianP99Ms, 15);
  assert.equal(s.pairsWithinP99, 2);
  assert.equal(s.targetMet, true);
  assert.match(summaryText(pairs), /median ratio 1\.25 \(1\.20–1\.40\); 2 of 3 pairs at most 1\.3×/);
  assert.match(summaryText(pairs), /: met\n$/);
  assert.match(
    summaryText([pair(1.2, 1.0, 20.9), pair(1.2, 1.0, 22.41)]),
    /median p99 21\.66 ms with replication, 10 ms without/,
    "a median of two latencies is rounded as the reports round them",
  );
  assert.equal(summarise([...pairs, pair(1.4, 1.0), pair(1.45, 1.0)]).targetMet, false, "median ratio 1.4");
  assert.equal(summarise([pair(1.2, 1.0, 15, 1)]).targetMet, false, "a lost message fails it");
  assert.equal(summarise([pair(1.2, 1.0), pair(1.0, 1.0), pair(1.1, 1.0), pair(1.3, 1.0)]).medianRatio, 1.15);
});

test("replication-cost reads a run's figures only when every node ran with the factor asked for", () => {
  const report = {
    server_cpu_s_per_1000_msgs: 1.1,
    latency_p50_ms: 1.2,
    latency_p99_ms: 15,
    sent: 100,
    lost: 0,
    duplicated: 0,
    per_node: [{ replication_factor: 2 }, { replication_factor: 2 }],
  };
  assert.equal(runFigures(report, 2).cpuPerThousand, 1.1);
  assert.throws(() => runFigures(report, 1), /factor 1 had a node with factor 2/);
  assert.throws(
    () => runFigures({ ...report, per_node: [{ replication_factor: 2 }, { replication_factor: null }] }, 2),
    /with factor null/,
  );
  assert.throws(
    () => runFigures({ ...report, server_cpu_s_per_1000_msgs: null }, 2),
    /no server_cpu_s_per_1000_msgs/,
  );
});

/**
 * Session replication as plain state machines (src/cluster/session-replicas.ts): where copies
 * go, what a replica accepts and refuses, which copy is promoted when an owner dies.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { applySessionChange, newSessionState, type SessionChange } from "../../actors/session-state.ts";
import { mainShardOf, shardNumber } from "../../src/cluster/ring.ts";
import {
  placeReplicas,
  ReplicaHost,
  ReplicaStream,
  ReplicaStreams,
  type ReplicationSender,
} from "../../src/cluster/session-replicas.ts";
import { createLogger } from "../../src/log.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";

type Sent = Parameters<ReplicationSender["send"]>[1];

/** Shards wired to each other by hand: `deliver` moves what was sent, in order. */
function network() {
  const queue: { from: number; to: number; envelope: Sent }[] = [];
  const hosts = new Map<number, ReplicaHost>();
  const streams = new Map<number, ReplicaStreams>();
  const flushes: (() => void)[] = [];
  /** What streams deferred, run by {@link runLater} only (as the worker's batch timer). */
  const later: (() => void)[] = [];
  let streamNo = 0;
  const sender = (self: number): ReplicationSender => ({
    self,
    send: (to, envelope) => queue.push({ from: self, to, envelope }),
    later: (flush) => later.push(flush),
    // As batchLater: a change sent at once takes every deferred flush of the shard along.
    now: () => {
      for (const flush of later.splice(0)) flush();
    },
  });
  const log = createLogger({ level: "silent" });
  return {
    queue,
    host(shard: number) {
      const host = new ReplicaHost(sender(shard), log, (flush) => flushes.push(flush));
      hosts.set(shard, host);
      return host;
    },
    stream(owner: number, replicas: number[], onAcked: (lsn: number) => void = () => {}, token = "tok") {
      const state = newSessionState("a@x/r" as FullJid, token);
      const stream = new ReplicaStream(
        sender(owner),
        token,
        `s${owner}.${++streamNo}`,
        replicas,
        state,
        onAcked,
      );
      const registry = streams.get(owner) ?? new ReplicaStreams();
      streams.set(owner, registry);
      registry.add(stream, state);
      return { stream, state };
    },
    /** The batch timer fires: deferred changes go out. */
    runLater() {
      for (const flush of later.splice(0)) flush();
    },
    /** Delivers everything queued (and the acks it causes), optionally dropping some. */
    deliver(drop: (m: { from: number; to: number; envelope: Sent }) => boolean = () => false) {
      while (queue.length > 0 || flushes.length > 0) {
        for (const m of queue.splice(0)) {
          if (drop(m)) continue;
          const e = m.envelope;
          if (e.t === "rep") hosts.get(m.to)?.receive(e);
          else if (e.t === "rep-end") hosts.get(m.to)?.end(e.token, e.owner, e.stream);
          else streams.get(m.to)?.acked(e.from, e.acks);
        }
        for (const flush of flushes.splice(0)) flush();
      }
    },
  };
}

test("copies go to the main threads of the next nodes in ring order; on one node to the next worker", () => {
  const shards = [1, 2, 3].flatMap((node) => [shardNumber(node, 0), shardNumber(node, 1)]);
  assert.deepEqual(
    placeReplicas(shardNumber(3, 1), shards, 3),
    [mainShardOf(1), mainShardOf(2)],
    "node 3's successors are nodes 1 then 2, each on its main thread",
  );
  assert.deepEqual(placeReplicas(shardNumber(1, 0), shards, 2), [mainShardOf(2)], "factor 2: one copy");
  assert.deepEqual(placeReplicas(shardNumber(1, 0), shards, 1), [], "factor 1: no copy");
  assert.deepEqual(placeReplicas(1, [0, 1, 2], 2), [2], "one node: the next worker");
  assert.deepEqual(placeReplicas(2, [0, 1, 2], 2), [0], "one node: the next worker, wrapping");
  assert.deepEqual(placeReplicas(0, [0], 2), [], "one worker alone: nowhere to copy");
});

test("a replica applies the owner's changes in order and acknowledges them", () => {
  const net = network();
  const replica = net.host(1024);
  const acked: number[] = [];
  const { stream, state } = net.stream(0, [1024], (lsn) => acked.push(lsn));
  const changes: SessionChange[] = [
    { c: "out", xml: "<message>1</message>", storable: true, key: "k1" },
    { c: "out", xml: "<message>2</message>", storable: true },
    { c: "in", handledIn: 3 },
    { c: "ack", h: 1 },
  ];
  for (const change of changes) stream.push(applySessionChange(state, change) && change);
  net.deliver();
  assert.equal(stream.ackedLsn, 5, "the initial state (1) and four changes");
  assert.equal(acked.at(-1), 5);
  const [promoted] = replica.promote((s) => s === 0);
  assert.ok(promoted);
  assert.equal(promoted.stream, stream.id);
  assert.equal(promoted.lsn, 5, "the copy says how much of the stream it holds");
  const copy = promoted.state;
  assert.equal(copy.sentOut, 2);
  assert.equal(copy.handledIn, 3);
  assert.deepEqual(
    copy.unacked,
    [[2, "<message>2</message>", true]],
    "what the client acknowledged is trimmed",
  );
  assert.deepEqual(copy.dedupe, ["k1"]);
});

test("deferred counts wait for the batch timer, a newer one replacing the older, and then go in one batch", () => {
  const net = network();
  const replica = net.host(1024);
  const acked: number[] = [];
  const { stream, state } = net.stream(0, [1024], (lsn) => acked.push(lsn));
  net.deliver();
  const out: SessionChange = { c: "out", xml: "<message>1</message>", storable: true };
  applySessionChange(state, out);
  stream.push(out);
  net.deliver();
  const first = stream.pushDeferred({ c: "in", handledIn: 1 });
  const second = stream.pushDeferred({ c: "in", handledIn: 2 });
  assert.equal(second, first, "the newer count took the waiting one's place");
  const ack = stream.pushDeferred({ c: "ack", h: 1 });
  assert.equal(ack, first + 1);
  assert.equal(net.queue.length, 0, "nothing sent before the timer");
  net.deliver();
  assert.equal(replica.copyOf("tok")?.handledIn, 0);
  assert.ok(stream.ackedLsn < ack, "not held by the replica yet");
  net.runLater();
  assert.equal(net.queue.length, 2, "two changes, sent together");
  net.deliver();
  assert.equal(stream.ackedLsn, ack);
  assert.equal(acked.at(-1), ack);
  assert.equal(replica.copyOf("tok")?.handledIn, 2, "the replica holds the newest count");
  assert.deepEqual(replica.copyOf("tok")?.unacked, [], "and the client's acknowledgement");
  assert.equal(replica.stats.refused, 0);
});

test("a change that cannot wait takes the deferred ones along, in lsn order", () => {
  const net = network();
  const replica = net.host(1024);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  const counted = stream.pushDeferred({ c: "in", handledIn: 1 });
  const out: SessionChange = { c: "out", xml: "<message>1</message>", storable: true };
  applySessionChange(state, out);
  const written = stream.push(out);
  assert.equal(written, counted + 1);
  assert.deepEqual(
    net.queue.map((m) => (m.envelope.t === "rep" ? [m.envelope.lsn, m.envelope.change.c] : [])),
    [
      [counted, "in"],
      [written, "out"],
    ],
  );
  net.deliver();
  assert.equal(stream.ackedLsn, written, "no gap at the replica");
  assert.equal(replica.copyOf("tok")?.handledIn, 1);
  net.runLater();
  assert.equal(net.queue.length, 0, "the timer finds nothing left to send");
});

test("another session's change that cannot wait takes this one's deferred count along, in the same batch", () => {
  const net = network();
  const replica = net.host(1024);
  const counting = net.stream(0, [1024], () => {}, "counting");
  const writing = net.stream(0, [1024], () => {}, "writing");
  net.deliver();
  const counted = counting.stream.pushDeferred({ c: "in", handledIn: 1 });
  assert.equal(net.queue.length, 0, "the count waits");
  const out: SessionChange = { c: "out", xml: "<message>1</message>", storable: true };
  applySessionChange(writing.state, out);
  writing.stream.push(out);
  assert.deepEqual(
    net.queue.map((m) => (m.envelope.t === "rep" ? [m.envelope.token, m.envelope.change.c] : [])),
    [
      ["counting", "in"],
      ["writing", "out"],
    ],
    "both go now, to the one replica all of the shard's sessions have",
  );
  net.deliver();
  assert.equal(counting.stream.ackedLsn, counted);
  assert.equal(replica.copyOf("counting")?.handledIn, 1);
  net.runLater();
  assert.equal(net.queue.length, 0, "the timer finds nothing left to send");
});

test("a re-seat sends what was deferred to the replicas it keeps before the new state", () => {
  const net = network();
  const kept = net.host(1024);
  net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  state.handledIn = 1;
  stream.pushDeferred({ c: "in", handledIn: 1 });
  stream.reseat([1024, 2048], state);
  net.runLater();
  net.deliver();
  assert.equal(kept.stats.refused, 0, "the kept replica saw no gap");
  assert.equal(kept.copyOf("tok")?.handledIn, 1);
  assert.equal(stream.ackedLsn, stream.lsn, "both replicas hold everything");
});

test("a replica refuses a change after a gap, and every change of an owner that is not the copy's", () => {
  const net = network();
  const replica = net.host(1024);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  const change: SessionChange = { c: "out", xml: "<m/>", storable: false };
  applySessionChange(state, change);
  stream.push(change);
  net.deliver(() => true); // lost on the way
  applySessionChange(state, change);
  stream.push(change);
  net.deliver();
  assert.equal(stream.ackedLsn, 1, "lsn 3 after a missing 2 is not acknowledged");
  assert.equal(replica.stats.refused, 1);
  // A zombie: the same token from another owner than the one that initialised the copy.
  replica.receive({ t: "rep", token: "tok", owner: 2048, stream: "s2048.9", lsn: 4, change });
  assert.equal(replica.stats.refused, 2);
});

test("re-initialising one replica does not open a gap for the others", () => {
  const net = network();
  const first = net.host(1024);
  net.host(2048);
  const { stream, state } = net.stream(0, [1024, 2048]);
  net.deliver();
  stream.reinit(2048, state); // that worker restarted
  const change: SessionChange = { c: "out", xml: "<m/>", storable: true };
  applySessionChange(state, change);
  stream.push(change);
  net.deliver();
  assert.equal(first.stats.refused, 0);
  assert.equal(stream.ackedLsn, stream.lsn, "both replicas hold the latest change");
});

test("when the owner dies, only the first live replica of the copy promotes it", () => {
  const net = network();
  const a = net.host(1024);
  const b = net.host(2048);
  net.stream(0, [1024, 2048]);
  net.deliver();
  const ownerDead = (s: number) => s === 0;
  assert.equal(b.promote(ownerDead).length, 0, "the second replica waits");
  assert.equal(a.promote(ownerDead).length, 1, "the first promotes");
  const bothDead = (s: number) => s === 0 || s === 1024;
  assert.equal(b.promote(bothDead).length, 1, "if the first died too, the second promotes");
});

test("a resumption may take a replica only once the owner is known dead, and only the heir's", () => {
  const net = network();
  const a = net.host(1024);
  net.stream(0, [1024]);
  net.deliver();
  assert.equal(
    a.takeForResume("tok", "a@x", () => false),
    "pending",
  );
  assert.equal(
    a.takeForResume("tok", "b@x", (s) => s === 0),
    undefined,
    "another user's id gives nothing",
  );
  const taken = a.takeForResume("tok", "a@x", (s) => s === 0);
  assert.ok(taken !== undefined && taken !== "pending");
  assert.equal(taken.state.moves, 1, "a move, so a stale registration from before loses");
  assert.equal(taken.lsn, 1, "with the lsn it held, for the registration's choice between copies");
  assert.equal(a.stats.held, 0);
});

test("a session resumed on the worker that held it: the old stream's late acknowledgements do not count", () => {
  const net = network();
  net.host(1024);
  const old = net.stream(0, [1024]);
  const change: SessionChange = { c: "out", xml: "<m/>", storable: true };
  for (let i = 0; i < 5; i++) old.stream.push(applySessionChange(old.state, change) && change);
  // The replica's acknowledgement of the old stream is still on its way...
  const late: Sent[] = [];
  net.deliver((m) => {
    if (m.envelope.t !== "rep-ack") return false;
    late.push(m.envelope);
    return true;
  });
  old.stream.end();
  // ...when the session, resumed on the same worker, streams again under the same token.
  const acked: number[] = [];
  const fresh = net.stream(0, [1024], (lsn) => acked.push(lsn));
  for (const envelope of late) net.queue.push({ from: 1024, to: 0, envelope });
  net.deliver();
  for (let i = 0; i < 2; i++) fresh.stream.push(applySessionChange(fresh.state, change) && change);
  net.deliver();
  assert.deepEqual(acked, [1, 3], "the new stream hears its own replica's acknowledgements");
  assert.equal(fresh.stream.ackedLsn, 3);
});

test("a replica that stopped acknowledging (a change lost with a dropped link queue) gets the state again", () => {
  const net = network();
  const replica = net.host(1024);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  const change: SessionChange = { c: "out", xml: "<m/>", storable: true };
  stream.push(applySessionChange(state, change) && change);
  net.deliver(() => true); // the link's queue overflowed and was dropped
  stream.push(applySessionChange(state, change) && change);
  net.deliver();
  assert.equal(stream.ackedLsn, 1, "refused after the gap");
  const later = Date.now() + 5_000;
  assert.deepEqual(stream.lagging(later, 3_000), [1024], "behind and silent for 3 s");
  for (const shard of stream.lagging(later, 3_000)) stream.reinit(shard, state, later);
  net.deliver();
  assert.equal(stream.ackedLsn, stream.lsn, "the replica holds everything again");
  const [copy] = replica.promote((s) => s === 0);
  assert.equal(copy?.state.sentOut, 2);
});

test("a copy promoted here refuses a re-initialisation from its old owner's stream (a zombie that woke up)", () => {
  const net = network();
  const replica = net.host(1024);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  assert.equal(replica.promote((s) => s === 0).length, 1);
  stream.reinit(1024, state);
  net.deliver();
  assert.equal(replica.stats.held, 0, "no copy started again");
  assert.equal(stream.ackedLsn, 0, "the zombie's state is not acknowledged");
});

test("a re-seat keeps the replaced replica until the new one holds the session (make before break)", () => {
  const net = network();
  const old = net.host(1024);
  net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  const write = (xml: string) => {
    const change: SessionChange = { c: "out", xml, storable: true };
    applySessionChange(state, change);
    return stream.push(change);
  };
  write("<message>1</message>");
  net.deliver();
  // A node joins: the successor is now 2048, whose link is cut for a while.
  stream.reseat([2048], state);
  assert.deepEqual(stream.leaving, [1024]);
  const lsn = write("<message>2</message>");
  net.deliver((m) => m.to === 2048);
  assert.ok(stream.ackedLsn < lsn, "not acknowledged until the new replica holds it too");
  assert.equal(old.copyOf("tok")?.sentOut, 2, "the replaced replica still follows the stream");
  // The owner dies now: the replaced replica's copy, the only one, is promoted.
  const [promoted] = old.promote((s) => s === 0);
  assert.equal(promoted?.state.sentOut, 2);
});

test("the replaced replica drops its copy once the new one holds the session", () => {
  const net = network();
  const old = net.host(1024);
  const next = net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  stream.reseat([2048], state);
  net.deliver();
  assert.deepEqual(stream.leaving, [], "ended once 2048 acknowledged the state");
  assert.equal(old.copyOf("tok"), undefined);
  assert.ok(next.copyOf("tok"));
  assert.equal(stream.ackedLsn, stream.lsn);
  // Without make before break the copy was ended at the re-seat: a death before 2048 held it
  // left no copy anywhere (sim seed 7603).
});

test("a replaced replica on a node that died is dropped at once, not waited for", () => {
  const net = network();
  net.host(1024);
  net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  stream.reseat([2048], state, (s) => s === 1024);
  assert.deepEqual(stream.leaving, []);
  net.deliver();
  assert.equal(stream.ackedLsn, stream.lsn);
});

test("a copy promoted from less of a stream does not overwrite a replica that holds more", () => {
  const net = network();
  const stale = net.host(1024);
  const heir = net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  stream.reseat([2048], state);
  net.deliver((m) => m.to === 1024); // the rep-end to the replaced replica is lost
  const change: SessionChange = { c: "out", xml: "<message>1</message>", storable: true };
  applySessionChange(state, change);
  stream.push(change);
  net.deliver((m) => m.to === 1024);
  assert.equal(heir.copyOf("tok")?.sentOut, 1);
  // The owner dies; the stale replica applies the death first and promotes its copy, whose new
  // stream initialises its own replica: the heir, which holds more of the same stream.
  const [promoted] = stale.promote((s) => s === 0);
  assert.ok(promoted);
  assert.equal(promoted.state.sentOut, 0);
  const promotedStream = new ReplicaStream(
    { self: 1024, send: (to, envelope) => net.queue.push({ from: 1024, to, envelope }) },
    "tok",
    "s1024.1",
    [2048],
    promoted.state,
    () => {},
    Date.now,
    { stream: promoted.stream, lsn: promoted.lsn },
  );
  net.deliver();
  assert.equal(heir.copyOf("tok")?.sentOut, 1, "refused: the heir keeps the copy that holds more");
  assert.equal(heir.stats.refused, 1);
  assert.ok(promotedStream.ackedLsn < promotedStream.lsn);
  const [better] = heir.promote((s) => s === 0);
  assert.equal(better?.state.sentOut, 1, "and promotes it itself");
});

test("the replication lag counts what a replica lacks, and how long it has been silent while behind", () => {
  const net = network();
  net.host(1024);
  net.host(2048);
  let now = 1_000_000;
  const state = newSessionState("a@x/r" as FullJid, "lag");
  const stream = new ReplicaStream(
    { self: 0, send: (to, envelope) => net.queue.push({ from: 0, to, envelope }) },
    "lag",
    "s0.lag",
    [1024, 2048],
    state,
    () => {},
    () => now,
  );
  const streams = new ReplicaStreams();
  streams.add(stream, state);
  assert.deepEqual(streams.lag(now), { changes: 1, stalledMs: 0 }, "the initial state is not held yet");
  for (const n of [1, 2, 3]) {
    const change: SessionChange = { c: "out", xml: `<message>${n}</message>`, storable: true };
    stream.push(applySessionChange(state, change) && change);
  }
  // The owner's acknowledgements are handed to its streams here (the network knows no owner 0).
  const deliver = (drop: (to: number) => boolean) =>
    net.deliver((m) => {
      if (drop(m.to)) return true;
      if (m.envelope.t === "rep-ack" && m.to === 0) streams.acked(m.envelope.from, m.envelope.acks);
      return m.to === 0;
    });
  // Replica 2048 hears nothing (its link dropped what it held); 1024 acknowledges everything.
  deliver((to) => to === 2048);
  now += 4_500;
  assert.deepEqual(streams.lag(now), { changes: 4, stalledMs: 4_500 }, "2048 lacks all four changes");
  stream.reinit(2048, state);
  deliver(() => false);
  assert.deepEqual(streams.lag(now), { changes: 0, stalledMs: 0 }, "caught up");
  // Quiet for a minute, then a change: the replicas are behind, but not silent yet.
  now += 60_000;
  stream.pushDeferred({ c: "in", handledIn: 1 });
  assert.deepEqual(stream.lagging(now, 3_000), [], "a change still on its way is not lost");
  assert.deepEqual(streams.lag(now), { changes: 1, stalledMs: 0 });
  now += 3_000;
  assert.deepEqual(stream.lagging(now, 3_000), [1024, 2048], "silent for 3 s while behind");
});

/** A stream replicated on 1024, re-seated to [2048, 1024]: 2048 added, first in placement order. */
function reseatedToAddedFirst() {
  const net = network();
  const kept = net.host(1024);
  const added = net.host(2048);
  const { stream, state } = net.stream(0, [1024]);
  net.deliver();
  stream.reseat([2048, 1024], state);
  return { net, kept, added, stream, state };
}

test("a re-seat's lists name an added replica last until it holds the state", () => {
  const { net, kept, added } = reseatedToAddedFirst();
  // What is sent to the added replica is lost (the owner dies a moment later, say), what is sent
  // to the kept one arrives.
  net.deliver((m) => m.to === 2048);
  const ownerDead = (s: number) => s === 0;
  assert.equal(added.promote(ownerDead).length, 0, "the added replica holds nothing");
  assert.equal(kept.promote(ownerDead).length, 1, "the kept one is named first for now: it promotes");
});

test("once the added replica holds the state, every replica learns the list in placement order", () => {
  const { net, kept, added, stream } = reseatedToAddedFirst();
  net.deliver();
  assert.equal(stream.ackedLsn, stream.lsn, "both hold everything");
  const ownerDead = (s: number) => s === 0;
  assert.equal(kept.promote(ownerDead).length, 0, "the kept one now defers to the added heir");
  assert.equal(added.promote(ownerDead).length, 1, "the heir promotes");
});

test("a replica that missed a re-seat's list is behind, and is re-initialised with the list", () => {
  const { net, kept, stream, state } = reseatedToAddedFirst();
  // The final list reaches the added replica but not the kept one.
  net.deliver((m) => m.to === 1024 && m.envelope.t === "rep" && m.envelope.lsn > 2);
  assert.ok(stream.ackedLsn < stream.lsn, "the kept replica has not acknowledged the list");
  const later = Date.now() + 10_000;
  assert.deepEqual(stream.lagging(later, 3_000), [1024]);
  stream.reinit(1024, state, later);
  net.deliver();
  assert.equal(stream.ackedLsn, stream.lsn);
  assert.equal(kept.promote((s) => s === 0).length, 0, "it knows the heir is the added replica");
});

test("a copy handed out is kept for its taker 15 minutes at most: then its death gives nothing back", () => {
  let now = 0;
  const log = createLogger({ level: "silent" });
  const host = new ReplicaHost(
    { self: 1024, send() {} },
    log,
    () => {},
    () => now,
  );
  const init = (token: string) =>
    host.receive({
      t: "rep",
      token,
      owner: 0,
      stream: `0.o.${token}`,
      lsn: 1,
      change: { c: "init", state: newSessionState("a@x/r" as FullJid, token) },
      replicas: [1024],
    });
  init("t1");
  init("t2");
  const ownerDead = (s: number) => s === 0;
  assert.ok(typeof host.takeForResume("t1", "a@x", ownerDead, "2048.w.") === "object");
  now += 15 * 60_000;
  // The next hand-out prunes what waited that long for its confirmation.
  assert.ok(typeof host.takeForResume("t2", "a@x", ownerDead, "2048.w.") === "object");
  assert.equal(
    host.restore((taker) => taker === "2048.w."),
    1,
    "only the copy handed out since",
  );
  assert.equal(host.takeForResume("t1", "a@x", ownerDead), undefined, "the pruned one is gone");
});

/** A replica (main shard 2047) fed initial states by hand: `ownerDead` as ReplicaHost takes it. */
function replicaFedByHand(ownerDead?: (owner: number) => boolean) {
  const log = createLogger({ level: "silent" });
  const replica = new ReplicaHost({ self: 2047, send() {} }, log, () => {}, Date.now, ownerDead);
  /** An init of session "tok" from `owner`'s stream, with `origin` for a promoted copy's. */
  const init = (
    owner: number,
    stream: string,
    copy: { moves: number; sentOut: number },
    origin?: { stream: string; lsn: number },
  ) =>
    replica.receive({
      t: "rep",
      token: "tok",
      owner,
      stream,
      lsn: 1,
      change: { c: "init", state: { ...newSessionState("a@x/r" as FullJid, "tok"), ...copy } },
      replicas: [2047],
      ...(origin === undefined ? {} : { origin }),
    });
  return { replica, init };
}

test("a copy promoted from another stream does not replace, at an equal move count, a session a client resumed", () => {
  const { replica, init } = replicaFedByHand();
  // The session its taker resumed from a lender (moves 1), 8 stanzas on.
  init(4096, "4096.a.1", { moves: 1, sentOut: 8 });
  // The lender's node died and its heir promoted the lender's copy (moves 1 too), 3 stanzas on:
  // the UserActor keeps the resumed session and ends the promoted one (sim seed 63292).
  init(3072, "3072.b.1", { moves: 1, sentOut: 3 }, { stream: "2049.c.1", lsn: 7 });
  assert.equal(replica.copyOf("tok")?.sentOut, 8, "the resumed session's copy stays");
  replica.end("tok", 3072, "3072.b.1");
  assert.equal(replica.copyOf("tok")?.sentOut, 8, "and the promoted one's end does not drop it");
  const [heir] = replica.promote((s) => s === 4096);
  assert.equal(heir?.state.sentOut, 8, "if the resumed session's worker dies, its copy is promoted");
});

test("a promoted copy's stream still replaces a promoted copy's, or one with fewer moves", () => {
  const { replica, init } = replicaFedByHand();
  init(3072, "1024.a.1", { moves: 1, sentOut: 1 });
  init(3072, "3072.b.1", { moves: 2, sentOut: 2 }, { stream: "2049.c.1", lsn: 7 });
  assert.equal(replica.copyOf("tok")?.moves, 2, "more moves win");
  init(3072, "3072.b.2", { moves: 2, sentOut: 3 }, { stream: "2049.d.1", lsn: 9 });
  assert.equal(replica.copyOf("tok")?.sentOut, 3, "between two promoted copies' streams, the newer init");
  assert.equal(replica.stats.refused, 0);
});

test("once the resumed session's owner is known dead, a promoted copy's init replaces its copy", () => {
  let ownerDead = false;
  const { replica, init } = replicaFedByHand((owner) => ownerDead && owner === 4096);
  init(4096, "4096.a.1", { moves: 1, sentOut: 8 });
  init(3072, "3072.b.1", { moves: 1, sentOut: 3 }, { stream: "2049.c.1", lsn: 7 });
  assert.equal(replica.copyOf("tok")?.sentOut, 8, "refused while the resumed session's owner lives");
  // Its node died, and this replica is not its heir: the promoted copy wins at the UserActor, and
  // a refusal now would leave its stream unacknowledged here for good.
  ownerDead = true;
  init(3072, "3072.b.1", { moves: 1, sentOut: 3 }, { stream: "2049.c.1", lsn: 7 });
  assert.equal(replica.copyOf("tok")?.sentOut, 3);
});

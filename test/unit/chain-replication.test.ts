/**
 * Chain replication as plain state machines (src/cluster/session-replicas.ts `ReplicaHost.chain`):
 * a write to a session goes through its only replica, which keeps it until the owner's changes
 * say what became of it; a promotion appends the writes the owner did not settle, each once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { SessionMessage } from "../../actors/messages.ts";
import {
  applySessionChange,
  type DeferrableChange,
  newSessionState,
  type SessionSnapshot,
} from "../../actors/session-state.ts";
import { mainShardOf, shardNumber } from "../../src/cluster/ring.ts";
import {
  MAX_CHAINED_WRITES,
  type PromotedCopy,
  ReplicaHost,
  ReplicaStream,
  type ReplicationSender,
} from "../../src/cluster/session-replicas.ts";
import { createLogger } from "../../src/log.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";

type Sent = Parameters<ReplicationSender["send"]>[1];
type Write = Extract<SessionMessage, { kind: "write" }>;

const OWNER = shardNumber(0, 0);
const REPLICA = mainShardOf(1);
const FULL = "a@x/r" as FullJid;

/** An owner stream and its one replica host, wired by hand: `deliver` moves what was sent. */
function pair(options: { lazyAckMs?: number } = {}) {
  const queue: { to: number; envelope: Sent }[] = [];
  const later: (() => void)[] = [];
  const flushes: (() => void)[] = [];
  let onSent: (() => void) | undefined;
  const sender = (self: number): ReplicationSender => ({
    self,
    send: (to, envelope) => {
      queue.push({ to, envelope });
      onSent?.();
    },
    later: (flush) => later.push(flush),
    now: () => {
      for (const flush of later.splice(0)) flush();
    },
  });
  const log = createLogger({ level: "silent" });
  let ownerDead = false;
  const host = new ReplicaHost(
    sender(REPLICA),
    log,
    (flush) => flushes.push(flush),
    Date.now,
    () => ownerDead,
    "host-1",
    options.lazyAckMs ?? 0,
  );
  const state = newSessionState(FULL, "tok");
  const acks: number[] = [];
  const stream = new ReplicaStream(sender(OWNER), "tok", "s0.1", [REPLICA], state, (lsn) => acks.push(lsn));
  const deliver = () => {
    while (queue.length > 0 || flushes.length > 0) {
      for (const { envelope } of queue.splice(0)) {
        if (envelope.t === "rep") host.receive(envelope);
        else if (envelope.t === "rep-ack") stream.acked(envelope.from, envelope.acks.map((a) => a[2])[0]!);
      }
      for (const flush of flushes.splice(0)) flush();
    }
  };
  deliver();
  return {
    host,
    stream,
    state,
    queue,
    acks,
    deliver,
    /** Resolves when either side sends something next. */
    sent: () =>
      new Promise<void>((resolve) => {
        onSent = () => {
          onSent = undefined;
          resolve();
        };
      }),
    /** The batch timer fires: the owner's deferred changes go. */
    runLater: () => {
      for (const flush of later.splice(0)) flush();
    },
    /** The owner writes a write the replica passed on, as SessionActor #writeChained does. */
    ownerWrites(write: Write) {
      const chain = write.chain;
      assert.ok(chain !== undefined, "the replica passed it on");
      const change: DeferrableChange = {
        c: "out",
        xml: write.xml,
        storable: true,
        key: write.dedupe!,
        chain: { via: chain.via, seq: chain.seq },
      };
      applySessionChange(state, change);
      stream.pushDeferred(change);
    },
    /** The owner takes it otherwise (an ordinary write, or a re-sent copy): `unchain`. */
    ownerUnchains(write: Write) {
      const chain = write.chain!;
      const change: DeferrableChange = { c: "unchain", chain: { via: chain.via, seq: chain.seq } };
      applySessionChange(state, change);
      stream.pushDeferred(change);
    },
    /** The owner's node dies: the replica promotes its copy. */
    promote(): PromotedCopy {
      ownerDead = true;
      const [copy] = host.promote((shard) => shard === OWNER);
      assert.ok(copy !== undefined, "the only replica promotes the copy");
      return copy;
    },
  };
}

function write(n: number, key = `k${n}`): Write {
  return {
    kind: "write",
    full: FULL,
    sid: "0.ab.1",
    xml: `<message id="m${n}"/>`,
    isMessage: true,
    dedupe: key,
  };
}

const logOf = (state: SessionSnapshot) => state.unacked.map(([seq, xml]) => `${seq}:${xml}`);

test("a write through the only replica is marked for the owner and kept until it is settled", () => {
  const p = pair();
  const passed = p.host.chain(OWNER, write(1));
  assert.deepEqual(passed.chain, { via: "host-1.1", seq: 1, replica: REPLICA, stream: "s0.1" });
  p.ownerWrites(passed);
  // The owner's deferred change has not left: the copy lacks the write, but holds it aside.
  const copy = p.promote();
  assert.deepEqual(logOf(copy.state), ['1:<message id="m1"/>'], "the promotion appends the kept write");
  assert.deepEqual(copy.state.dedupe, ["k1"], "with its key: a re-sent copy is dropped");
});

test("the owner's changes settle the writes they name: a promotion then appends nothing twice", () => {
  const p = pair();
  const first = p.host.chain(OWNER, write(1));
  const second = p.host.chain(OWNER, write(2));
  const third = p.host.chain(OWNER, write(3));
  p.ownerWrites(first);
  p.ownerUnchains(second); // the owner wrote it as an ordinary write: its `out` has the key
  applySessionChange(p.state, { c: "out", xml: second.xml, storable: true, key: "k2" });
  p.stream.push({ c: "out", xml: second.xml, storable: true, key: "k2" });
  p.ownerWrites(third);
  p.runLater();
  p.deliver();
  // Settled, they are no longer kept: the copy has room for a whole window of new ones.
  for (let n = 0; n < MAX_CHAINED_WRITES; n++) {
    const next = p.host.chain(OWNER, write(100 + n));
    assert.ok(next.chain, `write ${n} of a full window is kept`);
    p.ownerWrites(next);
  }
  p.runLater();
  p.deliver();
  const copy = p.promote();
  assert.deepEqual(logOf(copy.state).slice(0, 3), [
    '1:<message id="m1"/>',
    '2:<message id="m2"/>',
    '3:<message id="m3"/>',
  ]);
  assert.equal(copy.state.unacked.length, 3 + MAX_CHAINED_WRITES, "each write once");
  assert.deepEqual(copy.state.chained, { via: "host-1.1", seq: 3 + MAX_CHAINED_WRITES });
});

test("writes the owner did not take are appended in the order it takes them, after what it settled", () => {
  const p = pair();
  const first = p.host.chain(OWNER, write(1));
  p.host.chain(OWNER, write(2)); // lost on its way to the owner, or taken after its last change
  p.host.chain(OWNER, write(3));
  p.ownerWrites(first);
  p.runLater();
  p.deliver();
  const copy = p.promote();
  assert.deepEqual(logOf(copy.state), [
    '1:<message id="m1"/>',
    '2:<message id="m2"/>',
    '3:<message id="m3"/>',
  ]);
});

test("a kept write whose key the copy holds is a re-sent copy: not appended", () => {
  const p = pair();
  const original = p.host.chain(OWNER, write(1, "same"));
  p.ownerWrites(original);
  p.runLater();
  p.deliver();
  // The router re-sent it (its accept was late); the owner dropped it, but died before saying so.
  p.host.chain(OWNER, write(2, "same"));
  const copy = p.promote();
  assert.deepEqual(logOf(copy.state), ['1:<message id="m1"/>']);
});

test("a write is passed on unmarked when the copy cannot hold it for the owner", () => {
  const p = pair();
  const unkeyed = { ...write(1) };
  delete unkeyed.dedupe;
  assert.equal(p.host.chain(OWNER, unkeyed).chain, undefined, "no dedupe key: a promotion could double it");
  assert.equal(p.host.chain(shardNumber(2, 0), write(2)).chain, undefined, "another owner's session");
  assert.equal(p.host.chain(OWNER, { ...write(3), full: "b@x/r" as FullJid }).chain, undefined, "no copy");
  for (let n = 0; n < MAX_CHAINED_WRITES; n++) assert.ok(p.host.chain(OWNER, write(100 + n)).chain);
  assert.equal(p.host.chain(OWNER, write(9)).chain, undefined, "an owner that takes none: bounded");
});

test("a copy with a second replica passes writes on unmarked: the owner must wait for both", () => {
  const p = pair();
  p.stream.reseat([REPLICA, mainShardOf(2)], p.state);
  p.deliver();
  assert.equal(p.host.chain(OWNER, write(1)).chain, undefined);
});

test("a re-initialised copy of the same stream keeps the writes its state does not settle", () => {
  const p = pair();
  const first = p.host.chain(OWNER, write(1));
  p.host.chain(OWNER, write(2));
  p.ownerWrites(first);
  // The owner re-sends its whole state (a change was lost): it took write 1, not yet write 2.
  p.runLater();
  p.queue.splice(0);
  p.stream.reinit(REPLICA, p.state);
  p.deliver();
  const copy = p.promote();
  assert.deepEqual(logOf(copy.state), ['1:<message id="m1"/>', '2:<message id="m2"/>']);
});

test("a lazy change is acknowledged when a frame to its owner's node leaves, or at the timer", async () => {
  const p = pair({ lazyAckMs: 5 });
  const before = p.acks.length;
  const passed = p.host.chain(OWNER, write(1));
  p.ownerWrites(passed);
  p.runLater(); // the batch timer: a lazy change
  p.deliver();
  assert.equal(p.acks.length, before, "not acknowledged in its turn");
  p.host.ackNowTo(0);
  p.deliver();
  assert.equal(p.stream.ackedLsn, p.stream.lsn, "acknowledged with the frame to the owner's node");
  const again = p.host.chain(OWNER, write(2));
  p.ownerWrites(again);
  p.runLater();
  p.deliver();
  assert.notEqual(p.stream.ackedLsn, p.stream.lsn);
  await p.sent(); // the replica's acknowledgement, when its timer fires
  p.deliver();
  assert.equal(p.stream.ackedLsn, p.stream.lsn, "acknowledged when the timer fired");
});

test("a change something waits for is acknowledged in its turn, lazy ones before it included", () => {
  const p = pair({ lazyAckMs: 60_000 });
  const passed = p.host.chain(OWNER, write(1));
  p.ownerWrites(passed);
  p.runLater();
  p.deliver();
  p.stream.push({ c: "presence", presence: "<presence/>", priority: 0 });
  p.deliver();
  assert.equal(p.stream.ackedLsn, p.stream.lsn);
});

test("each copy numbers the writes it passes on from 1, under a name of its own", () => {
  const p = pair();
  assert.deepEqual(p.host.chain(OWNER, write(1)).chain?.seq, 1);
  assert.deepEqual(p.host.chain(OWNER, write(2)).chain?.seq, 2);
  // The session resumed on the owner's worker: a new stream, a new copy.
  const next = new ReplicaStream(
    { self: OWNER, send: (_to, envelope) => envelope.t === "rep" && p.host.receive(envelope) },
    "tok",
    "s0.2",
    [REPLICA],
    p.state,
    () => {},
  );
  assert.equal(next.lsn, 1);
  const passed = p.host.chain(OWNER, write(3));
  assert.equal(passed.chain?.seq, 1, "numbered from 1 again");
  assert.notEqual(passed.chain?.via, "host-1.1", "under another name: the old marks do not refer to it");
  assert.equal(passed.chain?.stream, "s0.2");
});

test("a copy keeps at most MAX_CHAINED_BYTES of writes for its owner", () => {
  const p = pair();
  const big = (n: number): Write => ({
    ...write(n),
    xml: `<message id="m${n}">${"x".repeat(64 * 1024)}</message>`,
  });
  const marked = [1, 2, 3, 4, 5].map((n) => p.host.chain(OWNER, big(n)).chain !== undefined);
  assert.deepEqual(marked, [true, true, true, false, false], "three of 64 KiB fit in 256 KiB, not a fourth");
});

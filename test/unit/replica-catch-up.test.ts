/**
 * The paced catch-up of copies that fell behind (src/cluster/replica-catch-up.ts): whole states
 * go in chunks of about the bytes asked for, the retry timer spends at most a chunk per replica
 * and leaves alone the copies a re-drive round will send.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { approxSnapshotBytes, newSessionState, type SessionSnapshot } from "../../actors/session-state.ts";
import { CATCH_UP_IDLE_MS, ReplicaCatchUp } from "../../src/cluster/replica-catch-up.ts";
import { ReplicaStream, type ReplicationSender } from "../../src/cluster/session-replicas.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";

const REPLICA = 2048;

/** `count` streams to REPLICA, none acknowledged (so all behind), each state about 5 KB. */
function behind(count: number, clock: () => number) {
  const inits: string[] = [];
  const sender: ReplicationSender = {
    self: 0,
    send: (_shard, envelope) => {
      if (envelope.t === "rep" && envelope.change.c === "init") inits.push(envelope.token);
    },
  };
  const streams: { stream: ReplicaStream; state: SessionSnapshot }[] = [];
  for (let i = 0; i < count; i++) {
    const state = newSessionState(`u${i}@x/r` as FullJid, `tok${i}`);
    state.unacked.push([1, `<message>${"p".repeat(5_000)}</message>`, true]);
    streams.push({
      stream: new ReplicaStream(sender, `tok${i}`, `s0.${i}`, [REPLICA], state, () => {}, clock),
      state,
    });
  }
  inits.length = 0; // the streams' first inits
  return { streams, inits };
}

test("a re-drive round re-initialises the copies behind in chunks of about the bytes asked for", () => {
  let now = 1_000;
  const { streams, inits } = behind(10, () => now);
  const catchUp = new ReplicaCatchUp();
  const chunk = 2 * approxSnapshotBytes(streams[0]!.state);
  catchUp.start(REPLICA, 1, streams, now);
  assert.equal(catchUp.waits(REPLICA, streams[9]!.stream, now), true);
  assert.equal(catchUp.next(REPLICA, chunk, now).remaining, 8, "two states per chunk");
  assert.deepEqual(inits, ["tok0", "tok1"]);
  assert.equal(catchUp.waits(REPLICA, streams[0]!.stream, now), false, "sent: no longer waiting");
  // The same round again (the next chunk's call) starts nothing new.
  catchUp.start(REPLICA, 1, streams, now);
  assert.equal(catchUp.next(REPLICA, 1, now).remaining, 7, "at least one state, however small the chunk");
  now += 10;
  while (catchUp.next(REPLICA, chunk, now).remaining > 0);
  assert.deepEqual(
    inits,
    streams.map((_, i) => `tok${i}`),
    "each copy once, in order",
  );
});

test("the retry timer spends at most a chunk per replica, and leaves alone what a round will send", () => {
  let now = 1_000;
  const { streams, inits } = behind(10, () => now);
  const catchUp = new ReplicaCatchUp();
  const chunk = 3 * approxSnapshotBytes(streams[0]!.state);
  now += 3_000;
  assert.equal(catchUp.stalled(streams, 3_000, chunk, now), 3, "three states' worth");
  assert.deepEqual(inits, ["tok0", "tok1", "tok2"]);
  // A link overflowed and is back: a re-drive round starts, and every copy behind waits for
  // its chunks (what the timer sent went with the dropped queue).
  catchUp.start(REPLICA, 1, streams, now);
  assert.equal(catchUp.next(REPLICA, chunk, now).remaining, 7);
  assert.deepEqual(inits.slice(3), ["tok0", "tok1", "tok2"]);
  now += 3_000;
  assert.equal(
    catchUp.stalled(streams, 3_000, 100 * chunk, now),
    3,
    "only those the round sent, silent since",
  );
  assert.deepEqual(inits.slice(6), ["tok0", "tok1", "tok2"], "the others wait for the round, not the timer");
});

test("a round whose chunks stopped coming no longer holds its copies back from the retry timer", () => {
  let now = 1_000;
  const { streams, inits } = behind(4, () => now);
  const catchUp = new ReplicaCatchUp();
  const chunk = approxSnapshotBytes(streams[0]!.state);
  catchUp.start(REPLICA, 1, streams, now);
  assert.equal(catchUp.next(REPLICA, chunk, now).remaining, 3);
  // The link went down; no chunk comes for longer than the round may idle.
  now += CATCH_UP_IDLE_MS + 1_000;
  assert.equal(catchUp.waits(REPLICA, streams[3]!.stream, now), false);
  assert.equal(
    catchUp.stalled(streams, 3_000, 100 * chunk, now),
    4,
    "every copy behind gets its state again",
  );
  assert.deepEqual(inits.slice(1), ["tok0", "tok1", "tok2", "tok3"]);
});

/**
 * The main thread's replica shard (src/cluster/main-replicas.ts) with real msgpackr batches: an
 * owner's stream is acknowledged by it in the turn its batch arrives, a `<resume/>` takes its copy
 * only once the owner's node is known dead, and an owner table that drops the owner's node (or
 * a notice that the owner's worker crashed) promotes the copies it is heir to.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Packr } from "msgpackr";
import { newSessionState, type SessionChange } from "../../actors/session-state.ts";
import type { ResumeTake } from "../../src/cluster/client-stream-host.ts";
import type { Envelope } from "../../src/cluster/envelope.ts";
import { MainReplicaShard } from "../../src/cluster/main-replicas.ts";
import { clusterTable, mainShardOf, shardNumber } from "../../src/cluster/ring.ts";
import { type PromotedCopy, ReplicaStream } from "../../src/cluster/session-replicas.ts";
import { createLogger } from "../../src/log.ts";
import type { BareJid, FullJid } from "../../src/xmpp/jid.ts";

const packr = new Packr({ useRecords: false, moreTypes: false });
const OWNER = shardNumber(1, 0);
const ASKER = shardNumber(2, 1);
/** The asking worker incarnation's session id prefix. */
const ASKER_PREFIX = `${ASKER}.a1.`;
/** Node 2's first worker's incarnation, which adopts promoted copies in these tests. */
const WORKER0_PREFIX = `${shardNumber(2, 0)}.w0.`;

/** Node 2's main shard, and what it sent (decoded). */
function mainShard() {
  const toPeer: { dest: number; envelopes: Envelope[] }[] = [];
  const toWorker: { worker: number; envelopes: Envelope[] }[] = [];
  const restarts: { shard: number; keepPrefix: string; promoted: PromotedCopy[] }[] = [];
  const main = new MainReplicaShard({
    nodeNo: 2,
    log: createLogger({ level: "silent" }),
    toPeer: (dest, bytes) => toPeer.push({ dest, envelopes: packr.unpack(bytes) as Envelope[] }),
    toWorker: (worker, bytes) => toWorker.push({ worker, envelopes: packr.unpack(bytes) as Envelope[] }),
    peerWorkerRestarted: (shard, _deadPrefix, keepPrefix, promoted) =>
      restarts.push({ shard, keepPrefix, promoted }),
  });
  return { main, toPeer, toWorker, restarts };
}

/** A copy of owner `owner`'s stream `stream` (of session `tok-<user>`) starts at `main`. */
function initCopy(main: MainReplicaShard, owner: number, stream: string, user: string): void {
  main.receive(
    packr.pack([
      {
        t: "rep",
        token: `tok-${user}`,
        owner,
        stream,
        lsn: 1,
        change: { c: "init", state: newSessionState(`${user}@x/r` as FullJid, `tok-${user}`) },
        replicas: [main.self],
      } satisfies Envelope,
    ]),
  );
}

/** An owner stream on node 1 (`streamId`) wired to a main shard of node 2. */
function wired(shard = mainShard(), streamId = "s1") {
  const { main, toPeer, toWorker, restarts } = shard;
  const state = newSessionState("a@x/r" as FullJid, "tok");
  let acked = 0;
  const stream = new ReplicaStream(
    // Each change crosses as the peer link hands it over: one encoded batch.
    { self: OWNER, send: (_to, envelope) => main.receive(packr.pack([envelope])) },
    "tok",
    streamId,
    [main.self],
    state,
    (lsn) => {
      acked = lsn;
    },
  );
  /** The acknowledgements sent so far reach the owner's stream. */
  const ackOwner = () => {
    for (const { dest, envelopes } of toPeer.splice(0)) {
      assert.equal(dest, OWNER);
      for (const e of envelopes)
        if (e.t === "rep-ack") for (const [, , lsn] of e.acks) stream.acked(e.from, lsn);
    }
  };
  const take = (h: number, gone: number[] = []) => {
    main.receive(
      packr.pack([
        {
          t: "worker",
          msg: {
            kind: "resume-take",
            token: "tok",
            h,
            toShard: ASKER,
            reqId: 7,
            user: "a@x" as BareJid,
            gone,
            taker: ASKER_PREFIX,
          },
        },
      ]),
    );
    const reply = toWorker.pop();
    assert.equal(reply?.worker, 1, "answered to the asking worker of its own node");
    const envelope = reply.envelopes[0]!;
    assert.ok(envelope.t === "reply" && envelope.ok && envelope.reqId === 7);
    return envelope.value as ResumeTake;
  };
  return { main, shard, stream, state, toPeer, restarts, ackOwner, take, acked: () => acked };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

const table = (epoch: number, nodes: { name: string; nodeNo: number; workers: number }[]) =>
  clusterTable({ epoch, partitions: 4, nodes, ownerNodes: Uint16Array.from([0, 0, 0, 0]) });
const node1 = { name: "n1", nodeNo: 1, workers: 1 };
const node2 = { name: "n2", nodeNo: 2, workers: 2 };

test("the main shard applies an owner's changes and acknowledges them in one batch per turn", async () => {
  const { main, stream, toPeer, ackOwner, acked } = wired();
  assert.equal(main.self, mainShardOf(2));
  assert.deepEqual(stream.replicas, [main.self]);
  const out: SessionChange = { c: "out", xml: "<message/>", storable: true };
  stream.push(out);
  stream.push(out);
  await turn();
  assert.equal(toPeer.length, 1, "one acknowledgement batch for the turn's three changes");
  ackOwner();
  assert.equal(acked(), 3, "the init and both writes are held");
  assert.equal(stream.ackedLsn, 3);
  assert.deepEqual(main.stats, { held: 1, applied: 3, refused: 0, promoted: 0 });
});

test("a resumption takes the main shard's copy only once the owner's node is known dead", async () => {
  const { main, stream, take } = wired();
  stream.push({ c: "out", xml: "<message id='1'/>", storable: true });
  stream.push({ c: "out", xml: "<message id='2'/>", storable: true });
  await turn();
  assert.deepEqual(take(1), { pending: true }, "owner alive as far as anyone knows: ask again later");
  const taken = take(1, [1]);
  assert.ok(taken !== undefined && "snapshot" in taken, "the asker knows node 1 died");
  assert.equal(taken.snapshot.sentOut, 2);
  assert.deepEqual(
    taken.snapshot.unacked.map(([n]) => n),
    [2],
    "the client's h=1 applied: only the second write is re-sent",
  );
  assert.deepEqual(
    taken.copyOf,
    { stream: "s1", lsn: 3, holder: mainShardOf(2) },
    "with what a late reply's adopter needs",
  );
  assert.deepEqual(take(1, [1]), { pending: true }, "taken once: out with its taker until it confirms");
  assert.equal(main.stats.held, 0);
});

test("an owner table without the owner's node promotes the copy; the zombie's changes are refused", async () => {
  const { main, stream } = wired();
  stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  const before = table(1, [node1, node2]);
  assert.deepEqual(main.applyTable(before, table(1, [node2]), [{ nodeNo: 2, workers: 2 }]), [], "same epoch");
  const promoted = main.applyTable(before, table(2, [node2]), [{ nodeNo: 2, workers: 2 }]);
  assert.equal(promoted.length, 1);
  assert.equal(promoted[0]!.state.sentOut, 1);
  assert.equal(promoted[0]!.state.moves, 1, "a move: the dead owner's registration loses to it");
  assert.deepEqual([promoted[0]!.stream, promoted[0]!.lsn], ["s1", 2]);
  stream.push({ c: "out", xml: "<message/>", storable: true });
  assert.equal(main.stats.refused, 1, "a change from the dead owner after promotion is refused");
  assert.equal(main.stats.held, 0);
});

test("a resumption that asks while a promoted copy travels to a worker is told to ask again", async () => {
  const { main, stream, take } = wired();
  stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  const promoted = main.applyTable(table(1, [node1, node2]), table(2, [node2]), [{ nodeNo: 2, workers: 2 }]);
  assert.equal(promoted.length, 1);
  assert.deepEqual(take(0, [1]), { pending: true }, "not 'unknown' while no worker holds it yet");
  main.handedOver(promoted, WORKER0_PREFIX);
  assert.deepEqual(take(0, [1]), { pending: true }, "kept until the worker's session is replicated");
  const held = { t: "worker", msg: { kind: "copy-held", token: "tok", stream: "s1" } } satisfies Envelope;
  main.receive(packr.pack([held]));
  assert.equal(take(0, [1]), undefined, "once its session is replicated, it is that worker's to answer");
  assert.deepEqual(main.localWorkerDied(WORKER0_PREFIX), [], "and a crash of that worker takes nothing back");
});

test("a promoted copy comes back when the worker that adopted it dies before its replicas hold it", async () => {
  const { main, stream, take } = wired();
  stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  const promoted = main.applyTable(table(1, [node1, node2]), table(2, [node2]), [{ nodeNo: 2, workers: 2 }]);
  main.handedOver(promoted, WORKER0_PREFIX);
  assert.deepEqual(main.localWorkerDied(`${shardNumber(2, 1)}.w1.`), [], "another worker's crash: nothing");
  const again = main.localWorkerDied(WORKER0_PREFIX);
  assert.deepEqual(
    again.map((copy) => [copy.state.token, copy.state.sentOut, copy.state.moves, copy.stream, copy.lsn]),
    [["tok", 1, 1, "s1", 2]],
    "the same copy, promoted again with the same move count (no newer than the first time)",
  );
  assert.equal(again[0]!.holder, main.self);
  assert.equal(again[0]!.replaces, WORKER0_PREFIX, "its session replaces the dead adopter's registration");
  assert.deepEqual(take(0, [1]), { pending: true }, "on its way to a worker again");
  stream.push({ c: "out", xml: "<message/>", storable: true });
  assert.equal(main.stats.refused, 1, "the dead owner's stream stays refused");
});

test("a copy taken by a resumption comes back when the taker's worker or node dies before confirming", async () => {
  const { main, stream, take } = wired();
  stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  const taken = take(0, [1]);
  assert.ok(taken !== undefined && "snapshot" in taken);
  assert.deepEqual(taken.copyOf, { stream: "s1", lsn: 2, holder: main.self });
  assert.deepEqual(take(0, [1]), { pending: true }, "out with its taker: ask again");
  assert.equal(main.stats.held, 0);
  // The taker, this node's second worker, crashes before its replicas hold the session.
  const back = main.localWorkerDied(ASKER_PREFIX);
  assert.deepEqual(back, [], "its owner's death is not known here: a copy to take, not to promote");
  assert.equal(main.stats.held, 1, "the copy is back");
  // Given back, it is sealed: a late rep-end, an audit or a change of its dead stream (a paused
  // owner waking, a cut link replaying its queue) leaves it alone.
  main.receive(packr.pack([{ t: "rep-end", token: "tok", owner: OWNER, stream: "s1" }] satisfies Envelope[]));
  main.receive(packr.pack([{ t: "rep-live", owner: OWNER, prefix: "s", live: [] }] satisfies Envelope[]));
  stream.push({ c: "out", xml: "<message/>", storable: true });
  assert.equal(main.stats.held, 1, "still held");
  assert.equal(take(5, [1]), undefined, "an impossible h takes nothing");
  const again = take(0, [1]);
  assert.ok(again !== undefined && "snapshot" in again, "and a resumption can take it again");
  assert.equal(again.snapshot.sentOut, 1, "as it was: nothing of the dead stream applied since");
  assert.equal(again.copyOf?.replaces, ASKER_PREFIX, "naming the dead taker it replaces");
  // This time the taker confirms: a later death of its worker gives nothing back.
  main.receive(
    packr.pack([
      { t: "worker", msg: { kind: "copy-held", token: "tok", stream: "s1" } },
    ] satisfies Envelope[]),
  );
  assert.deepEqual(main.localWorkerDied(ASKER_PREFIX), []);
  assert.equal(main.stats.held, 0);
  assert.equal(take(0, [1]), undefined);
});

test("a node back under its number is alive again: its sessions' copies are not taken or promoted", async () => {
  const first = wired();
  await turn();
  const { main } = first;
  const live2 = [{ nodeNo: 2, workers: 2 }];
  main.handedOver(main.applyTable(table(1, [node1, node2]), table(2, [node2]), live2), WORKER0_PREFIX);
  // Node 1 restarts under its name (same number); its new session streams to us.
  const node3 = { name: "n3", nodeNo: 3, workers: 1 };
  const live = [{ nodeNo: 1, workers: 1 }, ...live2];
  main.applyTable(table(2, [node2]), table(3, [node1, node2, node3]), [...live, { nodeNo: 3, workers: 1 }]);
  const again = wired(first.shard, "s2");
  await turn();
  assert.equal(main.stats.held, 1, "the new incarnation's copy is held");
  assert.deepEqual(again.take(0), { pending: true }, "its owner lives: no take");
  // Node 3 dies: only its sessions' copies may be promoted, not node 1's.
  assert.deepEqual(main.applyTable(table(3, [node1, node2, node3]), table(4, [node1, node2]), live), []);
  assert.equal(main.stats.held, 1, "the live node's copy stays a copy");
});

test("a crashed worker of another node: its sessions' copies are promoted, its new ones' and other workers' stay", async () => {
  // The crashed incarnation's stream ids start with its sid prefix, as worker-main.ts makes them.
  const crashed = wired(mainShard(), `${OWNER}.old.1`);
  const other = shardNumber(1, 1);
  const { main, restarts } = crashed;
  const init = (owner: number, stream: string, user: string) => initCopy(main, owner, stream, user);
  // A session of node 1's other worker, replicated here too.
  init(other, "s9", "b");
  // The restarted worker took a client before its crash was announced: that copy is alive.
  init(OWNER, `${OWNER}.new.1`, "c");
  crashed.stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  assert.equal(main.stats.held, 3);
  // A notice about a main thread, or about this node's own worker, is not a crash it can act on.
  const notice = (shard: number, deadPrefix: string, keepPrefix: string) =>
    main.receive(packr.pack([{ t: "restarted", shard, deadPrefix, keepPrefix } satisfies Envelope]));
  notice(mainShardOf(1), `${mainShardOf(1)}.a.`, `${mainShardOf(1)}.b.`);
  notice(shardNumber(2, 0), `${shardNumber(2, 0)}.a.`, `${shardNumber(2, 0)}.b.`);
  assert.equal(restarts.length, 0);
  notice(OWNER, `${OWNER}.old.`, `${OWNER}.new.`);
  assert.equal(restarts.length, 1);
  const [told] = restarts;
  assert.deepEqual([told!.shard, told!.keepPrefix], [OWNER, `${OWNER}.new.`]);
  assert.deepEqual(
    told!.promoted.map((copy) => [copy.state.token, copy.state.sentOut, copy.stream, copy.lsn]),
    [["tok", 1, `${OWNER}.old.1`, 2]],
    "only the crashed worker's session, with everything it had sent",
  );
  assert.equal(main.stats.held, 2, "the other worker's session and the new incarnation's stay copies");
  assert.deepEqual(crashed.take(0), { pending: true }, "while a worker adopts it, ask again");
  main.handedOver(told!.promoted, WORKER0_PREFIX);
  notice(OWNER, `${OWNER}.old.`, `${OWNER}.new.`);
  assert.equal(restarts.length, 1, "the same notice again (re-sent after an overflow) changes nothing");
  crashed.stream.push({ c: "out", xml: "<message/>", storable: true });
  assert.equal(main.stats.refused, 1, "the dead worker's stream gets nothing applied any more");
});

test("after a link overflow, the owner's live streams list drops the copies whose rep-end was lost", () => {
  const { main } = mainShard();
  const init = (owner: number, stream: string, user: string) => initCopy(main, owner, stream, user);
  const other = shardNumber(1, 1);
  init(OWNER, `${OWNER}.new.1`, "ended"); // its rep-end was in the queue the link dropped
  init(OWNER, `${OWNER}.new.2`, "live");
  init(OWNER, `${OWNER}.old.7`, "crashed"); // a dead incarnation's: it must stay, to promote
  init(other, `${other}.x.1`, "other"); // another owner's
  assert.equal(main.stats.held, 4);
  const live = { t: "rep-live", owner: OWNER, prefix: `${OWNER}.new.`, live: [2] } satisfies Envelope;
  main.receive(packr.pack([live]));
  assert.equal(main.stats.held, 3, "only the ended session's copy is dropped");
  main.receive(packr.pack([{ ...live, live: [] }]));
  assert.equal(main.stats.held, 2, "and the next list that leaves a stream out drops its copy too");
});

test("a crashed worker's copy whose first heir's node is dead too promotes once a table says so", async () => {
  const { main, restarts } = mainShard();
  const node3 = { name: "n3", nodeNo: 3, workers: 1 };
  const init = (token: string, stream: string) =>
    main.receive(
      packr.pack([
        {
          t: "rep",
          token,
          owner: OWNER,
          stream,
          lsn: 1,
          change: { c: "init", state: newSessionState(`${token}@x/r` as FullJid, token) },
          // Node 3's main thread is the first heir, this one the second (factor 3).
          replicas: [mainShardOf(3), main.self],
        } satisfies Envelope,
      ]),
    );
  init("old", "1024.old.1");
  init("new", "1024.new.1");
  main.receive(
    packr.pack([
      { t: "restarted", shard: OWNER, deadPrefix: "1024.old.", keepPrefix: "1024.new." } satisfies Envelope,
    ]),
  );
  assert.deepEqual(restarts[0]!.promoted, [], "node 3 is the heir while it lives");
  const live = [
    { nodeNo: 1, workers: 1 },
    { nodeNo: 2, workers: 2 },
  ];
  const promoted = main.applyTable(table(1, [node1, node2, node3]), table(2, [node1, node2]), live);
  assert.deepEqual(
    promoted.map((copy) => copy.state.token),
    ["old"],
    "node 3 died: the crashed worker's old session falls to this shard, its new one lives on",
  );
  assert.equal(main.stats.held, 1);
});

test("a main shard remembers at most 1,000 dead worker incarnations, the newest", () => {
  const { main, restarts } = mainShard();
  const notice = (n: number) =>
    main.receive(
      packr.pack([
        {
          t: "restarted",
          shard: OWNER,
          deadPrefix: `${OWNER}.d${n}.`,
          keepPrefix: `${OWNER}.d${n + 1}.`,
        } satisfies Envelope,
      ]),
    );
  for (let n = 0; n <= 1_000; n++) notice(n);
  assert.equal(restarts.length, 1_001);
  notice(1_000);
  assert.equal(restarts.length, 1_001, "the newest is remembered: a repeat changes nothing");
  notice(0);
  assert.equal(restarts.length, 1_002, "the oldest was forgotten: its repeat is taken as new");
});

test("a node that died owning no partition: its sessions' copies are promoted without a table", async () => {
  // Node 1 joined and serves a resumable session, but no table gave it a partition yet: the
  // tables own node 2 only, and no new one comes when node 1 dies.
  const { main, stream } = wired();
  stream.push({ c: "out", xml: "<message/>", storable: true });
  await turn();
  const live2 = [{ nodeNo: 2, workers: 2 }];
  assert.deepEqual(
    main.applyTable(table(1, [node2]), table(2, [node2]), live2),
    [],
    "a table that never named node 1 promotes nothing",
  );
  assert.deepEqual(main.membersChanged([{ nodeNo: 1, workers: 1 }, ...live2], new Set()), [], "nobody died");
  const promoted = main.membersChanged(live2, new Set([1]));
  assert.equal(promoted.length, 1);
  assert.equal(promoted[0]!.state.sentOut, 1);
  stream.push({ c: "out", xml: "<message/>", storable: true });
  assert.equal(main.stats.refused, 1, "a change from the dead owner after promotion is refused");
});

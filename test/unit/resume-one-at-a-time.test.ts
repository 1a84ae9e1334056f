/**
 * A worker runs its resumptions of one session id one after another (client-stream-host.ts
 * `oneAtATime`): attempts a client left behind on a node that did not answer must not each take
 * a copy of the session when the node wakes (sim seed 51267), while other sessions' resumptions
 * go on beside them. And a resumption whose client left takes nothing more (sim seed 91141).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { clientStreamHost, oneAtATime } from "../../src/cluster/client-stream-host.ts";
import { mainShardOf, shardNumber } from "../../src/cluster/ring.ts";
import type { ShardContext } from "../../src/cluster/shard-context.ts";
import { DEFAULT_CONFIG } from "../../src/config/defaults.ts";
import { createLogger } from "../../src/log.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import type { ClientLink, ResumeOutcome } from "../../src/xmpp/stream-host.ts";

/** A resume whose outcomes the test settles by hand, recording when each attempt started. */
function manualResume() {
  const started: string[] = [];
  const settle = new Map<string, (outcome: ResumeOutcome) => void>();
  const fail = new Map<string, (error: Error) => void>();
  let attempt = 0;
  const resume = oneAtATime((_user, previd) => {
    const name = `${previd}#${++attempt}`;
    started.push(name);
    return new Promise<ResumeOutcome>((resolve, reject) => {
      settle.set(name, resolve);
      fail.set(name, reject);
    });
  });
  return { resume, started, settle, fail };
}

const user = "alice@example.org" as BareJid;
const link = {} as ClientLink;
const turns = () => new Promise((resolve) => setImmediate(resolve));

test("a second resumption of the same id starts only once the first is over", async () => {
  const { resume, started, settle } = manualResume();
  const first = resume(user, "1024.7", 2, link);
  const second = resume(user, "1024.7", 2, link);
  await turns();
  assert.deepEqual(started, ["1024.7#1"]);
  settle.get("1024.7#1")!({ failed: "unknown" });
  assert.deepEqual(await first, { failed: "unknown" });
  await turns();
  assert.deepEqual(started, ["1024.7#1", "1024.7#2"]);
  settle.get("1024.7#2")!({ failed: "expired", handled: 3 });
  assert.deepEqual(await second, { failed: "expired", handled: 3 });
});

test("resumptions of other ids run beside it, and a failed one does not block the next", async () => {
  const { resume, started, settle, fail } = manualResume();
  const first = resume(user, "1024.7", 2, link);
  const other = resume(user, "2048.9", 0, link);
  const second = resume(user, "1024.7", 2, link);
  await turns();
  assert.deepEqual(started, ["1024.7#1", "2048.9#2"]);
  fail.get("1024.7#1")!(new Error("boom"));
  await assert.rejects(first, /boom/);
  await turns();
  assert.deepEqual(started, ["1024.7#1", "2048.9#2", "1024.7#3"]);
  settle.get("1024.7#3")!({ failed: "unknown" });
  settle.get("2048.9#2")!({ failed: "unknown" });
  assert.deepEqual(await second, { failed: "unknown" });
  assert.deepEqual(await other, { failed: "unknown" });
});

/**
 * A worker of node 2 whose requests to shards `requestShard` answers; the cluster's live shards
 * are its own two, node 1's worker 0 and node 3's.
 */
function shardContext(requestShard: (shard: number, build: (reqId: number) => unknown) => Promise<unknown>) {
  const self = shardNumber(2, 0);
  return {
    index: self,
    config: DEFAULT_CONFIG,
    log: createLogger({ level: "silent" }),
    localShards: [self, shardNumber(2, 1)],
    sidPrefix: `${self}.w1.`,
    router: {
      requestShard,
      isOnGoneNode: () => false,
      goneNodes: () => [],
      liveShards: () => [self, shardNumber(2, 1), shardNumber(1, 0), shardNumber(3, 0)],
      nextTable: () => Promise.resolve(),
    },
  } as unknown as ShardContext;
}

test("a resumption whose connection closed asks no more shards for the session", async () => {
  const link = { closed: false } as { closed: boolean } & ClientLink;
  // Each resume-take the worker sends, answered by hand.
  const asked: { shard: number; answer: (value: unknown) => void }[] = [];
  // Once the client left, any shard asked answers at once: it holds nothing.
  const ctx = shardContext(
    (shard) =>
      new Promise((answer) => {
        asked.push({ shard, answer });
        if (link.closed) answer(undefined);
      }),
  );
  const host = clientStreamHost(ctx);
  const home = shardNumber(1, 0);
  const outcome = host.resume(user, `${home}.token`, 2, link);
  await turns();
  assert.deepEqual(
    asked.map((a) => a.shard),
    [home],
    "the shard that issued the id is asked first",
  );
  // The client gave up on this node before it answered (it was paused, say), and left.
  link.closed = true;
  asked[0]!.answer(undefined);
  assert.deepEqual(await outcome, { failed: "unknown" });
  assert.deepEqual(
    asked.map((a) => a.shard),
    [home],
    `no other shard is asked (not ${shardNumber(2, 1)}, nor ${mainShardOf(2)}, nor the rest)`,
  );
});

test("a holder that refuses the client's h is asked to end only once no other shard holds the session", async () => {
  const link = { closed: false } as ClientLink;
  const asked: { shard: number; kind: string }[] = [];
  const home = shardNumber(1, 0);
  const ctx = shardContext((shard, build) => {
    const kind = (build(1) as { msg: { kind: string } }).msg.kind;
    asked.push({ shard, kind });
    if (kind === "resume-refused") return Promise.resolve(true);
    // The shard that issued the id holds the session and refuses h; the others hold nothing.
    if (shard === home) {
      return Promise.resolve({
        refused: "too-high",
        sent: 5,
        handled: 2,
        holder: { shard: home, sid: "s1" },
      });
    }
    return Promise.resolve(undefined);
  });
  const outcome = await clientStreamHost(ctx).resume(user, `${home}.token`, 9, link);
  assert.deepEqual(outcome, { failed: "too-high", h: 9, sent: 5, handled: 2 });
  const takes = asked.filter((a) => a.kind === "resume-take").map((a) => a.shard);
  // A copy ahead of the refusing holder (sim seed 6122) would be found by the rest of the search.
  assert.ok(takes.includes(shardNumber(3, 0)), `the search went on past the refusal: ${takes}`);
  assert.deepEqual(asked.at(-1), { shard: home, kind: "resume-refused" }, "then the holder is asked to end");
});

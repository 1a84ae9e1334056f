import assert from "node:assert/strict";
import { once } from "node:events";
import { describe, it } from "node:test";
import { MessageChannel } from "node:worker_threads";
import type { Envelope } from "../../src/cluster/envelope.ts";
import { shardNumber, singleNodeTable } from "../../src/cluster/ring.ts";
import { ShardRouter } from "../../src/cluster/shard-router.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";

function write(n: number): Envelope {
  return { t: "session", msg: { kind: "write", full: "a@b/c" as FullJid, sid: "0.x.1", xml: String(n) } };
}

function received(envelope: Envelope): number {
  assert.equal(envelope.t, "session");
  return Number((envelope.msg as { xml: string }).xml);
}

describe("ShardRouter", () => {
  it("ShardRouter delivers every envelope exactly once when delivery routes more envelopes past a full batch", async () => {
    const seen: number[] = [];
    const table = singleNodeTable("n", 1, 64);
    let done: () => void;
    const finished = new Promise<void>((resolve) => {
      done = resolve;
    });
    const total = 2000;
    const router: ShardRouter = new ShardRouter(0, table, (envelope) => {
      const n = received(envelope);
      seen.push(n);
      // Each delivery of the first half routes one more envelope to this same shard.
      if (n < total / 2) router.send(0, write(n + total / 2));
      if (seen.length === total) done();
    });
    for (let n = 0; n < total / 2; n++) router.send(0, write(n));
    await finished;
    assert.equal(seen.length, total);
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      Array.from({ length: total }, (_, i) => i),
    );
  });

  it("ShardRouter forgets a node's death when the node serves again under its number", async () => {
    const router = new ShardRouter(shardNumber(1, 0), singleNodeTable("n", 1, 64), () => {});
    router.setLiveShards([shardNumber(1, 0)]);
    router.resendRetainedTo(new Set([2]));
    assert.equal(router.isOnGoneNode(shardNumber(2, 0)), true);
    await assert.rejects(
      router.requestShard(shardNumber(2, 0), () => write(0), 1_000),
      /left the cluster/,
    );
    // Node 2 restarts under its name: a member row keeps its node number.
    router.setLiveShards([shardNumber(1, 0), shardNumber(2, 0)]);
    assert.equal(router.isOnGoneNode(shardNumber(2, 0)), false);
    assert.deepEqual(router.goneNodes(), []);
  });

  it("ShardRouter batches envelopes to another shard and keeps their order", async () => {
    const table = singleNodeTable("n", 2, 64);
    const channel = new MessageChannel();
    const got: number[] = [];
    const receiver = new ShardRouter(1, table, (envelope) => got.push(received(envelope)));
    const sender = new ShardRouter(0, table, () => assert.fail("nothing comes back"));
    sender.setPort(1, channel.port1);
    receiver.setPort(0, channel.port2);
    for (let n = 0; n < 1500; n++) sender.send(1, write(n));
    while (got.length < 1500) await once(channel.port2, "message");
    assert.deepEqual(
      got,
      Array.from({ length: 1500 }, (_, i) => i),
    );
    sender.close();
    receiver.close();
  });
});

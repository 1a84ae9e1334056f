/**
 * What a gained partition waits for when a later table drops a node (src/cluster/handoff.ts
 * `dropDeadSenders`): two nodes dying a moment apart make two tables, and the first table's
 * recoveries must not wait for the second node until the handoff timeout.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { dropDeadSenders } from "../../src/cluster/handoff.ts";
import { shardNumber } from "../../src/cluster/ring.ts";

test("a later table's dead node is waited for no more; partitions that wait for nothing complete", () => {
  const n1 = shardNumber(1, 0);
  const n2 = shardNumber(2, 0);
  const n4 = shardNumber(4, 0);
  const n4b = shardNumber(4, 1);
  // Epoch 6 dropped node 5: its partitions 10 and 11 wait for every live shard, node 4's too.
  const waiting = new Map<number, Set<number>>([
    [10, new Set([n1, n4, n4b])],
    [11, new Set([n4])],
    [12, new Set([n2])], // a planned move from node 2, alive
  ]);
  assert.deepEqual(dropDeadSenders(waiting, new Set()), [], "no dead node: nothing changes");
  // Epoch 7 drops node 4.
  assert.deepEqual(dropDeadSenders(waiting, new Set([4])), [11]);
  assert.deepEqual([...waiting.keys()], [10, 12]);
  assert.deepEqual([...waiting.get(10)!], [n1], "still waits for the live shard");
  assert.deepEqual([...waiting.get(12)!], [n2]);
});

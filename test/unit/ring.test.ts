import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ownerOf, partitionOf, rendezvousWorker, singleNodeTable } from "../../src/cluster/ring.ts";

describe("ring", () => {
  it("partitionOf is stable and in range", () => {
    assert.equal(partitionOf("alice@localhost", 4096), partitionOf("alice@localhost", 4096));
    for (let i = 0; i < 1000; i++) {
      const p = partitionOf(`user${i}@localhost`, 4096);
      assert.ok(Number.isInteger(p) && p >= 0 && p < 4096);
    }
  });

  it("singleNodeTable spreads partitions evenly over workers", () => {
    const table = singleNodeTable("n1", 4, 4096);
    const counts = [0, 0, 0, 0];
    for (const owner of table.owners) counts[owner]!++;
    for (const count of counts)
      assert.ok(count > 4096 / 4 - 200 && count < 4096 / 4 + 200, `unbalanced: ${counts}`);
  });

  it("rendezvousWorker moves only the partitions an added worker wins", () => {
    let moved = 0;
    for (let p = 0; p < 4096; p++) {
      const before = rendezvousWorker(p, 3);
      const after = rendezvousWorker(p, 4);
      if (before !== after) {
        moved++;
        assert.equal(after, 3, "a partition only moves to the new worker");
      }
    }
    assert.ok(moved > 4096 / 4 - 200 && moved < 4096 / 4 + 200, `moved ${moved}`);
  });

  it("ownerOf names a shard of the table", () => {
    const table = singleNodeTable("n1", 2, 64);
    for (let p = 0; p < 64; p++) {
      const owner = ownerOf(table, p);
      assert.equal(owner.node, "n1");
      assert.ok(owner.worker === 0 || owner.worker === 1);
    }
  });
});

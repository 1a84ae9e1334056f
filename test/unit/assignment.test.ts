import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  type Assignment,
  assignPartitions,
  movedPartitions,
  ownerNode,
  shareOf,
} from "../../src/cluster/membership/assignment.ts";

const P = 4096;

/** The share counts, smallest first. */
function counts(a: Assignment): number[] {
  return Object.values(shareOf(a)).sort((x, y) => x - y);
}

/** Every node holds ⌊P/N⌋ or ⌈P/N⌉. */
function assertBalanced(a: Assignment): void {
  const floor = Math.floor(a.owners.length / a.nodes.length);
  for (const [node, share] of Object.entries(shareOf(a))) {
    assert.ok(
      share === floor || share === floor + 1,
      `${node} holds ${share}, expected ${floor} or ${floor + 1}`,
    );
  }
}

/** How many maximal runs of consecutive partitions in `list` (ascending): 1 means one range. */
function runs(list: number[]): number {
  let count = 0;
  for (const [i, p] of list.entries()) if (i === 0 || list[i - 1] !== p - 1) count++;
  return count;
}

function partitionsOf(a: Assignment, node: string): number[] {
  const list: number[] = [];
  for (let p = 0; p < a.owners.length; p++) if (ownerNode(a, p) === node) list.push(p);
  return list;
}

describe("assignPartitions", () => {
  it("assignPartitions splits 4096 partitions over 3 nodes as 1365/1365/1366, spread out", () => {
    const a = assignPartitions(null, ["n2", "n3", "n1"], P);
    assert.deepEqual(a.nodes, ["n1", "n2", "n3"]);
    assert.equal(a.owners.length, P);
    assert.deepEqual(counts(a), [1365, 1365, 1366]);
    // Not three contiguous ranges: each node's partitions are scattered over the ring.
    for (const node of a.nodes) assert.ok(runs(partitionsOf(a, node)) > 300, `${node} holds ranges`);
  });

  it("assignPartitions gives a single node every partition", () => {
    assert.deepEqual(shareOf(assignPartitions(null, ["solo"], P)), { solo: P });
    const three = assignPartitions(null, ["n1", "n2", "n3"], P);
    const solo = assignPartitions(three, ["n2"], P, 0);
    assert.deepEqual(shareOf(solo), { n2: P });
    assert.deepEqual(
      movedPartitions(three, solo),
      [...partitionsOf(three, "n1"), ...partitionsOf(three, "n3")].sort((x, y) => x - y),
    );
  });

  it("assignPartitions moves about P/(N+1) partitions on a join, only to the joiner", () => {
    const before = assignPartitions(null, ["n1", "n2", "n3"], P);
    const after = assignPartitions(before, ["n1", "n2", "n3", "n4"], P);
    assertBalanced(after);
    const moved = movedPartitions(before, after);
    assert.equal(moved.length, P / 4);
    for (const p of moved) assert.equal(ownerNode(after, p), "n4");
    assert.deepEqual(partitionsOf(after, "n4"), moved);
    // The joiner takes a spread, not a slice of the ring.
    assert.ok(runs(moved) > 200, `moved partitions form only ${runs(moved)} ranges`);
    // And it takes from every old node, evenly.
    for (const node of ["n1", "n2", "n3"]) {
      const given = moved.filter((p) => ownerNode(before, p) === node).length;
      assert.ok(given >= 341 && given <= 342, `${node} gave ${given}`);
    }
  });

  it("assignPartitions moves only the leaver's partitions on a leave", () => {
    const before = assignPartitions(null, ["n1", "n2", "n3", "n4"], P);
    const after = assignPartitions(before, ["n1", "n2", "n4"], P);
    assert.deepEqual(after.nodes, ["n1", "n2", "n4"]);
    assert.deepEqual(counts(after), [1365, 1365, 1366]);
    assert.deepEqual(movedPartitions(before, after), partitionsOf(before, "n3"));
  });

  it("assignPartitions hands a replaced node's partitions to the newcomer only", () => {
    const before = assignPartitions(null, ["a", "b", "c"], P);
    const after = assignPartitions(before, ["a", "b", "d"], P);
    assertBalanced(after);
    const moved = movedPartitions(before, after);
    assert.deepEqual(moved, partitionsOf(before, "c"));
    for (const p of moved) assert.equal(ownerNode(after, p), "d");
  });

  it("assignPartitions always reassigns orphans, even with maxMoves 0", () => {
    const before = assignPartitions(null, ["n1", "n2", "n3", "n4"], P);
    const after = assignPartitions(before, ["n1", "n2", "n4", "n5"], P, 0);
    const orphans = partitionsOf(before, "n3");
    assert.deepEqual(movedPartitions(before, after), orphans);
    // The orphans went to the least loaded node first: the empty joiner.
    assert.deepEqual(shareOf(after), { n1: 1024, n2: 1024, n4: 1024, n5: 1024 });
    // With no orphan and maxMoves 0, a join moves nothing.
    const joined = assignPartitions(after, ["n1", "n2", "n4", "n5", "n6"], P, 0);
    assert.deepEqual(movedPartitions(after, joined), []);
    assert.equal(shareOf(joined).n6, 0);
  });

  it("assignPartitions makes at most maxMoves balancing moves, and converges over rounds", () => {
    const live = ["n1", "n2", "n3", "n4"];
    let current = assignPartitions(null, live.slice(0, 3), P);
    const sizes: number[] = [];
    for (let round = 0; round < 6; round++) {
      const next = assignPartitions(current, live, P, 256);
      const moved = movedPartitions(current, next);
      for (const p of moved) assert.equal(ownerNode(next, p), "n4");
      sizes.push(moved.length);
      current = next;
    }
    assert.deepEqual(sizes, [256, 256, 256, 256, 0, 0]);
    assertBalanced(current);
  });

  it("assignPartitions gives the same result for any order of live", () => {
    const orders = [
      ["n1", "n2", "n3", "n4", "n5"],
      ["n5", "n4", "n3", "n2", "n1"],
      ["n3", "n1", "n5", "n2", "n4"],
    ];
    const firsts = orders.map((live) => assignPartitions(null, live, P));
    for (const a of firsts) {
      assert.deepEqual(a.nodes, ["n1", "n2", "n3", "n4", "n5"]);
      assert.deepEqual(a.owners, firsts[0]!.owners);
    }
    const previous = assignPartitions(null, ["n1", "n3"], P);
    const seconds = orders.map((live) => assignPartitions(previous, live, P, 300));
    for (const a of seconds) assert.deepEqual(a.owners, seconds[0]!.owners);
    // Recomputing is stable: a balanced assignment over the same nodes moves nothing.
    assert.deepEqual(movedPartitions(firsts[0]!, assignPartitions(firsts[0]!, orders[2]!, P)), []);
  });

  it("assignPartitions keeps every live owner's partitions and stays balanced through churn", () => {
    // A fixed pseudo-random sequence of joins and leaves (a linear congruential generator).
    let seed = 12345;
    const random = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    let live = ["n0", "n1"];
    let current: Assignment | null = null;
    for (let step = 0; step < 40; step++) {
      const next = assignPartitions(current, live, 512);
      assertBalanced(next);
      if (current !== null) {
        const floor = Math.floor(512 / live.length);
        const before = shareOf(current);
        const after = shareOf(next);
        let orphans = 0;
        let surplus = 0;
        for (const [node, share] of Object.entries(before)) {
          if (!live.includes(node)) orphans += share;
          else {
            surplus += Math.max(0, share - floor);
            // A kept node gives partitions away only down to the floor.
            assert.ok(after[node]! >= Math.min(share, floor), `${node}: ${share} → ${after[node]}`);
          }
        }
        // Every move is an orphan or a balancing move out of a node above the floor.
        assert.ok(movedPartitions(current, next).length <= orphans + surplus);
      }
      current = next;
      if (live.length > 1 && random(2) === 0) {
        const leaver = random(live.length);
        live = live.filter((_, i) => i !== leaver);
      } else live = [...live, `n${step + 2}`];
    }
  });

  it("assignPartitions handles more nodes than partitions", () => {
    const a = assignPartitions(null, ["a", "b", "c", "d", "e"], 3);
    assert.deepEqual(counts(a), [0, 0, 1, 1, 1]);
  });

  it("assignPartitions rejects bad input with RangeError", () => {
    assert.throws(() => assignPartitions(null, [], P), RangeError);
    assert.throws(() => assignPartitions(null, ["a", "b", "a"], P), RangeError);
    assert.throws(() => assignPartitions(null, ["a"], 0), RangeError);
    assert.throws(() => assignPartitions(null, ["a"], 1.5), RangeError);
    assert.throws(() => assignPartitions(null, ["a"], P, -1), RangeError);
    assert.throws(() => assignPartitions(assignPartitions(null, ["a"], 64), ["a"], 128), RangeError);
  });
});

describe("assignment helpers", () => {
  it("ownerNode names the owner and rejects a partition out of range", () => {
    const a: Assignment = { nodes: ["x", "y"], owners: Uint16Array.from([1, 0, 1]) };
    assert.deepEqual(
      [0, 1, 2].map((p) => ownerNode(a, p)),
      ["y", "x", "y"],
    );
    assert.throws(() => ownerNode(a, 3), RangeError);
    assert.throws(() => ownerNode(a, -1), RangeError);
  });

  it("movedPartitions compares owners by name, and lists every partition from null", () => {
    const a: Assignment = { nodes: ["x", "y"], owners: Uint16Array.from([0, 1, 1]) };
    // Same owners under other indexes: nothing moved.
    const b: Assignment = { nodes: ["w", "x", "y"], owners: Uint16Array.from([1, 2, 0]) };
    assert.deepEqual(movedPartitions(a, b), [2]);
    assert.deepEqual(movedPartitions(null, a), [0, 1, 2]);
  });

  it("shareOf counts every node, including one named __proto__", () => {
    const a: Assignment = { nodes: ["__proto__", "b", "c"], owners: Uint16Array.from([0, 0, 1]) };
    assert.deepEqual(
      shareOf(a),
      Object.fromEntries([
        ["__proto__", 2],
        ["b", 1],
        ["c", 0],
      ]),
    );
  });
});

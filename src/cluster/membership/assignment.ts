/**
 * Partition → node assignment for the cluster (CLUSTER.md, "Ownership table and fencing"): a
 * pure, deterministic function, so every node that computes it from the same view gets the same
 * table, and the coordinator's result can be checked by anyone.
 *
 * It is *sticky least-moves*: a partition whose owner is still live stays where it is, orphans
 * (their owner left or died) go to the least-loaded live nodes, and only then are partitions
 * moved from the most to the least loaded node, one at a time, until every node holds
 * ⌊P/N⌋ or ⌈P/N⌉. Which partition a node gives away is chosen by a hash of (partition,
 * receiver), so a joiner takes a spread of partitions rather than a contiguous range, and the
 * choice does not depend on the order in which `live` was given.
 *
 * @module
 */

/** Which node owns each partition. */
export interface Assignment {
  /** The nodes, sorted (JavaScript's default order); `owners` holds indexes into it. */
  readonly nodes: readonly string[];
  /** owners[p] indexes `nodes`; its length is the partition count P. */
  readonly owners: Uint16Array;
}

/** `owners` holds Uint16 indexes, so no more nodes than this can be named. */
const MAX_NODES = 0x10000;

/** 32-bit FNV-1a of a node name (over UTF-16 code units: the same on every JavaScript engine). */
function nameHash(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * How much `node` (given by its {@link nameHash}) "wants" partition `p`: a well-mixed 32-bit
 * score (MurmurHash3's finaliser), cheap enough to compute P × N times per call. It only breaks
 * ties and picks which partitions move; it never affects how many move.
 */
function score(p: number, node: number): number {
  let h = (node ^ Math.imul(p + 1, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function checkPartitions(partitions: number): void {
  if (!Number.isInteger(partitions) || partitions < 1) {
    throw new RangeError(`The partition count must be a positive integer, got ${partitions}`);
  }
}

/**
 * Assigns `partitions` partitions to the `live` nodes, moving as few as it can from `previous`.
 *
 * - A partition whose previous owner is in `live` stays with it.
 * - Orphaned partitions (owner not in `live`; every partition when `previous` is null) go, in
 *   ascending order, each to a least-loaded node, ties broken by the (partition, node) hash.
 *   They are always reassigned and not counted against `maxMoves`.
 * - Then one partition at a time moves from a most-loaded node to a least-loaded one until every
 *   node holds ⌊P/N⌋ or ⌈P/N⌉, or `maxMoves` balancing moves were made (default: no limit).
 *
 * `live` may come in any order: the result's `nodes` is `live` sorted, and the result is the same
 * for every order. Throws RangeError on an empty or duplicated `live`, more than 65536 nodes, a
 * bad partition count or `maxMoves`, or a `previous` of another partition count.
 *
 * @example
 * const first = assignPartitions(null, ["n1", "n2", "n3"], 4096); // 1365/1365/1366
 * const joined = assignPartitions(first, ["n1", "n2", "n3", "n4"], 4096, 256); // n4 gets 256
 */
export function assignPartitions(
  previous: Assignment | null,
  live: readonly string[],
  partitions: number,
  maxMoves = Number.POSITIVE_INFINITY,
): Assignment {
  checkPartitions(partitions);
  if (!(maxMoves >= 0) || (!Number.isInteger(maxMoves) && maxMoves !== Number.POSITIVE_INFINITY)) {
    throw new RangeError(`maxMoves must be a non-negative integer, got ${maxMoves}`);
  }
  const nodes = [...live].sort();
  if (nodes.length === 0) throw new RangeError("Cannot assign partitions to no live node");
  if (nodes.length > MAX_NODES)
    throw new RangeError(`Cannot assign partitions to more than ${MAX_NODES} nodes`);
  for (let i = 1; i < nodes.length; i++) {
    if (nodes[i] === nodes[i - 1]) throw new RangeError(`Node "${nodes[i]}" is listed twice in live`);
  }
  if (previous !== null && previous.owners.length !== partitions) {
    throw new RangeError(
      `The previous assignment has ${previous.owners.length} partitions, expected ${partitions}`,
    );
  }

  const n = nodes.length;
  const hashes = nodes.map(nameHash);
  const owners = new Uint16Array(partitions);
  const load = new Array<number>(n).fill(0);
  const orphans: number[] = [];

  // 1. Keep every partition whose owner is still live.
  const indexOf = new Map(nodes.map((node, i) => [node, i]));
  for (let p = 0; p < partitions; p++) {
    const name = previous === null ? undefined : previous.nodes[previous.owners[p]!];
    if (previous !== null && name === undefined) {
      throw new RangeError(`The previous assignment's owner of partition ${p} is not in its node list`);
    }
    const i = name === undefined ? undefined : indexOf.get(name);
    if (i === undefined) {
      orphans.push(p);
    } else {
      owners[p] = i;
      load[i]!++;
    }
  }

  // 2. Orphans to the least loaded, ties by hash so that an even split is spread, not striped.
  for (const p of orphans) {
    let best = 0;
    for (let i = 1; i < n; i++) {
      if (
        load[i]! < load[best]! ||
        (load[i] === load[best] && score(p, hashes[i]!) > score(p, hashes[best]!))
      ) {
        best = i;
      }
    }
    owners[p] = best;
    load[best]!++;
  }

  // 3. Balance: most loaded → least loaded, one partition per move. Each move lowers the number
  // of partitions that must still move by one, so the total is the least possible.
  const held: number[][] = Array.from({ length: n }, () => []);
  const position = new Uint32Array(partitions);
  for (let p = 0; p < partitions; p++) {
    const list = held[owners[p]!]!;
    position[p] = list.length;
    list.push(p);
  }
  for (let moves = 0; moves < maxMoves; moves++) {
    let donor = 0;
    let receiver = 0;
    for (let i = 1; i < n; i++) {
      if (load[i]! > load[donor]!) donor = i;
      if (load[i]! < load[receiver]!) receiver = i;
    }
    if (load[donor]! - load[receiver]! <= 1) break;
    // The donor's partition the receiver scores highest: a spread, the same on every node.
    const from = held[donor]!;
    let pick = from[0]!;
    let pickScore = score(pick, hashes[receiver]!);
    for (let k = 1; k < from.length; k++) {
      const candidate = from[k]!;
      const s = score(candidate, hashes[receiver]!);
      if (s > pickScore || (s === pickScore && candidate < pick)) {
        pick = candidate;
        pickScore = s;
      }
    }
    const last = from.pop()!;
    if (last !== pick) {
      from[position[pick]!] = last;
      position[last] = position[pick]!;
    }
    position[pick] = held[receiver]!.length;
    held[receiver]!.push(pick);
    owners[pick] = receiver;
    load[donor]!--;
    load[receiver]!++;
  }
  return { nodes, owners };
}

/** The node that owns `partition`. Throws RangeError when the partition is out of range. */
export function ownerNode(a: Assignment, partition: number): string {
  const index = Number.isInteger(partition) ? a.owners[partition] : undefined;
  const node = index === undefined ? undefined : a.nodes[index];
  if (node === undefined) {
    throw new RangeError(`Partition ${partition} is not in an assignment of ${a.owners.length} partitions`);
  }
  return node;
}

/**
 * The partitions, ascending, whose owner node differs between `from` and `to` (compared by
 * name, so a change of node indexes alone moves nothing). Every partition when `from` is null.
 */
export function movedPartitions(from: Assignment | null, to: Assignment): number[] {
  const moved: number[] = [];
  if (from !== null && from.owners.length !== to.owners.length) {
    throw new RangeError(
      `Cannot compare assignments of ${from.owners.length} and ${to.owners.length} partitions`,
    );
  }
  for (let p = 0; p < to.owners.length; p++) {
    if (from === null || from.nodes[from.owners[p]!] !== to.nodes[to.owners[p]!]) moved.push(p);
  }
  return moved;
}

/** How many partitions each node owns; every node of the assignment appears, even with 0. */
export function shareOf(a: Assignment): Record<string, number> {
  const counts = new Array<number>(a.nodes.length).fill(0);
  for (const owner of a.owners) counts[owner]!++;
  // fromEntries defines own properties, so even a node named "__proto__" is counted.
  return Object.fromEntries(a.nodes.map((node, i) => [node, counts[i]!]));
}

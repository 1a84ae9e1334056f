/**
 * The ring: P fixed partitions (Riak-style). A key's partition never changes; only partition
 * owners move. Owners are shards (one worker thread of one node), numbered per epoch in an
 * {@link OwnerTable}, so every thread and every node computes the same owner for a key.
 */
import { hash } from "node:crypto";

/** One worker thread of one node. */
export interface ShardId {
  readonly node: string;
  readonly worker: number;
}

/** Which shard owns each partition at one epoch. */
export interface OwnerTable {
  readonly epoch: number;
  readonly partitions: number;
  /** The shards, indexed by the numbers in `owners`. */
  readonly shards: readonly ShardId[];
  /** owners[p] is an index into `shards`. */
  readonly owners: Uint16Array;
}

/** A stable 64-bit hash of a key, as an unsigned bigint (first 8 bytes of SHA-1). */
export function hash64(key: string): bigint {
  return Buffer.from(hash("sha1", key, "buffer")).readBigUInt64BE(0);
}

/** The partition of a key (a normalised bare JID for users). */
export function partitionOf(key: string, partitions: number): number {
  return Number(hash64(key) % BigInt(partitions));
}

/**
 * Rendezvous (highest-random-weight) choice of a worker for a partition: adding or removing a
 * worker moves only the partitions that worker wins or held.
 */
export function rendezvousWorker(partition: number, workers: number): number {
  let best = 0;
  let bestScore = -1n;
  for (let w = 0; w < workers; w++) {
    const score = hash64(`${partition}:${w}`);
    if (score > bestScore) {
      bestScore = score;
      best = w;
    }
  }
  return best;
}

/** The owner table of a single node: every partition goes to one of its workers. */
export function singleNodeTable(node: string, workers: number, partitions: number, epoch = 1): OwnerTable {
  const shards = Array.from({ length: workers }, (_, worker) => ({ node, worker }));
  const owners = new Uint16Array(partitions);
  for (let p = 0; p < partitions; p++) owners[p] = rendezvousWorker(p, workers);
  return { epoch, partitions, shards, owners };
}

/** The shard that owns a partition. */
export function ownerOf(table: OwnerTable, partition: number): ShardId {
  return table.shards[table.owners[partition]!]!;
}

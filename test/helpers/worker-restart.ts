/**
 * Restarting a node's worker the way a crash does (`POST /api/workers/:i/restart`), and what the
 * node's status says about its workers.
 */
import assert from "node:assert/strict";
import type { StartedNode } from "./start-node.ts";
import { waitUntil } from "./wait-for.ts";

export interface WorkerStatus {
  workerRestarts: number;
  workers: { index: number; sessions: number }[];
}

export async function workerStatus(node: StartedNode): Promise<WorkerStatus> {
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/status`);
  assert.equal(response.status, 200);
  return (await response.json()) as WorkerStatus;
}

/** Kills worker `index` of `node` and waits until the node has restarted it. */
export async function crashWorker(node: StartedNode, index: number): Promise<void> {
  const restarts = (await workerStatus(node)).workerRestarts;
  const crashedAt = Date.now();
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/workers/${index}/restart`, {
    method: "POST",
  });
  assert.equal(response.status, 202);
  await waitUntil(
    async () => (await workerStatus(node)).workerRestarts === restarts + 1,
    "the worker restart",
  );
  await node.waitForLog(
    (line) => line.msg === "worker restarted" && Date.parse(String(line.time)) >= crashedAt,
    "the restarted worker",
  );
}

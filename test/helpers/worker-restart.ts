/**
 * Restarting a node's worker the way a crash does (`POST /api/workers/:i/restart`), and what the
 * node's status says about its workers.
 */
import assert from "node:assert/strict";
import { loginRaw, type TestUser } from "./fixtures.ts";
import type { RawClient } from "./raw-client.ts";
import type { AfterHook, StartedNode } from "./start-node.ts";
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

/**
 * Logs `users` in to `node` with resumable XEP-0198 sessions and checks that the kernel spread
 * them over every worker (SO_REUSEPORT: with 16 users, all on one of two workers is 1 run in
 * 65,536); returns the clients, their resumption ids and the spread.
 */
export async function loginResumableOnEveryWorker(
  t: AfterHook,
  node: StartedNode,
  users: readonly TestUser[],
): Promise<{ clients: RawClient[]; ids: string[]; spread: WorkerStatus["workers"] }> {
  const clients: RawClient[] = [];
  const ids: string[] = [];
  for (const user of users) {
    const client = await loginRaw(t, node, user, { priority: 1 });
    ids.push((await client.enableSm({ resume: true, autoAck: true })).attrs.id!);
    clients.push(client);
  }
  const spread = (await workerStatus(node)).workers;
  assert.ok(
    spread.every((w) => w.sessions > 0),
    `sessions should land on every worker: ${JSON.stringify(spread)}`,
  );
  return { clients, ids, spread };
}

/**
 * A worker that crashes, and is killed again while it is being restarted: the restart that fails
 * is tried again (after its back-off), and the sessions of the first incarnation still resume
 * from their copies on the other node. The copies' node learns that the first incarnation died
 * only from the restart notice the third incarnation sends (worker-pool.ts `#deadUnannounced`).
 *
 * What this cannot pin down from outside the process: the second incarnation dying after its
 * own prefix is known but before its restart is announced, when the third must announce both
 * (simulation seed 77167; the simulation replays it). The kill here lands earlier in the start,
 * so the first incarnation's prefix is the one the third announces.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { loginRaw, newUsers, resumeRaw } from "../helpers/fixtures.ts";
import { esc, type RawClient } from "../helpers/raw-client.ts";
import type { LogLine, StartedNode } from "../helpers/start-node.ts";
import { workerStatus } from "../helpers/worker-restart.ts";

async function killWorker(node: StartedNode, index: number): Promise<void> {
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/workers/${index}/restart`, {
    method: "POST",
  });
  assert.equal(response.status, 202);
}

test("a worker killed again during its restart: its first incarnation's sessions still resume", async (t) => {
  const cluster = await startTestCluster(t);
  const node = await cluster.start("n1", { workers: 1 });
  const n2 = await cluster.start("n2", { workers: 1, join: node.peerAddr });
  await waitForOwners(node, ["n1", "n2"]);
  const [senderUser, ...users] = await newUsers(node, 9, "wdc");
  // Every session on n1's one worker, its copy on n2's main thread; the sender on n2.
  const sender = await loginRaw(t, n2, senderUser!);
  const clients: RawClient[] = [];
  const ids: string[] = [];
  for (const user of users) {
    const client = await loginRaw(t, node, user, { priority: 1 });
    ids.push((await client.enableSm({ resume: true, autoAck: true })).attrs.id!);
    clients.push(client);
  }
  const restarts = (await workerStatus(node)).workerRestarts;
  const crashedAt = Date.now();
  const since = (line: LogLine) => Date.parse(String(line.time)) >= crashedAt;
  await killWorker(node, 0);
  // The supervisor logs this as it spawns the next incarnation (no back-off after a first crash),
  // whose start (loading the runtime, listening) takes a while: the second
  // kill lands in it.
  await node.waitForLog(
    (line) => line.msg === "worker exited; restarting it" && line.worker === 0 && since(line),
    "the first restart",
  );
  await killWorker(node, 0);
  await node.waitForLog(
    (line) => line.msg === "worker restart failed" && line.worker === 0 && since(line),
    "the second incarnation dying during its own start (the path under test)",
  );
  await node.waitForLog(
    (line) => line.msg === "worker restarted" && line.worker === 0 && since(line),
    "the third incarnation",
    15_000,
  );
  assert.equal((await workerStatus(node)).workerRestarts, restarts + 2, "two restarts");
  await Promise.all(clients.map((client) => client.whenClosed));
  for (const user of users) {
    sender.send(`<message to='${esc(user.jid)}' type='chat'><body>after two crashes</body></message>`);
  }
  for (const [i, user] of users.entries()) {
    const { client: again, answer } = await resumeRaw(t, n2, user, ids[i]!, clients[i]!.smInbound ?? 0);
    assert.ok(answer.is("resumed", "urn:xmpp:sm:3"), `${user.jid} resumed: ${answer.toString()}`);
    await again.waitFor(
      (el) => el.getName() === "message" && el.getChildText("body") === "after two crashes",
      "the message sent after the crashes, live",
    );
    again.destroy();
  }
});

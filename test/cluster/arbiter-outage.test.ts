/**
 * PostgreSQL is the arbiter of membership, not a heartbeat every node must keep up with: while it
 * is away (paused, or crashed and restarted) membership is frozen, and when it returns nobody is
 * judged for the silence that was the database's. Issue 9: a 20 s pause made the coordinator
 * find every lease expired, mark all three members down (itself included), and every node
 * fenced itself.
 */
import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import {
  type ClusterNode,
  clusterStatus,
  FAST_CLUSTER_TIMING,
  startThreeNodes,
  type TestCluster,
  waitForOwners,
} from "../helpers/cluster.ts";
import { assertCleanTraffic, chatters } from "../helpers/cluster-traffic.ts";
import type { TestServer } from "../helpers/postgres.ts";

/** How long the database is away: several leases, so that every lease has run out meanwhile. */
const OUTAGE_MS = FAST_CLUSTER_TIMING.leaseMs * 3;
/**
 * After the database is back, the time in which a wrong judgement would show: reconnection,
 * the fresh lease window, and two of the coordinator's 5 s view polls.
 */
const JUDGEMENT_MS = FAST_CLUSTER_TIMING.leaseMs + FAST_CLUSTER_TIMING.takeoverMarginMs + 10_000;

async function threeNodes(t: TestContext): Promise<{ cluster: TestCluster; nodes: ClusterNode[] }> {
  const { cluster, n1, n2, n3 } = await startThreeNodes(t);
  return { cluster, nodes: [n1, n2, n3] };
}

/** What must hold after the database came back: every node alive, up, and still the owners. */
async function assertUntouched(nodes: ClusterNode[]): Promise<void> {
  for (const node of nodes) {
    assert.ok(
      node.logs.some(
        (line) => line.msg === "PostgreSQL unreachable: membership is frozen until it answers again",
      ),
      `${node.name} noticed the outage (its calls time out rather than hang)`,
    );
  }
  for (const node of nodes) {
    assert.equal(node.process.exitCode, null, `${node.name} is still running:\n${node.logText(30)}`);
    assert.ok(
      !node.logs.some((line) => line.msg === "fencing this node: it stops serving"),
      `${node.name} did not fence itself`,
    );
  }
  const status = await clusterStatus(nodes[0]!);
  assert.deepEqual(
    status.members.map((m) => [m.node, m.status]),
    nodes.map((n) => [n.name, "up"]),
    "nobody was declared down",
  );
  await waitForOwners(
    nodes[0]!,
    nodes.map((n) => n.name),
  );
}

/**
 * Three nodes under chat traffic while the database goes away (`stop`) for {@link OUTAGE_MS}
 * and comes back (`start`); then the judgement window; then everything must be untouched.
 */
async function survivesOutage(
  t: TestContext,
  tag: string,
  outage: { stop(pg: TestServer): Promise<void>; start(pg: TestServer): Promise<void> },
): Promise<{ cluster: TestCluster; nodes: ClusterNode[] }> {
  const { cluster, nodes } = await threeNodes(t);
  const clients = await chatters(t, nodes, 3);
  await assertCleanTraffic(t, tag, clients, async () => {
    await outage.stop(cluster.pg);
    await delay(OUTAGE_MS); // the fault itself: the database is away this long
    await outage.start(cluster.pg);
    await delay(JUDGEMENT_MS);
  });
  await assertUntouched(nodes);
  return { cluster, nodes };
}

test("PostgreSQL paused for three leases: nobody is disconnected, declared down or fenced; membership resumes", async (t) => {
  const { cluster, nodes } = await survivesOutage(t, "db-pause", {
    stop: (pg) => pg.signal("SIGSTOP"),
    start: (pg) => pg.signal("SIGCONT"),
  });
  // Membership is not frozen any more: a node joins.
  const n4 = await cluster.start("n4", { workers: 1, join: nodes[0]!.peerAddr });
  await waitForOwners(nodes[0]!, ["n1", "n2", "n3", n4.name]);
});

test("PostgreSQL killed and restarted on the same data: nobody is disconnected, declared down or fenced", async (t) => {
  await survivesOutage(t, "db-restart", {
    stop: (pg) => pg.signal("SIGKILL"),
    start: (pg) => pg.restart(),
  });
});

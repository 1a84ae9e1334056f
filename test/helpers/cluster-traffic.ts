/**
 * Chat traffic among clients spread over cluster nodes, checked per client: what a fault test
 * runs before, during and after the fault, and what it asserts (nobody disconnected, nothing
 * lost, nothing twice).
 */
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { xml } from "@xmpp/xml";
import { ChatTraffic, type TrafficClient } from "./chat-traffic.ts";
import { connectClient } from "./client.ts";
import type { ClusterNode } from "./cluster.ts";
import { newUsers } from "./fixtures.ts";

/** `perNode` available clients on each node, with fresh accounts. */
export async function chatters(
  t: TestContext,
  nodes: ClusterNode[],
  perNode: number,
  prefix = "f",
): Promise<TrafficClient[]> {
  const users = await newUsers(nodes[0]!, nodes.length * perNode, prefix);
  return Promise.all(
    users.map(async (user, i) => {
      const node = nodes[i % nodes.length]!;
      const client = await connectClient(node, { username: user.username, password: user.password }, t);
      await client.send(xml("presence"));
      await client.waitForStanza((el) => el.is("presence") && el.attrs.from === client.jid, "own presence");
      return { name: `${prefix}${i}`, node: node.name, jid: user.jid, client };
    }),
  );
}

/** Runs `traffic` among `clients` for some rounds and checks it lost and doubled nothing. */
export async function assertCleanTraffic(
  t: TestContext,
  tag: string,
  clients: TrafficClient[],
  during: () => Promise<void>,
) {
  const traffic = new ChatTraffic(tag, clients);
  traffic.start(100);
  try {
    await traffic.rounds(5);
    await during();
    await traffic.rounds(20);
  } finally {
    // Also when the fault itself failed: a timer left running would keep the test alive.
    traffic.stop();
  }
  // Checked first: the flush below writes to every client, which a dropped one cannot take.
  assert.deepEqual([...traffic.disconnected], [], `${tag}: nobody on a surviving node is disconnected`);
  const names = clients.map((c) => c.name);
  await traffic.flush(names);
  const report = traffic.check(names);
  traffic.finish();
  t.diagnostic(
    `${tag}: sent ${report.sent}, lost ${report.lost.length}, duplicated ${report.duplicated.length}`,
  );
  assert.deepEqual(report.lost, [], `${tag}: nothing lost`);
  assert.deepEqual(report.duplicated, [], `${tag}: nothing twice`);
  assert.ok(report.sent > 20, `${tag}: traffic ran`);
}

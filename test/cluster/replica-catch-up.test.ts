/**
 * Copies that fell behind when a peer link dropped its queue catch up in chunks the link can
 * take (src/cluster/replica-catch-up.ts). A burst of writes to replicated sessions passes the
 * link's budget (`cluster.maxPeerBufferBytes`), the link drops its queue and reconnects, and the
 * copies on the other node lack what it dropped. Re-sent all at once, their states passed the
 * budget again: the link overflowed every 80 ms for as long as the test ran, and the writes,
 * which wait for the replicas, never reached the clients.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { actorNodes, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { loginRaw, newUsers } from "../helpers/fixtures.ts";
import type { RawClient } from "../helpers/raw-client.ts";

const OVERFLOW = "peer link overflow: the peer does not keep up; dropping its queue and reconnecting";

test("copies behind a link that overflowed catch up in chunks: every write reaches its client once", async (t) => {
  const cluster = await startTestCluster(t);
  // A small link budget that the burst below passes; the sender writes 80 KB at once.
  const options = {
    workers: 1,
    cluster: { maxPeerBufferBytes: 32 * 1024 },
    config: { limits: { inputBurstBytes: 1 << 20 } },
  };
  const n1 = await cluster.start("n1", options);
  await cluster.start("n2", { ...options, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, 48, "catchup");
  const placement = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  // Sessions on n1 replicate to n2's main thread; with their actors on n1 too, only the
  // replication stream crosses the link.
  const [senderUser, ...recipientUsers] = users.filter((u) => placement.get(u.jid) === "n1");
  const recipients = recipientUsers.slice(0, 16);
  assert.ok(recipients.length >= 12, `enough users with actors on n1 (${recipients.length})`);
  const sender = await loginRaw(t, n1, senderUser!);
  const clients: RawClient[] = [];
  for (const user of recipients) {
    const client = await loginRaw(t, n1, user, { priority: 1 });
    assert.equal((await client.enableSm({ resume: true })).attrs.resume, "true", "a replicated session");
    clients.push(client);
  }
  // 16 sessions × 4 writes of about 1.3 KB (never acknowledged, so each copy's state keeps
  // them): 82 KB of changes, then as much in whole states, against a budget of 32 KiB.
  const pad = "z".repeat(1_000);
  for (let i = 0; i < 4; i++) {
    for (const user of recipients) {
      sender.send(`<message to='${user.jid}' type='chat'><body>burst ${i} ${pad}</body></message>`);
    }
  }
  const bursts = (client: RawClient) =>
    client.received.flatMap((el) => {
      const match = /^burst (\d+) /.exec(el.getChildText("body") ?? "");
      return el.getName() === "message" && match !== null ? [Number(match[1])] : [];
    });
  for (const client of clients) {
    await client.waitFor(() => new Set(bursts(client)).size === 4, "every write of the burst", 20_000);
  }
  const overflows = n1.logs.filter((line) => line.msg === OVERFLOW).length;
  assert.ok(overflows >= 1, "the burst overflowed the link (the path under test ran)");
  assert.ok(overflows <= 2, `the catch-up itself did not overflow it again and again (${overflows})`);
  // A marker written last to each: anything that could still come twice came before it.
  for (const user of recipients)
    sender.send(`<message to='${user.jid}' type='chat'><body>end</body></message>`);
  for (const client of clients) {
    await client.waitFor((el) => el.getChildText("body") === "end", "the end marker");
    assert.deepEqual(bursts(client), [0, 1, 2, 3], "each write once, in order");
  }
});

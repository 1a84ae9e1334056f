/**
 * Two real node processes on one real PostgreSQL: the second joins the first at run time, the
 * ring splits between them, and users whose sockets and actors sit on different nodes talk.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { xml } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
import { clusterStatus, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { newUsers } from "../helpers/fixtures.ts";

test("a node joins at run time; users on different nodes exchange messages, each exactly once", async (t) => {
  const cluster = await startTestCluster(t);
  const a = await cluster.start("n1");
  const b = await cluster.start("n2", { join: a.peerAddr });
  for (const node of [a, b]) await waitForOwners(node, ["n1", "n2"]);
  const status = await clusterStatus(a);
  assert.deepEqual(
    status.members.map((m) => [m.node, m.status, m.partitions]),
    [
      ["n1", "up", 2048],
      ["n2", "up", 2048],
    ],
  );

  const users = await newUsers(a, 6);
  const clients = await Promise.all(
    users.map((u, i) =>
      connectClient(i % 2 === 0 ? a : b, { username: u.username, password: u.password }, t),
    ),
  );
  // Available, so that messages are delivered rather than stored offline (RFC 6121 §8.5.2).
  await Promise.all(
    clients.map(async (c) => {
      await c.send(xml("presence"));
      await c.waitForStanza((el) => el.is("presence") && el.attrs.from === c.jid, "own presence");
    }),
  );
  for (let i = 0; i < users.length; i++) {
    const to = users[(i + 1) % users.length]!;
    await clients[i]!.send(
      xml("message", { to: to.jid, type: "chat", id: `m${i}` }, xml("body", {}, `hello ${i}`)),
    );
  }
  for (let i = 0; i < users.length; i++) {
    const client = clients[(i + 1) % users.length]!;
    const msg = await client.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === `hello ${i}`,
      `message ${i}`,
    );
    assert.equal(msg.attrs.from?.split("/")[0], users[i]!.jid);
  }
  // A marker sent last arrives after anything that could have been duplicated.
  await clients[0]!.send(xml("message", { to: users[1]!.jid, type: "chat" }, xml("body", {}, "end")));
  await clients[1]!.waitForStanza((el) => el.getChildText("body") === "end", "end marker");
  for (let i = 0; i < users.length; i++) {
    const got = clients[(i + 1) % users.length]!.stanzas.filter(
      (el) => el.getChildText("body") === `hello ${i}`,
    );
    assert.equal(got.length, 1, `message ${i} delivered once`);
  }

  // The admin API of either node sees the whole cluster: every session, on the node holding it,
  // and a message sent through one node reaches a client connected to the other.
  for (const node of [a, b]) {
    const reply = await fetch(`http://127.0.0.1:${node.ports.http}/api/sessions`);
    const { sessions } = (await reply.json()) as { sessions: { jid: string; node: string }[] };
    assert.deepEqual(
      sessions.map((s) => [s.jid.split("/")[0], s.node]).sort(),
      users.map((u, i) => [u.jid, i % 2 === 0 ? "n1" : "n2"]).sort(),
      `GET /api/sessions on ${node.name}`,
    );
  }
  const sent = await fetch(`http://127.0.0.1:${b.ports.http}/api/messages`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ to: users[0]!.jid, body: "from the operator" }),
  });
  assert.equal(sent.status, 202);
  const notice = await clients[0]!.waitForStanza(
    (el) => el.getChildText("body") === "from the operator",
    "notice",
  );
  assert.equal(notice.attrs.from, a.domain);
});

/**
 * A replicated session answers a client's XEP-0198 `<r/>` (§4) with every stanza it handled as
 * soon as its replicas hold the count, not when the replication batch timer fires: the inbound
 * count waits for a batch (`cluster.replicationBatchMs`) only while nobody waits for it
 * (docs/architecture.md, "What may wait for a batch"). The timer here is a minute long; without
 * that, the count would reach the replica only when the owner re-sends its whole state to a
 * replica silent while behind (after 3 s) or the `<a/>` would go out with what is safe after
 * `cluster.requestTimeoutMs` (5 s). Here it must come within 1.5 s.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loginRaw, newUsers, useNode } from "../helpers/fixtures.ts";
import { esc } from "../helpers/raw-client.ts";

const NS_SM = "urn:xmpp:sm:3";

const getNode = useNode({ workers: 2, config: { cluster: { replicationBatchMs: 60_000 } } });

test("a client's <r/> is answered with every stanza it sent, without waiting for the replication batch", async (t) => {
  const node = getNode();
  const [alice, bob] = await newUsers(node, 2, "rack");
  const sender = await loginRaw(t, node, alice!, { priority: 1 });
  const receiver = await loginRaw(t, node, bob!, { priority: 1 });
  const enabled = await sender.enableSm({ resume: true });
  assert.equal(enabled.attrs.resume, "true", "resumption is on, so the session is replicated");
  for (let i = 1; i <= 3; i++) {
    const body = `counted ${i}`;
    sender.send(`<message to='${esc(bob!.jid)}' type='chat'><body>${body}</body></message>`);
    await receiver.waitFor((el) => el.getName() === "message" && el.getChildText("body") === body, body);
  }
  sender.send(`<r xmlns='${NS_SM}'/>`);
  const answer = await sender.waitFor(
    (el) => el.getName() === "a" && el.getNS() === NS_SM,
    "<a/> without waiting for the replication batch",
    1_500,
  );
  assert.equal(answer.attrs.h, "3", `every stanza counted: ${answer.toString()}`);
});

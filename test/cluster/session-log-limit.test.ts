/**
 * `limits.smMaxUnackedBytes`: a session's XEP-0198 log must fit its replica's peer link. A
 * resumed session streams its whole state (the stanzas its client has not acknowledged) to its
 * replica at once; one larger than the link's budget (`cluster.maxPeerBufferBytes`) overflowed
 * the link at each try, the catch-up sent it again, and the link overflowed again, for ever: the
 * resumed client never got its stanzas (this test's first case timed out after 20 s without the
 * limit), and every other session replicating over that link waited with it.
 */
import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { actorNodes, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { goOnline, loginRaw, newUsers, resumeRaw } from "../helpers/fixtures.ts";
import type { RawClient } from "../helpers/raw-client.ts";

const OVERFLOW = "peer link overflow: the peer does not keep up; dropping its queue and reconnecting";
const LIMIT = 8 * 1024;

/** Two nodes with a 32 KiB link budget and the log limit at a quarter of it; two users on n1. */
async function twoNodes(t: TestContext) {
  const cluster = await startTestCluster(t);
  const options = {
    workers: 1,
    cluster: { maxPeerBufferBytes: 4 * LIMIT },
    config: { limits: { inputBurstBytes: 1 << 20, smMaxUnackedBytes: LIMIT } },
  };
  const n1 = await cluster.start("n1", options);
  await cluster.start("n2", { ...options, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, 12, "log");
  const placement = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  // Actors and sockets on n1: only the replication crosses the link to n2.
  const [recipient, sender] = users.filter((u) => placement.get(u.jid) === "n1");
  assert.ok(recipient !== undefined && sender !== undefined, "two users with actors on n1");
  return { n1, recipient, sender: await loginRaw(t, n1, sender) };
}

/** 40 messages of 1.3 KB (52 KB, past the link's budget), then "last". */
function sendMany(sender: RawClient, to: string): void {
  const pad = "z".repeat(1_200);
  for (let i = 0; i < 40; i++)
    sender.send(`<message to='${to}' type='chat'><body>msg ${i} ${pad}</body></message>`);
  sender.send(`<message to='${to}' type='chat'><body>last</body></message>`);
}

function numbered(client: RawClient): number[] {
  return client.received.flatMap((el) => {
    const match = /^msg (\d+) /.exec(el.getChildText("body") ?? "");
    return el.getName() === "message" && match !== null ? [Number(match[1])] : [];
  });
}

test("a session waiting for <resume/> whose log passes the limit ends: its stanzas go offline, once", async (t) => {
  const { n1, recipient, sender } = await twoNodes(t);
  const away = await loginRaw(t, n1, recipient, { priority: 1 });
  const id = (await away.enableSm({ resume: true })).attrs.id!;
  away.destroy();
  await away.whenClosed;
  sendMany(sender, recipient.jid);
  const { client: again, answer } = await resumeRaw(t, n1, recipient, id, 0);
  assert.ok(answer.is("failed", "urn:xmpp:sm:3"), `the session ended at the limit: ${answer.toString()}`);
  again.destroy();
  const fresh = await loginRaw(t, n1, recipient);
  await goOnline(fresh);
  await fresh.waitFor((el) => el.getChildText("body") === "last", "the last message, from offline storage");
  // Once each; not always in order: a message already on its way to the session when it ended
  // comes back to be stored after one that reached the user's actor later.
  assert.deepEqual(
    numbered(fresh).sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => i),
    "every message once",
  );
  const overflows = n1.logs.filter((line) => line.msg === OVERFLOW).length;
  assert.equal(overflows, 0, "the link never overflowed");
});

test("a client that stops acknowledging is cut off at the log limit; what it missed waits offline", async (t) => {
  const { n1, recipient, sender } = await twoNodes(t);
  const client = await loginRaw(t, n1, recipient, { priority: 1 });
  await client.enableSm({ resume: true });
  sendMany(sender, recipient.jid);
  const error = await client.waitFor((el) => el.getName() === "error", "the stream error");
  assert.ok(error.getChild("policy-violation") !== undefined, error.toString());
  await client.whenClosed;
  // The session then waits for <resume/>, and ends when its log passes the limit again.
  const fresh = await loginRaw(t, n1, recipient);
  await goOnline(fresh);
  await fresh.waitFor((el) => el.getChildText("body") === "last", "the last message");
  assert.deepEqual(
    [...numbered(client), ...numbered(fresh)].sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => i),
    "every message once, live or from offline storage",
  );
  assert.equal(n1.logs.filter((line) => line.msg === OVERFLOW).length, 0, "the link never overflowed");
});

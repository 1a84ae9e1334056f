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

/**
 * Two nodes with a 32 KiB link budget and the log limit at a quarter of it; a recipient with
 * its actors on n1, and a sender logged in there too or, `senderOn: "n2"`, on n2 (its messages
 * then cross the link as retained stanzas whose sender waits to hear they are safe).
 */
async function twoNodes(t: TestContext, senderOn: "n1" | "n2" = "n1") {
  const cluster = await startTestCluster(t);
  const options = {
    workers: 1,
    cluster: { maxPeerBufferBytes: 4 * LIMIT },
    config: { limits: { inputBurstBytes: 1 << 20, smMaxUnackedBytes: LIMIT } },
  };
  const n1 = await cluster.start("n1", options);
  const n2 = await cluster.start("n2", { ...options, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, 12, "log");
  const placement = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  const [recipient, sender] = users.filter((u) => placement.get(u.jid) === "n1");
  const [remote] = users.filter((u) => placement.get(u.jid) === "n2");
  assert.ok(recipient !== undefined && sender !== undefined && remote !== undefined, "users on both nodes");
  const from = senderOn === "n1" ? await loginRaw(t, n1, sender) : await loginRaw(t, n2, remote);
  return { n1, recipient, sender: from };
}

/** 40 messages of `size` (1.3 KB: 52 KB, past the link's budget), then "last". */
function sendMany(sender: RawClient, to: string, size = 1_200): void {
  const pad = "z".repeat(size);
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

test("a client that stops acknowledging is cut off at the log limit; its sender hears all is safe", async (t) => {
  // The sender on the other node: its messages are retained until the recipient's session says
  // they are safe, and the one that passed the limit was never answered (re-sent 3 s later, it
  // was delivered twice).
  const { n1, recipient, sender } = await twoNodes(t, "n2");
  await sender.enableSm();
  const client = await loginRaw(t, n1, recipient, { priority: 1 });
  await client.enableSm({ resume: true });
  // 40 messages of 330 bytes: past the 8 KiB limit, within the link's budget.
  sendMany(sender, recipient.jid, 200);
  const error = await client.waitFor((el) => el.getName() === "error", "the stream error");
  assert.ok(error.getChild("policy-violation") !== undefined, error.toString());
  await client.whenClosed;
  // Every one of the sender's 41 stanzas is safe (delivered or stored), so its <a/> counts them
  // all; one never answered held it back until cluster.requestTimeoutMs and a lower count.
  assert.equal(await sender.requestAck(10_000), 41, "all of the sender's stanzas are accepted");
  // The session ended at once: a fresh login gets the rest from offline storage, each once (the
  // ones it got live before the cut, never acknowledged, come again: XEP-0198 §4).
  const fresh = await loginRaw(t, n1, recipient);
  await goOnline(fresh);
  await fresh.waitFor((el) => el.getChildText("body") === "last", "the last message");
  const offline = numbered(fresh);
  assert.equal(new Set(offline).size, offline.length, `no message twice from storage: ${offline}`);
  assert.deepEqual(
    [...new Set([...numbered(client), ...offline])].sort((a, b) => a - b),
    Array.from({ length: 40 }, (_, i) => i),
    "every message, live or from offline storage",
  );
  assert.equal(n1.logs.filter((line) => line.msg === OVERFLOW).length, 0, "the link never overflowed");
});

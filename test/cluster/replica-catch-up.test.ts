/**
 * Copies that fell behind when a peer link dropped its queue catch up in chunks the link can
 * take (src/cluster/replica-catch-up.ts). A burst of writes to replicated sessions passes the
 * link's budget (`cluster.maxPeerBufferBytes`), the link drops its queue and reconnects, and the
 * copies on the other node lack what it dropped. Re-sent all at once, their states passed the
 * budget again: the link overflowed every 80 ms for as long as the test ran, and the writes,
 * which wait for the replicas, never reached the clients.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { type TestContext, test } from "node:test";
import { promisify } from "node:util";
import { actorNodes, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { loginRaw, newUsers } from "../helpers/fixtures.ts";
import type { RawClient } from "../helpers/raw-client.ts";

const run = promisify(execFile);

const OVERFLOW = "peer link overflow: the peer does not keep up; dropping its queue and reconnecting";
const RESEND = "re-sending what the peer link dropped";
const CUT_SHORT = "re-send cut short by the link going down; it starts again at link-up";

/**
 * Two nodes with a small link budget, `count` resumable sessions with their actors and sockets
 * on n1 (so only their replication crosses the link to n2), and a sender on n1.
 */
async function replicatedSessions(t: TestContext, count: number) {
  const cluster = await startTestCluster(t);
  // A small link budget that the burst below passes.
  const options = {
    workers: 1,
    cluster: { maxPeerBufferBytes: 32 * 1024 },
    // A session's log may take at most a quarter of the link's budget (config check).
    config: { limits: { inputBurstBytes: 1 << 20, smMaxUnackedBytes: 8 * 1024 } },
  };
  const n1 = await cluster.start("n1", options);
  const n2 = await cluster.start("n2", { ...options, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, count * 3, "catchup");
  const placement = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  // Sessions on n1 replicate to n2's main thread; with their actors on n1 too, only the
  // replication stream crosses the link.
  const [senderUser, ...recipientUsers] = users.filter((u) => placement.get(u.jid) === "n1");
  const recipients = recipientUsers.slice(0, count);
  assert.ok(recipients.length >= (count * 3) / 4, `enough users with actors on n1 (${recipients.length})`);
  const sender = await loginRaw(t, n1, senderUser!);
  const clients: RawClient[] = [];
  for (const user of recipients) {
    const client = await loginRaw(t, n1, user, { priority: 1 });
    assert.equal((await client.enableSm({ resume: true })).attrs.resume, "true", "a replicated session");
    clients.push(client);
  }
  return { n1, n2, sender, recipients, clients };
}

/**
 * Writes four messages of about 1.3 KB to each recipient in one burst (never acknowledged, so
 * each copy's state keeps them): more than the link's budget in changes, then as much in whole
 * states.
 */
function burst(sender: RawClient, recipients: readonly { jid: string }[]): void {
  const pad = "z".repeat(1_000);
  for (let i = 0; i < 4; i++) {
    for (const user of recipients) {
      sender.send(`<message to='${user.jid}' type='chat'><body>burst ${i} ${pad}</body></message>`);
    }
  }
}

/** The burst numbers `client` received, in order. */
function bursts(client: RawClient): number[] {
  return client.received.flatMap((el) => {
    const match = /^burst (\d+) /.exec(el.getChildText("body") ?? "");
    return el.getName() === "message" && match !== null ? [Number(match[1])] : [];
  });
}

/** Every write of the burst reached its client, once and in order (an end marker written last). */
async function assertEveryWriteOnce(
  sender: RawClient,
  recipients: readonly { jid: string }[],
  clients: RawClient[],
) {
  for (const user of recipients)
    sender.send(`<message to='${user.jid}' type='chat'><body>end</body></message>`);
  for (const client of clients) {
    await client.waitFor((el) => el.getChildText("body") === "end", "the end marker");
    assert.deepEqual(bursts(client), [0, 1, 2, 3], "each write once, in order");
  }
}

test("copies behind a link that overflowed catch up in chunks: every write reaches its client once", async (t) => {
  const { n1, sender, recipients, clients } = await replicatedSessions(t, 16);
  // 16 sessions × 4 writes: 82 KB of changes against a budget of 32 KiB.
  burst(sender, recipients);
  for (const client of clients) {
    await client.waitFor(() => new Set(bursts(client)).size === 4, "every write of the burst", 20_000);
  }
  const overflows = n1.logs.filter((line) => line.msg === OVERFLOW).length;
  assert.ok(overflows >= 1, "the burst overflowed the link (the path under test ran)");
  assert.ok(overflows <= 2, `the catch-up itself did not overflow it again and again (${overflows})`);
  await assertEveryWriteOnce(sender, recipients, clients);
});

/** Why this test cannot kill a TCP connection here (`ss -K` needs root and SOCK_DESTROY), or undefined. */
async function cannotKillSockets(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return "killing a peer link's socket with ss -K needs root";
  try {
    await run("ss", ["-K", "dst", "127.0.0.1", "dport", "=", ":1"]);
    return undefined;
  } catch (error) {
    return `ss -K is not usable here: ${(error as Error).message.split("\n")[0]}`;
  }
}

test("a catch-up cut short by the link going down (not by an overflow) starts again at link-up", async (t) => {
  const unavailable = await cannotKillSockets();
  if (unavailable !== undefined) return t.skip(unavailable);
  // 32 sessions: the catch-up sends one state (5 KB) per chunk of its 8 KiB share, 20 ms or
  // more apart, so the round lasts long enough to be cut in the middle.
  const { n1, n2, sender, recipients, clients } = await replicatedSessions(t, 32);
  const n2PeerPort = n2.peerAddr.slice(n2.peerAddr.lastIndexOf(":") + 1);
  const resends = () => n1.logs.filter((line) => line.msg === RESEND).length;
  burst(sender, recipients);
  await n1.waitForLog((line) => line.msg === RESEND, "the catch-up after the overflow", 20_000);
  // Reset n1's link to n2 in the middle of the round ("peer link down", not an overflow): the
  // copies the round had not re-sent yet are held back from the retry timer until the round
  // goes idle (30 s); only a new round at the next link-up sends them sooner.
  await run("ss", ["-K", "dst", "127.0.0.1", "dport", "=", `:${n2PeerPort}`]);
  await n1.waitForLog(
    (line) => line.msg === CUT_SHORT,
    "the round cut short (the path under test ran)",
    10_000,
  );
  for (const client of clients) {
    await client.waitFor(() => new Set(bursts(client)).size === 4, "every write of the burst", 20_000);
  }
  assert.ok(resends() >= 2, `a second round after the link came back (${resends()} rounds)`);
  await assertEveryWriteOnce(sender, recipients, clients);
});

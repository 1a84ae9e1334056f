/**
 * A worker thread of one cluster node crashes (docs/cluster.md, "What survives which fault"):
 * the other nodes learn it, as the node's own workers do. Their users whose UserActors lived on
 * the dead worker stay reachable (the other nodes tell the restarted worker about their sessions,
 * so nothing is stored offline for a user who is online elsewhere), and the dead worker's
 * resumable sessions resume from their copies on the other node (the copies are promoted there
 * as after a node's death) with what was sent to them meanwhile.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { actorShards, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { loginRaw, newUsers, resumeRaw, type TestUser } from "../helpers/fixtures.ts";
import { esc, NS_SM, type RawClient } from "../helpers/raw-client.ts";
import { waitUntil } from "../helpers/wait-for.ts";
import { crashWorker, loginResumableOnEveryWorker } from "../helpers/worker-restart.ts";

test("a worker crash on one node: the other node's users stay reachable, its sessions resume there", async (t) => {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1");
  const n2 = await cluster.start("n2", { join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);

  // Sockets on n2, some of them (about a quarter) users whose UserActor lives on n1's worker 0:
  // their sessions are what the restarted worker must learn from n2. Batches of 10 until at
  // least one is there, and 20 in all.
  const far: TestUser[] = [];
  let onCrashed = 0;
  while (far.length < 20 || onCrashed === 0) {
    assert.ok(far.length < 80, "one of 80 users lives on n1's worker 0");
    const batch = await newUsers(n1, 10, "far");
    const placement = await actorShards(
      cluster.url,
      batch.map((u) => u.jid),
    );
    for (const user of batch) {
      const at = placement.get(user.jid)!;
      if (at.node === "n1" && at.worker === 0) onCrashed++;
    }
    far.push(...batch);
  }
  const farClients: RawClient[] = [];
  for (const user of far) farClients.push(await loginRaw(t, n2, user, { priority: 1 }));
  // Sockets on n1, resumable: their copies are on n2's main thread.
  const near = await newUsers(n1, 16, "near");
  const { clients: nearClients, ids, spread } = await loginResumableOnEveryWorker(t, n1, near);
  // Every copy is on n2 before the crash (a copy still on its way could not be promoted).
  await waitUntil(
    async () => {
      const response = await fetch(`http://127.0.0.1:${n2.ports.http}/api/status`);
      return ((await response.json()) as { replicasHeld: number }).replicasHeld === near.length;
    },
    "n2 to hold a copy of every resumable session of n1",
    15_000,
  );

  const closed = new Set<number>();
  nearClients.forEach((client, i) => void client.whenClosed.then(() => closed.add(i)));
  await crashWorker(n1, 0);
  await waitUntil(
    () => closed.size === spread.find((w) => w.index === 0)!.sessions,
    "worker 0's clients to drop",
  );
  const gone = [...closed];
  const peer = farClients[0]!;

  // Sent while the crashed worker's clients are away: held for them, not stored offline.
  for (const i of gone) {
    peer.send(
      `<message to='${esc(near[i]!.jid)}' type='chat'><body>while the worker restarted</body></message>`,
    );
  }
  // They come back on the other node, as a client whose server went away would.
  const resumed: [RawClient, string][] = [];
  for (const i of gone) {
    const { client, answer } = await resumeRaw(t, n2, near[i]!, ids[i]!, nearClients[i]!.smInbound ?? 0);
    assert.ok(answer.is("resumed", NS_SM), `${near[i]!.jid} resumed: ${answer.toString()}`);
    const message = await client.waitFor(
      (el) => el.getName() === "message" && el.getChildText("body") === "while the worker restarted",
      `${near[i]!.jid}: the message sent while the worker restarted`,
    );
    assert.equal(message.getChild("delay", "urn:xmpp:delay"), undefined, "delivered live, not from storage");
    resumed.push([client, near[i]!.jid]);
  }

  // Everyone reaches everyone, live: the UserActors rebuilt on n1's worker 0 know the sessions
  // on n2 (and on n1's other worker, and the resumed ones).
  const online: [RawClient, string][] = [
    ...farClients.slice(1).map((client, i): [RawClient, string] => [client, far[i + 1]!.jid]),
    ...nearClients.flatMap((client, i): [RawClient, string][] =>
      closed.has(i) ? [] : [[client, near[i]!.jid]],
    ),
    ...resumed,
  ];
  for (const [to, bare] of online) {
    const body = `after the crash to ${bare}`;
    peer.send(`<message to='${esc(bare)}' type='chat'><body>${esc(body)}</body></message>`);
    const got = await to.waitFor(
      (el) => el.getName() === "message" && el.getChildText("body") === body,
      `message to ${bare}`,
    );
    assert.equal(got.getChild("delay", "urn:xmpp:delay"), undefined, `${bare}: delivered live`);
  }
});

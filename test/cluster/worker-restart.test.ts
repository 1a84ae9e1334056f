/**
 * A worker thread that dies is restarted without taking the process down: clients whose sockets
 * were on other workers keep their sessions and keep chatting, including with users whose
 * UserActors lived on the dead worker (their session tables are rebuilt by re-registration),
 * and the clients that lost their socket log in again, or resume their XEP-0198 session from its
 * replica on the other worker.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { loginRaw, newUsers, resumeRaw, useNode } from "../helpers/fixtures.ts";
import { esc, type RawClient } from "../helpers/raw-client.ts";
import { waitUntil } from "../helpers/wait-for.ts";
import { crashWorker, loginResumableOnEveryWorker, workerStatus } from "../helpers/worker-restart.ts";

const getNode = useNode({ workers: 2 });

test("a crashed worker is restarted; clients on the other worker keep chatting with everyone", async (t) => {
  const node = getNode();
  const users = await newUsers(node, 16, "w");
  const clients: RawClient[] = [];
  for (const user of users) clients.push(await loginRaw(t, node, user, { priority: 1 }));
  const before = await workerStatus(node);
  assert.ok(
    before.workers.every((w) => w.sessions > 0),
    `sessions should land on both workers: ${JSON.stringify(before.workers)}`,
  );

  const closed = new Set<RawClient>();
  for (const client of clients) void client.whenClosed.then(() => closed.add(client));
  await crashWorker(node, 0);

  // Exactly the clients whose sockets were on worker 0 lost them.
  await waitUntil(
    () => closed.size === before.workers.find((w) => w.index === 0)!.sessions,
    "worker 0's clients to drop",
  );
  const survivors = clients.filter((c) => !closed.has(c));
  assert.ok(survivors.length > 0, "some clients were on worker 1");
  assert.equal(node.process.exitCode, null, "the process is still running");

  // Every survivor reaches every other survivor: the UserActors that lived on worker 0 were
  // rebuilt with their sessions.
  for (const from of survivors) {
    for (const to of survivors) {
      if (from === to) continue;
      const body = `after-crash ${from.jid} -> ${to.jid}`;
      from.send(
        `<message to='${esc(to.jid!.split("/")[0]!)}' type='chat'><body>${esc(body)}</body></message>`,
      );
      const got = await to.waitFor(
        (el) => el.getName() === "message" && el.getChildText("body") === body,
        `message ${body}`,
      );
      assert.equal(got.attrs.from, from.jid);
    }
  }

  // Users whose sockets died are offline now, wherever their UserActor lives: what is sent to
  // them meanwhile is stored, not written to a session that no longer exists.
  const lost = users.filter((_, i) => closed.has(clients[i]!));
  const peer = survivors[0]!;
  for (const user of lost) {
    peer.send(`<message to='${esc(user.jid)}' type='chat'><body>while you were away</body></message>`);
  }
  for (const user of lost) {
    const back = await loginRaw(t, node, user);
    back.send("<presence/>");
    const stored = await back.waitFor(
      (el) => el.getName() === "message" && el.getChildText("body") === "while you were away",
      `${user.jid}'s offline message`,
    );
    assert.ok(stored.getChild("delay", "urn:xmpp:delay"), "delivered from offline storage");
    back.destroy();
  }

  // A client that lost its socket logs in again, on whichever worker the kernel picks.
  const lostUser = lost[0]!;
  const again = await loginRaw(t, node, lostUser, { priority: 1 });
  again.send(`<message to='${esc(peer.jid!.split("/")[0]!)}' type='chat'><body>back</body></message>`);
  await peer.waitFor(
    (el) => el.getName() === "message" && el.getChildText("body") === "back",
    "message after re-login",
  );
});

test("a resumable session on a crashed worker resumes from its replica on the other worker", async (t) => {
  const node = getNode();
  // With 8 clients, all of them landed on worker 0 in one full run (about 1 in 256), and nothing
  // dropped: 16 now.
  const users = await newUsers(node, 16, "wr");
  const { clients, ids } = await loginResumableOnEveryWorker(t, node, users);
  const closed = new Set<number>();
  clients.forEach((client, i) => void client.whenClosed.then(() => closed.add(i)));
  // Worker 1: the test above restarted worker 0, and a worker that dies again soon after a
  // restart is restarted only after a back-off.
  await crashWorker(node, 1);
  await waitUntil(() => closed.size > 0, "worker 1's clients to drop");
  const gone = [...closed];
  const peer = clients.find((_, i) => !closed.has(i));
  assert.ok(peer, "some sessions were on worker 0");
  for (const i of gone) {
    peer.send(
      `<message to='${esc(users[i]!.jid)}' type='chat'><body>while the worker restarted</body></message>`,
    );
  }
  for (const i of gone) {
    const { client: again, answer } = await resumeRaw(
      t,
      node,
      users[i]!,
      ids[i]!,
      clients[i]!.smInbound ?? 0,
    );
    assert.ok(answer.is("resumed", "urn:xmpp:sm:3"), `${users[i]!.jid} resumed: ${answer.toString()}`);
    const message = await again.waitFor(
      (el) => el.getName() === "message" && el.getChildText("body") === "while the worker restarted",
      "the message sent while the worker restarted",
    );
    assert.equal(
      message.getChild("delay", "urn:xmpp:delay"),
      undefined,
      "delivered live, not from offline storage",
    );
    again.destroy();
  }
});

test("while a worker that keeps crashing waits out its back-off, the node answers for the others", async () => {
  const node = getNode();
  // Each quick crash doubles the wait before the next restart (200 ms, 400 ms, ...).
  for (let i = 0; i < 3; i++) await crashWorker(node, 0);
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/workers/0/restart`, {
    method: "POST",
  });
  assert.equal(response.status, 202);
  // A call to the dead worker's port never answered: the status hung until the fetch gave up.
  const during = await fetch(`http://127.0.0.1:${node.ports.http}/api/status`, {
    signal: AbortSignal.timeout(5_000),
  });
  assert.equal(during.status, 200);
  const body = (await during.json()) as { workers: { index: number }[]; workersRestarting: number[] };
  assert.deepEqual(body.workersRestarting, [0], "worker 0 is waiting out its back-off");
  assert.deepEqual(
    body.workers.map((w) => w.index),
    [1],
    "the running worker's figures",
  );
  await waitUntil(async () => (await workerStatus(node)).workers.length === 2, "both workers running again");
});

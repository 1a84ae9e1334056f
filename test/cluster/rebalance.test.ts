/**
 * Partitions moving while clients log in: joins in quick succession, and a member that cannot
 * keep up (paused) while others join. Issue 8: a bind in a fresh three-node cluster hung for
 * 10 s and failed with internal-server-error. The cause was a member applying an owner table
 * two epochs ahead of the one it had: it then waited for handoffs from the wrong node until
 * the handoff timeout. The cluster now commits an epoch only once every serving member has
 * settled the previous one (cluster-member.ts), and a member's workers apply every epoch.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { type TestContext, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { adminRequest } from "../../src/cli/admin-client.ts";
import {
  actorNodes,
  type ClusterNode,
  clusterStatus,
  pollUntil,
  startTestCluster,
  type TestCluster,
  waitForOwners,
} from "../helpers/cluster.ts";
import {
  goOnline,
  isMessageWithBody,
  loginRaw,
  newUsers,
  resumeRaw,
  type TestUser,
} from "../helpers/fixtures.ts";
import { NS_BIND, NS_ROSTER, NS_SM, NS_STANZAS_ERROR, RawClient } from "../helpers/raw-client.ts";

const NS_CARBONS = "urn:xmpp:carbons:2";

import type { LogLine, StartedNode } from "../helpers/start-node.ts";

/** Slower than a bind may ever take: past this a login counts as hung. */
const BIND_BUDGET_MS = 2_000;

/** Epochs of the owner tables each worker of `node` applied, in log order. */
function appliedEpochs(node: StartedNode): Map<number, number[]> {
  const byWorker = new Map<number, number[]>();
  for (const line of node.logs) {
    if (line.msg !== "owner table changed") continue;
    const worker = Number(line.worker);
    byWorker.set(worker, [...(byWorker.get(worker) ?? []), Number(line.epoch)]);
  }
  return byWorker;
}

function handoffTimeouts(nodes: StartedNode[]): LogLine[] {
  return nodes.flatMap((node) =>
    node.logs.filter((line) => line.msg === "handoff timed out; serving without it"),
  );
}

/** Partitions still waiting for a handoff on `node` (GET /api/cluster). */
async function waitingPartitions(node: ClusterNode): Promise<number> {
  const reply = await adminRequest(node.ports.http, "GET", "/api/cluster");
  if (reply.kind !== "reply" || reply.status !== 200)
    throw new Error(`status failed: ${JSON.stringify(reply)}`);
  const body = reply.body as { nodes: Record<string, { waitingPartitions: number }> };
  return body.nodes[node.name]?.waitingPartitions ?? Number.NaN;
}

/** Each user logged in and available, on the nodes in turn (user i on node i mod n). */
function onlineOn(
  t: TestContext,
  nodes: StartedNode[],
  users: TestUser[],
  resource: string,
): Promise<RawClient[]> {
  return Promise.all(
    users.map(async (user, i) => {
      const client = await loginRaw(t, nodes[i % nodes.length]!, user, { resource });
      await goOnline(client);
      return client;
    }),
  );
}

/** Logins (bind, roster, carbons, presence) in a loop over every node, until stopped. */
class LoginLoop {
  readonly results: { node: string; ms: number; error?: string }[] = [];
  #stopped = false;
  readonly #done: Promise<void>[];

  constructor(nodes: ClusterNode[], users: TestUser[], loops: number) {
    this.#done = Array.from({ length: loops }, (_, k) => this.#run(nodes, users, k));
  }

  async #run(nodes: ClusterNode[], users: TestUser[], k: number): Promise<void> {
    for (let i = 0; !this.#stopped; i++) {
      const node = nodes[(k + i) % nodes.length]!;
      const user = users[(k * 7 + i) % users.length]!;
      const started = Date.now();
      const client = await RawClient.connectTo(node, { label: `loop${k}-${i}` });
      try {
        await client.login(user.username, user.password, { resource: `loop${k}-${i}` });
        // Every kind of request a session makes to its user's actor, wherever it lives: the
        // roster (an iq the actor answers), carbons (a request with a reply), and initial
        // presence (the actor reflects it back).
        const roster = await client.iq("get", `<query xmlns='${NS_ROSTER}'/>`);
        assert.equal(roster.attrs.type, "result", roster.toString());
        const carbons = await client.iq("set", `<enable xmlns='${NS_CARBONS}'/>`);
        assert.equal(carbons.attrs.type, "result", carbons.toString());
        await goOnline(client);
        this.results.push({ node: node.name, ms: Date.now() - started });
      } catch (error) {
        this.results.push({ node: node.name, ms: Date.now() - started, error: String(error).slice(0, 400) });
      } finally {
        client.destroy();
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all(this.#done);
  }

  /** Logins that failed or took longer than the budget. */
  get slow() {
    return this.results.filter((r) => r.error !== undefined || r.ms > BIND_BUDGET_MS);
  }
}

/**
 * Starts a member and pauses it (SIGSTOP) at a moment of its start, before it is up: it holds
 * its place in the membership but does nothing until {@link resume}. `at` sees every log line
 * and says when; by default, right after the node registered.
 */
function startPaused(
  cluster: TestCluster,
  name: string,
  options: Parameters<TestCluster["start"]>[1],
  at: (line: LogLine, seen: LogLine[]) => boolean = (line) => line.msg === "registered in the cluster",
): { started: Promise<ClusterNode>; paused: Promise<void>; resume(): void } {
  let child: ChildProcess | undefined;
  let onPaused!: () => void;
  const paused = new Promise<void>((resolve) => {
    onPaused = resolve;
  });
  const seen: LogLine[] = [];
  const started = cluster.start(name, {
    ...options,
    onLog: (line, process) => {
      seen.push(line);
      if (child !== undefined || !at(line, seen)) return;
      child = process;
      process.kill("SIGSTOP");
      onPaused();
    },
  });
  return { started, paused, resume: () => child?.kill("SIGCONT") };
}

/**
 * n1; then `order`'s nodes register and wait, paused (see {@link startPaused}); then n2 joins
 * and owns partitions. Long handoff timeouts, so that only a wrong handoff protocol (not a slow
 * machine) shows, and long leases, so that no pause is taken for a death.
 */
async function withPausedJoiners(t: TestContext, order: readonly ["n3", "n4"] | readonly ["n4", "n3"]) {
  const cluster = await startTestCluster(t);
  const timing = { handoffTimeoutMs: 15_000, leaseMs: 60_000 };
  const n1 = await cluster.start("n1", { workers: 1, cluster: timing });
  const paused = new Map<string, ReturnType<typeof startPaused>>();
  for (const name of order) {
    const node = startPaused(cluster, name, { workers: 1, join: n1.peerAddr, cluster: timing });
    await node.paused;
    paused.set(name, node);
  }
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, cluster: timing });
  await waitForOwners(n1, ["n1", "n2"]);
  return { cluster, n1, n2, n3: paused.get("n3")!, n4: paused.get("n4")! };
}

test("nodes join while clients log in: every login, roster, carbons and presence is answered within 2 s", async (t) => {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1");
  const users = await newUsers(n1, 24, "join");
  const nodes: ClusterNode[] = [n1];
  const loop = new LoginLoop(nodes, users, 6);
  t.after(() => loop.stop());
  // As two machines started together: n3 registers and links first, and is still starting its
  // workers when n2 joins; the new view reaches it before its workers run (the order that
  // made a bind hang 10 s: n3 reported a table its workers never applied, and skipped it).
  const linked = (seen: LogLine[]) =>
    seen.some((l) => l.msg === "peer link up") && seen.some((l) => l.msg === "inbound peer link up");
  const n3 = startPaused(cluster, "n3", { join: n1.peerAddr }, (_line, seen) => linked(seen));
  await n3.paused;
  nodes.push(await cluster.start("n2", { join: n1.peerAddr }));
  await waitForOwners(n1, ["n1", "n2"]);
  n3.resume();
  nodes.push(await n3.started);
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  // And one more, right away.
  nodes.push(await cluster.start("n4", { join: n1.peerAddr }));
  await waitForOwners(n1, ["n1", "n2", "n3", "n4"]);
  // Logins keep going until every partition has been received by its new owner.
  await pollUntil(async () => (await Promise.all(nodes.map(waitingPartitions))).every((n) => n === 0), {
    timeoutMs: 10_000,
    what: "every node to hold all its partitions",
  });
  await loop.stop();
  t.diagnostic(
    `${loop.results.length} logins during the joins, slowest ${Math.max(...loop.results.map((r) => r.ms))} ms`,
  );
  assert.ok(loop.results.length > 50, `logins ran throughout (${loop.results.length})`);
  assert.deepEqual(loop.slow, [], "no login failed or hung");
  assert.deepEqual(handoffTimeouts(nodes), [], "no partition waited out its handoff timeout");
});

test("a member paused while two nodes join applies every epoch in turn when it wakes; nothing waits out a timeout or is lost", async (t) => {
  // n3 and n4 register now and wait, paused, while n2 joins: each will come up later with the
  // owner table of the time it registered.
  const { cluster, n1, n2, n3, n4 } = await withPausedJoiners(t, ["n3", "n4"]);
  const users = await newUsers(n1, 16, "moved");
  const online = await onlineOn(t, [n1, n2], users, "stays");

  // n2 stops while n3 comes up: the epoch that gives n3 part of n2's partitions cannot settle.
  n2.kill("SIGSTOP");
  n3.resume();
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  n4.resume();
  const [node3, node4] = await Promise.all([n3.started, n4.started]);
  // Moving partitions again now would make n2 skip that epoch when it wakes, and wait for (or
  // send) handoffs that the table it skipped called for: nothing may be committed until n2
  // has settled it.
  const early = await Promise.race([
    n1
      .waitForLog(
        (line) => line.msg === "new partition assignment" && JSON.stringify(line.nodes).includes("n4"),
        "an assignment with n4",
        2_000,
      )
      .catch(() => undefined),
    delay(2_000, undefined),
  ]);
  assert.equal(early, undefined, `no assignment while n2 is paused: ${JSON.stringify(early)}`);
  // n4 came up after n2 stopped: it has no link to n2 yet. A message from a client of n4 to a
  // user whose actor is on n2 waits for that link instead of being dropped.
  const placement = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  // (n1 gained nothing when n3 joined, so nothing of its partitions waits for the paused n2.)
  const senderUser = users.find((u) => placement.get(u.jid) === "n1")!;
  const onN2 = users.filter((u) => placement.get(u.jid) === "n2");
  assert.ok(onN2.length > 0, `some users' actors are on n2: ${JSON.stringify([...placement])}`);
  const early4 = await loginRaw(t, node4, senderUser, { resource: "early", roster: false });
  for (const user of onN2) {
    early4.send(
      `<message to='${user.jid}' type='chat'><body>while n2 slept, to ${user.username}</body></message>`,
    );
  }
  n2.kill("SIGCONT");

  const all = [n1, n2, node3, node4];
  await waitForOwners(n1, ["n1", "n2", "n3", "n4"]);
  await pollUntil(async () => (await Promise.all(all.map(waitingPartitions))).every((n) => n === 0), {
    timeoutMs: 5_000,
    what: "every node to hold all its partitions, well before the 15 s handoff timeout",
  });
  for (const node of all) {
    for (const [worker, epochs] of appliedEpochs(node)) {
      const skipped = epochs.filter((epoch, i) => i > 0 && epoch !== epochs[i - 1]! + 1);
      assert.deepEqual(
        skipped,
        [],
        `${node.name} worker ${worker} applied every epoch in turn: ${epochs.join(", ")}`,
      );
    }
  }
  assert.deepEqual(handoffTimeouts(all), [], "no partition waited out its handoff timeout");

  // Every session registered before the moves is still known to its user's actor, wherever
  // that actor lives now: a message to the bare JID is delivered, not stored offline.
  const sender = await loginRaw(t, node4, users[0]!, { resource: "sender" });
  for (const user of users.slice(1)) {
    sender.send(
      `<message to='${user.jid}' type='chat'><body>after the moves to ${user.username}</body></message>`,
    );
  }
  await Promise.all(
    onN2.map((user) =>
      online[users.indexOf(user)]!.waitFor(
        isMessageWithBody(`while n2 slept, to ${user.username}`),
        "the message sent while n2 slept",
        15_000,
      ),
    ),
  );
  await Promise.all(
    online
      .slice(1)
      .map((client, i) =>
        client.waitFor(
          isMessageWithBody(`after the moves to ${users[i + 1]!.username}`),
          "the message after the moves",
        ),
      ),
  );
});

test("a bind whose user's actor sits on a paused node fails fast with a retryable error, and succeeds once it wakes", async (t) => {
  const cluster = await startTestCluster(t);
  const timing = { requestTimeoutMs: 1_500, leaseMs: 60_000 };
  const n1 = await cluster.start("n1", { workers: 1, cluster: timing });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, cluster: timing });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, 12, "bind");

  n2.kill("SIGSTOP");
  const attempts = await Promise.all(
    users.map(async (user) => {
      const client = await RawClient.connectTo(n1, { label: user.username });
      t.after(() => client.destroy());
      await client.openStream();
      await client.startTls();
      await client.authScram("SCRAM-SHA-1", user.username, user.password);
      await client.openStream();
      const started = Date.now();
      const reply = await client.iq("set", `<bind xmlns='${NS_BIND}'><resource>r</resource></bind>`);
      return { user, client, reply, ms: Date.now() - started };
    }),
  );
  const failed = attempts.filter((a) => a.reply.attrs.type === "error");
  t.diagnostic(`${failed.length} of ${users.length} binds had their actor on the paused node`);
  assert.ok(failed.length > 0 && failed.length < users.length, "users on both nodes");
  for (const { reply, ms } of failed) {
    // RFC 6120 §8.3.3.18: resource-constraint, type wait: the client may try again.
    const error = reply.getChild("error");
    assert.equal(error?.attrs.type, "wait", reply.toString());
    assert.ok(error?.getChild("resource-constraint", NS_STANZAS_ERROR), reply.toString());
    assert.ok(ms < timing.requestTimeoutMs + 1_000, `failed after ${ms} ms, not a long hang`);
  }

  n2.kill("SIGCONT");
  // The same streams bind again (RFC 6120 §7: a failed bind may be retried) and now succeed.
  for (const { user, client } of failed) {
    assert.equal(await client.bind("r"), `${user.jid}/r`);
  }
});

test("a node that wakes with an old owner table: what it routes is forwarded, what others route to it under the new table waits for it", async (t) => {
  const cluster = await startTestCluster(t);
  const timing = { handoffTimeoutMs: 15_000, leaseMs: 60_000 };
  const n1 = await cluster.start("n1", { workers: 1, cluster: timing });
  const n3 = startPaused(cluster, "n3", { workers: 1, join: n1.peerAddr, cluster: timing });
  await n3.paused;
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, cluster: timing });
  await waitForOwners(n1, ["n1", "n2"]);
  const users = await newUsers(n1, 60, "route");
  const online = await onlineOn(t, [n1, n2], users, "here");
  const before = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );

  // n2 sleeps through the epoch that brings n3 in: it wakes routing by the table before it.
  n2.kill("SIGSTOP");
  n3.resume();
  await n3.started;
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  const after = await actorNodes(
    cluster.url,
    users.map((u) => u.jid),
  );
  // Stanzas n2 routes on waking to n1 for users n3 owns now: n1 must forward them.
  const forwarded = users.filter((u) => before.get(u.jid) === "n1" && after.get(u.jid) === "n3");
  // Stanzas n1 routes under the new table to users n2 still owns: n2 must hold them until it
  // has that table, not drop them as coming from the future.
  const held = users.filter((u) => after.get(u.jid) === "n2");
  assert.ok(
    forwarded.length > 0 && held.length > 0,
    `both paths have users: ${forwarded.length}, ${held.length}`,
  );
  const onN2 = online[1]!; // users[1] is logged in on n2
  const onN1 = online[0]!;
  for (const user of forwarded) {
    onN2.send(`<message to='${user.jid}' type='chat'><body>forwarded to ${user.username}</body></message>`);
  }
  for (const user of held.filter((u) => u !== users[0])) {
    onN1.send(`<message to='${user.jid}' type='chat'><body>held for ${user.username}</body></message>`);
  }
  n2.kill("SIGCONT");

  const expect = [
    ...forwarded.map((user) => ({ user, body: `forwarded to ${user.username}` })),
    ...held.filter((u) => u !== users[0]).map((user) => ({ user, body: `held for ${user.username}` })),
  ];
  await Promise.all(
    expect.map(({ user, body }) =>
      online[users.indexOf(user)]!.waitFor(isMessageWithBody(body), `"${body}"`, 15_000),
    ),
  );
  // Each exactly once: a marker from each sender to every recipient comes after any copy.
  for (const { user } of expect) {
    onN1.send(`<message to='${user.jid}' type='chat'><body>marker</body></message>`);
    await online[users.indexOf(user)]!.waitFor(isMessageWithBody("marker"), "the marker", 15_000);
  }
  for (const { user, body } of expect) {
    const copies = online[users.indexOf(user)]!.received.filter((el) => el.getChildText("body") === body);
    assert.equal(copies.length, 1, `"${body}" arrived once`);
  }
});

test("a node that dies before any table gives it a partition: its resumable client resumes on a survivor, nothing lost or doubled", async (t) => {
  // As above: n4 and n3 register and wait, paused; n2 stops while n3 comes up, so the epoch
  // that gives n3 partitions cannot settle and n4 comes up owning nothing. Node numbers follow
  // the registration order (n1 1, n4 2, n3 3, n2 4), and a session's copy goes to the next
  // node: n4's to n3, n1's to n4, not to the paused n2.
  const { cluster, n1, n2, n3, n4 } = await withPausedJoiners(t, ["n4", "n3"]);
  n2.kill("SIGSTOP");
  t.after(() => n2.kill("SIGCONT"));
  n3.resume();
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  n4.resume();
  const node4 = await n4.started;
  await n3.started;
  // Users whose actors are on n1: a bind on the paused n2 waits for it to wake, and so does one
  // on a partition n3 gained from n2 (n1 gained nothing when n3 joined).
  const candidates = await newUsers(n1, 16, "never-owner");
  const placement = await actorNodes(
    cluster.url,
    candidates.map((u) => u.jid),
  );
  const [victimUser, senderUser] = candidates.filter((u) => placement.get(u.jid) === "n1");
  assert.ok(senderUser !== undefined, `two of 16 users' actors are on n1: ${JSON.stringify([...placement])}`);
  // The victim's session is on n4, its copy on n3's main thread.
  const victim = await loginRaw(t, node4, victimUser!, { label: "victim", roster: false });
  await goOnline(victim);
  const enabled = await victim.enableSm({ resume: true, autoAck: true });
  assert.ok(enabled.is("enabled", NS_SM), enabled.toString());
  const sender = await loginRaw(t, n1, senderUser, { label: "sender", roster: false });
  await sender.enableSm({ autoAck: true });
  const sent = 20;
  for (let i = 1; i <= sent; i++) {
    sender.send(
      `<message to='${victimUser!.jid}' type='chat' id='m${i}'><body>never-owner-${i}</body></message>`,
    );
  }
  sender.send(`<r xmlns='${NS_SM}'/>`);
  await sender.waitFor(
    (el) => el.is("a", NS_SM) && Number(el.attrs.h) === sent,
    "every message acknowledged to its sender",
    10_000,
  );
  const status = await clusterStatus(n1);
  assert.deepEqual(
    status.members
      .filter((m) => m.partitions > 0)
      .map((m) => m.node)
      .sort(),
    ["n1", "n2", "n3"],
    `n4 owns no partition: ${JSON.stringify(status.members)}`,
  );

  node4.kill("SIGKILL");
  await victim.waitForClose(10_000);
  const again = await resumeRaw(t, n1, victimUser!, enabled.attrs.id!, victim.smInbound ?? 0);
  assert.ok(again.answer.is("resumed", NS_SM), `resumed on n1: ${again.answer.toString()}`);
  const last = isMessageWithBody(`never-owner-${sent}`);
  if (!victim.received.some(last)) await again.client.waitFor(last, "the last message", 10_000);
  const counts = new Map<string, number>();
  for (const el of [...victim.received, ...again.client.received]) {
    const body = el.is("message") ? el.getChildText("body") : null;
    if (body !== null) counts.set(body, (counts.get(body) ?? 0) + 1);
  }
  const lost: number[] = [];
  const doubled: number[] = [];
  for (let i = 1; i <= sent; i++) {
    const n = counts.get(`never-owner-${i}`) ?? 0;
    if (n === 0) lost.push(i);
    if (n > 1) doubled.push(i);
  }
  assert.deepEqual(lost, [], "every acknowledged message arrived");
  assert.deepEqual(doubled, [], "none arrived twice");
});

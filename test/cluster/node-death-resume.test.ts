/**
 * A node dies under traffic and its users do not notice (issue 10, CLUSTER.md guarantees 2 and
 * 3): real node processes on a real PostgreSQL, SIGKILL, and exact delivery checked per
 * sender–receiver pair. A client of the dead node resumes its XEP-0198 session on a survivor
 * (its state was replicated there) and gets exactly what it had not acknowledged; every stanza
 * a sender got an `<a/>` for arrives once; the victim's contact never sees it go offline.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Element } from "@xmpp/xml";
import { actorNodes, type ClusterNode, startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import {
  becomeContacts,
  goOnline,
  loginRaw,
  newUsers,
  resumeRaw,
  type TestUser,
} from "../helpers/fixtures.ts";
import { NS_SM, type RawClient } from "../helpers/raw-client.ts";
import { waitUntil } from "../helpers/wait-for.ts";

/** A sender with stream management: numbered messages, `<r/>` every few, acks recorded. */
class Sender {
  sent = 0;
  readonly #client: RawClient;
  readonly #to: string;
  readonly name: string;
  #timer: NodeJS.Timeout | undefined;

  constructor(name: string, client: RawClient, to: string) {
    this.name = name;
    this.#client = client;
    this.#to = to;
  }

  /** The highest `h` the server acknowledged. */
  get acked(): number {
    let h = 0;
    for (const el of this.#client.received) if (el.is("a", NS_SM)) h = Math.max(h, Number(el.attrs.h));
    return h;
  }

  /** Waits for an `<a/>` covering `n` messages. */
  async waitAcked(n: number, what: string, timeoutMs: number): Promise<void> {
    await this.#client.waitFor(
      (el) => el.is("a", NS_SM) && Number(el.attrs.h) >= n,
      `${this.name}: ${what}`,
      timeoutMs,
    );
  }

  start(everyMs: number): void {
    this.#timer = setInterval(() => {
      this.sent++;
      this.#client.send(
        `<message to='${this.#to}' type='chat' id='${this.name}-${this.sent}'><body>${this.name}-${this.sent}</body></message>`,
      );
      if (this.sent % 5 === 0) this.#client.send(`<r xmlns='${NS_SM}'/>`);
    }, everyMs);
  }

  halt(): void {
    clearInterval(this.#timer);
  }

  /** Stops sending and waits until the server acknowledged everything sent. */
  async stop(): Promise<void> {
    this.halt();
    this.#client.send(`<r xmlns='${NS_SM}'/>`);
    await this.#client.waitFor(
      (el) => el.is("a", NS_SM) && Number(el.attrs.h) === this.sent,
      `${this.name}: <a h='${this.sent}'/>`,
      20_000,
    );
  }
}

/** Bodies of the chat messages a client received, counted. */
function bodies(...clients: RawClient[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const client of clients) {
    for (const el of client.received) {
      if (!el.is("message")) continue;
      const body = el.getChildText("body");
      if (body !== null) counts.set(body, (counts.get(body) ?? 0) + 1);
    }
  }
  return counts;
}

/** A fresh user whose UserActor lives on `node` (from the assignment in PostgreSQL). */
async function userOwnedBy(url: string, first: ClusterNode, node: string, prefix: string): Promise<TestUser> {
  // Names are random: none of 16 fell to one of three nodes in a full run (about 1 in 650).
  for (let round = 0; round < 4; round++) {
    const candidates = await newUsers(first, 16, prefix);
    const owners = await actorNodes(
      url,
      candidates.map((u) => u.jid),
    );
    const user = candidates.find((u) => owners.get(u.jid) === node);
    if (user !== undefined) return user;
  }
  assert.fail(`none of 64 users is owned by ${node}`);
}

type NodeName = "n1" | "n2" | "n3" | "n4";

interface Scenario {
  /** Where the victim's socket is, and where its UserActor lives. */
  socketOn: NodeName;
  ownerOn: NodeName;
  kill: NodeName[];
  /** Another user tries the victim's resumption id first. */
  thief?: boolean;
  /** Four nodes instead of three, with this replication factor. */
  fourNodes?: { replicationFactor: number };
  /** Also kill a node that holds a replica of the victim's session. */
  killReplica?: boolean;
  /** SIGSTOP instead of SIGKILL: a zombie that wakes up after the cluster moved on. */
  pause?: boolean;
  /**
   * The killed node is started again at once under its name (systemd `Restart=always`), and
   * the victim resumes on it, as a client whose DNS name points there would.
   */
  restart?: boolean;
  /**
   * Both senders on this node (by default one on the first survivor, one on the last), and the
   * nodes' `cluster.replicationBatchMs`: with a long one and no sender on the replica's node, the
   * socket's node never tells the replica which writes it passed on were written (chain
   * replication): the replica's copy holds them aside, and only they make the resumption possible.
   */
  sendersOn?: NodeName;
  replicationBatchMs?: number;
}

async function nodeDeath(t: import("node:test").TestContext, scenario: Scenario): Promise<void> {
  const cluster = await startTestCluster(t);
  const clusterOptions = {
    ...(scenario.fourNodes === undefined ? {} : { replicationFactor: scenario.fourNodes.replicationFactor }),
    ...(scenario.replicationBatchMs === undefined ? {} : { replicationBatchMs: scenario.replicationBatchMs }),
  };
  const n1 = await cluster.start("n1", { workers: 1, cluster: clusterOptions });
  const nodes: Partial<Record<NodeName, ClusterNode>> = { n1 };
  const names: NodeName[] = scenario.fourNodes === undefined ? ["n1", "n2", "n3"] : ["n1", "n2", "n3", "n4"];
  // One at a time: node numbers follow the join order, and with them where replicas go.
  for (const name of names.slice(1)) {
    nodes[name] = await cluster.start(name, { workers: 1, join: n1.peerAddr, cluster: clusterOptions });
    await waitForOwners(n1, names.slice(0, names.indexOf(name) + 1));
  }
  const node = (name: NodeName) => nodes[name]!;
  const victimUser = await userOwnedBy(cluster.url, n1, scenario.ownerOn, "victim");
  const [aUser, bUser] = await newUsers(n1, 2, "sender");
  const victim = await loginRaw(t, node(scenario.socketOn), victimUser, { label: "victim" });
  await goOnline(victim);
  const enabled = await victim.enableSm({ resume: true, autoAck: true });
  const kill = [...scenario.kill];
  if (scenario.killReplica === true) {
    // Only the victim resumes: the nodes holding a copy of its session are its replicas. Kill
    // the socket's node and one of them (with factor 2, the only one).
    const copies = scenario.fourNodes!.replicationFactor - 1;
    const holders = await waitUntil(
      async () => {
        const held = await Promise.all(
          names.map(async (name) => {
            const response = await fetch(`http://127.0.0.1:${node(name).ports.http}/api/status`);
            return [name, ((await response.json()) as { replicasHeld: number }).replicasHeld] as const;
          }),
        );
        const found = held.filter(([, n]) => n > 0).map(([name]) => name);
        return found.length === copies ? found : undefined;
      },
      `${copies} replica(s) of the victim's session`,
      15_000,
    );
    kill.push(holders[0]!);
  }
  const survivors = names.filter((n) => !kill.includes(n));
  const a = await loginRaw(t, node(scenario.sendersOn ?? survivors[0]!), aUser!, { label: "a" });
  const b = await loginRaw(t, node(scenario.sendersOn ?? survivors[survivors.length - 1]!), bUser!, {
    label: "b",
  });
  await goOnline(a);
  await goOnline(b);
  // a is the victim's contact: it must never see the victim go offline.
  await becomeContacts(a, victim);
  await a.enableSm({ autoAck: true });
  await b.enableSm({ autoAck: true });
  const senders = [new Sender("a", a, victimUser.jid), new Sender("b", b, victimUser.jid)];
  for (const sender of senders) sender.start(15);
  t.after(() => {
    for (const sender of senders) sender.halt();
  });
  await Promise.all(senders.map((s) => s.waitAcked(20, "traffic before the kill", 10_000)));

  const killedAt = Date.now();
  for (const name of kill) node(name).kill(scenario.pause ? "SIGSTOP" : "SIGKILL");
  const ackedAtKill = senders.map((s) => s.acked);

  let resumed: RawClient | undefined;
  if (kill.includes(scenario.socketOn)) {
    // Like a real client: it reconnects at once, before the cluster has decided the node is dead
    // (a paused node's socket stays open: the client gives up on it, as on an ack timeout).
    if (scenario.pause) victim.destroy();
    else await victim.waitForClose(10_000);
    let survivor = node(survivors[0]!);
    if (scenario.restart === true) {
      survivor = await cluster.restart(node(scenario.socketOn));
      nodes[scenario.socketOn] = survivor;
      t.diagnostic(`${survivor.name} serves again ${Date.now() - killedAt} ms after SIGKILL`);
    }
    // Another account presenting the victim's id gets nothing of it, and does not use it up.
    if (scenario.thief) {
      const thief = await resumeRaw(t, survivor, bUser!, enabled.attrs.id!, victim.smInbound ?? 0);
      assert.ok(
        thief.answer.is("failed", NS_SM) && thief.answer.getChild("item-not-found") !== undefined,
        `a foreign resumption id: ${thief.answer.toString()}`,
      );
      assert.equal(thief.answer.attrs.h, undefined, "not even how many stanzas the victim sent");
      assert.equal(
        thief.client.received.filter((el) => el.is("message")).length,
        0,
        "none of the victim's stanzas",
      );
    }
    const again = await resumeRaw(t, survivor, victimUser, enabled.attrs.id!, victim.smInbound ?? 0);
    assert.ok(again.answer.is("resumed", NS_SM), `resumed on ${survivor.name}: ${again.answer.toString()}`);
    resumed = again.client;
    t.diagnostic(`resumed ${Date.now() - killedAt} ms after ${scenario.pause ? "SIGSTOP" : "SIGKILL"}`);
    if (scenario.pause) {
      // The zombie wakes up: it gets nothing accepted (peers refuse its batches, replicas its
      // changes) and fences itself.
      const zombie = node(scenario.socketOn);
      zombie.kill("SIGCONT");
      assert.equal((await zombie.exited).code, 3, "the woken node fences itself (exit code 3)");
    }
  } else {
    await waitForOwners(node(survivors[0]!), [...survivors], 20_000);
    assert.equal(victim.closed, false, "a client of a surviving node stays connected");
  }
  // Traffic goes on after the resumption, then every sender waits for its last <a/>.
  await Promise.all(
    senders.map((s, i) =>
      s.waitAcked(ackedAtKill[i]! + 20, "traffic after the kill is acknowledged", 20_000),
    ),
  );
  await Promise.all(senders.map((s) => s.stop()));
  const receivers = resumed === undefined ? [victim] : [victim, resumed];
  const last = receivers[receivers.length - 1]!;
  for (const sender of senders) {
    await last.waitFor(
      (el: Element) => el.is("message") && el.getChildText("body") === `${sender.name}-${sender.sent}`,
      `the last message of ${sender.name}`,
      20_000,
    );
  }

  const got = bodies(...receivers);
  for (const sender of senders) {
    const lost: number[] = [];
    const doubled: number[] = [];
    for (let i = 1; i <= sender.sent; i++) {
      const n = got.get(`${sender.name}-${i}`) ?? 0;
      if (n === 0) lost.push(i);
      if (n > 1) doubled.push(i);
    }
    t.diagnostic(
      `${sender.name} → victim: sent ${sender.sent}, lost ${lost.length}, twice ${doubled.length}`,
    );
    assert.deepEqual(lost, [], `${sender.name}: every acknowledged message arrived`);
    assert.deepEqual(doubled, [], `${sender.name}: no message arrived twice`);
  }
  const offline = a.received.filter(
    (el) => el.is("presence") && el.attrs.type === "unavailable" && el.attrs.from === victim.jid,
  );
  assert.deepEqual(
    offline.map((el) => el.toString()),
    [],
    "the victim's contact never saw it go offline",
  );
}

test("SIGKILL of the node holding the socket: the client resumes on a survivor, nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n2", kill: ["n3"] });
});

test("SIGKILL of the node holding the socket before it told the replica what it wrote: the client resumes with the writes the replica held aside, nothing lost or doubled", async (t) => {
  // n3's sessions are copied to n1. The senders and the victim's UserActor are on n2, so n3
  // sends nothing to n1 that its deferred changes could ride, and they wait a minute: every
  // message went n2 → n1 (kept) → n3 (written at once), and n1 never heard it was written.
  await nodeDeath(t, {
    socketOn: "n3",
    ownerOn: "n2",
    kill: ["n3"],
    sendersOn: "n2",
    replicationBatchMs: 60_000,
  });
});

test("SIGKILL of the node owning the user's partition: the client stays, nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n2", kill: ["n2"] });
});

test("SIGKILL of the node holding both the socket and the partition: resumed (not by another user), nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n3", kill: ["n3"], thief: true });
});

test("SIGKILL of two nodes at once, the socket's and one holding its replica, with replication factor 3: resumed from the other replica", async (t) => {
  // Node numbers follow the join order: n3's sessions are copied to n4, then n1 (ring order).
  await nodeDeath(t, {
    socketOn: "n3",
    ownerOn: "n2",
    kill: ["n3", "n4"],
    fourNodes: { replicationFactor: 3 },
  });
});

test("SIGSTOP of the node holding the socket past its lease: the client resumes on a survivor, the zombie fences itself, nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n2", kill: ["n3"], pause: true });
});

test("SIGKILL of the node holding the socket, started again at once under its name (systemd Restart=always): the client resumes on it, nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n2", kill: ["n3"], restart: true });
});

test("SIGKILL of the node holding both the socket and the partition, started again at once under its name: the client resumes on it, nothing lost or doubled", async (t) => {
  await nodeDeath(t, { socketOn: "n3", ownerOn: "n3", kill: ["n3"], restart: true });
});

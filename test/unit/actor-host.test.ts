/**
 * The actor host (src/cluster/actor-host.ts) with a kind that is not a user: a small
 * group-chat-like "room" written against the actor contract only (actors/actor.ts), to show
 * that a new kind is its behaviour and its messages, and that the host gives it the mailbox,
 * activation, accept, de-duplication, passivation and handoff. The last tests route it through
 * real ShardRouters joined by MessagePorts, under owner tables that change, and drive the
 * router's paths for a changing owner: forward to the new owner, hold for a newer table, hold
 * for a handoff.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MessageChannel } from "node:worker_threads";
import { Packr } from "msgpackr";
import type { Ack, Actor, ActorKey, ActorKind, ActorSelf, Turn } from "../../actors/actor.ts";
import { ActorHost } from "../../src/cluster/actor-host.ts";
import type { ActorMessage, Envelope } from "../../src/cluster/envelope.ts";
import type { OwnerTable } from "../../src/cluster/ring.ts";
import { ShardRouter } from "../../src/cluster/shard-router.ts";
import { createLogger } from "../../src/log.ts";
import { waitUntil } from "../helpers/wait-for.ts";

const log = createLogger({ level: "silent" });

// --- a second actor kind, written against the contract only ---------------------------------

type RoomMessage =
  | { kind: "post"; text: string; key?: string; slow?: Promise<void> }
  | { kind: "join"; nick: string }
  | { kind: "leave"; nick: string }
  | { kind: "nodes-lost"; nodeNos: number[] };

interface RoomState {
  occupants: string[];
  posts: string[];
}

type RoomChange = { c: "joined"; nick: string } | { c: "left"; nick: string } | { c: "posted"; text: string };

function applyRoomChange(state: RoomState, change: RoomChange): RoomState {
  switch (change.c) {
    case "joined":
      if (!state.occupants.includes(change.nick)) state.occupants.push(change.nick);
      return state;
    case "left":
      state.occupants = state.occupants.filter((n) => n !== change.nick);
      return state;
    case "posted":
      state.posts.push(change.text);
      return state;
  }
}

/** What the tests observe of every room. */
interface RoomWorld {
  activations: number;
  failActivation: number;
  turns: string[];
  lost: number[][];
  /** Posts whose accept a room takes along instead of letting the host accept at turn end. */
  taken: Ack[];
  takeAccepts: boolean;
}

class Room implements Actor<RoomMessage, RoomState> {
  #state: RoomState = { occupants: [], posts: [] };
  readonly #name: string;
  readonly #world: RoomWorld;
  constructor(name: string, world: RoomWorld, _self: ActorSelf<RoomMessage>) {
    this.#name = name;
    this.#world = world;
  }
  async activate() {
    this.#world.activations++;
    if (this.#world.failActivation > 0) {
      this.#world.failActivation--;
      throw new Error("store down");
    }
  }
  async handle(msg: RoomMessage, turn: Turn) {
    this.#world.turns.push(`${this.#name}:${msg.kind}:start`);
    switch (msg.kind) {
      case "post":
        if (msg.slow !== undefined) await msg.slow;
        applyRoomChange(this.#state, { c: "posted", text: msg.text });
        if (this.#world.takeAccepts) {
          const ack = turn.takeAccept();
          if (ack !== undefined) this.#world.taken.push(ack);
        }
        break;
      case "join":
        applyRoomChange(this.#state, { c: "joined", nick: msg.nick });
        break;
      case "leave":
        applyRoomChange(this.#state, { c: "left", nick: msg.nick });
        break;
      case "nodes-lost":
        this.#world.lost.push(msg.nodeNos);
        break;
    }
    this.#world.turns.push(`${this.#name}:${msg.kind}:end`);
  }
  snapshot() {
    return structuredClone(this.#state);
  }
  restore(snapshot: RoomState) {
    this.#state = structuredClone(snapshot);
  }
  get empty() {
    return this.#state.occupants.length === 0;
  }
  get disposable() {
    return this.#name.startsWith("gone");
  }
  failed() {}
}

function roomKind(world: RoomWorld): ActorKind<RoomMessage, RoomState> {
  return {
    kind: "room",
    create: (name, self) => new Room(name, world, self),
    refusable: (msg) => msg.kind === "post",
    dedupeKey: (msg) => (msg.kind === "post" ? msg.key : undefined),
    nodesLost: (_name, nodeNos) => ({ kind: "nodes-lost", nodeNos }),
  };
}

function world(): RoomWorld {
  return { activations: 0, failActivation: 0, turns: [], lost: [], taken: [], takeAccepts: false };
}

function host(w: RoomWorld, accepted: Ack[] = [], maxMailbox = 100) {
  const h = new ActorHost({ log, accept: (ack) => accepted.push(ack), maxMailbox: () => maxMailbox });
  h.define(roomKind(w));
  return h;
}

const ROOM: ActorKey = "room:lounge@conference.example.com";

function posts(h: ActorHost, key: ActorKey = ROOM): string[] {
  return h.peek<Room>(key)?.snapshot().posts ?? [];
}

describe("ActorHost", () => {
  it("runs one turn at a time, in arrival order, after activation", async () => {
    const w = world();
    const h = host(w);
    let release!: () => void;
    const slow = new Promise<void>((resolve) => {
      release = resolve;
    });
    h.deliver(ROOM, { kind: "post", text: "first", slow });
    h.deliver(ROOM, { kind: "join", nick: "alice" });
    h.deliver(ROOM, { kind: "post", text: "second" });
    const quiet = h.quiesce([ROOM]);
    await new Promise((resolve) => setImmediate(resolve));
    // The first turn waits on its store: nothing after it may start.
    assert.deepEqual(w.turns, ["lounge@conference.example.com:post:start"]);
    release();
    await quiet;
    assert.equal(w.activations, 1);
    assert.deepEqual(
      w.turns.map((t) => t.slice(t.indexOf(":") + 1)),
      ["post:start", "post:end", "join:start", "join:end", "post:start", "post:end"],
    );
    assert.deepEqual(posts(h), ["first", "second"]);
  });

  it("a full mailbox refuses only what the kind says may be refused", async () => {
    const w = world();
    const h = host(w, [], 2);
    let release!: () => void;
    const slow = new Promise<void>((resolve) => {
      release = resolve;
    });
    assert.equal(h.deliver(ROOM, { kind: "post", text: "a", slow }), true);
    await new Promise((resolve) => setImmediate(resolve)); // "a" is running, out of the mailbox
    assert.equal(h.deliver(ROOM, { kind: "post", text: "b" }), true);
    assert.equal(h.deliver(ROOM, { kind: "post", text: "c" }), true);
    assert.equal(h.deliver(ROOM, { kind: "post", text: "d" }), false, "a third queued post is refused");
    assert.equal(h.deliver(ROOM, { kind: "join", nick: "bob" }), true, "control is never refused");
    release();
    await h.quiesce();
    assert.deepEqual(posts(h), ["a", "b", "c"]);
    assert.deepEqual(h.peek<Room>(ROOM)?.snapshot().occupants, ["bob"]);
  });

  it("a failed activation fails what is queued, keeps their senders' messages retained, and is tried again", async () => {
    const w = world();
    w.failActivation = 1;
    const accepted: Ack[] = [];
    const h = host(w, accepted);
    h.deliver(ROOM, { kind: "post", text: "lost?" }, { shard: 3, rid: 1 });
    await h.quiesce();
    assert.deepEqual(posts(h), []);
    assert.deepEqual(accepted, [], "not accepted: its sender sends it again");
    h.deliver(ROOM, { kind: "post", text: "lost?" }, { shard: 3, rid: 1 });
    await h.quiesce();
    assert.equal(w.activations, 2);
    assert.deepEqual(posts(h), ["lost?"]);
    assert.deepEqual(accepted, [{ shard: 3, rid: 1 }]);
  });

  it("accepts at the end of the turn, once, unless the actor takes the accept along", async () => {
    const w = world();
    const accepted: Ack[] = [];
    const h = host(w, accepted);
    h.deliver(ROOM, { kind: "join", nick: "alice" }, { shard: 1, rid: 1 });
    h.deliver(ROOM, { kind: "post", text: "x" }, { shard: 1, rid: 2 });
    await h.quiesce();
    assert.deepEqual(accepted, [
      { shard: 1, rid: 1 },
      { shard: 1, rid: 2 },
    ]);
    w.takeAccepts = true;
    h.deliver(ROOM, { kind: "post", text: "y" }, { shard: 1, rid: 3 });
    await h.quiesce();
    assert.deepEqual(accepted.length, 2, "the taker accepts, not the host");
    assert.deepEqual(w.taken, [{ shard: 1, rid: 3 }]);
  });

  it("drops a re-sent copy of a message whose delivery ended here, and accepts it again", async () => {
    const w = world();
    const accepted: Ack[] = [];
    const h = host(w, accepted);
    h.deliver(ROOM, { kind: "join", nick: "alice" });
    h.deliver(ROOM, { kind: "post", text: "once", key: "s1#7" }, { shard: 1, rid: 1 });
    h.deliver(ROOM, { kind: "post", text: "once", key: "s1#7" }, { shard: 1, rid: 2 });
    await h.quiesce();
    assert.deepEqual(posts(h), ["once"]);
    assert.deepEqual(accepted, [
      { shard: 1, rid: 1 },
      { shard: 1, rid: 2 },
    ]);
    // A copy whose accept was taken along went on to a session, which drops copies itself.
    w.takeAccepts = true;
    h.deliver(ROOM, { kind: "post", text: "on", key: "s1#8" }, { shard: 1, rid: 3 });
    h.deliver(ROOM, { kind: "post", text: "on", key: "s1#8" }, { shard: 1, rid: 4 });
    await h.quiesce();
    assert.deepEqual(posts(h), ["once", "on", "on"]);
  });

  it("drops idle actors that hold nothing, and disposable ones at once", async () => {
    const w = world();
    const h = host(w);
    h.deliver(ROOM, { kind: "join", nick: "alice" });
    h.deliver("room:empty@conference.example.com", { kind: "post", text: "hello?" });
    h.deliver("room:gone@conference.example.com", { kind: "post", text: "hello?" });
    await h.quiesce();
    assert.equal(h.has("room:gone@conference.example.com"), false, "disposable: dropped at once");
    assert.equal(h.passivateIdle(Date.now() + 1), 1);
    assert.deepEqual([...h.keys()], [ROOM], "the room with an occupant stays");
  });

  it("hands an actor's volatile state to another host as plain data", async () => {
    const w = world();
    const from = host(w);
    const to = host(w);
    from.deliver(ROOM, { kind: "join", nick: "alice" });
    from.deliver(ROOM, { kind: "post", text: "before the move" });
    await from.quiesce([ROOM]);
    // What a handoff carries crosses a peer link: msgpackr, like every envelope.
    const packr = new Packr({ useRecords: false });
    const carried = packr.unpack(packr.pack(from.release([ROOM])));
    assert.equal(from.has(ROOM), false);
    for (const snapshot of carried) to.restore(snapshot);
    to.deliver(ROOM, { kind: "post", text: "after" });
    await to.quiesce();
    assert.deepEqual(to.peek<Room>(ROOM)?.snapshot(), {
      occupants: ["alice"],
      posts: ["before the move", "after"],
    });
  });

  it("tells every actor of a kind that cares that nodes died", async () => {
    const w = world();
    const h = host(w);
    h.deliver(ROOM, { kind: "join", nick: "alice" });
    h.nodesLost([2, 5]);
    await h.quiesce();
    assert.deepEqual(w.lost, [[2, 5]]);
  });
});

// --- through real routers, under owner tables that change -----------------------------------

/** A table of one node with three workers, its one partition owned by worker `owner`. */
function table(epoch: number, owner: number): OwnerTable {
  return {
    epoch,
    partitions: 1,
    shards: [0, 1, 2].map((worker) => ({ node: "n", worker })),
    owners: Uint16Array.of(owner),
    shardNos: Uint32Array.of(0, 1, 2),
  };
}

interface Shard {
  router: ShardRouter;
  actors: ActorHost;
  accepted: Ack[];
}

/** Three shards, each a router and an actor host, joined by MessagePorts. */
function cluster(initial: OwnerTable) {
  const w = world();
  const [a, b, c] = [0, 1, 2].map((self) => {
    const accepted: Ack[] = [];
    let router!: ShardRouter;
    const actors = new ActorHost({ log, accept: (ack) => router.accept(ack), maxMailbox: () => 100 });
    actors.define(roomKind(w));
    router = new ShardRouter(self, initial, (envelope: Envelope) => {
      if (envelope.t === "actor") actors.deliver(envelope.key, envelope.msg, envelope.ack);
    });
    return { router, actors, accepted };
  }) as [Shard, Shard, Shard];
  const shards: [Shard, Shard, Shard] = [a, b, c];
  for (let a = 0; a < 3; a++) {
    for (let b = a + 1; b < 3; b++) {
      const channel = new MessageChannel();
      shards[a]!.router.setPort(b, channel.port1);
      shards[b]!.router.setPort(a, channel.port2);
    }
  }
  const close = () => {
    for (const s of shards) s.router.close();
  };
  return { shards, close };
}

/** Posts `text` from shard `from`, retained until accepted; resolves when accepted. */
function post(from: ShardRouter, text: string): Promise<void> {
  return new Promise((resolve) =>
    from.toActor(ROOM, { kind: "post", text } as unknown as ActorMessage, resolve),
  );
}

describe("Routing to an actor kind while the owner changes", () => {
  it("a message routed under an older table is forwarded to the new owner, and its sender hears it is accepted", async (t) => {
    const c = cluster(table(1, 1));
    t.after(c.close);
    const [sender, oldOwner, newOwner] = c.shards;
    // The old owner learned the new table (partition now on worker 2); the sender did not.
    oldOwner.router.setTable(table(2, 2), []);
    newOwner.router.setTable(table(2, 2), []);
    await post(sender.router, "forwarded");
    assert.equal(oldOwner.actors.has(ROOM), false, "the old owner did not act on a key it no longer owns");
    assert.deepEqual(posts(newOwner.actors), ["forwarded"]);
  });

  it("a message routed under a newer table waits until the receiver learns it", async (t) => {
    const c = cluster(table(1, 0));
    t.after(c.close);
    const [, sender, owner] = c.shards;
    sender.router.setTable(table(2, 2), []);
    let accepted = false;
    const done = post(sender.router, "early").then(() => {
      accepted = true;
    });
    await waitUntil(() => owner.router.heldCount === 1, "the receiver holds the envelope");
    assert.equal(owner.actors.has(ROOM), false, "not delivered under a table the receiver does not know");
    assert.equal(accepted, false);
    owner.router.setTable(table(2, 2), []);
    await done;
    assert.deepEqual(posts(owner.actors), ["early"]);
  });

  it("a message for a partition being handed over waits for the handoff, then follows the handed-over state", async (t) => {
    const c = cluster(table(1, 1));
    t.after(c.close);
    const [sender, oldOwner, newOwner] = c.shards;
    await post(sender.router, "one");
    for (const s of c.shards) s.router.setTable(table(2, 2), s === newOwner ? [0] : []);
    let accepted = false;
    const done = post(sender.router, "two").then(() => {
      accepted = true;
    });
    await waitUntil(() => newOwner.router.heldCount === 1, "the new owner holds the envelope");
    assert.equal(newOwner.actors.has(ROOM), false, "held until the previous owner's state arrives");
    assert.equal(accepted, false);
    await oldOwner.actors.quiesce([ROOM]);
    for (const snapshot of oldOwner.actors.release([ROOM])) newOwner.actors.restore(snapshot);
    newOwner.router.completeIncoming(0);
    await done;
    assert.deepEqual(posts(newOwner.actors), ["one", "two"], "in order, on the handed-over state");
  });
});

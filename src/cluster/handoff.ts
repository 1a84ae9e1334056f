/**
 * What one shard does when the owner table changes (a join, a leave, a node's death): it hands
 * the partitions it loses to their new owners, and holds the envelopes of the partitions it
 * gains until it has heard from whoever knows their state.
 *
 * - Planned move (the previous owner is alive): the previous owner lets each actor of the
 *   partition finish its mailbox, snapshots it (sessions, presence, flags; the roster is in the
 *   store) and sends one `handoff` per destination shard, empty partitions included. Envelopes
 *   that reach it afterwards are forwarded by the router (FORWARDING); the new owner holds what
 *   it receives until the handoff is applied (INCOMING), so nothing is handled twice or out of
 *   order with the snapshot.
 * - Crash move (the previous owner's node is gone): every surviving shard sends each new owner
 *   the registrations of its own sessions whose users moved (Orleans-style recovery), empty
 *   ones included; the new owner holds envelopes until every survivor has answered. Senders
 *   re-send the stanzas the dead node never accepted (ShardRouter.resendRetainedTo).
 *
 * Both waits end after `timeoutMs` whatever happened, with a warning: a partition must not stay
 * unavailable because one message went missing.
 */

import { type ActorKey, actorKey } from "../../actors/actor.ts";
import type { WorkerMessage } from "../../actors/messages.ts";
import type { SessionActor } from "../../actors/session-actor.ts";
import type { Logger } from "../log.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { ActorHost, ActorSnapshot } from "./actor-host.ts";
import { nodeNoOf, type OwnerTable, ownerShard, shardNumber } from "./ring.ts";
import type { ShardRouter } from "./shard-router.ts";

type HandoffMessage = Extract<WorkerMessage, { kind: "handoff" }>;

/** The nodes alive when a table is applied: their session holders are asked after a crash move. */
export interface LiveNode {
  nodeNo: number;
  workers: number;
}

/** What the handoff needs from its shard. */
export interface HandoffHost {
  readonly router: ShardRouter;
  readonly actors: ActorHost;
  readonly sessions: Map<string, SessionActor>;
  readonly log: Logger;
  readonly timeoutMs: number;
  /**
   * The table is applied (live shards set); `deadNodes` died since the previous one. Runs before
   * the new owners are told about this shard's sessions, so replicas promoted here count.
   */
  tableApplied(deadNodes: ReadonlySet<number>): void;
}

/** Counters for statistics. */
export interface HandoffStats {
  sent: number;
  received: number;
  timedOut: number;
  resent: number;
}

/** The table-change protocol of one shard. */
export class PartitionHandoff {
  readonly #host: HandoffHost;
  /** Incoming partition → shards we still wait for. */
  readonly #waiting = new Map<number, Set<number>>();
  /** Handoffs that arrived before we learned their epoch. */
  #early: HandoffMessage[] = [];
  /** Resolved when no incoming partition waits any more (see {@link settled}). */
  #settledWaiters: (() => void)[] = [];
  readonly stats: HandoffStats = { sent: 0, received: 0, timedOut: 0, resent: 0 };

  constructor(host: HandoffHost) {
    this.#host = host;
  }

  /** Incoming partitions still waiting. */
  get pending(): number {
    return this.#waiting.size;
  }

  /**
   * Resolves once every partition gained so far has been received from whoever held it (or its
   * wait timed out): the member reports the epoch settled, and only then may the cluster move
   * partitions again, so no shard hands off a partition it has not fully received yet.
   */
  settled(): Promise<void> {
    if (this.#waiting.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#settledWaiters.push(resolve));
  }

  #checkSettled(): void {
    if (this.#waiting.size > 0) return;
    for (const resolve of this.#settledWaiters.splice(0)) resolve();
  }

  /** Applies a newer table; `live` are the nodes currently serving (dead ones are left out). */
  async apply(next: OwnerTable, live: readonly LiveNode[]): Promise<void> {
    const { router, log } = this.#host;
    const prev = router.table;
    if (next.epoch <= prev.epoch) return;
    const { deadNodes, liveShards, waiting, outgoing, recovering } = planTableChange(
      router.self,
      prev,
      next,
      live,
    );
    for (const [p, from] of waiting) this.#waiting.set(p, from);
    const incoming = [...waiting.keys()];
    router.setTable(next, incoming);
    router.setLiveShards(liveShards);
    this.#forgetDead(deadNodes);
    log.info(
      {
        epoch: next.epoch,
        incoming: incoming.length,
        outgoing: [...outgoing.values()].reduce((n, ps) => n + ps.length, 0),
        deadNodes: [...deadNodes],
      },
      "owner table changed",
    );
    this.#host.tableApplied(deadNodes);
    if (deadNodes.size > 0) this.#sendRecoveries(next.epoch, recovering);
    const early = this.#early;
    this.#early = [];
    for (const msg of early) this.receive(msg);
    if (incoming.length > 0) this.#armTimeout(next.epoch, incoming);
    await this.#sendHandoffs(next.epoch, outgoing);
  }

  /**
   * Nodes `dead` died without a table that says so: they owned no partition (they joined, and no
   * table gave them any yet), so no partition moves. The rest is what {@link apply} does for a
   * table's dead nodes: their sessions are lost to the actors (resumable ones wait for their
   * replica), messages on their way to them are sent again, the recoveries waiting for their
   * shards wait no more, and the copies of their sessions held here are promoted.
   */
  nodesDied(dead: ReadonlySet<number>): void {
    if (dead.size === 0) return;
    this.#forgetDead(dead);
    this.#host.tableApplied(dead);
  }

  /**
   * Nodes `dead` died: the partitions waiting for their shards wait no more, their sessions are
   * lost to the actors, and messages retained for them are sent again.
   */
  #forgetDead(dead: ReadonlySet<number>): void {
    const { router } = this.#host;
    for (const p of dropDeadSenders(this.#waiting, dead)) router.completeIncoming(p);
    this.#checkSettled();
    if (dead.size === 0) return;
    this.#host.actors.nodesLost([...dead]);
    this.stats.resent += router.resendRetainedTo(dead);
  }

  /**
   * This worker restarted: its actors' state died with the previous incarnation. Every partition
   * it owns is held until each of `from` (the node's other workers) has re-registered its
   * sessions of those users ({@link recoverFor}), so a message is not stored offline for a user
   * whose session is alive, or a resumable one whose replica was just promoted.
   */
  awaitRecovery(from: readonly number[]): void {
    const { router } = this.#host;
    if (from.length === 0) return;
    const owned: number[] = [];
    for (let p = 0; p < router.table.partitions; p++)
      if (ownerShard(router.table, p) === router.self) owned.push(p);
    router.holdIncoming(owned);
    for (const p of owned) this.#waiting.set(p, new Set(from));
    this.#armTimeout(router.table.epoch, owned);
  }

  /** Worker `shard` of this node restarted: tell it about our sessions of the users it hosts. */
  recoverFor(shard: number): void {
    const { router } = this.#host;
    const owned: number[] = [];
    for (let p = 0; p < router.table.partitions; p++)
      if (ownerShard(router.table, p) === shard) owned.push(p);
    this.#sendRecoveries(router.table.epoch, new Map([[shard, owned]]));
  }

  /** A `handoff` from another shard (or an early one we kept). */
  receive(msg: HandoffMessage): void {
    const { router, log } = this.#host;
    if (msg.epoch > router.table.epoch) {
      this.#early.push(msg);
      return;
    }
    this.stats.received++;
    /** State of partitions that moved on before it arrived: it follows them, never dropped. */
    const onward = new Map<number, ActorSnapshot[]>();
    for (const snapshot of msg.actors) {
      const owner = router.shardOfKey(snapshot.key);
      if (owner !== router.self) {
        log.warn(
          { actor: snapshot.key, epoch: msg.epoch, owner },
          "handoff for a partition that moved on; forwarded to its owner",
        );
        push(onward, owner, snapshot);
        continue;
      }
      this.#host.actors.restore(snapshot);
    }
    for (const [owner, actors] of onward) {
      router.send(owner, {
        t: "worker",
        msg: {
          kind: "handoff",
          epoch: router.table.epoch,
          from: router.self,
          partitions: [],
          actors,
          sessions: [],
        },
      });
    }
    for (const { session, state } of msg.sessions) {
      const user = session.full.slice(0, session.full.indexOf("/")) as BareJid;
      const relocate = { kind: "relocate", user, session, state } as const;
      // Ahead of whatever waits for the partition, so held writes find the session registered.
      if (router.shardOfUser(user) === router.self) this.#host.actors.tell(actorKey("user", user), relocate);
      else router.toUser(relocate);
    }
    for (const p of msg.partitions) {
      const from = this.#waiting.get(p);
      if (from === undefined) continue;
      from.delete(msg.from);
      if (from.size === 0) {
        this.#waiting.delete(p);
        router.completeIncoming(p);
      }
    }
    this.#checkSettled();
  }

  async #sendHandoffs(epoch: number, outgoing: Map<number, number[]>): Promise<void> {
    const { router, actors } = this.#host;
    if (outgoing.size === 0) return;
    const destOf = new Map<number, number>();
    for (const [dest, partitions] of outgoing) for (const p of partitions) destOf.set(p, dest);
    const byDest = new Map<number, ActorKey[]>();
    for (const key of actors.keys()) {
      const dest = destOf.get(router.partitionOfKey(key));
      if (dest !== undefined) push(byDest, dest, key);
    }
    // The router already forwards new arrivals; what is queued must finish here first.
    await actors.quiesce([...byDest.values()].flat());
    for (const [dest, partitions] of outgoing) {
      const moving = actors.release(byDest.get(dest) ?? []);
      router.send(dest, {
        t: "worker",
        msg: {
          kind: "handoff",
          epoch,
          from: router.self,
          partitions,
          actors: moving,
          sessions: [],
        },
      });
      this.stats.sent++;
    }
  }

  /** After a crash move: tell each new owner about our sessions of the users it now hosts. */
  #sendRecoveries(epoch: number, recovering: Map<number, number[]>): void {
    const { router, sessions } = this.#host;
    const byDest = new Map<number, HandoffMessage["sessions"]>();
    for (const session of sessions.values()) {
      const dest = router.shardOfUser(session.bare);
      if (!recovering.has(dest)) continue;
      const partition = router.partitionOf(session.bare);
      if (!recovering.get(dest)!.includes(partition)) continue;
      push(byDest, dest, { session: session.location(), state: session.registration() });
    }
    for (const [dest, partitions] of recovering) {
      const msg: HandoffMessage = {
        kind: "handoff",
        epoch,
        from: router.self,
        partitions,
        actors: [],
        sessions: byDest.get(dest) ?? [],
      };
      if (dest === router.self) {
        // Our own sessions count as one answer we do not wait for.
        for (const { session, state } of msg.sessions) {
          const user = session.full.slice(0, session.full.indexOf("/")) as BareJid;
          this.#host.actors.tell(actorKey("user", user), { kind: "relocate", user, session, state });
        }
        continue;
      }
      router.send(dest, { t: "worker", msg });
      this.stats.sent++;
    }
  }

  #armTimeout(epoch: number, partitions: number[]): void {
    const timer = setTimeout(() => {
      let late = 0;
      for (const p of partitions) {
        if (!this.#waiting.has(p)) continue;
        this.#waiting.delete(p);
        this.#host.router.completeIncoming(p);
        late++;
      }
      if (late > 0) {
        this.stats.timedOut += late;
        this.#host.log.warn({ epoch, partitions: late }, "handoff timed out; serving without it");
      }
      this.#checkSettled();
    }, this.#host.timeoutMs);
    timer.unref();
  }
}

/** What one shard must do when it applies `next` over `prev` (pure: the simulation uses it too). */
export interface TableChange {
  /** Nodes of `prev` that are not in `live`. */
  deadNodes: Set<number>;
  liveShards: number[];
  /** Partitions this shard gains → the shards it waits for (ascending by partition). */
  waiting: Map<number, Set<number>>;
  /** New owner → partitions this shard hands off to it (planned moves). */
  outgoing: Map<number, number[]>;
  /** New owner → partitions that move away from a dead node (every survivor answers them). */
  recovering: Map<number, number[]>;
}

/**
 * The partitions shard `self` gains, loses and must help recover when it moves from table
 * `prev` to `next` with the nodes `live`: a gained partition whose previous owner is alive waits
 * for that owner's handoff; one whose owner died waits for every other live shard's sessions.
 */
export function planTableChange(
  self: number,
  prev: OwnerTable,
  next: OwnerTable,
  live: readonly LiveNode[],
): TableChange {
  const liveShards = liveShardsOf(live);
  const deadNodes = deadNodesOf(prev, live);
  const waiting = new Map<number, Set<number>>();
  const outgoing = new Map<number, number[]>();
  const recovering = new Map<number, number[]>();
  for (let p = 0; p < next.partitions; p++) {
    const was = ownerShard(prev, p);
    const now = ownerShard(next, p);
    if (was === now) continue;
    if (deadNodes.has(nodeNoOf(was))) {
      push(recovering, now, p);
      if (now === self) waiting.set(p, new Set(liveShards.filter((s) => s !== self)));
    } else {
      if (now === self) waiting.set(p, new Set([was]));
      if (was === self) push(outgoing, now, p);
    }
  }
  return { deadNodes, liveShards, waiting, outgoing, recovering };
}

/**
 * Removes the shards of `deadNodes` from what each gained partition of `waiting` waits for, and
 * returns the partitions that wait for nothing more (removed from `waiting`). A shard whose node
 * a newer table drops answers nothing any more: two nodes that die a moment apart make two
 * tables, and the first one's recoveries waited for the second node until the handoff timeout
 * (30 s of held logins and messages in `kill-two-of-five`, 2026-12-07).
 */
export function dropDeadSenders(waiting: Map<number, Set<number>>, deadNodes: ReadonlySet<number>): number[] {
  const complete: number[] = [];
  if (deadNodes.size === 0) return complete;
  for (const [p, from] of waiting) {
    for (const shard of from) if (deadNodes.has(nodeNoOf(shard))) from.delete(shard);
    if (from.size > 0) continue;
    waiting.delete(p);
    complete.push(p);
  }
  return complete;
}

/** The worker shards of the nodes `live`. */
export function liveShardsOf(live: readonly LiveNode[]): number[] {
  return live.flatMap((n) => Array.from({ length: n.workers }, (_, w) => shardNumber(n.nodeNo, w)));
}

/** The nodes that owned partitions in `prev` and are not among `live`: they died. */
export function deadNodesOf(prev: OwnerTable, live: readonly LiveNode[]): Set<number> {
  const liveNodes = new Set(live.map((n) => n.nodeNo));
  const dead = new Set<number>();
  for (const shard of prev.shardNos) if (!liveNodes.has(nodeNoOf(shard))) dead.add(nodeNoOf(shard));
  return dead;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/**
 * The simulated cluster: nodes of shards running the real replication state machines
 * (ReplicaStream, ReplicaHost, session-state), the membership/handoff model of
 * membership-model.ts over the real assignment and owner table, XEP-0198 clients, and the
 * faults. Wiring follows src/cluster/worker-main.ts (replicasFor, promoteCopiesOf,
 * reseatReplicas, resumeTake, the rep/rep-ack/rep-end dispatch), src/cluster/client-stream-host.ts
 * (`resume`: home shard, local shards, then every live shard; "pending" waits for the next
 * table) and src/cluster/cluster-member.ts (views, leases, fencing, dropping batches from a
 * member declared down).
 */
import {
  applySessionChange,
  newSessionState,
  type SessionSnapshot,
  unackedAfter,
} from "../../actors/session-state.ts";
import { dropDeadSenders, type LiveNode, liveShardsOf } from "../../src/cluster/handoff.ts";
import { assignPartitions } from "../../src/cluster/membership/assignment.ts";
import {
  isMainShard,
  MAIN_WORKER,
  nodeNoOf,
  type OwnerTable,
  ownerShard,
  shardNumber,
  withMainShards,
} from "../../src/cluster/ring.ts";
import {
  type PromotedCopy,
  placeReplicas,
  ReplicaHost,
  ReplicaStream,
  type ReplicationSender,
  shardOfPrefix,
} from "../../src/cluster/session-replicas.ts";
import { DEFAULT_CONFIG } from "../../src/config/defaults.ts";
import { createLogger } from "../../src/log.ts";
import type { FullJid } from "../../src/xmpp/jid.ts";
import {
  coordinatorOf,
  copyView,
  expiredMembers,
  liveNodesOf,
  nextAssignment,
  planTableChange,
  receiveHandoff,
  type SimView,
  tableOf,
} from "./membership-model.ts";
import { OwnerSession, type SimClientLink } from "./owner-session.ts";
import { Network, type ProcessState, Scheduler } from "./scheduler.ts";

/** Timings (ms), the product's defaults (src/config/defaults.ts). */
export const T = {
  leaseMs: 10_000,
  leaseRenewMs: 2_000,
  takeoverMarginMs: 2_000,
  detectMs: 2_000,
  viewPollMs: 5_000,
  handoffTimeoutMs: 30_000,
  requestTimeoutMs: 5_000,
  resumeTakeTimeoutMs: 3_000,
} as const;

const silent = createLogger({ level: "silent" });
/** The product's `cluster.replicationBatchMs` default. */
const REPLICATION_BATCH_MS = DEFAULT_CONFIG.cluster.replicationBatchMs;
type RepEnvelope = Parameters<ReplicationSender["send"]>[1];

export interface Violation {
  rule: string;
  detail: string;
}

export class Shard implements ReplicationSender {
  readonly self: number;
  readonly node: SimNode;
  readonly host: ReplicaHost;
  readonly sessions = new Map<string, OwnerSession>();
  table: OwnerTable;
  liveShards: number[];
  readonly goneNodes = new Set<number>();
  readonly waiting = new Map<number, Set<number>>();
  early: { epoch: number; from: number; partitions: number[] }[] = [];
  readonly world: World;
  #streamNo = 0;
  /** Which incarnation of its worker thread this is (a crash starts the next). */
  readonly generation: number;
  /** Its worker thread crashed: it sends nothing and its timers do nothing any more. */
  dead = false;
  /** Its crash was announced: UserActors count its sessions lost (user-actor.ts `shard-lost`). */
  lost = false;
  /** On a main shard: dead incarnations of other nodes' workers (stream prefix → shard). */
  readonly deadIncarnations = new Map<string, number>();
  /**
   * client-stream-host.ts `resume`: resumptions of one token on this worker, one at a time; the
   * ones waiting behind the first, which run when it is done.
   */
  readonly resuming = new Map<string, (() => void)[]>();
  /** client-stream-host.ts releaseCopy: the `copy-held` sent, sent again after an overflow. */
  readonly released: { holder: number; token: string; stream: string }[] = [];

  constructor(world: World, node: SimNode, worker: number, table: OwnerTable, generation = 1) {
    this.world = world;
    this.node = node;
    this.self = shardNumber(node.nodeNo, worker);
    this.generation = generation;
    this.table = table;
    this.liveShards = [...table.shardNos];
    this.host = new ReplicaHost(
      this,
      silent,
      (flush) => this.#onTurn(flush),
      () => world.sched.now,
      (owner, stream) =>
        this.goneNodes.has(nodeNoOf(owner)) ||
        [...this.deadIncarnations.keys()].some((prefix) => stream.startsWith(prefix)),
    );
  }

  /** Runs `run` at the end of this turn, unless the worker thread has died by then. */
  #onTurn(run: () => void): void {
    this.world.sched.at(0, this.node.nodeNo, "", () => {
      if (!this.dead) run();
    });
  }

  /** The prefix of this incarnation's stream ids (its sid prefix in worker-main.ts). */
  get streamPrefix(): string {
    return `${this.self}.${this.node.proc.incarnation}.${this.generation}.`;
  }

  /** Deferred flushes waiting for this shard's batch timer, and the process incarnation it runs in. */
  #due: { incarnation: number; flushes: (() => void)[] } | undefined;

  /**
   * As batchLater in the product: the deferred flushes asked for run together, a little after
   * the first (a killed process's timer dies with it, and so do the flushes it held).
   */
  later(flush: () => void): void {
    const incarnation = this.node.proc.incarnation;
    if (this.#due !== undefined && this.#due.incarnation === incarnation) {
      this.#due.flushes.push(flush);
      return;
    }
    const due = { incarnation, flushes: [flush] };
    this.#due = due;
    this.world.sched.at(REPLICATION_BATCH_MS, this.node.nodeNo, "", () => {
      if (this.#due !== due || this.dead) return; // `now` ran them already
      this.#due = undefined;
      for (const run of due.flushes) run();
    });
  }

  /** As batchLater's `now`: a change sent at once takes the deferred flushes along. */
  now(): void {
    const due = this.#due;
    if (due === undefined || due.incarnation !== this.node.proc.incarnation) return;
    this.#due = undefined;
    for (const run of due.flushes) run();
  }

  send(shard: number, envelope: RepEnvelope): void {
    if (this.dead) return;
    const label = this.world.sched.trace === undefined ? "" : `${this.self}→${shard} ${describe(envelope)}`;
    this.world.post(this.self, shard, label, (to) => to.onRep(envelope));
  }

  onRep(e: RepEnvelope): void {
    if (e.t === "rep") {
      const before = this.host.stats.applied;
      this.host.receive(e);
      if (this.host.stats.applied > before) this.world.checkZombieApplied(this, e.token, e.owner);
    } else if (e.t === "rep-ack") {
      // As ReplicaStreams.acked: an acknowledgement counts only for the stream it names.
      for (const [token, id, lsn] of e.acks) {
        const stream = this.sessions.get(token)?.stream;
        if (stream?.id === id) stream.acked(e.from, lsn);
      }
    } else {
      this.host.end(e.token, e.owner, e.stream);
    }
  }

  replicasFor(): number[] {
    return placeReplicas(this.self, [...this.table.shardNos], this.world.factor);
  }

  openSession(
    state: SessionSnapshot,
    link: SimClientLink | undefined,
    origin?: { stream: string; lsn: number },
  ): OwnerSession {
    const session = new OwnerSession(
      state,
      link,
      (s) =>
        new ReplicaStream(
          this,
          state.token,
          `${this.streamPrefix}${++this.#streamNo}`,
          this.replicasFor(),
          state,
          (lsn: number) => s.onReplicated(lsn),
          () => this.world.sched.now,
          origin,
        ),
      (run) => this.#onTurn(run),
    );
    this.sessions.set(state.token, session);
    return session;
  }

  /** Partitions this shard serves: owned in its table and not waiting for a handoff. */
  serves(p: number): boolean {
    return ownerShard(this.table, p) === this.self && !this.waiting.has(p);
  }
}

export class SimNode {
  readonly nodeNo: number;
  readonly name: string;
  readonly workers: number;
  readonly shards: Shard[] = [];
  /**
   * The main thread's replica shard (main-replicas.ts): copies of other nodes' sessions, no
   * partition, no session; it dies only with its node.
   */
  readonly main: Shard;
  /** Copies the main shard promoted, dealt to each worker to adopt as it applies the table. */
  handedOver: PromotedCopy[][] = [];
  /** Its workers' dead incarnations (stream prefix → shard), announced again after an overflow. */
  readonly restarts = new Map<string, number>();
  /**
   * Per worker, its dead incarnations whose restart is not announced yet: one that dies before
   * its own restart was announced (worker-pool.ts `#deadUnannounced`, sim seed 77167).
   */
  readonly deadUnannounced = new Map<number, Shard[]>();
  readonly proc: ProcessState = { incarnation: 1, alive: true, paused: false };
  fenced = false;
  view: SimView;
  table: OwnerTable;
  appliedEpochs: number[] = [];
  /** The serving members its workers last learned (cluster-member.ts `#liveKey`). */
  liveKey = "";
  unsettledSince: { epoch: number; at: number } | undefined;

  constructor(world: World, nodeNo: number, workers: number, view: SimView) {
    this.nodeNo = nodeNo;
    this.name = `n${nodeNo}`;
    this.workers = workers;
    this.view = copyView(view);
    this.table = tableOf(view);
    this.appliedEpochs.push(view.epoch);
    for (let w = 0; w < workers; w++) this.shards.push(new Shard(world, this, w, this.table));
    this.main = new Shard(world, this, MAIN_WORKER, this.table);
  }

  /** Serving: alive, not fenced, and not declared down (a zombie is fenced by epoch and replicas). */
  get serving(): boolean {
    return this.proc.alive && !this.fenced;
  }
}

interface ClientConn extends SimClientLink {
  open: boolean;
  shard: number;
  lastToClient: number;
  lastToServer: number;
}

export class SimClient {
  readonly id: number;
  readonly user: string;
  readonly full: FullJid;
  token = "";
  conn: ClientConn | undefined;
  h = 0;
  sent = 0;
  maxAcked = 0;
  online = false;
  resuming = false;
  readonly seen = new Set<string>();

  constructor(id: number) {
    this.id = id;
    this.user = `u${id}@sim`;
    this.full = `u${id}@sim/r` as FullJid;
  }
}

export interface WorldOptions {
  seed: number;
  trace: boolean;
}

export class World {
  readonly sched: Scheduler;
  readonly net: Network;
  readonly procs = new Map<number, ProcessState>();
  readonly nodes = new Map<number, SimNode>();
  readonly clients: SimClient[] = [];
  readonly violations: Violation[] = [];
  readonly factor: number;
  readonly partitions = 8;
  arbiter: SimView;
  /** Owner shard of each partition at each epoch, as committed. */
  readonly epochOwners = new Map<number, OwnerTable>();
  nodeFailures = 0;
  /**
   * Product gaps this run ran into, not fixed yet (see simulation.test.ts KNOWN_GAPS). A
   * session lost or a stream stalled after one of them is reported as that gap, not as a
   * new failure; every other violation fails the seed.
   */
  readonly knownGaps = new Set<string>();
  /** The session each client's UserActor has registered, by token (see {@link register}). */
  readonly registered = new Map<string, [OwnerSession, Shard]>();
  /** Restored lenders refused while their taker's registration lived (user-actor.ts standby). */
  readonly standby = new Map<string, [OwnerSession, Shard]>();
  #nextConn = 1;
  #nextId = 1;
  #nextNodeNo: number;
  #spareWorkers: number;
  chaosUntil = 0;
  trafficUntil = 0;

  constructor(options: WorldOptions) {
    this.sched = new Scheduler(options.seed, this.procs, options.trace);
    this.net = new Network(this.sched, this.procs);
    this.net.onOverflow = (from, to) => {
      // Its queue is gone: replication changes, acknowledgements, rep-ends, take replies, restart
      // notices. What follows recovers each (was the known gap overflow-drops-replication).
      this.sched.log(`  link n${from}→n${to} overflowed: its queue is gone`);
      // worker-pool.ts redrive: the restart notices the dropped queue may have held, again.
      const sender = this.nodes.get(from);
      const receiver = this.nodes.get(to);
      if (sender === undefined || receiver === undefined) return;
      for (const [deadPrefix, shard] of sender.restarts)
        this.#announceRestart(sender, receiver, shard, deadPrefix);
      // worker-main.ts catchUpReplicasOn: replicas left behind get the state again, and the streams
      // that still replicate there are listed, so the copies whose rep-end the queue held are
      // dropped (ReplicaHost.audit).
      const replica = receiver.main.self;
      for (const shard of sender.shards) {
        if (shard.dead) continue;
        const prefix = shard.streamPrefix;
        const live: number[] = [];
        for (const session of shard.sessions.values()) {
          const stream = session.stream;
          if (session.ended || stream === undefined || !stream.id.startsWith(prefix)) continue;
          // Replicas the dropped queue left behind get the state again (the product paces them in
          // chunks of the link's budget, replica-catch-up.ts; the model has no byte budget).
          if (stream.lagging(this.sched.now, 0).includes(replica))
            stream.reinit(replica, session.state, this.sched.now);
          if (stream.replicas.includes(replica) || stream.leaving.includes(replica))
            live.push(Number(stream.id.slice(prefix.length)));
        }
        this.post(shard.self, replica, `${shard.self}→${replica} rep-live [${live}]`, (main) =>
          main.host.audit(shard.self, prefix, live),
        );
        // client-stream-host.ts resendCopiesHeld: the confirmations the queue may have held.
        for (const { holder, token, stream } of shard.released) {
          if (nodeNoOf(holder) !== to) continue;
          this.post(shard.self, holder, `${shard.self}→${holder} copy-held ${token} (again)`, (target) =>
            target.host.held(token, stream),
          );
        }
      }
    };
    const rng = this.sched.rng;
    const count = rng.int(2, 4);
    this.factor = count >= 3 && rng.chance(0.3) ? 3 : 2;
    const workers = Array.from({ length: count }, () => rng.int(1, 2));
    const members = workers.map((w, i) => ({
      name: `n${i + 1}`,
      nodeNo: i + 1,
      workers: w,
      status: "up" as const,
      leaseUntil: T.leaseMs,
      settledEpoch: 1,
    }));
    const assignment = assignPartitions(
      null,
      members.map((m) => m.name),
      this.partitions,
    );
    this.arbiter = { version: 1, epoch: 1, partitions: this.partitions, assignment, members };
    this.epochOwners.set(1, tableOf(this.arbiter));
    for (const m of members) this.#addNode(m.nodeNo, m.workers);
    this.#nextNodeNo = count + 1;
    this.#spareWorkers = rng.int(1, 2);
    this.sched.log(
      `cluster: ${members.map((m) => `${m.name}×${m.workers}`).join(" ")}, factor ${this.factor}, ${this.partitions} partitions`,
    );
  }

  #addNode(nodeNo: number, workers: number): SimNode {
    const node = new SimNode(this, nodeNo, workers, this.arbiter);
    this.procs.set(nodeNo, node.proc);
    this.nodes.set(nodeNo, node);
    this.#every(node, T.leaseRenewMs, "lease", () => this.#renewLease(node));
    this.#every(node, T.viewPollMs, "", () => this.#adopt(node, this.arbiter));
    // worker-main.ts: every second, replicas silent while behind get the state again.
    this.#every(node, 1_000, "", () => {
      for (const shard of node.shards) {
        for (const session of shard.sessions.values()) {
          const stream = session.stream;
          if (stream === undefined || session.ended) continue;
          for (const replica of stream.lagging(this.sched.now, 3_000)) stream.reinit(replica, session.state);
        }
      }
    });
    return node;
  }

  #every(node: SimNode, ms: number, label: string, run: () => void): void {
    const tick = () => {
      run();
      this.sched.at(
        ms + this.sched.rng.int(0, 100),
        node.nodeNo,
        label === "" ? "" : `${node.name} ${label}`,
        tick,
      );
    };
    this.sched.at(this.sched.rng.int(1, ms), node.nodeNo, "", tick);
  }

  shard(no: number): Shard | undefined {
    const node = this.nodes.get(nodeNoOf(no));
    return isMainShard(no) ? node?.main : node?.shards[no % 1024];
  }

  /**
   * An envelope between shards over the node link. The receiving member drops batches from a
   * member its view says is down (cluster-member.ts 311-326).
   */
  post(from: number, to: number, label: string, deliver: (to: Shard) => void): void {
    const a = nodeNoOf(from);
    const b = nodeNoOf(to);
    this.net.send(a, b, label, () => {
      const node = this.nodes.get(b);
      const target = this.shard(to);
      if (node === undefined || target === undefined || node.fenced) return;
      if (a !== b && node.view.members.find((m) => m.nodeNo === a)?.status === "down") {
        this.sched.log(`  dropped at ${node.name}: from ${`n${a}`}, declared down`);
        return;
      }
      deliver(target);
    });
  }

  // --- membership ------------------------------------------------------------------------

  #commit(change: (view: SimView) => void): void {
    const next = copyView(this.arbiter);
    change(next);
    next.version++;
    this.arbiter = next;
    // NOTIFY, then each member re-reads.
    for (const node of this.nodes.values()) {
      this.sched.at(this.sched.rng.int(5, 200), node.nodeNo, "", () => this.#adopt(node, this.arbiter));
    }
  }

  #renewLease(node: SimNode): void {
    if (node.fenced) return;
    const me = this.arbiter.members.find((m) => m.nodeNo === node.nodeNo)!;
    if (me.status === "down") return this.#fence(node, "lease renewal refused");
    this.#commitQuiet(() => {
      me.leaseUntil = this.sched.now + T.leaseMs;
    });
    this.#adopt(node, this.arbiter);
  }

  /** A write that notifies nobody (lease renewal). */
  #commitQuiet(change: () => void): void {
    change();
  }

  #adopt(node: SimNode, view: SimView): void {
    if (node.fenced) return;
    if (view.version < node.view.version) return;
    node.view = copyView(view);
    const me = view.members.find((m) => m.nodeNo === node.nodeNo);
    if (me === undefined || me.status === "down")
      return this.#fence(node, "the cluster declared this node down");
    const live = liveNodesOf(view);
    const liveKey = live.map((n) => n.nodeNo).join(",");
    // cluster-member.ts #diedSince: nodes that served when the serving set was last applied and
    // are declared down now.
    const before = node.liveKey === "" ? [] : node.liveKey.split(",").map(Number);
    const died = before.filter(
      (n) => !live.some((l) => l.nodeNo === n) && view.members.find((m) => m.nodeNo === n)?.status === "down",
    );
    if (view.assignment !== null && view.epoch > node.table.epoch) {
      const prev = node.table;
      node.liveKey = liveKey;
      this.#applyTable(node, view);
      // A node that died owning no partition in the previous table: as without a table.
      const neverOwners = died.filter(
        (n) =>
          !prev.shardNos.some((s) => nodeNoOf(s) === n) &&
          !node.table.shardNos.some((s) => nodeNoOf(s) === n),
      );
      if (neverOwners.length > 0) this.#nodesDied(node, live, new Set(neverOwners));
    } else if (liveKey !== node.liveKey) {
      // cluster-member.ts #adopt → WorkerPool.setLive: members serving without a new table.
      node.liveKey = liveKey;
      for (const shard of node.shards) shard.liveShards = liveShardsOf(live);
      node.main.liveShards = liveShardsOf(live);
      // A node the table names is dropped by a later table (handoff.ts deadNodesOf).
      const neverOwners = died.filter((n) => !node.table.shardNos.some((s) => nodeNoOf(s) === n));
      if (neverOwners.length > 0) this.#nodesDied(node, live, new Set(neverOwners));
    }
    this.#coordinate(node);
  }

  #applyTable(node: SimNode, view: SimView): void {
    const next = tableOf(view);
    const live = liveNodesOf(view);
    const prevEpoch = node.appliedEpochs[node.appliedEpochs.length - 1]!;
    if (next.epoch !== prevEpoch + 1) {
      // The coordinator moves a dead owner's partitions without waiting for every member to
      // settle (cluster-member.ts 534-537), so a member that lagged skips an epoch.
      this.sched.log(`  KNOWN GAP ${node.name} skips from epoch ${prevEpoch} to ${next.epoch}`);
      this.knownGaps.add("epoch-skipped");
    }
    node.appliedEpochs.push(next.epoch);
    node.table = next;
    this.sched.log(`${node.name} applies epoch ${next.epoch}: ${fmtTable(next)}`);
    // worker-pool.ts setTable: the main shard promotes the copies whose owner died first, and
    // deals them to the workers, which adopt them once they apply the table.
    const main = node.main;
    const mainPlan = planTableChange(main.self, main.table, next, live);
    main.table = next;
    main.liveShards = mainPlan.liveShards;
    node.handedOver = this.#mainLearnsDead(node, mainPlan.deadNodes);
    for (const shard of node.shards) {
      const plan = planTableChange(shard.self, shard.table, next, live);
      shard.table = next;
      shard.liveShards = plan.liveShards;
      for (const [p, from] of plan.waiting) shard.waiting.set(p, from);
      this.#shardLearnsDead(shard, plan.deadNodes, node.handedOver[node.shards.indexOf(shard)] ?? []);
      if (plan.deadNodes.size > 0) {
        for (const [dest, partitions] of plan.recovering) {
          if (dest !== shard.self) this.#sendHandoff(shard, dest, next.epoch, partitions, 0);
        }
      }
      const early = shard.early;
      shard.early = [];
      for (const msg of early) this.#receiveHandoff(shard, msg);
      const incoming = [...plan.waiting.keys()];
      if (incoming.length > 0) {
        this.sched.at(T.handoffTimeoutMs, node.nodeNo, `${shard.self} handoff timeout e${next.epoch}`, () => {
          for (const p of incoming) shard.waiting.delete(p);
          this.#settle(node);
        });
      }
      for (const [dest, partitions] of plan.outgoing) {
        this.#sendHandoff(shard, dest, next.epoch, partitions, this.sched.rng.int(0, 50));
      }
    }
    this.#settle(node);
  }

  /**
   * Nodes `dead` died owning no partition, so no table drops them (WorkerPool.setLive with
   * `died`): main-replicas.ts membersChanged, then on each worker handoff.ts nodesDied.
   */
  #nodesDied(node: SimNode, live: readonly LiveNode[], dead: ReadonlySet<number>): void {
    this.sched.log(`${node.name} learns that n${[...dead].join(", n")} died owning no partition`);
    for (const { nodeNo } of live) node.main.goneNodes.delete(nodeNo);
    const shares = this.#mainLearnsDead(node, dead);
    for (const [i, shard] of node.shards.entries()) this.#shardLearnsDead(shard, dead, shares[i]!);
    this.#settle(node);
  }

  /**
   * main-replicas.ts membersChanged: the main shard promotes the copies whose owner's node died
   * (those the dead nodes' shards took and never confirmed come back first), dealt out to the
   * node's workers, which adopt them as they apply the change.
   */
  #mainLearnsDead(node: SimNode, dead: ReadonlySet<number>): PromotedCopy[][] {
    const main = node.main;
    for (const n of dead) main.goneNodes.add(n);
    const shares: PromotedCopy[][] = node.shards.map(() => []);
    if (dead.size === 0) return shares;
    for (const [prefix, s] of main.deadIncarnations)
      if (dead.has(nodeNoOf(s))) main.deadIncarnations.delete(prefix);
    main.host.restore((taker) => dead.has(nodeNoOf(shardOfPrefix(taker))));
    const promoted = this.#promoteOnMain(main);
    for (const [i, copy] of promoted.entries()) shares[i % node.shards.length]!.push(copy);
    return shares;
  }

  /**
   * handoff.ts #forgetDead and tableApplied on one worker: the dead nodes' shards are waited for
   * no more, copies of dead owners promote, `share` is adopted, a standby lender takes over from
   * a dead registration (user-actor.ts #lose), and replicas are re-seated.
   */
  #shardLearnsDead(shard: Shard, dead: ReadonlySet<number>, share: readonly PromotedCopy[]): void {
    dropDeadSenders(shard.waiting, dead);
    for (const n of dead) shard.goneNodes.add(n);
    if (dead.size > 0) {
      shard.host.restore((taker) => shard.goneNodes.has(nodeNoOf(shardOfPrefix(taker))));
      this.#promote(shard, (s) => shard.goneNodes.has(nodeNoOf(s)));
    }
    this.#adoptCopies(shard, share);
    for (const [token, standby] of dead.size > 0 ? [...this.standby] : []) {
      const current = this.registered.get(token);
      if (current === undefined || !dead.has(current[1].node.nodeNo)) continue;
      this.standby.delete(token);
      this.register(standby[0], standby[1], this.sched.rng.int(1, 50), [...dead]);
    }
    for (const session of shard.sessions.values()) {
      if (!session.ended) {
        session.stream?.reseat(shard.replicasFor(), session.state, (s) => shard.goneNodes.has(nodeNoOf(s)));
      }
    }
  }

  #sendHandoff(shard: Shard, dest: number, epoch: number, partitions: number[], quiesceMs: number): void {
    this.sched.at(quiesceMs, shard.node.nodeNo, "", () => {
      if (shard.dead) return;
      const msg = { epoch, from: shard.self, partitions };
      this.post(shard.self, dest, `${shard.self}→${dest} handoff e${epoch} [${partitions}]`, (to) =>
        this.#receiveHandoff(to, msg),
      );
    });
  }

  #receiveHandoff(shard: Shard, msg: { epoch: number; from: number; partitions: number[] }): void {
    const done = receiveHandoff(shard.waiting, shard.table.epoch, msg);
    if (done === "early") {
      shard.early.push(msg);
      return;
    }
    this.#settle(shard.node);
  }

  #settle(node: SimNode): void {
    if (node.shards.some((s) => s.waiting.size > 0) || node.fenced) return;
    const epoch = node.table.epoch;
    const me = this.arbiter.members.find((m) => m.nodeNo === node.nodeNo)!;
    if (me.status === "down" || me.settledEpoch >= epoch) return;
    this.#commit((view) => {
      view.members.find((m) => m.nodeNo === node.nodeNo)!.settledEpoch = epoch;
    });
  }

  #coordinate(node: SimNode): void {
    const view = this.arbiter;
    if (coordinatorOf(view) !== node.name) return;
    const expired = expiredMembers(view, this.sched.now, T.takeoverMarginMs, (name) => {
      const n = [...this.nodes.values()].find((x) => x.name === name)!;
      return n.proc.alive && !n.proc.paused && !n.fenced;
    });
    if (expired.length > 0) {
      this.sched.log(`${node.name} marks down (lease): ${expired.map((m) => m.name)}`);
      this.#commit((v) => {
        for (const m of v.members) if (expired.some((e) => e.name === m.name)) m.status = "down";
      });
      return;
    }
    const { next, unsettledSince } = nextAssignment(
      view,
      this.sched.now,
      node.unsettledSince,
      T.handoffTimeoutMs + T.leaseRenewMs,
    );
    node.unsettledSince = unsettledSince;
    if (next === undefined) return;
    this.#commit((v) => {
      v.assignment = next;
      v.epoch++;
    });
    this.epochOwners.set(this.arbiter.epoch, tableOf(this.arbiter));
    this.sched.log(`${node.name} commits epoch ${this.arbiter.epoch}: ${fmtTable(tableOf(this.arbiter))}`);
  }

  #fence(node: SimNode, reason: string): void {
    if (node.fenced) return;
    this.sched.log(`${node.name} fenced: ${reason}`);
    node.fenced = true;
    // A fenced node closes its clients and exits: its state is gone.
    this.#die(node);
  }

  #die(node: SimNode): void {
    node.proc.alive = false;
    node.proc.incarnation++;
    for (const client of this.clients) {
      const conn = client.conn;
      if (conn !== undefined && nodeNoOf(conn.shard) === node.nodeNo) this.#closeConn(conn, "server gone");
    }
  }

  #promote(
    shard: Shard,
    isDead: (s: number) => boolean,
    ownerDied?: (owner: number, stream: string) => boolean,
  ): void {
    this.#adoptCopies(shard, shard.host.promote(isDead, ownerDied));
  }

  /**
   * client-stream-host.ts releaseCopy: the session made of `copy` is replicated on `from` (or
   * ended there): its holder drops the copy.
   */
  #releaseCopy(from: Shard, copy: PromotedCopy): void {
    const { holder, stream } = copy;
    const token = copy.state.token;
    if (holder === undefined || holder === from.self) {
      if (holder === from.self) from.host.held(token, stream);
      return;
    }
    from.released.push({ holder, token, stream });
    this.post(from.self, holder, `${from.self}→${holder} copy-held ${token}`, (target) =>
      target.host.held(token, stream),
    );
  }

  /** main-replicas.ts #promoteDead: copies whose owner's node, or worker incarnation, died. */
  #promoteOnMain(main: Shard): PromotedCopy[] {
    return main.host.promote(
      (s) => main.goneNodes.has(nodeNoOf(s)),
      (owner, stream) =>
        main.goneNodes.has(nodeNoOf(owner)) ||
        [...main.deadIncarnations.keys()].some((prefix) => stream.startsWith(prefix)),
    );
  }

  /** client-stream-host.ts adoptCopy: promoted copies become detached sessions on `shard`. */
  #adoptCopies(shard: Shard, copies: readonly PromotedCopy[]): void {
    for (const copy of copies) {
      const { state, stream, lsn } = copy;
      // worker-pool.ts #settleHandOver: the main shard notes which incarnation adopted its copy.
      if (copy.holder !== undefined && copy.holder === shard.node.main.self)
        shard.node.main.host.assign(state.token, stream, shard.streamPrefix);
      // client-stream-host.ts adoptCopy: a live session of this id here makes the copy a ghost;
      // one lent to a resumption does not (it is not resumable: its taker may be the dead one),
      // nor one the copy moved more often than (a restored lender whose taker went on; 36521).
      const here = shard.sessions.get(state.token);
      if (here !== undefined && !here.ended && !here.lent && state.moves <= here.state.moves) {
        here.whenReplicated(() => this.#releaseCopy(shard, copy));
        continue;
      }
      this.sched.log(`  ${shard.self} promotes ${state.token} (out ${state.sentOut}, in ${state.handledIn})`);
      const session = shard.openSession(state, undefined, { stream, lsn });
      session.releaseCopyWhenReplicated(() => this.#releaseCopy(shard, copy));
      session.promotedAt = state.sentOut;
      session.copyOf = { stream, lsn };
      session.replaces = copy.replaces;
      session.onLinkClosed();
      this.register(session, shard, this.sched.rng.int(1, 50), [...shard.goneNodes]);
    }
  }

  // --- the UserActor's registration of each client's session (user-actor.ts `relocate`) ---

  /**
   * A session tells the user's actor where it lives (`relocate`), which keeps it only if it
   * supersedes the registered one (user-actor.ts `supersedes`) and tells the other it is stale.
   * The UserActor is not otherwise modelled: the message arrives after a short delay.
   */
  register(
    session: OwnerSession,
    shard: Shard,
    delayMs = this.sched.rng.int(1, 50),
    deadNodes: number[] = [],
  ): void {
    const token = session.state.token;
    this.sched.at(delayMs, undefined, "", () => {
      const current = this.registered.get(token);
      // The registered session is `lost` once its node is declared down (nodes-lost).
      const node = current === undefined ? undefined : current[1].node.nodeNo;
      const dead =
        node !== undefined && (deadNodes.includes(node) || this.isDeclaredDown(node) || current![1].lost);
      const standby = this.standby.get(token);
      // user-actor.ts supersedes: a copy promoted again replaces its dead adopter's registration.
      const replaced = session.replaces !== undefined && current?.[1].streamPrefix === session.replaces;
      if (
        current === undefined ||
        current[0] === session ||
        replaced ||
        supersedes(session, current[0], dead)
      ) {
        this.registered.set(token, [session, shard]);
        if (current !== undefined && current[0] !== session) this.#tellStale(current[0], current[1]);
        if (standby !== undefined && current?.[0] !== session) {
          this.standby.delete(token);
          if (standby[0] !== session) this.#tellStale(standby[0], standby[1]);
        }
        // user-actor.ts: a restored registration that wins is told `active`.
        if (session.restored) {
          this.sched.at(this.sched.rng.int(1, 50), shard.node.nodeNo, "", () => {
            session.restored = false;
          });
        }
      } else if (session.restored) {
        if (standby !== undefined && standby[0] !== session) this.#tellStale(standby[0], standby[1]);
        this.standby.set(token, [session, shard]);
        this.sched.log(`  the UserActor keeps ${shard.self}'s restored ${token} as standby`);
      } else {
        this.#tellStale(session, shard);
      }
    });
  }

  #tellStale(session: OwnerSession, shard: Shard): void {
    this.sched.at(this.sched.rng.int(1, 50), shard.node.nodeNo, "", () => {
      if (session.ended) return;
      this.sched.log(`  ${shard.self} ends its stale copy of ${session.state.token} quietly`);
      const handBack = session.endStale();
      // session-gone: the UserActor writes them to the registered session.
      const live = this.registered.get(session.state.token);
      for (const text of handBack) {
        if (live === undefined || live[0].ended) continue;
        const [token, , id] = text.split("|");
        live[0].write(`${token}|${live[0].state.sentOut + 1}|${id}`);
      }
    });
  }

  // --- faults --------------------------------------------------------------------------

  kill(node: SimNode): void {
    this.sched.log(`FAULT kill ${node.name}`);
    this.nodeFailures++;
    this.#die(node);
    // Its links reset: peers suspect it, and min(2, up-1) suspicions mark it down.
    this.sched.at(
      T.detectMs + this.sched.rng.int(0, 2_000),
      undefined,
      `${node.name} suspected: down`,
      () => {
        const me = this.arbiter.members.find((m) => m.nodeNo === node.nodeNo)!;
        if (me.status === "down") return;
        this.#commit((v) => {
          v.members.find((m) => m.nodeNo === node.nodeNo)!.status = "down";
        });
      },
    );
  }

  pause(node: SimNode, ms: number): void {
    this.sched.log(`FAULT pause ${node.name} for ${ms} ms`);
    if (ms > T.leaseMs) this.nodeFailures++;
    node.proc.paused = true;
    node.proc.pausedAt = this.sched.now;
    this.sched.at(ms, undefined, `${node.name} resumes`, () => {
      node.proc.paused = false;
      this.sched.release(node.nodeNo);
    });
  }

  /**
   * Worker `worker` of `node` crashes and is restarted (worker-pool.ts #restart): its sessions,
   * copies and timers die with it and its clients' connections close. Once the new incarnation
   * runs, the node's other workers (peerRestarted) and the other nodes' main threads (the
   * `restarted` envelope, after everything the old worker sent on the link) promote their copies
   * of its old sessions, sparing the new incarnation's.
   */
  crashWorker(node: SimNode, worker: number): void {
    const old = node.shards[worker]!;
    this.sched.log(`FAULT worker ${old.self} crashes`);
    this.nodeFailures++;
    old.dead = true;
    for (const session of old.sessions.values()) {
      session.ended = true;
      session.link = undefined;
    }
    for (const client of this.clients) {
      if (client.conn !== undefined && client.conn.shard === old.self)
        this.#closeConn(client.conn, "worker gone");
    }
    // worker-pool.ts #readoptFrom: the main shard's copies this incarnation adopted or took, and
    // had not confirmed, come back; promoted again, they go to the node's other workers (or to
    // the restarted one once it runs).
    const readopt: PromotedCopy[] = [];
    if (node.main.host.restore((taker) => taker === old.streamPrefix) > 0) {
      readopt.push(...this.#promoteOnMain(node.main));
      this.sched.log(`  ${node.main.self} promotes ${readopt.length} cop(ies) ${old.self} held, again`);
    }
    const fresh = new Shard(this, node, worker, node.table, old.generation + 1);
    fresh.liveShards = [...old.liveShards];
    for (const n of old.goneNodes) fresh.goneNodes.add(n);
    node.shards[worker] = fresh;
    // handoff.ts awaitRecovery: it holds what it owns until every other live shard has told it
    // about its sessions of those users (or handoffTimeoutMs has passed).
    const owned = ownedBy(fresh.table, fresh.self);
    const others = fresh.liveShards.filter((s) => s !== fresh.self);
    for (const p of owned) fresh.waiting.set(p, new Set(others));
    if (owned.length > 0) {
      this.sched.at(T.handoffTimeoutMs, node.nodeNo, `${fresh.self} recovery timeout`, () => {
        if (fresh.dead) return;
        for (const p of owned) fresh.waiting.delete(p);
        this.#settle(node);
      });
    }
    const keepPrefix = fresh.streamPrefix;
    const dead = [...(node.deadUnannounced.get(worker) ?? []), old];
    node.deadUnannounced.set(worker, dead);
    const siblings = node.shards.filter((s) => s !== fresh);
    for (const [i, copy] of siblings.length === 0 ? [] : readopt.entries())
      this.#adoptCopies(siblings[i % siblings.length]!, [copy]);
    this.sched.at(this.sched.rng.int(10, 300), node.nodeNo, `${old.self} restarted`, () => {
      if (siblings.length === 0 && node.shards[worker] === fresh && !fresh.dead)
        this.#adoptCopies(fresh, readopt);
      if (node.shards[worker] !== fresh || fresh.dead) return;
      node.deadUnannounced.delete(worker);
      const deadPrefixes = new Set(dead.map((d) => d.streamPrefix));
      // shard-lost (user-actor.ts #lose): registrations on the dead incarnations are lost, and a
      // standby lender takes over from one.
      for (const d of dead) d.lost = true;
      for (const [token, standby] of [...this.standby]) {
        const at = this.registered.get(token)?.[1];
        if (at === undefined || !dead.includes(at)) continue;
        this.standby.delete(token);
        this.register(standby[0], standby[1]);
      }
      for (const shard of node.shards) {
        if (shard === fresh) continue;
        // worker-main.ts peerRestarted: copies the dead incarnations took come back; their
        // copies here promote; ours there start again.
        shard.host.restore((taker) => deadPrefixes.has(taker));
        this.#promote(
          shard,
          (s) => shard.goneNodes.has(nodeNoOf(s)),
          (owner, stream) =>
            shard.goneNodes.has(nodeNoOf(owner)) || (owner === old.self && !stream.startsWith(keepPrefix)),
        );
        for (const session of shard.sessions.values()) {
          if (!session.ended) session.stream?.reinit(old.self, session.state);
        }
        this.#recoverFor(shard, fresh.self);
      }
      for (const d of dead) {
        node.restarts.set(d.streamPrefix, d.self);
        for (const other of this.nodes.values()) {
          if (other !== node) this.#announceRestart(node, other, d.self, d.streamPrefix);
        }
      }
    });
  }

  /** main-replicas.ts `restarted`: `to`'s main thread promotes its copies of the crashed worker's sessions. */
  #announceRestart(from: SimNode, to: SimNode, crashed: number, deadPrefix: string): void {
    this.post(from.main.self, to.main.self, `restarted ${crashed} → n${to.nodeNo}`, (main) => {
      // A notice heard before (re-sent after an overflow) changes nothing.
      if (main.goneNodes.has(nodeNoOf(crashed)) || main.deadIncarnations.has(deadPrefix)) return;
      main.deadIncarnations.set(deadPrefix, crashed);
      main.host.restore((taker) => taker === deadPrefix);
      const promoted = this.#promoteOnMain(main);
      this.sched.log(`  ${main.self} promotes ${promoted.length} cop(ies) of ${crashed}'s sessions`);
      // worker-pool.ts #peerWorkerRestarted: dealt to the running workers, round robin.
      const workers = main.node.shards;
      for (const [i, copy] of promoted.entries()) this.#adoptCopies(workers[i % workers.length]!, [copy]);
      for (const shard of workers) this.#recoverFor(shard, crashed);
    });
  }

  /** handoff.ts recoverFor: `shard` tells the restarted worker `restarted` about the partitions it owns. */
  #recoverFor(shard: Shard, restarted: number): void {
    this.#sendHandoff(shard, restarted, shard.table.epoch, ownedBy(shard.table, restarted), 0);
  }

  join(): void {
    const nodeNo = this.#nextNodeNo++;
    const workers = this.#spareWorkers;
    this.sched.log(`JOIN n${nodeNo}×${workers}`);
    this.#commit((v) => {
      v.members.push({
        name: `n${nodeNo}`,
        nodeNo,
        workers,
        status: "up",
        leaseUntil: this.sched.now + T.leaseMs,
        settledEpoch: v.epoch,
      });
    });
    this.#addNode(nodeNo, workers);
  }

  // --- clients -------------------------------------------------------------------------

  /** A node a client can reach (it does not know which are dead). */
  #liveEntry(): Shard | undefined {
    const nodes = [...this.nodes.values()].filter((n) => n.proc.alive);
    if (nodes.length === 0) return undefined;
    return this.sched.rng.pick(this.sched.rng.pick(nodes).shards);
  }

  connect(client: SimClient): void {
    const shard = this.#liveEntry()!;
    const conn = this.#openConn(client, shard);
    client.token = `${shard.self}.${client.id}`;
    const state = newSessionState(client.full, client.token);
    this.register(shard.openSession(state, conn), shard, 0);
    client.online = true;
    this.sched.log(`c${client.id} binds at ${shard.self} (${client.token})`);
  }

  #openConn(client: SimClient, shard: Shard): ClientConn {
    const world = this;
    const node = shard.node.nodeNo;
    const conn: ClientConn = {
      id: this.#nextConn++,
      open: true,
      shard: shard.self,
      lastToClient: 0,
      lastToServer: 0,
      send(kind, value) {
        if (!conn.open) return;
        const at = Math.max(world.sched.now + world.sched.rng.int(1, 30), conn.lastToClient);
        conn.lastToClient = at;
        world.sched.at(at - world.sched.now, undefined, "", () => {
          if (conn.open && client.conn === conn) world.#clientReceives(client, kind, value);
        });
      },
      close(reason) {
        world.#closeConn(conn, reason);
      },
    };
    client.conn = conn;
    void node;
    return conn;
  }

  #closeConn(conn: ClientConn, reason: string): void {
    if (!conn.open) return;
    conn.open = false;
    const client = this.clients.find((c) => c.conn === conn);
    if (client !== undefined) {
      this.sched.log(`c${client.id} connection ${conn.id} to ${conn.shard} closed (${reason})`);
      client.conn = undefined;
      client.online = false;
      // A resumption on this connection is over for the client: it will try on a new one.
      client.resuming = false;
      this.sched.at(this.sched.rng.int(100, 2_000), undefined, "", () => this.resume(client));
    }
    // The server side learns of it on its own turn.
    this.sched.at(this.sched.rng.int(1, 50), nodeNoOf(conn.shard), "", () => {
      for (const session of this.shard(conn.shard)?.sessions.values() ?? []) {
        if (session.link === conn) session.onLinkClosed();
      }
    });
  }

  /** The client sends to its server over its connection (FIFO; lost if the connection dies). */
  #toServer(
    client: SimClient,
    label: string,
    run: (session: OwnerSession | undefined, shard: Shard) => void,
  ): void {
    const conn = client.conn;
    if (conn === undefined || !conn.open) return;
    const at = Math.max(this.sched.now + this.sched.rng.int(1, 30), conn.lastToServer);
    conn.lastToServer = at;
    this.sched.at(at - this.sched.now, nodeNoOf(conn.shard), label, () => {
      if (!conn.open) return;
      const shard = this.shard(conn.shard)!;
      const session = [...shard.sessions.values()].find((s) => s.link === conn && !s.ended);
      run(session, shard);
    });
  }

  clientSends(client: SimClient): void {
    if (!client.online) return;
    const n = ++client.sent;
    this.#toServer(client, `c${client.id} sends in#${n}`, (session, shard) =>
      this.#serverGets(client, n, session, shard),
    );
  }

  #serverGets(client: SimClient, n: number, session: OwnerSession | undefined, shard: Shard): void {
    if (session === undefined) return;
    const seq = session.handle((accept) =>
      this.sched.at(this.sched.rng.int(0, 80), shard.node.nodeNo, "", accept),
    );
    if (seq !== n) this.violate("inbound-count", `c${client.id}: server counts stanza ${n} as ${seq}`);
  }

  clientAcks(client: SimClient): void {
    if (!client.online) return;
    const h = client.h;
    this.#toServer(client, `c${client.id} <a h=${h}>`, (session) => {
      if (session !== undefined && !session.clientAck(h)) {
        this.violate("client-ack", `c${client.id} acked ${h} but the server sent ${session.state.sentOut}`);
        session.link?.close("undefined-condition");
      }
    });
  }

  clientRequests(client: SimClient): void {
    if (!client.online) return;
    this.#toServer(client, `c${client.id} <r/>`, (session) => {
      if (session === undefined) return;
      session.ackWanted = true;
      session.answerAck();
    });
  }

  dropConnection(client: SimClient): void {
    if (client.conn === undefined) return;
    this.sched.log(`FAULT c${client.id} socket drops`);
    this.#closeConn(client.conn, "socket dropped");
  }

  /** The owner writes a stanza to the session, wherever it lives (the UserActor knows). */
  generate(client: SimClient): void {
    // The UserActor writes to the registered session; one that is gone or lost makes it wait.
    const registered = this.registered.get(client.token);
    const owner = this.liveOwners(client.token).find(([s]) => s === registered?.[0]);
    if (owner === undefined) return;
    const [session, shard] = owner;
    const seq = session.state.sentOut + 1;
    const id = this.#nextId++;
    this.sched.log(`${shard.self} writes out#${seq} (id ${id}) to c${client.id}`);
    session.write(`${client.token}|${seq}|${id}`);
  }

  #clientReceives(client: SimClient, kind: "stanza" | "a" | "resumed", value: string | number): void {
    if (kind === "stanza") {
      const [, seqText, id] = String(value).split("|");
      const seq = Number(seqText);
      client.h++;
      this.sched.log(`c${client.id} receives out#${seq} (id ${id}), h=${client.h}`);
      if (seq !== client.h)
        this.violate("client-sequence", `c${client.id} got stanza #${seq} as its ${client.h}th`);
      if (client.seen.has(id!)) this.violate("client-duplicate", `c${client.id} got id ${id} twice`);
      client.seen.add(id!);
    } else if (kind === "a") {
      const h = Number(value);
      this.sched.log(`c${client.id} gets <a h=${h}>`);
      if (h > client.sent)
        this.violate("server-ack", `c${client.id} got h=${h} after sending ${client.sent}`);
      client.maxAcked = Math.max(client.maxAcked, h);
    } else {
      const h = Number(value);
      this.sched.log(`c${client.id} resumed, server h=${h} (acked ${client.maxAcked}, sent ${client.sent})`);
      if (h < client.maxAcked)
        this.violate(
          "accepted-lost",
          `c${client.id} resumed with h=${h} below its acknowledged ${client.maxAcked}`,
        );
      if (h > client.sent)
        this.violate("server-ack", `c${client.id} resumed with h=${h} above sent ${client.sent}`);
      client.online = true;
      client.resuming = false;
      // XEP-0198 §5: the client re-sends what the server has not handled.
      const resend = client.sent - h;
      client.sent = h;
      for (let i = 0; i < resend; i++) this.clientSends(client);
    }
  }

  /** The client reconnects somewhere and sends `<resume previd h>` (src/xmpp/negotiation/resume.ts, client-stream-host.ts `resume`). */
  resume(client: SimClient): void {
    if (client.online || client.resuming || client.conn !== undefined) return;
    const entry = this.#liveEntry();
    if (entry === undefined) return;
    client.resuming = true;
    const conn = this.#openConn(client, entry);
    const h = client.h;
    this.sched.log(`c${client.id} resumes at ${entry.self} with h=${h}`);
    const node = entry.node.nodeNo;
    if (entry.node.proc.paused) {
      // The node accepts the TCP connection but never answers: the client gives up.
      this.sched.at(5_000, undefined, `c${client.id} resume timed out`, () => {
        if (client.conn === conn && !client.online) {
          client.resuming = false;
          this.#closeConn(conn, "no answer");
        }
      });
    }
    const home = Number.parseInt(client.token.split(".")[0]!, 10);
    // client-stream-host.ts: one resumption of a token at a time on a worker (sim seed 51267).
    const queue = entry.resuming.get(client.token);
    const done = () => {
      const waiting = entry.resuming.get(client.token);
      const next = waiting?.shift();
      if (next !== undefined) next();
      else entry.resuming.delete(client.token);
    };
    const finish = (snapshot: SessionSnapshot | undefined) => {
      done();
      if (entry.dead) {
        // The worker crashed while it searched: what it took dies with it, and comes back where
        // it was (a lent session to its lender; a replica's copy to its holder, which hears of
        // the crash and promotes it again).
        if (snapshot !== undefined && this.#takenCopies.has(snapshot))
          this.sched.log(`  ${entry.self} crashed holding ${snapshot.token}'s taken copy`);
        return;
      }
      if (snapshot === undefined) {
        this.sched.log(`c${client.id} <failed/> at ${entry.self}`);
        client.resuming = false;
        if (client.conn === conn) this.#closeConn(conn, "resume failed");
        return;
      }
      const session = entry.openSession(snapshot, conn.open ? conn : undefined);
      this.register(session, entry);
      // client-stream-host.ts resume: a replica's copy is kept by its holder until our replicas
      // hold the session.
      const copyOf = this.#takenCopies.get(snapshot);
      if (copyOf !== undefined) {
        session.replaces = copyOf.replaces;
        session.releaseCopyWhenReplicated(() => this.#releaseCopy(entry, { state: snapshot, ...copyOf }));
      }
      // client-stream-host.ts: the lender keeps its copy until our replicas hold the session.
      const lender = this.#lenders.get(snapshot);
      if (lender !== undefined) {
        session.whenReplicated(() =>
          this.post(entry.self, lender[1].self, `${entry.self}→${lender[1].self} resume-done`, () =>
            lender[0].confirmMoved(),
          ),
        );
      }
      this.sched.log(
        `  ${entry.self} resumes ${snapshot.token} (out ${snapshot.sentOut}, in ${snapshot.handledIn})`,
      );
      if (!conn.open) {
        session.onLinkClosed();
        return;
      }
      session.resumeOn();
    };
    const search = (then: (snapshot: SessionSnapshot | undefined, pending: boolean) => void) => {
      const order = [home, ...entry.node.shards.map((s) => s.self), entry.node.main.self].filter(
        (s, i, a) => a.indexOf(s) === i,
      );
      let pending = false;
      const next = (i: number) => {
        // client-stream-host.ts resume: once the client left, nothing more is taken (seed 91141).
        if (!conn.open) return then(undefined, false);
        if (i < order.length) {
          return this.#take(entry, order[i]!, client, h, (found) => {
            if (found === "pending") pending = true;
            else if (found !== undefined) return then(found, false);
            next(i + 1);
          });
        }
        const others = withMainShards(entry.liveShards).filter((s) => !order.includes(s));
        let left = others.length;
        let snapshot: SessionSnapshot | undefined;
        if (left === 0) return then(undefined, pending);
        for (const shard of others) {
          this.#take(entry, shard, client, h, (found) => {
            if (found === "pending") pending = true;
            else if (found !== undefined) {
              // A second holder (client-stream-host.ts `note`): the one ahead is kept, the other
              // gets its session back.
              const giveBack = (back: SessionSnapshot) => {
                const lender = this.#lenders.get(back);
                // A replica's copy that lost to a better one: its holder drops it.
                const copyOf = this.#takenCopies.get(back);
                if (copyOf !== undefined) this.#releaseCopy(entry, { state: back, ...copyOf });
                if (lender === undefined) return;
                this.post(entry.self, lender[1].self, `${entry.self}→${lender[1].self} resume-done no`, () =>
                  this.#restore(lender[0], lender[1]),
                );
              };
              if (snapshot === undefined) snapshot = found;
              else if (isAhead(found, snapshot)) {
                giveBack(snapshot);
                snapshot = found;
              } else giveBack(found);
            }
            if (--left === 0) then(snapshot, pending);
          });
        }
      };
      next(0);
    };
    const run = () =>
      search((snapshot, pending) => {
        if (snapshot !== undefined || !pending) return finish(snapshot);
        // A replica holds it but its owner's death is not committed yet: wait for the next table.
        const epoch = entry.table.epoch;
        const started = this.sched.now;
        const wait = () => {
          if (!conn.open) return finish(undefined);
          if (entry.table.epoch > epoch || this.sched.now - started >= T.requestTimeoutMs) {
            return search((again) => finish(again));
          }
          this.sched.at(100, node, "", wait);
        };
        wait();
      });
    if (queue === undefined) {
      entry.resuming.set(client.token, []);
      run();
    } else queue.push(run);
  }

  /** One `resume-take` request to `target`, answered over the links or timed out. */
  #take(
    from: Shard,
    target: number,
    client: SimClient,
    h: number,
    done: (found: SessionSnapshot | "pending" | undefined) => void,
  ): void {
    if (from.goneNodes.has(nodeNoOf(target))) return done(undefined);
    let answered = false;
    const answer = (found: SessionSnapshot | "pending" | undefined) => {
      if (answered) {
        // worker-main.ts onLateReply (lateTakeOf): the lender gets its session back at once; a
        // replica's copy, taken out for good, is adopted here as if promoted, not lost.
        if (found === undefined || found === "pending") return;
        const lender = this.#lenders.get(found);
        const copyOf = this.#takenCopies.get(found);
        if (lender !== undefined) {
          this.sched.log(`  late take reply from ${target}: ${lender[0].state.token} given back`);
          this.post(from.self, lender[1].self, `${from.self}→${lender[1].self} resume-done no`, () =>
            this.#restore(lender[0], lender[1]),
          );
        } else if (copyOf !== undefined) {
          this.sched.log(`  late take reply from ${target}: ${found.token} kept at ${from.self}`);
          this.#adoptCopies(from, [{ state: found, ...copyOf }]);
        }
        return;
      }
      answered = true;
      done(found);
    };
    this.sched.at(T.resumeTakeTimeoutMs, from.node.nodeNo, "", () => answer(undefined));
    const gone = [...from.goneNodes];
    this.post(from.self, target, `${from.self}→${target} resume-take ${client.token} h=${h}`, (shard) => {
      const found = this.#resumeTake(shard, client, h, gone, from);
      this.post(shard.self, from.self, `${shard.self}→${from.self} take reply ${describeTake(found)}`, () =>
        answer(found),
      );
    });
  }

  /** Replicas' copies taken by a resumption, by the snapshot they gave (the reply's `copyOf`). */
  readonly #takenCopies = new WeakMap<
    SessionSnapshot,
    { stream: string; lsn: number; holder: number; replaces?: string }
  >();

  /** Lent sessions by the snapshot they gave (the reply's `lender`). */
  readonly #lenders = new WeakMap<SessionSnapshot, [OwnerSession, Shard]>();

  /** SessionActor.restore: resumable again, registered as restored. */
  #restore(session: OwnerSession, shard: Shard): void {
    if (shard.dead || !session.restore()) return;
    this.sched.log(`  ${shard.self} restores its lent ${session.state.token}: never confirmed`);
    const current = shard.sessions.get(session.state.token);
    if (current === undefined || current.ended) shard.sessions.set(session.state.token, session);
    this.register(session, shard, this.sched.rng.int(1, 50), [...shard.goneNodes]);
  }

  /**
   * Whether another live copy of `session`'s stream holds what a client at `h` received; for a
   * restored lender, whose taker went on under streams of its own, a copy of any stream.
   */
  #hasAdvancedTwin(session: OwnerSession, h: number): boolean {
    const stream = session.copyOf?.stream;
    const lender = session.wasRestored;
    if (stream === undefined && !lender) return false;
    const others = this.liveOwners(session.state.token).filter(([s]) => s !== session);
    if (others.some(([s]) => (lender || s.copyOf?.stream === stream) && s.state.sentOut >= h)) return true;
    // Or a replica on a live node not promoted yet (the death is not applied there yet).
    return [...this.nodes.values()].some(
      (node) =>
        node.proc.alive &&
        [...node.shards, node.main].some(
          (shard) => (shard.host.copyOf(session.state.token)?.sentOut ?? -1) >= h,
        ),
    );
  }

  /** worker-main.ts `resumeTake`. */
  #resumeTake(
    shard: Shard,
    client: SimClient,
    h: number,
    msgGone: number[],
    taker: Shard,
  ): SessionSnapshot | "pending" | undefined {
    const here = shard.sessions.get(client.token);
    // client-stream-host.ts takeResumable: a session lent to another resumption is "pending".
    if (here !== undefined && !here.ended && here.lent) return "pending";
    // client-stream-host.ts takeResumable: a restored lender not told `active` yet is "pending".
    if (here !== undefined && !here.ended && here.restored) return "pending";
    if (here !== undefined && !here.ended) {
      // A stale resumption (its connection gone) may carry an h the session has trimmed past:
      // refused, harmless. A copy behind what the client received is a loss, unless it is a
      // promoted copy of a replica a re-seat replaced (make before break) that never learned
      // it could drop it: its successor's copy, promoted too, holds more, and the search goes on
      // to it (a loss there shows as session-lost or accepted-lost). So is a lender restored
      // after its taker went quiet, then activated when the taker's node died: the taker's heir
      // holds more (sim seeds 30007, 36521), and the lender refuses an `h` above its count.
      const twin = (here.promotedAt !== undefined || here.wasRestored) && this.#hasAdvancedTwin(here, h);
      if (h > here.state.sentOut && !twin)
        this.violate("copy-behind-client", `${shard.self} holds out ${here.state.sentOut} < client h ${h}`);
      const snapshot = here.lendForResume(h);
      if (snapshot === undefined) return undefined;
      this.#lenders.set(snapshot, [here, shard]);
      // SessionActor LEND_TIMEOUT_MS: unconfirmed, it is resumable here again.
      this.sched.at(10_000, shard.node.nodeNo, "", () => this.#restore(here, shard));
      return snapshot;
    }
    const gone = new Set([...shard.goneNodes, ...msgGone]);
    const taken = shard.host.takeForResume(
      client.token,
      client.user,
      (s) => gone.has(nodeNoOf(s)),
      taker.streamPrefix,
    );
    if (taken === undefined || taken === "pending") return taken;
    const copy = taken.state;
    this.#takenCopies.set(copy, {
      stream: taken.stream,
      lsn: taken.lsn,
      holder: shard.self,
      ...(taken.replaces === undefined ? {} : { replaces: taken.replaces }),
    });
    this.sched.log(
      `  ${shard.self} gives its replica of ${client.token} (out ${copy.sentOut}, in ${copy.handledIn})`,
    );
    if (unackedAfter(copy, h) < 0) {
      if (h > copy.sentOut)
        this.violate(
          "copy-behind-client",
          `replica at ${shard.self} holds out ${copy.sentOut} < client h ${h}`,
        );
      shard.host.giveBack(client.token, taken.stream);
      return undefined;
    }
    applySessionChange(copy, { c: "ack", h });
    return copy;
  }

  // --- what the invariants look at -------------------------------------------------------

  /** Sessions (not ended) holding `token` on nodes that serve and are not declared down. */
  liveOwners(token: string): [OwnerSession, Shard][] {
    const found: [OwnerSession, Shard][] = [];
    for (const node of this.nodes.values()) {
      if (!node.serving || this.isDeclaredDown(node.nodeNo)) continue;
      for (const shard of node.shards) {
        const session = shard.sessions.get(token);
        if (session !== undefined && !session.ended && !session.lent) found.push([session, shard]);
      }
    }
    return found;
  }

  isDeclaredDown(nodeNo: number): boolean {
    return this.arbiter.members.find((m) => m.nodeNo === nodeNo)?.status === "down";
  }

  /** A replica applied a change from `owner`: a zombie's change must not count once the copy moved on. */
  checkZombieApplied(at: Shard, token: string, owner: number): void {
    if (!this.isDeclaredDown(nodeNoOf(owner))) return;
    // A replica on a node declared down itself (paused, say, and woken to what a zombie wrote
    // before it was stopped) is fenced as soon as it runs: whatever it acknowledges reaches a
    // zombie that is fenced too, and nobody takes a copy from it (sim seed 4096).
    if (this.isDeclaredDown(at.node.nodeNo)) return;
    const others = this.liveOwners(token).filter(([, s]) => s.self !== owner);
    if (others.length > 0) {
      this.violate(
        "zombie-acked",
        `${at.self} applied a change of ${token} from zombie ${owner} (now at ${others[0]![1].self})`,
      );
    }
  }

  violate(rule: string, detail: string): void {
    this.sched.log(`VIOLATION ${rule}: ${detail}`);
    this.violations.push({ rule, detail });
  }
}

function describe(e: RepEnvelope): string {
  if (e.t === "rep") {
    const c = e.change;
    const what =
      c.c === "init"
        ? `init(out ${c.state.sentOut}, in ${c.state.handledIn}, moves ${c.state.moves})`
        : c.c === "out"
          ? `out`
          : c.c === "in"
            ? `in ${c.handledIn}`
            : c.c === "ack"
              ? `ack ${c.h}`
              : c.c;
    return `rep ${e.token} lsn ${e.lsn} ${what}${e.replicas === undefined ? "" : ` replicas [${e.replicas}]`}`;
  }
  if (e.t === "rep-ack") return `rep-ack ${e.acks.map(([t, l]) => `${t}:${l}`).join(",")}`;
  return `rep-end ${e.token}`;
}

function describeTake(found: SessionSnapshot | "pending" | undefined): string {
  if (found === undefined) return "none";
  if (found === "pending") return "pending";
  return `session (out ${found.sentOut}, in ${found.handledIn})`;
}

function fmtTable(table: OwnerTable): string {
  return Array.from({ length: table.partitions }, (_, p) => ownerShard(table, p)).join(",");
}

/**
 * user-actor.ts `supersedes`, for two sessions of one token with different ids; `currentDead`:
 * the registered one is lost or on a node the promoter knows dead.
 */
/** client-stream-host.ts isAhead: moved more often, or, as often, wrote more. */
function isAhead(a: SessionSnapshot, b: SessionSnapshot): boolean {
  return a.moves !== b.moves ? a.moves > b.moves : a.sentOut > b.sentOut;
}

/** The partitions `shard` owns in `table`. */
function ownedBy(table: OwnerTable, shard: number): number[] {
  const owned: number[] = [];
  for (let p = 0; p < table.partitions; p++) if (ownerShard(table, p) === shard) owned.push(p);
  return owned;
}

export function supersedes(next: OwnerSession, current: OwnerSession, currentDead = false): boolean {
  if (currentDead) return true;
  const had = current.state.moves;
  const has = next.state.moves;
  if (has !== had) return has > had;
  if (
    next.promotedAt !== undefined &&
    current.promotedAt !== undefined &&
    next.copyOf?.stream === current.copyOf?.stream
  )
    return (next.copyOf?.lsn ?? 0) > (current.copyOf?.lsn ?? 0);
  return next.promotedAt === undefined && current.promotedAt !== undefined;
}

/**
 * Starts and supervises the worker threads of a node. Workers get a comlink control channel,
 * a store channel (the store lives in the main thread: LevelDB allows one opener), and a
 * MessagePort to every other worker for envelopes. A worker that dies is restarted with the
 * same index; the others reconnect to it and re-register the sessions whose users it hosts.
 */
import { MessageChannel, Worker } from "node:worker_threads";
import { RegistrationThrottle } from "../auth/registration-throttle.ts";
import { expose, nodeEndpoint, type Remote, transfer, wrap } from "../comlink-setup.ts";
import type { Config } from "../config/defaults.ts";
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { exposeStore } from "../storage/remote-store.ts";
import type { Store } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { ClientTarget } from "../xmpp/stream-transport.ts";
import { addressedBatchFromWire, batchToWire } from "./batch-wire.ts";
import type { LiveNode } from "./handoff.ts";
import { MainReplicaShard } from "./main-replicas.ts";
import { isMainShard, MAIN_WORKER, nodeNoOf, type OwnerTable, shardNumber } from "./ring.ts";
import type { PromotedCopy, ReplicaStats } from "./session-replicas.ts";
import type {
  ClientPorts,
  ServerMessage,
  SessionListing,
  WorkerControl,
  WorkerInit,
  WorkerStats,
} from "./worker-main.ts";
import { EXITED, WorkerSlot } from "./worker-slot.ts";

/** How long a graceful stop waits for the actors' mailboxes to empty, per round. */
const QUIESCE_TIMEOUT_MS = 5_000;

/**
 * The registration throttle shared by every worker of the node. (Logins are throttled
 * cluster-wide by the login actors, actors/login-actor.ts.)
 */
export interface NodeThrottles {
  registration: RegistrationThrottle;
}

/** Options for {@link WorkerPool}. */
export interface WorkerPoolOptions {
  config: Readonly<Config>;
  workers: number;
  store: Store;
  tls: { cert: string; key: string };
  version: string;
  log: Logger;
  /** This node's number in the cluster (0 alone). */
  nodeNo: number;
  /** This node's name in the cluster ("local" alone). */
  nodeName: string;
  /** The owner table workers start with. */
  table: OwnerTable;
  /** A worker sent a batch to shard `dest` of another node. */
  onRemoteBatch?: (dest: number, bytes: Uint8Array) => void;
}

/** The workers of one node. */
export class WorkerPool {
  readonly #options: WorkerPoolOptions;
  readonly #slots: WorkerSlot[] = [];
  #ports: ClientPorts = { c2s: 0, tls: 0, web: 0, webPlain: null };
  #stopping = false;
  readonly #lastRestart: number[] = [];
  readonly #quickRestarts: number[] = [];
  restarts = 0;
  #table: OwnerTable;
  #live: LiveNode[] = [];

  readonly #throttles: NodeThrottles;
  /** The copies of other nodes' sessions, held on this (the main) thread. */
  readonly #replicas: MainReplicaShard;
  /** Promoted copies no running worker could take yet: the next worker to run adopts them. */
  #unadopted: PromotedCopy[] = [];
  /** Per worker index: restarts of other workers (shard → new sid prefix) it missed while down. */
  readonly #missedRestarts = new Map<number, Map<number, { keepPrefix: string; deadPrefixes: string[] }>>();
  /** Each worker's sid prefix (its incarnation): the one a crash kills is announced as dead. */
  readonly #sidPrefixes: string[] = [];
  /** Per worker: dead incarnations not announced yet (a restart that failed announces none). */
  readonly #deadUnannounced: string[][] = [];
  /** This node's workers' restarts (the latest 64), announced again after a link overflow. */
  readonly #restartsAnnounced: { shard: number; deadPrefix: string; keepPrefix: string }[] = [];
  /** Per node: the re-drive round that re-announced them last. */
  readonly #reannouncedIn = new Map<number, number>();
  /** The node stopped serving clients (fenced, or draining to `targets`): so does a restarted worker. */
  #clientsClosed: { fenced: true } | { targets: ClientTarget[] } | undefined;

  constructor(options: WorkerPoolOptions) {
    this.#options = options;
    this.#table = options.table;
    this.#throttles = { registration: registrationThrottle(options.config) };
    this.#replicas = new MainReplicaShard({
      nodeNo: options.nodeNo,
      log: options.log,
      lazyAckMs: options.config.cluster.replicationBatchMs,
      toWorker: (worker, bytes) => this.deliverRemote(worker, bytes),
      toPeer: (dest, bytes) => options.onRemoteBatch?.(dest, bytes),
      peerWorkerRestarted: (shard, deadPrefix, keepPrefix, promoted) =>
        this.#peerWorkerRestarted(shard, deadPrefix, keepPrefix, promoted),
    });
  }

  /**
   * A worker of another node restarted after a crash: ours adopt the copies of its sessions this
   * node was heir to (they await `<resume/>` here now), then forget the sessions that died with it
   * and tell it about theirs whose users it hosts, as for one of our own workers.
   */
  async #peerWorkerRestarted(
    shard: number,
    deadPrefix: string,
    keepPrefix: string,
    promoted: PromotedCopy[],
  ): Promise<void> {
    const shares = this.#dealOut(promoted);
    await Promise.all(
      this.#slots.map(async (slot, index) => {
        const share = shares.get(slot);
        if (share !== undefined) await this.#adopt(slot, index, share);
        await this.#tellRestarted(index, shard, keepPrefix, [deadPrefix]);
      }),
    );
  }

  /**
   * Promoted copies dealt out to the running workers, round robin. With none running they wait
   * for the next to run ({@link #catchUp}).
   */
  #dealOut(copies: readonly PromotedCopy[]): Map<WorkerSlot, PromotedCopy[]> {
    const takers = this.#slots.filter((slot) => slot.ready);
    if (takers.length === 0) {
      this.#unadopted.push(...copies);
      return new Map();
    }
    const shares = new Map<WorkerSlot, PromotedCopy[]>();
    for (const [i, copy] of copies.entries()) {
      const taker = takers[i % takers.length]!;
      shares.set(taker, [...(shares.get(taker) ?? []), copy]);
    }
    return shares;
  }

  /**
   * Worker `index` took `share` (the main shard notes who holds each copy), or exited first (it
   * waits for the next).
   */
  #settleHandOver(share: PromotedCopy[], answer: unknown, index: number): void {
    if (share.length === 0) return;
    if (answer === EXITED) this.#unadopted.push(...share);
    else {
      const prefix = this.#sidPrefixes[index];
      // Recorded before a worker listens: a copy adopted without it could not come back.
      if (prefix === undefined)
        this.#options.log.warn({ worker: index }, "copies adopted by a worker of unknown prefix");
      this.#replicas.handedOver(share, prefix);
    }
  }

  /** Worker `index` (`slot`) adopts `copies` as detached sessions, or they wait for the next. */
  async #adopt(slot: WorkerSlot, index: number, copies: PromotedCopy[]): Promise<void> {
    this.#settleHandOver(copies, await slot.call((control) => control.adopt(copies)), index);
  }

  /**
   * The worker incarnation `deadPrefix` died: the copies it adopted (or took for a resumption)
   * whose sessions no replica held yet are promoted again and dealt to the running workers, or
   * to the restarted one once it runs.
   */
  async #readoptFrom(deadPrefix: string | undefined): Promise<void> {
    if (deadPrefix === undefined) return;
    const shares = this.#dealOut(this.#replicas.localWorkerDied(deadPrefix));
    await Promise.all(
      this.#slots.map(async (slot, j) => {
        const share = shares.get(slot);
        if (share !== undefined) await this.#adopt(slot, j, share);
      }),
    );
  }

  /**
   * Worker `index` learns that worker `shard` (of this node or another) restarted, its sessions
   * now starting with `keepPrefix`; one not running learns it once it runs again, for the
   * restarted worker holds its partitions until every live shard has answered.
   */
  async #tellRestarted(
    index: number,
    shard: number,
    keepPrefix: string,
    deadPrefixes: string[],
  ): Promise<void> {
    const slot = this.#slots[index]!;
    const answer = slot.ready
      ? await slot.call((c) => c.peerRestarted(shard, keepPrefix, deadPrefixes))
      : EXITED;
    if (answer !== EXITED) return;
    const missed = this.#missedRestarts.get(index) ?? new Map();
    const before = missed.get(shard)?.deadPrefixes ?? [];
    this.#missedRestarts.set(
      index,
      missed.set(shard, { keepPrefix, deadPrefixes: [...before, ...deadPrefixes] }),
    );
  }

  /** A restarted worker runs: what it missed meanwhile, restart notices and copies to adopt. */
  async #catchUp(index: number, slot: WorkerSlot): Promise<void> {
    const missed = this.#missedRestarts.get(index);
    this.#missedRestarts.delete(index);
    for (const [shard, { keepPrefix, deadPrefixes }] of missed ?? [])
      await this.#tellRestarted(index, shard, keepPrefix, deadPrefixes);
    const copies = this.#unadopted.splice(0);
    if (copies.length > 0) await this.#adopt(slot, index, copies);
  }

  /** What the main thread's replica shard holds and did. */
  get replicaStats(): ReplicaStats {
    return this.#replicas.stats;
  }

  /**
   * Applies a reloaded configuration (its reloadable sections) to every worker, and to those
   * started later; `tls`, a new certificate for new connections.
   */
  async reload(config: Readonly<Config>, tls: { cert: string; key: string } | undefined): Promise<void> {
    const before = this.#options.config.registration;
    if (
      before.perAddressPerWindow !== config.registration.perAddressPerWindow ||
      before.windowMs !== config.registration.windowMs
    ) {
      // New limits start a new count (the exposed object is read by property, so workers see it).
      this.#throttles.registration = registrationThrottle(config);
    }
    this.#options.config = config;
    if (tls !== undefined) this.#options.tls = tls;
    // Every worker is asked even when one fails (a worker that dies now restarts with this
    // config); the failures are then reported together.
    const results = await Promise.allSettled(
      this.#slots
        .filter((s) => s.ready)
        .map((s) => s.call((control) => control.reload(config as Config, tls))),
    );
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length > 0) {
      throw new XmppServerError(
        "XSRV_WORKER",
        `${failed.length} worker(s) could not apply the reload: ${String((failed[0] as PromiseRejectedResult).reason)}`,
      );
    }
  }

  /** Starts every worker and its listeners; returns the ports actually bound. */
  async start(): Promise<ClientPorts> {
    const { config, workers } = this.#options;
    for (let i = 0; i < workers; i++) this.#slots.push(this.#spawn(i));
    for (let i = 0; i < workers; i++) {
      for (let j = i + 1; j < workers; j++) await this.#connect(i, j);
    }
    // The first worker may bind port 0; the others then share the port it got.
    const { c2s, tls, web, webPlain } = config.ports;
    this.#ports = await this.#slots[0]!.ask((control) => control.listen({ c2s, tls, web, webPlain }));
    for (let i = 1; i < workers; i++) await this.#slots[i]!.ask((control) => control.listen(this.#ports));
    for (const [i, slot] of this.#slots.entries())
      this.#sidPrefixes[i] = await slot.ask((c) => c.sidPrefix());
    for (const slot of this.#slots) if (!slot.exited) slot.ready = true;
    return this.#ports;
  }

  #spawn(index: number, recovering = false): WorkerSlot {
    const storeChannel = new MessageChannel();
    const controlChannel = new MessageChannel();
    const throttleChannel = new MessageChannel();
    const uplinkChannel = new MessageChannel();
    uplinkChannel.port1.on("message", (wire: string) => {
      const batch = addressedBatchFromWire(wire);
      if (batch !== undefined && isMainShard(batch.dest) && nodeNoOf(batch.dest) === this.#options.nodeNo)
        this.#replicas.receive(batch.bytes);
      else if (batch !== undefined) this.#options.onRemoteBatch?.(batch.dest, batch.bytes);
      else this.#options.log.error({ worker: index }, "a worker's batch without a destination; dropped");
    });
    exposeStore(this.#options.store, storeChannel.port1);
    expose(this.#throttles, nodeEndpoint(throttleChannel.port1));
    const init: WorkerInit = {
      config: this.#options.config as Config,
      index,
      workers: this.#options.workers,
      nodeNo: this.#options.nodeNo,
      nodeName: this.#options.nodeName,
      table: this.#table,
      uplinkPort: uplinkChannel.port2,
      tls: this.#options.tls,
      version: this.#options.version,
      storePort: storeChannel.port2,
      controlPort: controlChannel.port2,
      throttlePort: throttleChannel.port2,
      recovering,
      live: this.#live,
    };
    const worker = new Worker(new URL("./worker-main.ts", import.meta.url), {
      workerData: init,
      transferList: [storeChannel.port2, controlChannel.port2, throttleChannel.port2, uplinkChannel.port2],
    });
    const slot = new WorkerSlot(
      worker,
      wrap<WorkerControl>(nodeEndpoint(controlChannel.port1)),
      uplinkChannel.port1,
    );
    worker.on("error", (error) => this.#options.log.error({ err: error, worker: index }, "worker failed"));
    worker.on("exit", (code) => {
      slot.markExited();
      storeChannel.port1.close();
      controlChannel.port1.close();
      throttleChannel.port1.close();
      uplinkChannel.port1.close();
      if (!this.#stopping) void this.#restart(index, code);
    });
    return slot;
  }

  async #connect(a: number, b: number): Promise<void> {
    const channel = new MessageChannel();
    // A worker that dies meanwhile gets its ports again when it restarts.
    await this.#slots[a]!.call((control) => control.setPeerPort(b, transfer(channel.port1, [channel.port1])));
    await this.#slots[b]!.call((control) => control.setPeerPort(a, transfer(channel.port2, [channel.port2])));
  }

  async #restart(index: number, code: number): Promise<void> {
    this.restarts++;
    void this.#readoptFrom(this.#sidPrefixes[index]).catch((error: unknown) =>
      this.#options.log.error({ err: error, worker: index }, "could not hand a dead worker's copies on"),
    );
    // A worker that dies again soon after a restart waits longer each time (up to 30 s), so a
    // crash at start-up cannot spin the supervisor.
    const now = Date.now();
    const quick = now - (this.#lastRestart[index] ?? 0) < 10_000;
    this.#quickRestarts[index] = quick ? (this.#quickRestarts[index] ?? 0) + 1 : 0;
    this.#lastRestart[index] = now;
    const delayMs = quick ? Math.min(30_000, 100 * 2 ** this.#quickRestarts[index]!) : 0;
    this.#options.log.error({ worker: index, code, delayMs }, "worker exited; restarting it");
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (this.#stopping) return;
    try {
      const spawnedWith = this.#options.config;
      const slot = this.#spawn(index, true);
      this.#slots[index] = slot;
      for (let j = 0; j < this.#slots.length; j++) if (j !== index) await this.#connect(index, j);
      // Its prefix is known before it listens, so that whatever sessions it holds when it dies,
      // even before its restart is announced, are announced dead by the next restart.
      const keepPrefix = await slot.ask((control) => control.sidPrefix());
      const dead = this.#sidPrefixes[index];
      if (dead !== undefined) this.#deadUnannounced[index] = [...(this.#deadUnannounced[index] ?? []), dead];
      this.#sidPrefixes[index] = keepPrefix;
      await slot.ask((control) => control.listen(this.#ports));
      slot.ready = true;
      // A reload while it was starting passed it by: it catches up now.
      if (this.#options.config !== spawnedWith) {
        await slot.ask((control) => control.reload(this.#options.config as Config, this.#options.tls));
      }
      // A fenced or leaving node takes no clients, whichever worker listens.
      const closed = this.#clientsClosed;
      if (closed !== undefined) {
        await slot.ask((control) => ("fenced" in closed ? control.fence() : control.drain(closed.targets)));
      }
      const shard = shardNumber(this.#options.nodeNo, index);
      // Every incarnation that died since the last announced restart: one that died during its
      // own start was never announced (sim seed 77167: two crashes in a row, and the copies of
      // the first incarnation's sessions were never promoted).
      const deadPrefixes = [...(this.#deadUnannounced[index] ?? [])];
      await Promise.all(
        this.#slots.map((_, j) =>
          j === index ? undefined : this.#tellRestarted(j, shard, keepPrefix, deadPrefixes),
        ),
      );
      // The other nodes too: their sessions of its users, and their copies of its sessions.
      const nodes = new Set([
        ...this.#live.map((n) => n.nodeNo),
        ...Array.from(this.#table.shardNos, nodeNoOf),
      ]);
      // The same list as this node's workers heard: one that died meanwhile is the next restart's.
      this.#deadUnannounced[index] = (this.#deadUnannounced[index] ?? []).filter(
        (prefix) => !deadPrefixes.includes(prefix),
      );
      for (const deadPrefix of deadPrefixes) {
        if (this.#restartsAnnounced.push({ shard, deadPrefix, keepPrefix }) > 64)
          this.#restartsAnnounced.shift();
        this.#replicas.announceRestart(shard, deadPrefix, keepPrefix, nodes);
      }
      await this.#catchUp(index, slot);
      this.#options.log.info({ worker: index }, "worker restarted");
    } catch (error) {
      // The new worker died during its own start; its exit handler schedules the next attempt.
      this.#options.log.error({ err: error, worker: index }, "worker restart failed");
    }
  }

  /** Terminates a worker abruptly; the supervisor restarts it as after a crash. */
  async killWorker(index: number): Promise<boolean> {
    const slot = this.#slots[index];
    if (slot === undefined) return false;
    await slot.worker.terminate();
    return true;
  }

  /**
   * Delivers a batch from another node to worker `worker` (dropped while it restarts), or to the
   * main thread's replica shard (ring.ts MAIN_WORKER).
   */
  deliverRemote(worker: number, bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array)) {
      this.#options.log.warn({ worker }, "a peer's batch without bytes; dropped");
      return;
    }
    if (worker === MAIN_WORKER) return this.#replicas.receive(bytes);
    const slot = this.#slots[worker];
    if (slot === undefined) return;
    // The bytes may be a view into a larger decoded frame: the wire string copies just them.
    slot.uplink.postMessage(batchToWire(bytes));
  }

  /**
   * The serving members changed without a new table: every worker searches them for sessions.
   * `died`: nodes that died owning no partition (no table drops them): as a table's dead nodes,
   * their sessions' copies held here are promoted and dealt out to the workers.
   */
  async setLive(live: LiveNode[], died: readonly number[] = []): Promise<void> {
    this.#live = live;
    const shares = this.#dealOut(this.#replicas.membersChanged(live, new Set(died)));
    await Promise.all(
      this.#slots.map(async (slot, index) => {
        const share = shares.get(slot) ?? [];
        this.#settleHandOver(
          share,
          await slot.call((control) => control.setLive(live, [...died], share)),
          index,
        );
      }),
    );
  }

  /** Switches every worker to a newer owner table (a restarted worker starts from it too). */
  async setTable(table: OwnerTable, live: LiveNode[]): Promise<void> {
    if (table.epoch <= this.#table.epoch) return;
    const prev = this.#table;
    this.#table = table;
    this.#live = live;
    // The copies whose owner died are dealt out to the workers, which adopt them as detached
    // sessions once they route by this table (the relocations they send need it).
    const shares = this.#dealOut(this.#replicas.applyTable(prev, table, live));
    await Promise.all(
      this.#slots.map(async (slot, index) => {
        const share = shares.get(slot) ?? [];
        this.#settleHandOver(
          share,
          await slot.call((control) => control.setTable(table, live, share)),
          index,
        );
      }),
    );
  }

  /**
   * Resolves once every worker has received the partitions it gained (or given up waiting).
   * A worker restarting meanwhile starts from the current table with nothing to wait for.
   */
  async settled(): Promise<void> {
    await Promise.all(this.#slots.map((slot) => slot.call((control) => control.settled()).catch(() => {})));
  }

  /**
   * The node is fenced: every worker ends its client streams with <system-shutdown/>. Resolves
   * when all have written them, or after `withinMs`, whichever comes first.
   */
  async fence(withinMs: number): Promise<void> {
    this.#clientsClosed = { fenced: true };
    await settledWithin(
      this.#slots.map((slot) => slot.call((control) => control.fence())),
      withinMs,
    );
  }

  /**
   * Every worker re-sends about `maxBytes` / workers of what it retained for node `nodeNo`
   * (whose link dropped its queue) and round `round` has not re-sent; resolves with how many
   * remain for the round.
   */
  async redrive(nodeNo: number, round: number, maxBytes: number): Promise<number> {
    // The link dropped its queue: a restart notice in it is announced again (once per round; a
    // second notice of the same restart promotes nothing more).
    if (this.#reannouncedIn.get(nodeNo) !== round) {
      this.#reannouncedIn.set(nodeNo, round);
      for (const { shard, deadPrefix, keepPrefix } of this.#restartsAnnounced)
        this.#replicas.announceRestart(shard, deadPrefix, keepPrefix, [nodeNo]);
    }
    const share = Math.max(1, Math.floor(maxBytes / this.#slots.length));
    const remaining = await Promise.allSettled(
      this.#slots.map((slot) => slot.call((control) => control.redrive(nodeNo, round, share))),
    );
    return remaining.reduce((n, r) => n + (r.status === "fulfilled" && r.value !== EXITED ? r.value : 0), 0);
  }

  /** The owner table the workers route by. */
  get table(): OwnerTable {
    return this.#table;
  }

  /** Nodes serving at the current table. */
  get live(): readonly LiveNode[] {
    return this.#live;
  }

  /** Leaving the cluster: every worker stops accepting and sends its clients elsewhere. */
  async drain(targets: readonly ClientTarget[] = []): Promise<void> {
    this.#clientsClosed ??= { targets: [...targets] };
    await Promise.all(this.#slots.map((slot) => slot.call((control) => control.drain([...targets]))));
  }

  /** Ends every session of `user` in the cluster (the site's logout); resolves how many. */
  kickUser(user: BareJid, reason: string): Promise<number> {
    const slot = this.#slots.find((s) => s.ready);
    if (slot === undefined) return Promise.reject(new Error("no worker is running"));
    return slot.ask((control) => control.kick(user, reason));
  }

  /** Every session of the cluster (of `user` only, when given), as the first ready worker gathers them. */
  sessions(user?: BareJid): Promise<SessionListing[]> {
    return this.#anyWorker((control) => control.sessions(user));
  }

  /** Routes the server's messages to their users; resolves how many were accepted. */
  send(messages: ServerMessage[]): Promise<number> {
    return this.#anyWorker((control) => control.send(messages));
  }

  #anyWorker<T>(call: (control: Remote<WorkerControl>) => Promise<T>): Promise<T> {
    const slot = this.#slots.find((s) => s.ready);
    if (slot === undefined) throw new XmppServerError("XSRV_WORKER", "no worker is running");
    return slot.ask(call);
  }

  /** Sessions held by every worker (attached or waiting for resumption). */
  async sessionCount(): Promise<number> {
    const counts = await Promise.all(
      this.#slots.map((slot) => slot.call((control) => control.sessionCount())),
    );
    return counts.reduce<number>((a, b) => a + (b === EXITED ? 0 : b), 0);
  }

  /** Messages every worker keeps for other nodes' actors until they are accepted. */
  async retainedCount(): Promise<number> {
    const stats = await this.stats();
    return stats.reduce((n, s) => n + s.retained, 0);
  }

  /** Statistics from every running worker (one that exited meanwhile is left out). */
  async stats(): Promise<WorkerStats[]> {
    const stats = await Promise.all(
      this.#slots.map((slot) => (slot.ready ? slot.call((control) => control.stats()) : EXITED)),
    );
    return stats.filter((s): s is WorkerStats => s !== EXITED);
  }

  /** Workers that are not running: waiting out their restart's back-off, or starting again. */
  get restarting(): number[] {
    return this.#slots.flatMap((slot, index) => (slot.ready ? [] : [index]));
  }

  /** The worker threads, for tests and diagnostics. */
  get threads(): Worker[] {
    return this.#slots.map((slot) => slot.worker);
  }

  /** Closes listeners, ends sessions, stops the threads. */
  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.allSettled(this.#slots.map((slot) => slot.call((control) => control.stop())));
    // Twice: what one worker's actors send while finishing lands in another's mailbox. Bounded,
    // so a stuck store call cannot hold the stop for ever.
    for (let round = 0; round < 2; round++) {
      await settledWithin(
        this.#slots.map((slot) => slot.control.quiesce()),
        QUIESCE_TIMEOUT_MS,
      );
    }
    await Promise.allSettled(this.#slots.map((slot) => slot.worker.terminate()));
  }
}

/** Waits until every promise has settled, or `ms` has passed, whichever comes first. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  await Promise.race([
    Promise.allSettled(promises),
    new Promise((resolve) => setTimeout(resolve, ms).unref()),
  ]);
}

/** XEP-0077 registrations per address per window (registration.*), counted node-wide. */
function registrationThrottle(config: Readonly<Config>): RegistrationThrottle {
  return new RegistrationThrottle({
    failuresPerAddress: Math.max(1, config.registration.perAddressPerWindow),
    failuresPerAccount: 1,
    windowMs: config.registration.windowMs,
  });
}

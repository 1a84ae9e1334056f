/**
 * The actor host of one shard: every actor kind (actors/actor.ts) lives here under its key.
 * It owns what every kind needs the same way, so a new kind (a group-chat room) is its
 * behaviour and its message types only:
 *
 * - **mailbox**: messages are handled one at a time in arrival order; a turn's store reads and
 *   writes are awaited inside it. A full mailbox refuses only what the kind says may be refused.
 * - **activation**: an actor loads its stored state before its first turn; when that fails, the
 *   queued messages fail and the next message tries again.
 * - **accept**: a sender that retains its message (ShardRouter.toUser with `ack`) hears
 *   `accepted` once the turn ends, unless the actor took the request along (a session accepts
 *   once its replicas hold the write). A message whose delivery ended here is remembered by its
 *   re-send key, and a re-sent copy is dropped (CLUSTER.md, "exactly once").
 * - **passivation**: an actor that holds nothing volatile is dropped when idle.
 * - **handoff**: quiesce, snapshot and restore by key (handoff.ts moves the snapshots).
 */
import type { Ack, Actor, ActorKey, ActorKind, ActorSelf, Turn } from "../../actors/actor.ts";
import { splitActorKey } from "../../actors/actor.ts";
import type { Logger } from "../log.ts";

/** Re-send keys remembered per actor: re-sends follow a node's death within seconds. */
const FINISHED_KEYS = 1024;

/** An actor's volatile state in transit: its key and its kind's snapshot. */
export interface ActorSnapshot {
  key: ActorKey;
  state: unknown;
}

interface Queued {
  msg: unknown;
  ack: Ack | undefined;
}

interface Hosted {
  readonly key: ActorKey;
  /** The key without its kind (a bare JID for a user). */
  readonly name: string;
  readonly kind: ActorKind<unknown, unknown>;
  readonly actor: Actor<unknown, unknown>;
  queue: Queued[];
  running: boolean;
  activated: boolean;
  lastActive: number;
  quiesced: (() => void)[];
  readonly finishedKeys: Set<string>;
}

/** What the host needs from its shard. */
export interface ActorHostOptions {
  log: Logger;
  /** Tells a sender that its message is safe (ShardRouter.accept). */
  accept(ack: Ack): void;
  /** The mailbox bound for refusable messages (limits.maxMailboxSize, read at each message). */
  maxMailbox(): number;
}

/** The actors of one shard. */
export class ActorHost {
  readonly #options: ActorHostOptions;
  readonly #kinds = new Map<string, ActorKind<unknown, unknown>>();
  readonly #actors = new Map<ActorKey, Hosted>();

  constructor(options: ActorHostOptions) {
    this.#options = options;
  }

  /** Adds an actor kind; its keys start with `kind.kind + ":"`. */
  define<M, S>(kind: ActorKind<M, S>): void {
    this.#kinds.set(kind.kind, kind as ActorKind<unknown, unknown>);
  }

  /** Actors held now. */
  get size(): number {
    return this.#actors.size;
  }

  /** Messages waiting in every mailbox now, and the longest single mailbox. */
  mailboxes(): { queued: number; deepest: number } {
    let queued = 0;
    let deepest = 0;
    for (const hosted of this.#actors.values()) {
      queued += hosted.queue.length;
      if (hosted.queue.length > deepest) deepest = hosted.queue.length;
    }
    return { queued, deepest };
  }

  /** Keys of the actors held now. */
  keys(): IterableIterator<ActorKey> {
    return this.#actors.keys();
  }

  has(key: ActorKey): boolean {
    return this.#actors.has(key);
  }

  /** The actor of `key`, if held (statistics, tests). */
  peek<A>(key: ActorKey): A | undefined {
    return this.#actors.get(key)?.actor as A | undefined;
  }

  /**
   * Queues a message for the actor of `key`, activating it first if needed. Returns false when
   * the mailbox is full and the message may be refused (the caller answers the sender).
   * `ack` is the sender's request to hear when the message is safe.
   */
  deliver(key: ActorKey, msg: unknown, ack?: Ack): boolean {
    const hosted = this.#hosted(key);
    if (hosted.queue.length >= this.#options.maxMailbox() && hosted.kind.refusable(msg)) return false;
    this.#push(hosted, msg, ack);
    return true;
  }

  /** Queues a message that must not be refused (control from the cluster itself). */
  tell(key: ActorKey, msg: unknown): void {
    this.#push(this.#hosted(key), msg, undefined);
  }

  /** Sends a kind's `nodesLost` message to every actor of every kind that defines one. */
  nodesLost(nodeNos: number[]): void {
    this.#broadcast((kind, name) => kind.nodesLost?.(name, nodeNos));
  }

  /** Sends a kind's `shardLost` message to every actor of every kind that defines one. */
  shardLost(shard: number, keepPrefix: string): void {
    this.#broadcast((kind, name) => kind.shardLost?.(name, shard, keepPrefix));
  }

  /** Queues, for every actor, the message its kind makes of an event (none: it does not care). */
  #broadcast(messageOf: (kind: ActorKind<unknown, unknown>, name: string) => unknown): void {
    for (const hosted of this.#actors.values()) {
      const msg = messageOf(hosted.kind, hosted.name);
      if (msg !== undefined) this.#push(hosted, msg, undefined);
    }
  }

  /** Resolves when each of `keys` (all actors by default) has an empty mailbox and no turn running. */
  async quiesce(keys?: Iterable<ActorKey>): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const key of keys ?? [...this.#actors.keys()]) {
      const hosted = this.#actors.get(key);
      if (hosted === undefined || (!hosted.running && hosted.queue.length === 0)) continue;
      waits.push(new Promise((resolve) => hosted.quiesced.push(resolve)));
    }
    await Promise.all(waits);
  }

  /**
   * Removes the actors of `keys` and returns their volatile state, for the keys' next owner.
   * Call after {@link quiesce}: a turn still running would be cut off.
   */
  release(keys: Iterable<ActorKey>): ActorSnapshot[] {
    const out: ActorSnapshot[] = [];
    for (const key of keys) {
      const hosted = this.#actors.get(key);
      if (hosted === undefined) continue;
      this.#actors.delete(key);
      out.push({ key, state: hosted.actor.snapshot() });
    }
    return out;
  }

  /** Takes over a previous owner's state of an actor (handoff). */
  restore(snapshot: ActorSnapshot): void {
    this.#hosted(snapshot.key).actor.restore(snapshot.state);
  }

  /** Drops actors that hold nothing and did nothing since `cutoff` (memory follows activity). */
  passivateIdle(cutoff: number): number {
    let dropped = 0;
    for (const [key, hosted] of this.#actors) {
      if (this.#idle(hosted) && hosted.lastActive < cutoff) {
        this.#actors.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  #hosted(key: ActorKey): Hosted {
    let hosted = this.#actors.get(key);
    if (hosted !== undefined) return hosted;
    const { kind: kindName, name } = splitActorKey(key);
    const kind = this.#kinds.get(kindName);
    if (kind === undefined) throw new TypeError(`no actor kind '${kindName}' for key ${key}`);
    const self: ActorSelf<unknown> = { key, tell: (msg) => this.tell(key, msg) };
    hosted = {
      key,
      name,
      kind,
      actor: kind.create(name, self),
      queue: [],
      running: false,
      activated: false,
      lastActive: Date.now(),
      quiesced: [],
      finishedKeys: new Set(),
    };
    this.#actors.set(key, hosted);
    return hosted;
  }

  #push(hosted: Hosted, msg: unknown, ack: Ack | undefined): void {
    hosted.queue.push({ msg, ack });
    hosted.lastActive = Date.now();
    if (!hosted.running) void this.#drain(hosted);
  }

  #idle(hosted: Hosted): boolean {
    return hosted.actor.empty && hosted.queue.length === 0 && !hosted.running;
  }

  async #drain(hosted: Hosted): Promise<void> {
    const { actor, kind } = hosted;
    const { log, accept } = this.#options;
    hosted.running = true;
    try {
      if (!hosted.activated) {
        await actor.activate();
        hosted.activated = true;
      }
      while (hosted.queue.length > 0) {
        const { msg, ack } = hosted.queue.shift()!;
        const dedupe = kind.dedupeKey(msg, ack);
        if (dedupe !== undefined && hosted.finishedKeys.has(dedupe)) {
          // A re-sent copy of a message handled here: its sender gets the accept it missed.
          if (ack !== undefined) accept(ack);
          continue;
        }
        let untaken = ack;
        const turn: Turn = {
          dedupe,
          takeAccept() {
            const taken = untaken;
            untaken = undefined;
            return taken;
          },
        };
        try {
          await actor.handle(msg, turn);
          if (dedupe !== undefined && untaken !== undefined) this.#finished(hosted, dedupe);
        } catch (error) {
          log.error({ err: error, actor: hosted.key }, "actor failed a message");
          actor.failed(msg, error);
        } finally {
          if (untaken !== undefined) accept(untaken);
        }
      }
    } catch (error) {
      // Activation failed: fail what is queued, stay inactive so the next message retries.
      // Retained messages are not accepted: their senders send them again.
      log.error({ err: error, actor: hosted.key }, "actor activation failed");
      for (const { msg } of hosted.queue.splice(0)) actor.failed(msg, error);
    } finally {
      hosted.running = false;
      for (const resolve of hosted.quiesced.splice(0)) resolve();
      // Messages to names nobody registered must not pile up actors until the idle sweep.
      if (actor.disposable && this.#idle(hosted) && this.#actors.get(hosted.key) === hosted) {
        this.#actors.delete(hosted.key);
      }
    }
  }

  #finished(hosted: Hosted, key: string): void {
    hosted.finishedKeys.add(key);
    if (hosted.finishedKeys.size > FINISHED_KEYS) {
      hosted.finishedKeys.delete(hosted.finishedKeys.values().next().value!);
    }
  }
}

/**
 * Moves envelopes between the shards (worker threads) of a node. Envelopes for one destination
 * are collected during an event-loop turn and sent as one msgpackr-encoded batch, so a burst of
 * stanzas costs one postMessage per destination, not one per stanza.
 */
import type { MessagePort } from "node:worker_threads";
import { Packr } from "msgpackr";
import type { UserMessage } from "../../actors/messages.ts";
import { fromErrorRecord, toErrorRecord } from "../errors.ts";
import type { Envelope } from "./envelope.ts";
import { type OwnerTable, ownerOf, partitionOf } from "./ring.ts";

/** Batches larger than this are flushed at once instead of waiting for the end of the turn. */
const MAX_BATCH = 512;

/** Delivers one envelope that arrived for this shard. */
export type EnvelopeHandler = (envelope: Envelope) => void;

/**
 * The router of one worker. Peer ports are MessagePorts to every other worker of the node;
 * a port can be replaced when that worker restarts.
 */
export class ShardRouter {
  readonly self: number;
  #table: OwnerTable;
  readonly #ports: (MessagePort | undefined)[] = [];
  readonly #pending = new Map<number, Envelope[]>();
  #flushScheduled = false;
  readonly #handler: EnvelopeHandler;
  // Structures must not be shared between independently decoded batches (STYLE.md §6).
  readonly #packr = new Packr({ useRecords: false, moreTypes: false });
  #nextReqId = 1;
  readonly #requests = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly #partitionCache = new Map<string, number>();

  constructor(self: number, table: OwnerTable, handler: EnvelopeHandler) {
    this.self = self;
    this.#table = table;
    this.#handler = handler;
  }

  /** The current owner table. */
  get table(): OwnerTable {
    return this.#table;
  }

  /** Attaches (or replaces) the port to worker `shard`. */
  setPort(shard: number, port: MessagePort): void {
    this.#ports[shard]?.close();
    this.#ports[shard] = port;
    port.on("message", (data: Uint8Array) => {
      const batch = this.#packr.unpack(data) as Envelope[];
      for (const envelope of batch) this.#receive(envelope);
    });
  }

  /** The partition of a user, cached because every stanza needs it. */
  partitionOf(user: string): number {
    let p = this.#partitionCache.get(user);
    if (p === undefined) {
      p = partitionOf(user, this.#table.partitions);
      if (this.#partitionCache.size > 100_000) this.#partitionCache.clear();
      this.#partitionCache.set(user, p);
    }
    return p;
  }

  /** The worker that hosts a user's actor. */
  shardOfUser(user: string): number {
    return ownerOf(this.#table, this.partitionOf(user)).worker;
  }

  /** Sends a message to the UserActor of `msg.user`. */
  toUser(msg: UserMessage): void {
    const partition = this.partitionOf(msg.user);
    const shard = ownerOf(this.#table, partition).worker;
    this.send(shard, { t: "user", epoch: this.#table.epoch, partition, msg });
  }

  /** Sends a request to a UserActor and waits for its reply. */
  requestUser<T>(build: (reqId: number) => UserMessage, timeoutMs = 10_000): Promise<T> {
    const reqId = this.#nextReqId++;
    const promise = this.#awaitReply<T>(reqId, timeoutMs);
    this.toUser(build(reqId));
    return promise;
  }

  /** Sends a request to a worker and waits for its reply. */
  requestShard<T>(shard: number, build: (reqId: number) => Envelope, timeoutMs = 10_000): Promise<T> {
    const reqId = this.#nextReqId++;
    const promise = this.#awaitReply<T>(reqId, timeoutMs);
    this.send(shard, build(reqId));
    return promise;
  }

  /** Answers a request that came from `shard`. */
  reply(
    shard: number,
    reqId: number,
    result: { ok: true; value: unknown } | { ok: false; error: unknown },
  ): void {
    this.send(
      shard,
      result.ok
        ? { t: "reply", reqId, ok: true, value: result.value }
        : { t: "reply", reqId, ok: false, error: toErrorRecord(result.error) },
    );
  }

  #awaitReply<T>(reqId: number, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#requests.delete(reqId);
        reject(new Error(`request ${reqId} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#requests.set(reqId, {
        resolve: (value) => {
          clearTimeout(timer);
          resolve(value as T);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
  }

  /** Queues an envelope for a shard (this one included); sent at the end of the turn. */
  send(shard: number, envelope: Envelope): void {
    let batch = this.#pending.get(shard);
    if (batch === undefined) {
      batch = [];
      this.#pending.set(shard, batch);
    }
    batch.push(envelope);
    if (batch.length >= MAX_BATCH) {
      // Detach the batch first: delivering it locally can route more envelopes here, and they
      // must start a new batch rather than join (and re-run) this one.
      this.#pending.delete(shard);
      this.#flushOne(shard, batch);
    } else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [shard, batch] of pending) this.#flushOne(shard, batch);
  };

  #flushOne(shard: number, batch: Envelope[]): void {
    if (shard === this.self) {
      for (const envelope of batch) this.#receive(envelope);
      return;
    }
    const port = this.#ports[shard];
    if (port === undefined) return; // The worker is restarting; its sessions re-register later.
    // pack() returns a view into a reused buffer: copy just the bytes, then transfer them.
    const bytes = new Uint8Array(this.#packr.pack(batch));
    port.postMessage(bytes, [bytes.buffer]);
  }

  #receive(envelope: Envelope): void {
    if (envelope.t === "reply") {
      const request = this.#requests.get(envelope.reqId);
      if (request === undefined) return;
      this.#requests.delete(envelope.reqId);
      if (envelope.ok) request.resolve(envelope.value);
      else request.reject(fromErrorRecord(envelope.error));
      return;
    }
    if (envelope.t === "user" && ownerOf(this.#table, envelope.partition).worker !== this.self) {
      // Routed under another table: forward to the current owner rather than act on a key we do not own.
      this.toUser(envelope.msg);
      return;
    }
    this.#handler(envelope);
  }

  /** Closes every port. */
  close(): void {
    for (const port of this.#ports) port?.close();
  }
}

/**
 * Envelopes carry actor messages between shards. They are batched per destination per
 * event-loop turn and encoded with msgpackr (see shard-router.ts); comlink carries only
 * control calls.
 */
import type { Ack, ActorKey } from "../../actors/actor.ts";
import type { ActorMessage, SessionMessage, WorkerMessage } from "../../actors/messages.ts";
import type { SessionChange } from "../../actors/session-state.ts";
import type { ErrorRecord } from "../errors.ts";

/** A message to an actor: every actor kind's message union (actors/messages.ts). */
export type { ActorMessage };

/** One routed message. */
export type Envelope =
  /**
   * To the actor of `key` (actors/actor.ts), routed by its partition under `epoch`. With `ack`,
   * the sender keeps the message until it is safe and hears `accepted` at `ack.shard`.
   */
  | { t: "actor"; key: ActorKey; epoch: number; partition: number; msg: ActorMessage; ack?: Ack }
  /** The actor handled these retained messages of the destination shard (see `ack`). */
  | { t: "accepted"; rids: number[] }
  /** To a session on the destination worker. */
  | { t: "session"; msg: SessionMessage }
  /**
   * To the main thread holding the replica of session `msg.sid` on shard `to`: it passes the
   * message on, keeping a retained write (session-replicas.ts `ReplicaHost.chain`).
   */
  | { t: "chain"; to: number; msg: Extract<SessionMessage, { kind: "write" }> }
  /** To the destination worker itself. */
  | { t: "worker"; msg: WorkerMessage }
  /**
   * A change of session `token` from its owner shard, number `lsn` of its stream
   * (session-replicas.ts); an `init` carries the owner's replica list.
   */
  | {
      t: "rep";
      token: string;
      owner: number;
      stream: string;
      lsn: number;
      change: SessionChange;
      replicas?: number[];
      /** On an init from a promoted copy's stream: the stream and lsn the copy came from. */
      origin?: { stream: string; lsn: number };
      /** Nothing waits for this change: the replica may acknowledge it late (ReplicaHost). */
      lazy?: true;
    }
  /** The replica holds these streams' changes up to each lsn: [token, stream, lsn]. */
  | { t: "rep-ack"; from: number; acks: [string, string, number][] }
  /** The owner ended session `token` (or it moved): the replica drops its copy of that stream. */
  | { t: "rep-end"; token: string; owner: number; stream: string }
  /**
   * After a peer link dropped its queue (overflow): of the streams of owner `owner`'s incarnation
   * `prefix`, only those numbered `live` (the ids are `prefix` + number) still replicate to the
   * destination; its copies of any other were ended by a `rep-end` the link lost.
   */
  | { t: "rep-live"; owner: number; prefix: string; live: number[] }
  /**
   * To a node's main thread: worker `shard` of the sender's node crashed and was restarted; the
   * sessions of the dead incarnation (ids starting with `deadPrefix`) died, those of the new one
   * (`keepPrefix`) live.
   */
  | { t: "restarted"; shard: number; deadPrefix: string; keepPrefix: string }
  /** The answer to a request that carried `reqId`. */
  | { t: "reply"; reqId: number; ok: true; value: unknown }
  | { t: "reply"; reqId: number; ok: false; error: ErrorRecord };

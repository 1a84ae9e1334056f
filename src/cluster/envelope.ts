/**
 * Envelopes carry actor messages between shards. They are batched per destination per
 * event-loop turn and encoded with msgpackr (see shard-router.ts); comlink carries only
 * control calls.
 */
import type { SessionMessage, UserMessage, WorkerMessage } from "../../actors/messages.ts";
import type { SessionChange } from "../../actors/session-state.ts";
import type { ErrorRecord } from "../errors.ts";
import type { RepAck } from "./session-replicas.ts";

/** One routed message. */
export type Envelope =
  /**
   * To the UserActor of `msg.user`, routed by partition under `epoch`. With `ack`, the sender
   * keeps the message until the actor has handled it and answers `accepted` to `ack.shard`.
   */
  | { t: "user"; epoch: number; partition: number; msg: UserMessage; ack?: { shard: number; rid: number } }
  /** The actor handled these retained messages of the destination shard (see `ack`). */
  | { t: "accepted"; rids: number[] }
  /** To a session on the destination worker. */
  | { t: "session"; msg: SessionMessage }
  /** To the destination worker itself. */
  | { t: "worker"; msg: WorkerMessage }
  /**
   * A change of session `token` from its owner shard, number `lsn` of its stream
   * (session-replicas.ts); an `init` carries the owner's replica list.
   */
  | { t: "rep"; token: string; owner: number; lsn: number; change: SessionChange; replicas?: number[] }
  /** The replica holds these sessions' changes up to each lsn: [token, lsn]. */
  | { t: "rep-ack"; from: number; acks: RepAck[] }
  /** The owner ended session `token` (or it moved): the replica drops its copy. */
  | { t: "rep-end"; token: string; owner: number }
  /** The answer to a request that carried `reqId`. */
  | { t: "reply"; reqId: number; ok: true; value: unknown }
  | { t: "reply"; reqId: number; ok: false; error: ErrorRecord };

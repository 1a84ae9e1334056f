/**
 * Envelopes carry actor messages between shards. They are batched per destination per
 * event-loop turn and encoded with msgpackr (see shard-router.ts); comlink carries only
 * control calls.
 */
import type { SessionMessage, UserMessage, WorkerMessage } from "../../actors/messages.ts";
import type { ErrorRecord } from "../errors.ts";

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
  /** The answer to a request that carried `reqId`. */
  | { t: "reply"; reqId: number; ok: true; value: unknown }
  | { t: "reply"; reqId: number; ok: false; error: ErrorRecord };

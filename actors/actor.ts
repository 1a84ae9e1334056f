/**
 * The actor contract: what an actor kind gives the cluster's actor host
 * (src/cluster/actor-host.ts), and what the host gives each message's turn. A kind is a folder
 * of behaviour plus its message union; the host brings the mailbox, activation, passivation,
 * the sender's accept, de-duplication of re-sent messages and handoff of the volatile state
 * (LAYERS.md: actors see this contract, not the router).
 *
 * An actor's volatile state (what lives only in memory) is plain data changed only through
 * named changes (`apply(state, change)`, see user-state.ts): the same data is the snapshot a
 * handoff carries and what a new owner restores.
 */

/** `<kind>:<name>`, e.g. `user:alice@example.com`; a key's partition is the hash of its name. */
export type ActorKey = `${string}:${string}`;

/** The key of actor `name` of `kind`. */
export function actorKey(kind: string, name: string): ActorKey {
  return `${kind}:${name}`;
}

/** The kind and the name of a key. */
export function splitActorKey(key: ActorKey): { kind: string; name: string } {
  const colon = key.indexOf(":");
  return { kind: key.slice(0, colon), name: key.slice(colon + 1) };
}

/** A sender's request to hear that its message is safe (handled, stored or passed on). */
export interface Ack {
  shard: number;
  rid: number;
}

/** What the host tells an actor about the message it is handling. */
export interface Turn {
  /**
   * The message's re-send key (the sender's resumption id and XEP-0198 number), when the
   * sender may send it again: writes made for it carry the key so a copy is dropped downstream.
   */
  readonly dedupe: string | undefined;
  /**
   * Takes over the sender's accept request: the taker accepts once the message is safe where
   * it went (a session accepts when its replicas hold the write). Left untaken, the host
   * accepts when the turn ends, and remembers the re-send key: a copy of a message whose
   * delivery ended here is dropped.
   */
  takeAccept(): Ack | undefined;
}

/** One actor of some kind, on the shard that owns its key's partition. */
export interface Actor<M, S> {
  /** Loads what the actor keeps in the store; runs before its first turn (again after a failure). */
  activate(): Promise<void>;
  /** Handles one message; turns never interleave. */
  handle(msg: M, turn: Turn): Promise<void>;
  /** The volatile state, as plain data, for the key's next owner (handoff). */
  snapshot(): S;
  /** Takes over a previous owner's volatile state. */
  restore(snapshot: S): void;
  /** Holds nothing that lives only in memory: the host may drop it when idle (passivation). */
  readonly empty: boolean;
  /** Drop at once when its mailbox empties (a name that has no account, say). */
  readonly disposable: boolean;
  /** A message could not be handled (activation or the turn threw): answer whoever waits. */
  failed(msg: M, error: unknown): void;
}

/** What an actor may do to itself through its host. */
export interface ActorSelf<M> {
  readonly key: ActorKey;
  /** Queues a message to this actor (a timer's expiry, say); never refused. */
  tell(msg: M): void;
}

/** An actor kind: how the host creates its actors and treats their messages. */
export interface ActorKind<M, S> {
  /** The key prefix, e.g. "user". */
  readonly kind: string;
  create(name: string, self: ActorSelf<M>): Actor<M, S>;
  /**
   * Whether a full mailbox may refuse this message. Control messages that the actor's state
   * depends on (a session's bind or unbind) must never be refused.
   */
  refusable(msg: M): boolean;
  /** The re-send key of a message whose sender may send it again, if any (see {@link Turn.dedupe}). */
  dedupeKey(msg: M, ack: Ack | undefined): string | undefined;
  /** The message telling an actor that nodes died (its sessions there are lost), if it cares. */
  nodesLost?(name: string, nodeNos: number[]): M;
  /** The message telling an actor that a worker restarted, if it cares. */
  shardLost?(name: string, shard: number, keepPrefix: string): M;
}

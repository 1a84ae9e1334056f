/**
 * What a session actor (and the iq requests it answers) needs from the worker it lives in: its
 * shard number, the configuration, the store and auth provider, a router to other actors, and
 * the worker's tables of sessions. The cluster's shard context provides it (worker-main.ts); a
 * test or the simulation can provide it alone.
 */
import type { Accounts } from "../src/auth/accounts.ts";
import type { AuthProvider } from "../src/auth/auth-provider.ts";
import type { Config } from "../src/config/defaults.ts";
import type { Logger } from "../src/log.ts";
import type { Store } from "../src/storage/store.ts";
import type { ActorRouter, UserMessage } from "./messages.ts";
import type { SessionActor, SessionReplicaStream } from "./session-actor.ts";
import type { SessionSnapshot } from "./session-state.ts";

/** The router as a session uses it: sends, and requests to a UserActor that are answered. */
export interface SessionRouter extends ActorRouter {
  /** Sends a request to a UserActor and waits for its reply (rejects after `timeoutMs`). */
  requestUser<T>(build: (reqId: number) => UserMessage, timeoutMs?: number): Promise<T>;
}

/** The shared state a session sees. */
export interface SessionContext {
  /** This shard's cluster-wide number; sessions are located by it. */
  readonly index: number;
  readonly config: Readonly<Config>;
  readonly log: Logger;
  readonly store: Store;
  readonly auth: AuthProvider;
  /** Account changes (a password change over XMPP), as the provider allows them. */
  readonly accounts: Accounts;
  readonly router: SessionRouter;
  /** Sessions whose sockets this shard holds (and detached ones awaiting resumption), by sid. */
  readonly sessions: Map<string, SessionActor>;
  /** A new session id, unique across workers and restarts. */
  nextSid(): string;
  /**
   * Sessions taken by a resumption on another shard, by sid, with when: a write that still
   * reaches one is reported to its UserActor as moved, to follow the session once it re-registers.
   */
  readonly movedSids: Map<string, number>;
  /** Sessions lent to a resumption on another shard, by sid, until it confirms or gives up. */
  readonly lent: Map<string, SessionActor>;
  /** Sessions that can be resumed, by XEP-0198 token (attached or detached). */
  readonly resumable: Map<string, SessionActor>;
  /**
   * Sessions whose resumption window ended, by token, with how many stanzas the server had
   * handled from the client: a late `<resume/>` learns it in `<failed h=…/>` (XEP-0198 §4, 1.6)
   * and re-sends only the rest. Bounded: the oldest go first.
   */
  readonly expiredResumable: Map<string, { user: string; handledIn: number }>;
  /** Hot replication of resumable sessions (src/cluster/session-replicas.ts). */
  readonly replication: {
    /**
     * Starts streaming a session's changes to its replicas; `onAcked` hears the lsn every
     * replica holds; `origin`, for a promoted copy, says which stream and lsn it came from.
     * Undefined when there is nowhere to replicate to (one worker, factor 1).
     */
    open(
      state: SessionSnapshot,
      onAcked: (lsn: number) => void,
      origin?: { stream: string; lsn: number },
    ): SessionReplicaStream | undefined;
  };
  readonly version: string;
}

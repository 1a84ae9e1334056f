/**
 * What every part of one shard (worker thread) shares: its index, configuration, store client,
 * router, auth and the tables of sessions it holds. Built once in worker-main.ts and passed down.
 */
import type { SecureContext } from "node:tls";
import type { SessionActor, SessionReplicaStream } from "../../actors/session-actor.ts";
import type { SessionSnapshot } from "../../actors/session-state.ts";
import type { AuthProvider } from "../auth/auth-provider.ts";
import type { LoginThrottle } from "../auth/login-throttle.ts";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../storage/store.ts";
import type { Remote } from "./comlink-setup.ts";
import type { ShardRouter } from "./shard-router.ts";

/** Counters a shard reports in its statistics. */
export interface ShardCounters {
  connections: number;
  logins: number;
  loginFailures: number;
  stanzasIn: number;
}

/** The shared state of one shard. */
export interface ShardContext {
  /** This shard's cluster-wide number (ring.ts shardNumber); sessions are located by it. */
  readonly index: number;
  /** The cluster-wide numbers of every worker of this node, this one included. */
  readonly localShards: readonly number[];
  readonly config: Readonly<Config>;
  readonly log: Logger;
  readonly store: Store;
  readonly router: ShardRouter;
  readonly auth: AuthProvider;
  /** Node-wide throttles, kept in the main thread so every worker counts the same failures. */
  readonly loginThrottle: Remote<LoginThrottle>;
  readonly registrationThrottle: Remote<LoginThrottle>;
  readonly tlsContext: SecureContext;
  /** PEM certificate chain and key, for the direct-TLS listener. */
  readonly tlsCredentials: { cert: string; key: string };
  /** Sessions whose sockets this shard holds (and detached ones awaiting resumption), by sid. */
  readonly sessions: Map<string, SessionActor>;
  /** Prefix of every sid this worker incarnation hands out. */
  readonly sidPrefix: string;
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
  /** Hot replication of resumable sessions (session-replicas.ts). */
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
  readonly counters: ShardCounters;
  readonly version: string;
}

/**
 * What every part of one shard (worker thread) shares: what its sessions see (actors/
 * session-context.ts), plus the registration throttle, TLS and counters its client streams use. Built once in
 * worker-main.ts and passed down.
 */
import type { SecureContext } from "node:tls";
import type { SessionContext } from "../../actors/session-context.ts";
import type { AuthProvider } from "../auth/auth-provider.ts";
import type { RegistrationThrottle } from "../auth/registration-throttle.ts";
import type { Remote } from "../comlink-setup.ts";
import type { ShardRouter } from "./shard-router.ts";

/** Counters a shard reports in its statistics. */
export interface ShardCounters {
  connections: number;
  logins: number;
  loginFailures: number;
  stanzasIn: number;
  stanzasOut: number;
}

/** The shared state of one shard: what its sessions see, and what its streams and router need. */
export interface ShardContext extends SessionContext {
  readonly router: ShardRouter;
  /** The cluster-wide numbers of every worker of this node, this one included. */
  readonly localShards: readonly number[];
  /**
   * The node-wide registration throttle, kept in the main thread so every worker counts the
   * same attempts. (Logins are throttled cluster-wide by the login actors, actors/login-actor.ts.)
   */
  readonly registrationThrottle: Remote<RegistrationThrottle>;
  /** The auth provider, replaced when a reload changes the auth settings. */
  auth: AuthProvider;
  /** For STARTTLS; replaced, with the credentials, when a reload brings a new certificate. */
  tlsContext: SecureContext;
  /** PEM certificate chain and key, for the direct-TLS and web listeners. */
  tlsCredentials: { cert: string; key: string };
  /** Prefix of every sid this worker incarnation hands out. */
  readonly sidPrefix: string;
  /**
   * The replica copies this shard's sessions were made of and told their holders they may drop
   * (`copy-held`), by "token stream", oldest first: sent again to a node whose peer link dropped
   * its queue (client-stream-host.ts `resendCopiesHeld`).
   */
  readonly releasedCopies: Map<string, ReleasedCopy>;
  readonly counters: ShardCounters;
}

/** A `copy-held` sent to `holder` at `at`. */
export interface ReleasedCopy {
  holder: number;
  token: string;
  stream: string;
  at: number;
}

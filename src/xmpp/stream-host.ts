/**
 * What a client stream needs from the server it runs in (accounts, throttles, sessions), and
 * what it offers the session bound to it. The protocol layer defines these; the worker that hosts
 * the streams implements them (src/cluster/client-stream-host.ts), so this folder imports
 * nothing of the actors, the cluster or the store.
 */

import type { Element } from "@xmpp/xml";
import type { AuthProvider } from "../auth/auth-provider.ts";
import type { Config } from "../config/defaults.ts";
import type { StreamErrorCondition } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { BareJid, FullJid } from "./jid.ts";
import type { LoginSteps } from "./login-steps.ts";

/** The client's end of a stream, as the session bound to it sees it. */
export interface ClientLink {
  send(xmlText: string): void;
  /** Ends the stream with an error; `appCondition`: an application-specific condition's XML. */
  closeWithError(condition: StreamErrorCondition, text?: string, appCondition?: string): void;
  /** Closes the stream without an error (`</stream:stream>`). */
  close(): void;
  /** Stops reading the socket (inbound flow control) until {@link resumeReading}. */
  pauseReading(): void;
  resumeReading(): void;
  readonly remoteAddress: string;
  /** The connection is gone. */
  readonly closed: boolean;
}

/** The session a stream hands its stanzas to once bound or resumed. */
export interface StreamSession {
  readonly full: string;
  /** One stanza or XEP-0198 element from the client. */
  handle(el: Element): void;
  /**
   * Writes a stanza to the client, logged and counted for XEP-0198 (§4: the client counts every
   * stanza it handles); the stream's own keepalive pings go this way. `storable`: it goes to
   * offline storage should the session end unacknowledged.
   */
  write(xmlText: string, storable: boolean): void;
  /** XEP-0198 is enabled (or was resumed) on it. */
  readonly smEnabled: boolean;
  /** The stream ended: cleanly (`</stream:stream>`) or not (the connection dropped). */
  onLinkClosed(clean: boolean): void;
}

/** A session just bound: it holds what it would send until the bind result has gone out. */
export interface BoundSession extends StreamSession {
  /** Sends what it held; called once the bind result is written. */
  release(): void;
  /** Enables XEP-0198 (resumable when asked) and returns `<enabled/>` or `<failed/>` to send. */
  enableSm(resume: boolean): string;
  /** XEP-0280 copies on or off; resolves once every session of the user knows. */
  setCarbons(enabled: boolean): Promise<void>;
  /** The stream died while binding: the session ends at once. */
  end(): void;
}

/** A session taken over by `<resume/>`. */
export interface ResumedSession extends StreamSession {
  /**
   * Answers `<resumed/>` and re-sends what the client had not acknowledged (XEP-0198 §5).
   * `sendResumed` sends `<resumed/>` in what carries it (XEP-0388's `<success/>`), before them.
   */
  resumeOn(previd: string, sendResumed?: (resumed: string) => void): void;
}

/** What a resumption found: the session, or why not (with the handled count when it is known). */
export type ResumeOutcome =
  | { session: ResumedSession }
  | { failed: "expired"; handled: number }
  | { failed: "unknown" }
  /**
   * The client's `h` does not fit the session's log (`too-high`: more than was sent; `stale`:
   * below what it acknowledged before); the session ended, its unacknowledged stanzas stored.
   */
  | { failed: "too-high" | "stale"; h: number; sent: number; handled: number };

/** A login guard's answer: go ahead (settle the attempt with `ticket`), or not for `retryAfterMs`. */
export type LoginAdmission =
  | { allowed: true; ticket: LoginTicket }
  | { allowed: false; retryAfterMs: number };

/** What the guard needs to settle an admitted attempt; the stream only hands it back. */
export interface LoginTicket {
  readonly address: string;
  readonly account: BareJid;
}

/**
 * The cluster-wide login throttle (docs/auth.md, "Throttling"), as a SASL negotiation sees it.
 * An attempt that names an account is admitted (and charged as a failure) before its
 * credentials are checked, then settled when they turn out right or could not be judged.
 */
export interface LoginGuard {
  /**
   * Whether a login attempt on `account` from `address` may go ahead; when it may, it is
   * charged. `token`: the password is a one-time login token, which the account's own counts
   * never refuse (it cannot be guessed). Rejects with `XSRV_AUTH_UNAVAILABLE` when the
   * throttle cannot answer.
   */
  admit(address: string, account: BareJid, token: boolean): Promise<LoginAdmission>;
  /** Ends an admitted attempt that did not fail: it succeeded, or it was not judged. */
  settle(ticket: LoginTicket, succeeded: boolean): void;
  /** Ends an admitted attempt that failed (wrong credentials): it counts against the address. */
  failed(ticket: LoginTicket): void;
  /** A failed attempt that named no account counts against the address alone. */
  failedWithoutAccount(address: string): void;
  /** Whether `password` has the shape of a one-time login token (src/auth/login-tokens.ts). */
  isToken(password: string): boolean;
}

/** A node-wide registration throttle (src/auth/registration-throttle.ts), possibly remote. */
export interface ThrottleClient {
  check(address: string, account?: BareJid): Promise<{ allowed: boolean }> | { allowed: boolean };
  recordFailure(address: string, account?: BareJid): Promise<void> | void;
  admit(address: string, account: BareJid): Promise<{ allowed: boolean }> | { allowed: boolean };
}

/** Counters the server reports. */
export interface StreamCounters {
  connections: number;
  logins: number;
  loginFailures: number;
  stanzasIn: number;
  /** Top-level elements sent (stanzas, negotiation and XEP-0198 elements). */
  stanzasOut: number;
}

/** What a client stream needs from the server. */
export interface StreamHost {
  readonly config: Readonly<Config>;
  readonly log: Logger;
  readonly counters: StreamCounters;
  readonly auth: AuthProvider;
  readonly loginGuard: LoginGuard;
  /** When this worker starts each login step (`limits.loginStepsPerTurn`). */
  readonly loginSteps: LoginSteps;
  readonly registrationThrottle: ThrottleClient;
  /** XEP-0077: creates the account; false when it exists already. */
  register(jid: BareJid, password: string): Promise<boolean>;
  /**
   * RFC 6120 §7: binds `full` to the stream behind `link`; undefined when the server cannot now
   * (its partitions are moving): the client is told to retry.
   */
  bind(full: FullJid, link: ClientLink): Promise<BoundSession | undefined>;
  /** XEP-0198 §5: takes over the session `previd` of `user`, which the client had acknowledged up to `h`. */
  resume(user: BareJid, previd: string, h: number, link: ClientLink): Promise<ResumeOutcome>;
}

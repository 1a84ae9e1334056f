/**
 * A node-wide sliding-window throttle of in-band registrations (XEP-0077; NodeThrottles in
 * worker-pool.ts): events are counted per client address (and, for a caller that wants it, per
 * account) over a sliding window; once a count reaches its limit, further attempts are refused
 * until the oldest event in the window expires. Logins are throttled cluster-wide by the login
 * actors instead (actors/login-actor.ts), whose rules never lock an account's owner out.
 *
 * Memory is bounded: each table holds at most `maxEntries` keys, each with at most `limit`
 * timestamps, and the key touched least recently is forgotten first.
 */
import type { BareJid } from "../xmpp/jid.ts";

/** Options for {@link RegistrationThrottle}. */
export interface RegistrationThrottleOptions {
  /** Failures one address may have within the window before it is refused. */
  failuresPerAddress: number;
  /** Failures one account may have within the window before it is refused. */
  failuresPerAccount: number;
  /** Length of the sliding window. */
  windowMs: number;
  /** Keys kept per table (addresses, accounts); default 100 000. */
  maxEntries?: number;
  /** Clock in milliseconds; defaults to `Date.now`. */
  now?: () => number;
}

/** Whether a login attempt may go ahead, and if not, when it may be tried again. */
export type RegistrationThrottleDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

/** Default for {@link RegistrationThrottleOptions.maxEntries}. */
export const DEFAULT_THROTTLE_MAX_ENTRIES = 100_000;

/** Counts failed logins per address and per account; see the module comment. */
export class RegistrationThrottle {
  readonly #addresses: FailureTable;
  readonly #accounts: FailureTable;
  readonly #now: () => number;

  /** Creates a throttle; throws RangeError on a limit that is not a positive integer. */
  constructor(options: RegistrationThrottleOptions) {
    const maxEntries = options.maxEntries ?? DEFAULT_THROTTLE_MAX_ENTRIES;
    requirePositiveInteger("failuresPerAddress", options.failuresPerAddress);
    requirePositiveInteger("failuresPerAccount", options.failuresPerAccount);
    requirePositiveInteger("maxEntries", maxEntries);
    if (!(Number.isFinite(options.windowMs) && options.windowMs > 0)) {
      throw new RangeError(`windowMs must be a positive number, got ${options.windowMs}`);
    }
    this.#addresses = new FailureTable(options.failuresPerAddress, options.windowMs, maxEntries);
    this.#accounts = new FailureTable(options.failuresPerAccount, options.windowMs, maxEntries);
    this.#now = options.now ?? Date.now;
  }

  /**
   * Whether `address` (and `account`, when known) may attempt a login now. Checking records
   * nothing, so it costs no memory.
   */
  check(address: string, account?: BareJid): RegistrationThrottleDecision {
    const now = this.#now();
    const wait = Math.max(
      this.#addresses.retryAfter(address, now),
      account === undefined ? 0 : this.#accounts.retryAfter(account, now),
    );
    return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true };
  }

  /** Counts a failed login from `address`, against `account` too when the account is known. */
  recordFailure(address: string, account?: BareJid): void {
    const now = this.#now();
    this.#addresses.record(address, now);
    if (account !== undefined) this.#accounts.record(account, now);
  }

  /**
   * Notes a successful login. The account's failures are forgiven: its owner just proved the
   * password. The address's are kept, or a client could log into an account of its own
   * between guesses at other accounts and never reach its limit.
   */
  recordSuccess(_address: string, account: BareJid): void {
    this.#accounts.clear(account);
  }

  /**
   * After credentials checked out: {@link check} for the address and account, and when the
   * login may proceed, {@link recordSuccess} — one call, so one round trip from a worker.
   */
  admit(address: string, account: BareJid): RegistrationThrottleDecision {
    const decision = this.check(address, account);
    if (decision.allowed) this.recordSuccess(address, account);
    return decision;
  }

  /** Keys currently held (addresses, accounts); for tests and metrics. */
  get size(): { addresses: number; accounts: number } {
    return { addresses: this.#addresses.size, accounts: this.#accounts.size };
  }
}

/** Failure timestamps per key: a sliding-window log capped at `limit` entries per key. */
class FailureTable {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #maxEntries: number;
  /** Insertion order is recency order: a key is re-inserted whenever it records a failure. */
  readonly #entries = new Map<string, number[]>();

  constructor(limit: number, windowMs: number, maxEntries: number) {
    this.#limit = limit;
    this.#windowMs = windowMs;
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Milliseconds until `key` may try again; 0 when it may now. */
  retryAfter(key: string, now: number): number {
    const times = this.#live(key, now);
    if (times === undefined || times.length < this.#limit) return 0;
    // The oldest failure still in the window leaves it at oldest + windowMs.
    return times[0]! + this.#windowMs - now;
  }

  record(key: string, now: number): void {
    const times = this.#live(key, now) ?? [];
    times.push(now);
    // Only the newest `limit` failures can decide a refusal, so older ones need not be kept.
    if (times.length > this.#limit) times.splice(0, times.length - this.#limit);
    this.#entries.delete(key);
    this.#entries.set(key, times);
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
  }

  clear(key: string): void {
    this.#entries.delete(key);
  }

  /** The failures of `key` still inside the window; drops the key once none are. */
  #live(key: string, now: number): number[] | undefined {
    const times = this.#entries.get(key);
    if (times === undefined) return undefined;
    const firstLive = times.findIndex((time) => now - time < this.#windowMs);
    if (firstLive === -1) {
      this.#entries.delete(key);
      return undefined;
    }
    if (firstLive > 0) times.splice(0, firstLive);
    return times;
  }
}

function requirePositiveInteger(name: string, value: number): void {
  if (!(Number.isInteger(value) && value > 0)) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
}

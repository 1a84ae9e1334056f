/**
 * What the login throttle remembers, as plain data changed by named functions (like
 * user-state.ts): deterministic, the clock passed in, so the rules are tested without sockets.
 *
 * - **Per address** (an IPv4 address or an IPv6 /64, src/auth/address-prefix.ts): failures
 *   in a sliding window, counted when they happen; at `failuresPerAddress` the address is
 *   refused on every account that does not know it (the guard lets a known address pass over
 *   this count). A success forgives nothing, or a client could log in to an account of its own
 *   between guesses at others.
 * - **Per account and address**: at `failuresPerAccountAddress` that address is refused for
 *   that account. This is the budget of the account's own known addresses too, so no address
 *   can guess one account's password for ever. A success from the address clears it.
 * - **Per account**: failures from anywhere. At `failuresPerAccount` the account refuses only
 *   addresses that are not among its *known* ones (prefixes it was logged in from within
 *   `knownAddressTtlMs`, at most `knownAddresses` of them): so an attacker, however many
 *   addresses it has, gets `failuresPerAccount` guesses per window, and the owner, from an
 *   address it used before, is never refused by the account's count. A success does not clear
 *   it (the owner logging in must not hand the attacker a fresh budget).
 *
 * An attempt on an account is charged to the account's counts when it is admitted, before the
 * credentials are checked, and refunded when they turn out right (or the backend could not judge
 * them): so parallel attempts at one account cannot all pass before any failure is counted. The
 * address's count is not charged at the start (any number of users behind one address may log
 * in at once); each worker caps its attempts in progress per address instead.
 */

/** The limits of the login throttle (`limits.login*` in the configuration). */
export interface LoginLimits {
  failuresPerAddress: number;
  failuresPerAccount: number;
  failuresPerAccountAddress: number;
  windowMs: number;
  knownAddresses: number;
  knownAddressTtlMs: number;
}

/**
 * Whether an attempt may go ahead, and if not, how long until it may. An account's verdict says
 * whether the address is one of the account's known ones: if not, the attempt was charged to
 * the account-wide count too, and settling it takes that back; if so, the address's own count
 * does not refuse it (see `admit` in src/cluster/client-stream-host.ts).
 */
export type LoginVerdict = { allowed: true; known?: boolean } | { allowed: false; retryAfterMs: number };

/** Addresses whose (account, address) counts one account keeps; the least recent goes first. */
export const MAX_ADDRESSES_PER_ACCOUNT = 64;

/** One address prefix's charged attempts (timestamps, oldest first, at most the limit). */
export interface AddressLoginState {
  failures: number[];
}

/** One account's charged attempts, per address and overall, and its known addresses. */
export interface AccountLoginState {
  failures: number[];
  /** Per address prefix, least recently charged first. */
  pairs: Map<string, number[]>;
  /** Address prefix → when it last logged in, least recent first. */
  known: Map<string, number>;
}

/** An account's state as plain arrays, for a handoff (msgpackr carries no Map). */
export interface AccountLoginSnapshot {
  failures: number[];
  pairs: [string, number[]][];
  known: [string, number][];
}

/** An address that has charged nothing. */
export function newAddressLoginState(): AddressLoginState {
  return { failures: [] };
}

/** An account that has charged nothing and knows no address. */
export function newAccountLoginState(): AccountLoginState {
  return { failures: [], pairs: new Map(), known: new Map() };
}

/** Whether an address may attempt a login now; charges nothing (its failures count when they happen). */
export function checkAddress(state: AddressLoginState, limits: LoginLimits, now: number): LoginVerdict {
  const wait = retryAfter(state.failures, limits.failuresPerAddress, limits.windowMs, now);
  return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true };
}

/** Counts a failure against an address (an admitted attempt that failed, or one that named no account). */
export function failAddress(state: AddressLoginState, limits: LoginLimits, now: number): void {
  live(state.failures, limits.windowMs, now);
  push(state.failures, limits.failuresPerAddress, now);
}

/** Takes back one charged attempt: it succeeded, or was never judged. */
export function refund(failures: number[]): void {
  failures.pop();
}

/** Nothing left worth keeping. */
export function addressEmpty(state: AddressLoginState, limits: LoginLimits, now: number): boolean {
  return live(state.failures, limits.windowMs, now).length === 0;
}

/** Whether `prefix` logged in to the account recently enough to be trusted with it. */
export function isKnown(state: AccountLoginState, prefix: string, limits: LoginLimits, now: number): boolean {
  const at = state.known.get(prefix);
  return at !== undefined && now - at < limits.knownAddressTtlMs;
}

/**
 * Charges an attempt on the account from `prefix`, unless the pair's budget is spent, or the
 * account's is and `prefix` is not one of its known addresses. Only attempts from unknown
 * addresses are charged to the account-wide count: it exists to bound guessing from addresses
 * the account does not know, and a known address's own budget is its pair count.
 */
export function chargeAccount(
  state: AccountLoginState,
  prefix: string,
  limits: LoginLimits,
  now: number,
): LoginVerdict {
  const pair = state.pairs.get(prefix) ?? [];
  const known = isKnown(state, prefix, limits, now);
  let wait = retryAfter(pair, limits.failuresPerAccountAddress, limits.windowMs, now);
  if (wait === 0 && !known)
    wait = retryAfter(state.failures, limits.failuresPerAccount, limits.windowMs, now);
  if (wait > 0) return { allowed: false, retryAfterMs: wait };
  push(pair, limits.failuresPerAccountAddress, now);
  state.pairs.delete(prefix);
  state.pairs.set(prefix, pair);
  if (state.pairs.size > MAX_ADDRESSES_PER_ACCOUNT) state.pairs.delete(state.pairs.keys().next().value!);
  if (known) return { allowed: true, known: true };
  push(state.failures, limits.failuresPerAccount, now);
  return { allowed: true, known: false };
}

/**
 * Ends an admitted attempt that did not fail: the charges it made are taken back (`pair`, and
 * `account` when it was charged to the account-wide count); `succeeded` makes `prefix` a known
 * address of the account and forgives its pair count.
 */
export function settleAccount(
  state: AccountLoginState,
  prefix: string,
  outcome: { succeeded: boolean; pair: boolean; account: boolean },
  limits: LoginLimits,
  now: number,
): void {
  if (outcome.account) refund(state.failures);
  if (outcome.pair && !outcome.succeeded) {
    const pair = state.pairs.get(prefix);
    if (pair !== undefined) refund(pair);
  }
  if (!outcome.succeeded) return;
  state.pairs.delete(prefix);
  state.known.delete(prefix);
  state.known.set(prefix, now);
  if (state.known.size > limits.knownAddresses) state.known.delete(state.known.keys().next().value!);
}

/** Nothing left worth keeping: no failure in the window, no known address still trusted. */
export function accountEmpty(state: AccountLoginState, limits: LoginLimits, now: number): boolean {
  if (live(state.failures, limits.windowMs, now).length > 0) return false;
  for (const [prefix, pair] of state.pairs) {
    if (live(pair, limits.windowMs, now).length === 0) state.pairs.delete(prefix);
  }
  for (const [prefix, at] of state.known) {
    if (now - at >= limits.knownAddressTtlMs) state.known.delete(prefix);
  }
  return state.pairs.size === 0 && state.known.size === 0;
}

/** The account's state as plain arrays (a copy), for a handoff. */
export function accountSnapshot(state: AccountLoginState): AccountLoginSnapshot {
  return { failures: [...state.failures], pairs: [...state.pairs], known: [...state.known] };
}

/** The account's state from a previous owner's snapshot. */
export function accountFromSnapshot(snapshot: AccountLoginSnapshot): AccountLoginState {
  return { failures: [...snapshot.failures], pairs: new Map(snapshot.pairs), known: new Map(snapshot.known) };
}

/** Milliseconds until a log at `limit` has room again; 0 when it has now. */
function retryAfter(times: number[], limit: number, windowMs: number, now: number): number {
  live(times, windowMs, now);
  if (times.length < limit) return 0;
  // The oldest charge still in the window leaves it at oldest + windowMs.
  return times[times.length - limit]! + windowMs - now;
}

/** Drops the entries that left the window (in place); returns the log. */
function live(times: number[], windowMs: number, now: number): number[] {
  let expired = 0;
  while (expired < times.length && now - times[expired]! >= windowMs) expired++;
  if (expired > 0) times.splice(0, expired);
  return times;
}

/** Appends `now`, keeping only the newest `limit` entries: older ones cannot decide a refusal. */
function push(times: number[], limit: number, now: number): void {
  times.push(now);
  if (times.length > limit) times.splice(0, times.length - limit);
}

/**
 * One-time login tokens: a web site whose user is signed in asks Starling (the admin endpoint)
 * for a token, hands it to its chat page, and the page logs in with it as the PLAIN password.
 * The token is random (256 bits), stored only as its SHA-256 with the account and an expiry
 * (default 60 s), and taken from the store when used: used, expired, unknown or another
 * account's, it gets `<not-authorized/>`, and it can never be used twice (PostgreSQL's
 * DELETE … RETURNING across a cluster).
 */
import { createHash, randomBytes } from "node:crypto";
import type { LoginToken, Store } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { AuthProvider } from "./auth-provider.ts";

/** Every token starts with this, so a password is never mistaken for one (or sent to the site). */
export const TOKEN_PREFIX = "stl1_";
/** A token's shape: the prefix and 43 base64url characters (32 random bytes). */
const TOKEN_SHAPE = /^stl1_[A-Za-z0-9_-]{43}$/;
/** The default and the longest lifetime of a token. */
export const DEFAULT_TOKEN_TTL_S = 60;
export const MAX_TOKEN_TTL_S = 3_600;

/** Whether `password` has a token's shape (it may still be used, expired or unknown). */
export function isLoginTokenShaped(password: string): boolean {
  return TOKEN_SHAPE.test(password);
}

function hashOf(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Makes and stores a token for `jid`; returns it with its expiry. */
export async function issueLoginToken(
  store: Pick<Store, "putLoginToken">,
  jid: BareJid,
  ttlSeconds = DEFAULT_TOKEN_TTL_S,
  now = Date.now(),
): Promise<{ token: string; expiresAt: number }> {
  const token = `${TOKEN_PREFIX}${randomBytes(32).toString("base64url")}`;
  const stored: LoginToken = { hash: hashOf(token), jid, expiresAt: now + ttlSeconds * 1000 };
  await store.putLoginToken(stored, now);
  return { token, expiresAt: stored.expiresAt };
}

/**
 * A provider that also accepts a one-time token as the password (PLAIN), and asks `inner` for
 * everything else. A token is consumed by the attempt, whatever its outcome.
 */
export class TokenAuthProvider implements AuthProvider {
  readonly #inner: AuthProvider;
  readonly #store: Pick<Store, "takeLoginToken">;
  readonly #now: () => number;

  constructor(inner: AuthProvider, store: Pick<Store, "takeLoginToken">, now: () => number = Date.now) {
    this.#inner = inner;
    this.#store = store;
    this.#now = now;
  }

  get scram(): boolean {
    return this.#inner.scram;
  }

  get managesAccounts(): boolean {
    return this.#inner.managesAccounts;
  }

  getScramCredential(...args: Parameters<AuthProvider["getScramCredential"]>) {
    return this.#inner.getScramCredential(...args);
  }

  async verifyPassword(jid: BareJid, password: string): Promise<boolean> {
    if (!isLoginTokenShaped(password)) return this.#inner.verifyPassword(jid, password);
    const token = await this.#store.takeLoginToken(hashOf(password));
    return token !== undefined && token.jid === jid && token.expiresAt > this.#now();
  }

  userExists(jid: BareJid): Promise<boolean> {
    return this.#inner.userExists(jid);
  }

  async close(): Promise<void> {
    await this.#inner.close?.();
  }
}

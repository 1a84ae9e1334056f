/**
 * What an external provider (the web site over HTTP, its database) confirmed recently: a
 * password that was right and a user that exists, each for `ttlMs`, so that a reconnecting
 * client does not cost the site a request and a hash computation. Passwords are kept only as a
 * salted SHA-256 (the salt is per process), never in the clear; refusals are never kept, so a
 * password set on the site works at once.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { BareJid } from "../xmpp/jid.ts";

/** Entries beyond this are dropped, oldest first. */
const MAX_CACHED = 10_000;

/** Recently confirmed passwords and users of one provider. */
export class AnswerCache {
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #salt = randomBytes(16);
  readonly #passwords = new Map<BareJid, { hash: Buffer; until: number }>();
  readonly #users = new Map<BareJid, number>();

  /** `ttlMs` 0 remembers nothing. */
  constructor(ttlMs: number, now: () => number = Date.now) {
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  /** Whether `password` was confirmed for `jid` within the time to live. */
  hasPassword(jid: BareJid, password: string): boolean {
    const cached = this.#passwords.get(jid);
    return (
      cached !== undefined &&
      cached.until > this.#now() &&
      timingSafeEqual(cached.hash, this.#hash(jid, password))
    );
  }

  /** Remembers a confirmed password, and that the user exists. */
  rememberPassword(jid: BareJid, password: string): void {
    if (this.#ttlMs === 0) return;
    this.#remember(this.#passwords, jid, {
      hash: this.#hash(jid, password),
      until: this.#now() + this.#ttlMs,
    });
    this.rememberUser(jid);
  }

  /** Forgets the password of `jid` (it was refused). */
  forgetPassword(jid: BareJid): void {
    this.#passwords.delete(jid);
  }

  /** Whether `jid` was confirmed to exist within the time to live. */
  hasUser(jid: BareJid): boolean {
    const until = this.#users.get(jid);
    return until !== undefined && until > this.#now();
  }

  /** Remembers that `jid` exists. */
  rememberUser(jid: BareJid): void {
    if (this.#ttlMs === 0) return;
    this.#remember(this.#users, jid, this.#now() + this.#ttlMs);
  }

  #hash(jid: BareJid, password: string): Buffer {
    return createHash("sha256").update(this.#salt).update(jid).update("\0").update(password).digest();
  }

  #remember<V>(map: Map<BareJid, V>, jid: BareJid, value: V): void {
    map.delete(jid);
    map.set(jid, value);
    if (map.size > MAX_CACHED) map.delete(map.keys().next().value!);
  }
}

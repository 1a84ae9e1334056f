/**
 * The internal AuthProvider: accounts and their SCRAM keys live in Starling's own store. No
 * password is stored; PLAIN logins are checked by deriving the SCRAM keys again from the
 * password offered and the stored salt.
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Account, ScramCredential, Store } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type { AuthProvider, ScramHash } from "./auth-provider.ts";
import { DEFAULT_SCRAM_ITERATIONS, deriveScramCredential } from "./scram.ts";

/** Per-process key for the salts used when checking a password of an unknown user. */
const UNKNOWN_USER_KEY = randomBytes(32);

/** Authenticates against the accounts in a {@link Store}. */
export class InternalAuthProvider implements AuthProvider {
  readonly scram = true;
  readonly managesAccounts = true;
  readonly #store: Pick<Store, "getAccount">;

  /** Creates a provider over `store`; it only ever reads accounts. */
  constructor(store: Pick<Store, "getAccount">) {
    this.#store = store;
  }

  /** The stored SCRAM keys for `hash`, or undefined when the account does not exist. */
  async getScramCredential(jid: BareJid, hash: ScramHash): Promise<ScramCredential | undefined> {
    const account = await this.#store.getAccount(jid);
    return account === undefined ? undefined : credentialFor(account, hash);
  }

  /**
   * Checks a password: SaltedPassword is recomputed from the stored salt and iteration count
   * (RFC 5802 §3) and the resulting StoredKey compared with the stored one in constant time.
   * An unknown user costs the same key derivation, so response time does not reveal accounts.
   */
  async verifyPassword(jid: BareJid, password: string): Promise<boolean> {
    const account = await this.#store.getAccount(jid);
    const stored = account === undefined ? undefined : credentialFor(account, "sha256");
    const salt =
      stored === undefined
        ? createHmac("sha256", UNKNOWN_USER_KEY).update(jid, "utf8").digest().subarray(0, 16)
        : Buffer.from(stored.salt, "base64");
    const iterations = stored?.iterations ?? DEFAULT_SCRAM_ITERATIONS;
    const derived = Buffer.from(
      deriveScramCredential(password, "sha256", iterations, salt).storedKey,
      "base64",
    );
    if (stored === undefined) return false;
    const expected = Buffer.from(stored.storedKey, "base64");
    return expected.length === derived.length && timingSafeEqual(derived, expected);
  }

  /** Whether the account exists. */
  async userExists(jid: BareJid): Promise<boolean> {
    return (await this.#store.getAccount(jid)) !== undefined;
  }
}

function credentialFor(account: Account, hash: ScramHash): ScramCredential {
  return hash === "sha1" ? account.scramSha1 : account.scramSha256;
}

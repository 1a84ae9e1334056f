/**
 * SCRAM key derivation (RFC 5802 §3, RFC 7677). Accounts store only these keys, one set per
 * hash, so the password is never kept and either SCRAM variant can authenticate the user.
 */
import { createHash, pbkdf2, pbkdf2Sync, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import type { Account, ScramCredential } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import { hmac } from "../xmpp/sasl/hmac.ts";
import type { ScramHash } from "./auth-provider.ts";

/** Iterations for new credentials; RFC 7677 §4 recommends at least 4096. */
export const DEFAULT_SCRAM_ITERATIONS = 4096;

/** RFC 5802 §3: SaltedPassword := Hi(Normalize(password), salt, i). */
export function saltPassword(password: string, salt: Buffer, iterations: number, hash: ScramHash): Buffer {
  const length = hash === "sha1" ? 20 : 32;
  return pbkdf2Sync(Buffer.from(password.normalize("NFKC"), "utf8"), salt, iterations, length, hash);
}

/** Derives the stored form of a password for one hash function. */
export function deriveScramCredential(
  password: string,
  hash: ScramHash,
  iterations = DEFAULT_SCRAM_ITERATIONS,
  salt: Buffer = randomBytes(16),
): ScramCredential {
  return scramKeys(saltPassword(password, salt, iterations, hash), hash, salt, iterations);
}

/** Builds a new account record for a password. */
export function createAccountRecord(
  jid: BareJid,
  password: string,
  iterations = DEFAULT_SCRAM_ITERATIONS,
): Account {
  return {
    jid,
    scramSha1: deriveScramCredential(password, "sha1", iterations),
    scramSha256: deriveScramCredential(password, "sha256", iterations),
    createdAt: Date.now(),
  };
}

const pbkdf2Async = promisify(pbkdf2);

/**
 * {@link saltPassword} on the libuv threadpool: PBKDF2 at 4096 iterations costs milliseconds, so
 * servers deriving many keys (the admin endpoint's bulk create) run them in parallel there
 * instead of blocking the event loop.
 */
export function saltPasswordAsync(
  password: string,
  salt: Buffer,
  iterations: number,
  hash: ScramHash,
): Promise<Buffer> {
  const length = hash === "sha1" ? 20 : 32;
  return pbkdf2Async(Buffer.from(password.normalize("NFKC"), "utf8"), salt, iterations, length, hash);
}

function scramKeys(salted: Buffer, hash: ScramHash, salt: Buffer, iterations: number): ScramCredential {
  const clientKey = hmac(hash, salted, "Client Key");
  const storedKey = createHash(hash).update(clientKey).digest();
  const serverKey = hmac(hash, salted, "Server Key");
  return {
    salt: salt.toString("base64"),
    iterations,
    storedKey: storedKey.toString("base64"),
    serverKey: serverKey.toString("base64"),
  };
}

/** {@link deriveScramCredential} with the PBKDF2 step on the libuv threadpool. */
export async function deriveScramCredentialAsync(
  password: string,
  hash: ScramHash,
  iterations = DEFAULT_SCRAM_ITERATIONS,
  salt: Buffer = randomBytes(16),
): Promise<ScramCredential> {
  return scramKeys(await saltPasswordAsync(password, salt, iterations, hash), hash, salt, iterations);
}

/** {@link createAccountRecord} with both key derivations running in parallel on the libuv threadpool. */
export async function createAccountRecordAsync(
  jid: BareJid,
  password: string,
  iterations = DEFAULT_SCRAM_ITERATIONS,
): Promise<Account> {
  const [scramSha1, scramSha256] = await Promise.all([
    deriveScramCredentialAsync(password, "sha1", iterations),
    deriveScramCredentialAsync(password, "sha256", iterations),
  ]);
  return { jid, scramSha1, scramSha256, createdAt: Date.now() };
}

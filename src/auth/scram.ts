/**
 * SCRAM key derivation (RFC 5802 §3, RFC 7677). Accounts store only these keys, one set per
 * hash, so the password is never kept and either SCRAM variant can authenticate the user.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from "node:crypto";
import type { Account, ScramCredential } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
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
  const salted = saltPassword(password, salt, iterations, hash);
  const clientKey = createHmac(hash, salted).update("Client Key").digest();
  const storedKey = createHash(hash).update(clientKey).digest();
  const serverKey = createHmac(hash, salted).update("Server Key").digest();
  return {
    salt: salt.toString("base64"),
    iterations,
    storedKey: storedKey.toString("base64"),
    serverKey: serverKey.toString("base64"),
  };
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

/**
 * Where credentials come from. The internal provider reads SCRAM keys from the store; later
 * providers ask the web application (HTTP) or query its user table (SQL). One file implements
 * one provider.
 */
import type { ScramCredential } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";

/** Hash functions SCRAM runs with. */
export type ScramHash = "sha1" | "sha256";

/** The contract every authentication backend implements. */
export interface AuthProvider {
  /**
   * SCRAM keys for a user, or undefined when the user is unknown or the provider cannot
   * offer SCRAM (then only PLAIN works).
   */
  getScramCredential(jid: BareJid, hash: ScramHash): Promise<ScramCredential | undefined>;
  /** Checks a plaintext password (SASL PLAIN). */
  verifyPassword(jid: BareJid, password: string): Promise<boolean>;
  /** Whether the user exists. */
  userExists(jid: BareJid): Promise<boolean>;
}

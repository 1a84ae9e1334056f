/**
 * Where credentials come from. The internal provider reads SCRAM keys from the store; the
 * others ask the web application (HTTP) or query its user table (SQL). One file implements
 * one provider.
 */

import type { BareJid } from "../xmpp/jid.ts";
import type { ScramCredential } from "../xmpp/sasl/scram-credential.ts";

/** Hash functions SCRAM runs with. */
export type ScramHash = "sha1" | "sha256";

/** The contract every authentication backend implements. */
export interface AuthProvider {
  /**
   * Whether it holds SCRAM keys: SCRAM-SHA-256 and SCRAM-SHA-1 are offered only then. A
   * provider that can only check a plaintext password (the site's login, its database's hashes)
   * offers PLAIN alone, which the stream allows only over TLS.
   */
  readonly scram: boolean;
  /**
   * Whether accounts are Starling's to create and change (in-band registration, password
   * changes); false when they belong to the web site.
   */
  readonly managesAccounts: boolean;
  /**
   * SCRAM keys for a user, or undefined when the user is unknown or the provider cannot
   * offer SCRAM (then only PLAIN works).
   */
  getScramCredential(jid: BareJid, hash: ScramHash): Promise<ScramCredential | undefined>;
  /**
   * Checks a plaintext password (SASL PLAIN). Rejects with XSRV_AUTH_UNAVAILABLE when the
   * backend cannot answer: the client is told to try later, not that its password is wrong.
   */
  verifyPassword(jid: BareJid, password: string): Promise<boolean>;
  /** Whether the user exists. */
  userExists(jid: BareJid): Promise<boolean>;
  /** Releases what the provider holds (a database pool) when the worker stops; optional. */
  close?(): Promise<void>;
}

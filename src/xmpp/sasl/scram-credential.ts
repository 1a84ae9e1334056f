/** SCRAM keys for one hash function (RFC 5802 §3); the password itself is never stored. */
export interface ScramCredential {
  /** Base64 salt. */
  salt: string;
  iterations: number;
  /** Base64 H(ClientKey). */
  storedKey: string;
  /** Base64 HMAC(SaltedPassword, "Server Key"). */
  serverKey: string;
}

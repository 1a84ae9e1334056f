/**
 * HMAC(key, data) (RFC 2104) for the SCRAM mechanisms (RFC 5802 §2.2) and key derivation.
 */
import { createHmac, createSecretKey, type KeyObject } from "node:crypto";

/**
 * The key goes to createHmac as a KeyObject: given a Buffer, Node 24's createHmac spends longer
 * deciding that it is not a KeyObject than hashing (11.7–14 against 3.4–5.2 µs a call, the key's
 * conversion included; `npx node bench/hmac-key.bench.ts`), and every SCRAM login takes two.
 */
export function hmac(hash: string, key: Buffer | KeyObject, data: string | Buffer): Buffer {
  return createHmac(hash, Buffer.isBuffer(key) ? createSecretKey(key) : key)
    .update(data)
    .digest();
}

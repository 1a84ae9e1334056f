/**
 * Micro benchmark behind src/xmpp/sasl/hmac.ts and the stream ids of src/xmpp/xmpp-stream.ts:
 * µs per call of createHmac with the key as a Buffer, as a KeyObject made for the call, and as a
 * KeyObject made once; and of a 12-byte random id in hex against randomUUID. A SCRAM login takes
 * two HMACs on the server; a STARTTLS login opens three streams.
 *
 * Run: `npx node bench/hmac-key.bench.ts`. Prints one JSON line on stdout. Env: HMAC_BENCH_CALLS,
 * calls per case (default 50000), each case run twice and the second run reported.
 */
import { createHmac, createSecretKey, randomBytes, randomUUID } from "node:crypto";
import { hmac } from "../src/xmpp/sasl/hmac.ts";

const CALLS = Number(process.env.HMAC_BENCH_CALLS ?? 50_000);
if (!Number.isInteger(CALLS) || CALLS < 1000) {
  process.stderr.write("HMAC_BENCH_CALLS must be an integer of at least 1000\n");
  process.exit(2);
}

const key = randomBytes(20);
const keyObject = createSecretKey(key);
// An AuthMessage of RFC 5802's shape.
const authMessage =
  "n=user1,r=fyko+d2lbbFgONRv9qkxdawL,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";

const cases: Record<string, () => unknown> = {
  hmac_buffer_key_us: () => createHmac("sha1", key).update(authMessage).digest(),
  hmac_helper_us: () => hmac("sha1", key, authMessage),
  hmac_key_object_once_us: () => createHmac("sha1", keyObject).update(authMessage).digest(),
  random_bytes_12_hex_us: () => randomBytes(12).toString("hex"),
  random_uuid_us: () => randomUUID(),
};

/** µs per call of `fn` over CALLS calls. */
function time(fn: () => unknown): number {
  const started = performance.now();
  for (let i = 0; i < CALLS; i++) fn();
  return ((performance.now() - started) * 1000) / CALLS;
}

const result: Record<string, number | string> = { bench: "hmac-key", node: process.version };
for (const [name, fn] of Object.entries(cases)) {
  time(fn); // warm-up
  result[name] = Math.round(time(fn) * 100) / 100;
}
process.stdout.write(`${JSON.stringify(result)}\n`);

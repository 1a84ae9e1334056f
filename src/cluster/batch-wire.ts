/**
 * How an encoded batch of envelopes crosses between threads (worker to worker, worker to the
 * main thread and back): as a one-byte string holding the bytes one per character (latin1).
 *
 * Why not the bytes themselves: structured clone copies a one-byte string inline into the
 * message, while a Uint8Array, transferred or not, needs an ArrayBuffer and a backing store of
 * its own on the receiving side. Measured on Node 24.21 with 300-byte batches (a few envelopes),
 * sender and receiver together: 4.1–5.0 µs per crossing as a string, 10.1–10.3 µs as a
 * transferred Uint8Array, conversions included. A replicated message crosses threads about
 * eight times (docs/benchmarks.md: what a thread crossing costs).
 */

/** A batch's bytes as a cross-thread string. */
export function batchToWire(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** The bytes of a batch that crossed as a string. */
export function batchFromWire(wire: string): Buffer {
  return Buffer.from(wire, "latin1");
}

/** A batch for a shard of another node, with its destination, as one string: "<dest>:<bytes>". */
export function addressedBatchToWire(dest: number, bytes: Uint8Array): string {
  return `${dest}:${batchToWire(bytes)}`;
}

/** The destination and bytes of {@link addressedBatchToWire}'s string; undefined when malformed. */
export function addressedBatchFromWire(wire: string): { dest: number; bytes: Buffer } | undefined {
  const colon = wire.indexOf(":");
  const dest = colon > 0 ? Number(wire.slice(0, colon)) : Number.NaN;
  if (!Number.isSafeInteger(dest) || dest < 0) return undefined;
  return { dest, bytes: Buffer.from(wire.slice(colon + 1), "latin1") };
}

/**
 * A growable set of positive sequence numbers, one bit each: what a load process received from
 * one sender. A million messages cost 125 KB, and sets from several processes merge with OR.
 */

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1]!;

/** Set of sequence numbers ≥ 1. */
export class SeqBitset {
  #bytes: Uint8Array;
  /** Highest number added, 0 when empty. */
  max = 0;

  constructor(bytes: Uint8Array = new Uint8Array(16)) {
    this.#bytes = bytes;
    for (let i = bytes.length - 1; i >= 0; i--) {
      const b = bytes[i]!;
      if (b !== 0) {
        this.max = i * 8 + (31 - Math.clz32(b));
        break;
      }
    }
  }

  /** Adds `seq`; returns false when it was already present. */
  add(seq: number): boolean {
    const byte = seq >>> 3;
    if (byte >= this.#bytes.length) {
      const grown = new Uint8Array(Math.max(byte + 1, this.#bytes.length * 2));
      grown.set(this.#bytes);
      this.#bytes = grown;
    }
    const bit = 1 << (seq & 7);
    if ((this.#bytes[byte]! & bit) !== 0) return false;
    this.#bytes[byte]! |= bit;
    if (seq > this.max) this.max = seq;
    return true;
  }

  has(seq: number): boolean {
    const byte = seq >>> 3;
    return byte < this.#bytes.length && (this.#bytes[byte]! & (1 << (seq & 7))) !== 0;
  }

  /** Members in `from..to` (inclusive). */
  countRange(from: number, to: number): number {
    let n = 0;
    let seq = Math.max(from, 0);
    const end = Math.min(to, this.max);
    // Unaligned head and tail bit by bit, whole bytes in between by table.
    while (seq <= end && (seq & 7) !== 0) if (this.has(seq++)) n++;
    while (seq + 7 <= end) {
      n += POPCOUNT[this.#bytes[seq >>> 3]!]!;
      seq += 8;
    }
    while (seq <= end) if (this.has(seq++)) n++;
    return n;
  }

  /** Adds every member of `other`. */
  merge(other: SeqBitset): void {
    if (other.max === 0) return;
    this.add(other.max);
    const theirs = other.#bytes;
    const end = other.max >>> 3;
    for (let i = 0; i <= end; i++) this.#bytes[i]! |= theirs[i]!;
  }

  /** Compact text form for IPC: base64 of the bytes up to the highest member. */
  toBase64(): string {
    return Buffer.from(this.#bytes.buffer, this.#bytes.byteOffset, (this.max >>> 3) + 1).toString("base64");
  }

  static fromBase64(text: string): SeqBitset {
    return new SeqBitset(new Uint8Array(Buffer.from(text, "base64")));
  }
}

/**
 * Strict decoding for SASL payloads. Node's own decoders are lenient (`Buffer.from(s, "base64")`
 * skips junk, `toString("utf8")` substitutes U+FFFD), which would let two different byte strings
 * mean the same message; SASL answers those with `incorrect-encoding` instead.
 */

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** RFC 4648 §4 base64 with padding, nothing else (no whitespace, no URL alphabet). */
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes UTF-8, or returns undefined when the bytes are not valid UTF-8. */
export function decodeUtf8(bytes: Buffer): string | undefined {
  try {
    return UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Decodes canonical padded base64, or returns undefined when `text` is anything else. */
export function decodeBase64(text: string): Buffer | undefined {
  if (!BASE64.test(text)) return undefined;
  const bytes = Buffer.from(text, "base64");
  // Reject non-zero pad bits, so that each byte string has exactly one accepted encoding.
  return bytes.toString("base64") === text ? bytes : undefined;
}

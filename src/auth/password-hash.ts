/**
 * Checks a password against a hash stored by a web application, in the formats such sites
 * write. One job: a stored string and a password in, yes or no out. Nothing here makes hashes.
 *
 * | format                                | written by                                           | checked with                 |
 * | ------------------------------------- | ---------------------------------------------------- | ---------------------------- |
 * | `$2y$`, `$2b$`, `$2a$` (bcrypt)       | PHP `password_hash()`, Laravel, phpBB 3.1+, Node, …  | `bcrypt` (native, thread pool) |
 * | `$wp$2y$` (bcrypt over HMAC-SHA384)   | WordPress 6.8+                                       | `bcrypt`, node:crypto HMAC   |
 * | `$argon2id$`, `$argon2i$`, `$argon2d$`| PHP `PASSWORD_ARGON2ID`, Symfony, argon2-cffi, …     | node:crypto `argon2` (OpenSSL) |
 * | `pbkdf2_sha256$iter$salt$b64`         | Django (also `pbkdf2_sha1`)                          | node:crypto `pbkdf2`         |
 * | `argon2$argon2id$…`                   | Django's Argon2PasswordHasher                        | node:crypto `argon2`         |
 * | `bcrypt_sha256$$2b$…`                 | Django's BCryptSHA256PasswordHasher                  | `bcrypt` over hex SHA-256    |
 * | `pbkdf2:sha256:iter$salt$hex`         | Werkzeug / Flask (also `sha1`, `sha512`)             | node:crypto `pbkdf2`         |
 * | `scrypt:N:r:p$salt$hex`               | Werkzeug 3 / Flask (its default)                     | node:crypto `scrypt`         |
 * | `$P$`, `$H$` (phpass portable)        | WordPress before 6.8, phpBB 3.0, Drupal 7 imports    | node:crypto MD5, below       |
 *
 * Every slow check runs off the event loop (libuv's thread pool) or, for phpass, in slices
 * that yield between them, so a login does not stall the streams the same thread serves.
 * Comparisons of derived keys are constant-time. A hash whose cost parameters are beyond
 * sane bounds is refused rather than computed, so one odd row cannot tie up the process.
 */
import {
  argon2,
  type BinaryLike,
  createHash,
  createHmac,
  pbkdf2,
  scrypt,
  timingSafeEqual,
} from "node:crypto";
import { setImmediate as yieldToLoop } from "node:timers/promises";
import { promisify } from "node:util";
import bcrypt from "bcrypt";
import type { Logger } from "../log.ts";

const pbkdf2Async = promisify(pbkdf2);
const argon2Async = promisify(argon2);
const scryptAsync = promisify(scrypt) as (
  password: BinaryLike,
  salt: BinaryLike,
  keylen: number,
  options: { N: number; r: number; p: number; maxmem: number },
) => Promise<Buffer>;

/** The formats {@link verifyPasswordHash} understands. */
export type PasswordHashFormat =
  | "bcrypt"
  | "wordpress-bcrypt"
  | "argon2"
  | "django-pbkdf2"
  | "django-argon2"
  | "django-bcrypt-sha256"
  | "werkzeug-pbkdf2"
  | "werkzeug-scrypt"
  | "phpass";

/** Beyond these, a stored hash is refused instead of computed (a safety bound, not a policy). */
const MAX_PBKDF2_ITERATIONS = 5_000_000;
/** Argon2 memory in KiB: RFC 9106's first recommendation (2 GiB) is the most a site would use. */
const MAX_ARGON2_MEMORY_KIB = 2 * 1024 * 1024;
const MAX_ARGON2_PASSES = 64;
const MAX_ARGON2_PARALLELISM = 64;
const MAX_SCRYPT_MEMORY_BYTES = 1024 * 1024 * 1024;
/** phpass runs 2^count MD5 rounds, this many between yields to the event loop. */
const PHPASS_SLICE = 4096;

/** Which format a stored hash is in, or undefined when none of the supported ones. */
export function passwordHashFormat(stored: string): PasswordHashFormat | undefined {
  if (/^\$2[aby]\$\d\d\$/.test(stored)) return "bcrypt";
  if (/^\$wp\$2[aby]\$\d\d\$/.test(stored)) return "wordpress-bcrypt";
  if (/^\$argon2(id|i|d)\$/.test(stored)) return "argon2";
  if (/^pbkdf2_sha(1|256)\$/.test(stored)) return "django-pbkdf2";
  if (/^argon2\$argon2(id|i|d)\$/.test(stored)) return "django-argon2";
  if (/^bcrypt_sha256\$\$2[aby]\$\d\d\$/.test(stored)) return "django-bcrypt-sha256";
  if (/^pbkdf2:sha(1|256|512):/.test(stored)) return "werkzeug-pbkdf2";
  if (/^scrypt:\d+:\d+:\d+\$/.test(stored)) return "werkzeug-scrypt";
  if (/^\$[PH]\$/.test(stored)) return "phpass";
  return undefined;
}

/**
 * The part of a stored hash that names its format (`$2y$`, `pbkdf2_sha256`), safe to log: never
 * the salt or the digest, and nothing at all when the value has no recognisable prefix (it might
 * be a plaintext password).
 */
export function formatPrefixOf(stored: string): string {
  const dollar = /^\$[A-Za-z0-9-]{1,16}\$/.exec(stored);
  if (dollar !== null) return dollar[0];
  const named = /^[A-Za-z][A-Za-z0-9_:-]{0,31}(?=\$)/.exec(stored);
  return named === null ? "(none)" : named[0];
}

/**
 * Whether `password` matches `stored`. An unknown format, a malformed hash or one with
 * parameters beyond the safety bounds is false, with a warning that names only the format
 * prefix (never the hash, never the password).
 */
export async function verifyPasswordHash(password: string, stored: string, log: Logger): Promise<boolean> {
  const format = passwordHashFormat(stored);
  if (format === undefined) {
    log.warn({ format: formatPrefixOf(stored) }, "stored password hash is in an unsupported format; refused");
    return false;
  }
  let result: boolean | "malformed";
  try {
    result = await verifyAs(format, password, stored);
  } catch {
    // The library refused the hash itself (bad salt, bad length): its message may quote it.
    result = "malformed";
  }
  if (result === "malformed") {
    log.warn(
      { format: formatPrefixOf(stored) },
      "stored password hash is malformed or beyond the accepted cost; refused",
    );
    return false;
  }
  return result;
}

function verifyAs(
  format: PasswordHashFormat,
  password: string,
  stored: string,
): Promise<boolean | "malformed"> {
  switch (format) {
    case "bcrypt":
      return verifyBcrypt(password, stored);
    case "wordpress-bcrypt":
      // WordPress 6.8 wp_hash_password(): '$wp' . password_hash(base64_encode(hash_hmac('sha384',
      // $password, 'wp-sha384', true)), PASSWORD_BCRYPT), so long passwords are not cut at 72 bytes.
      return verifyBcrypt(
        createHmac("sha384", "wp-sha384").update(password, "utf8").digest("base64"),
        stored.slice(3),
      );
    case "argon2":
      return verifyArgon2(password, stored);
    case "django-pbkdf2":
      return verifyDjangoPbkdf2(password, stored);
    case "django-argon2":
      // Django stores "argon2" followed by argon2-cffi's PHC string.
      return verifyArgon2(password, stored.slice("argon2".length));
    case "django-bcrypt-sha256":
      // Django's BCryptSHA256PasswordHasher: bcrypt over the hex SHA-256 of the password (no 72-byte cut).
      return verifyBcrypt(
        createHash("sha256").update(password, "utf8").digest("hex"),
        stored.slice("bcrypt_sha256$".length),
      );
    case "werkzeug-pbkdf2":
      return verifyWerkzeugPbkdf2(password, stored);
    case "werkzeug-scrypt":
      return verifyWerkzeugScrypt(password, stored);
    case "phpass":
      return verifyPhpass(password, stored);
    default: {
      const unreachable: never = format;
      throw new TypeError(`Unhandled password hash format ${String(unreachable)}`);
    }
  }
}

function equalBytes(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

async function verifyBcrypt(password: string, stored: string): Promise<boolean | "malformed"> {
  if (!/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(stored)) return "malformed";
  // $2y$ is PHP's name (crypt_blowfish) for the same corrected algorithm OpenBSD calls $2b$; the
  // native library knows only $2a$ and $2b$. https://www.openwall.com/crypt/ ("$2y$ ... same as $2b$")
  return bcrypt.compare(password, stored.replace(/^\$2y\$/, "$2b$"));
}

/** PHC string format: https://github.com/P-H-C/phc-string-format/blob/master/phc-sf-spec.md */
async function verifyArgon2(password: string, stored: string): Promise<boolean | "malformed"> {
  const match =
    /^\$(argon2id|argon2i|argon2d)\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(
      stored,
    );
  // Without v=19 the hash is of Argon2 version 1.0 (0x10), which OpenSSL does not compute.
  if (match === null) return "malformed";
  const [, algorithm, m, t, p, salt, hash] = match as unknown as [
    string,
    "argon2id" | "argon2i" | "argon2d",
    string,
    string,
    string,
    string,
    string,
  ];
  const memory = Number(m);
  const passes = Number(t);
  const parallelism = Number(p);
  const expected = Buffer.from(hash, "base64");
  const nonce = Buffer.from(salt, "base64");
  // RFC 9106 §3.1: memory is at least 8*p KiB, the salt at least 8 bytes, the tag at least 4.
  if (
    memory > MAX_ARGON2_MEMORY_KIB ||
    passes < 1 ||
    passes > MAX_ARGON2_PASSES ||
    parallelism < 1 ||
    parallelism > MAX_ARGON2_PARALLELISM ||
    memory < 8 * parallelism ||
    nonce.length < 8 ||
    expected.length < 4
  )
    return "malformed";
  const derived = await argon2Async(algorithm, {
    message: Buffer.from(password, "utf8"),
    nonce,
    parallelism,
    tagLength: expected.length,
    memory,
    passes,
  });
  return equalBytes(derived, expected);
}

/** Django's PBKDF2PasswordHasher: `pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte key>`. */
async function verifyDjangoPbkdf2(password: string, stored: string): Promise<boolean | "malformed"> {
  const match = /^pbkdf2_(sha1|sha256)\$(\d+)\$([^$]+)\$([A-Za-z0-9+/]+={0,2})$/.exec(stored);
  if (match === null) return "malformed";
  const [, digest, iterations, salt, hash] = match as unknown as [string, string, string, string, string];
  return checkPbkdf2(password, salt, Number(iterations), digest, Buffer.from(hash, "base64"));
}

/** Werkzeug's generate_password_hash: `pbkdf2:<digest>:<iterations>$<salt>$<hex key>`. */
async function verifyWerkzeugPbkdf2(password: string, stored: string): Promise<boolean | "malformed"> {
  // Without the iteration count the default of whichever Werkzeug version wrote it applies: unknowable.
  const match = /^pbkdf2:(sha1|sha256|sha512):(\d+)\$([^$]+)\$([0-9a-f]+)$/.exec(stored);
  if (match === null) return "malformed";
  const [, digest, iterations, salt, hash] = match as unknown as [string, string, string, string, string];
  return checkPbkdf2(password, salt, Number(iterations), digest, Buffer.from(hash, "hex"));
}

async function checkPbkdf2(
  password: string,
  salt: string,
  iterations: number,
  digest: string,
  expected: Buffer,
): Promise<boolean | "malformed"> {
  if (iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS || expected.length < 16) return "malformed";
  const derived = await pbkdf2Async(
    Buffer.from(password, "utf8"),
    Buffer.from(salt, "utf8"),
    iterations,
    expected.length,
    digest,
  );
  return equalBytes(derived, expected);
}

/** Werkzeug 3's default: `scrypt:<N>:<r>:<p>$<salt>$<hex of a 64-byte key>` (hashlib.scrypt). */
async function verifyWerkzeugScrypt(password: string, stored: string): Promise<boolean | "malformed"> {
  const match = /^scrypt:(\d+):(\d+):(\d+)\$([^$]+)\$([0-9a-f]+)$/.exec(stored);
  if (match === null) return "malformed";
  const [, n, r, p, salt, hash] = match as unknown as [string, string, string, string, string, string];
  const [N, blockSize, parallel] = [Number(n), Number(r), Number(p)];
  const expected = Buffer.from(hash, "hex");
  // RFC 7914 §2: memory is about 128 * N * r bytes (plus 128 * r * p for the blocks).
  const memory = 128 * N * blockSize + 128 * blockSize * parallel + 1024 * 1024;
  if (N < 2 || (N & (N - 1)) !== 0 || blockSize < 1 || parallel < 1 || memory > MAX_SCRYPT_MEMORY_BYTES)
    return "malformed";
  if (expected.length < 16) return "malformed";
  const derived = await scryptAsync(
    Buffer.from(password, "utf8"),
    Buffer.from(salt, "utf8"),
    expected.length,
    {
      N,
      r: blockSize,
      p: parallel,
      maxmem: memory,
    },
  );
  return equalBytes(derived, expected);
}

/** phpass's alphabet for the cost character and the digest encoding. */
const ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/**
 * The phpass "portable" hash (https://www.openwall.com/phpass/, `crypt_private`), which
 * WordPress used until 6.8 and phpBB 3.0 as `$H$`: `$P$`, one cost character (2^7..2^30 rounds),
 * an 8-character salt, then 22 characters of MD5(… MD5(salt . password) . password …). It is a
 * storage format over MD5, not a primitive, so it is written out here rather than taken from an
 * unmaintained package.
 */
async function verifyPhpass(password: string, stored: string): Promise<boolean | "malformed"> {
  if (!/^\$[PH]\$[./0-9A-Za-z]{31}$/.test(stored)) return "malformed";
  const countLog2 = ITOA64.indexOf(stored[3]!);
  // phpass refuses costs outside 7..30; 2^30 MD5 rounds would take minutes, so stop at 2^24.
  if (countLog2 < 7 || countLog2 > 24) return "malformed";
  const secret = Buffer.from(password, "utf8");
  let hash = createHash("md5").update(stored.slice(4, 12), "latin1").update(secret).digest();
  for (let remaining = 2 ** countLog2; remaining > 0; ) {
    const slice = Math.min(remaining, PHPASS_SLICE);
    for (let i = 0; i < slice; i++) hash = createHash("md5").update(hash).update(secret).digest();
    remaining -= slice;
    if (remaining > 0) await yieldToLoop();
  }
  const computed = Buffer.from(stored.slice(0, 12) + encode64(hash), "latin1");
  return equalBytes(computed, Buffer.from(stored, "latin1"));
}

/** phpass `encode64`: 16 bytes into 22 characters of {@link ITOA64}, least significant bits first. */
function encode64(input: Buffer): string {
  let output = "";
  for (let i = 0; i < input.length; ) {
    let value = input[i++]!;
    output += ITOA64[value & 0x3f];
    if (i < input.length) value |= input[i]! << 8;
    output += ITOA64[(value >> 6) & 0x3f];
    if (i++ >= input.length) break;
    if (i < input.length) value |= input[i]! << 16;
    output += ITOA64[(value >> 12) & 0x3f];
    if (i++ >= input.length) break;
    output += ITOA64[(value >> 18) & 0x3f];
  }
  return output;
}

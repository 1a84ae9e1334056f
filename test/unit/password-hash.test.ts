/**
 * The stored-hash formats of web applications, checked against hashes their own software made:
 * PHP 8.2's password_hash() (bcrypt $2y$, argon2id, argon2i), WordPress 6.8's wp_hash_password
 * (run in PHP), Python's hashlib for Django and Werkzeug, and passlib plus phpass's own test
 * vector for the portable hash. Unknown and malformed formats are refused with a warning that
 * names only the format.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatPrefixOf, passwordHashFormat, verifyPasswordHash } from "../../src/auth/password-hash.ts";
import { createLogger } from "../../src/log.ts";
import { HASHES, PASSWORD, PHPASS_PUBLISHED } from "../helpers/password-hashes.ts";

/** A logger that keeps its lines. */
function capturingLog() {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: "debug", write: (line) => lines.push(line) }) };
}

/** [format, who made it, hash of PASSWORD]. */
const VECTORS: [string, string, string][] = [
  ["bcrypt", "PHP 8.2 password_hash", HASHES.phpBcrypt],
  ["argon2", "PHP 8.2 password_hash ARGON2ID", HASHES.phpArgon2id],
  ["argon2", "PHP 8.2 password_hash ARGON2I", HASHES.phpArgon2i],
  ["wordpress-bcrypt", "WordPress 6.8", HASHES.wordpress68],
  ["django-pbkdf2", "Django 5", HASHES.django],
  ["django-argon2", "Django's Argon2 format", HASHES.djangoArgon2],
  ["django-bcrypt-sha256", "Django's BCryptSHA256 format", HASHES.djangoBcryptSha256],
  ["werkzeug-pbkdf2", "Werkzeug 2.3", HASHES.werkzeugPbkdf2],
  ["werkzeug-scrypt", "Werkzeug 3", HASHES.werkzeugScrypt],
  ["phpass", "WordPress before 6.8 (passlib)", HASHES.wordpressPhpass],
  ["phpass", "phpBB 3.0 (passlib)", HASHES.phpbbPhpass],
];

describe("password-hash", () => {
  for (const [format, maker, hash] of VECTORS) {
    it(`verifyPasswordHash accepts the right password and refuses a wrong one for ${maker} (${format})`, async () => {
      const { lines, log } = capturingLog();
      assert.equal(passwordHashFormat(hash), format);
      assert.equal(await verifyPasswordHash(PASSWORD, hash, log), true);
      assert.equal(await verifyPasswordHash(`${PASSWORD} `, hash, log), false);
      assert.equal(await verifyPasswordHash("", hash, log), false);
      assert.deepEqual(lines, [], "no warning for a well-formed hash");
    });
  }

  it("verifyPasswordHash checks phpass's own published vector", async () => {
    const { log } = capturingLog();
    const { password, hash } = PHPASS_PUBLISHED;
    assert.equal(await verifyPasswordHash(password, hash, log), true);
    assert.equal(await verifyPasswordHash(`${password}6`, hash, log), false);
  });

  it("verifyPasswordHash refuses an unknown format with a warning naming only its prefix", async () => {
    const { lines, log } = capturingLog();
    // An unsalted MD5 and a plaintext password: neither may reach the log.
    assert.equal(await verifyPasswordHash("password", "5f4dcc3b5aa765d61d8327deb882cf99", log), false);
    assert.equal(await verifyPasswordHash("hunter2", "hunter2", log), false);
    assert.equal(await verifyPasswordHash("x", "$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", log), false);
    assert.equal(lines.length, 3);
    const formats = lines.map((line) => (JSON.parse(line) as { format: string; level: string }).format);
    assert.deepEqual(formats, ["(none)", "(none)", "$1$"]);
    for (const line of lines) {
      assert.equal(JSON.parse(line).level, "warn");
      assert.doesNotMatch(line, /5f4dcc3b|hunter2|saltsalt|qjXMvb/);
    }
  });

  it("verifyPasswordHash refuses malformed hashes and absurd costs without computing them", async () => {
    const { lines, log } = capturingLog();
    const refused = [
      "$2y$10$short",
      "$argon2id$m=65536,t=4,p=1$Q1g1TEVDejJGVXNnZzNQYw$cnpFb0EKG7q8v1rZKcxlCDUoxOtUGDtl9bQMkBihovU", // Argon2 1.0
      "$argon2id$v=19$m=99999999,t=4,p=1$Q1g1TEVDejJGVXNnZzNQYw$cnpFb0EKG7q8v1rZKcxlCDUoxOtUGDtl9bQMkBihovU",
      "pbkdf2_sha256$999999999$salt$ypHyGxlUkdZOYesvI4RJf3CW3g0vLc8W18Nz2r2t1cs=",
      "pbkdf2:sha256$Zq8Yh3kLmN0pQr2S$e2218f9414db7e55427f181b5e9f1a18", // no iteration count
      "$P$zWu9i4oSphCRPby93shI2ZqGnL9LsD/", // 2^61 rounds
    ];
    const started = Date.now();
    for (const hash of refused) assert.equal(await verifyPasswordHash(PASSWORD, hash, log), false, hash);
    assert.ok(Date.now() - started < 2_000, "nothing expensive was computed");
    assert.equal(lines.length, refused.length);
    for (const line of lines) assert.doesNotMatch(line, /Q1g1TEVD|ypHyGx|Wu9i4oSp|short/);
  });

  it("formatPrefixOf names the scheme and never the salt or digest", () => {
    assert.equal(formatPrefixOf("$2y$10$CPOxtCva0aqJct23NCM6Fu8D9eqsWMBqNdmpn.LfFboSOFjICH.um"), "$2y$");
    assert.equal(formatPrefixOf("pbkdf2_sha256$870000$salt$hash"), "pbkdf2_sha256");
    assert.equal(formatPrefixOf("sha1$salt$hash"), "sha1");
    assert.equal(formatPrefixOf("plaintext password"), "(none)");
  });

  it("verifyPasswordHash leaves the event loop free while a bcrypt, argon2 or phpass check runs", async () => {
    const { log } = capturingLog();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const started = Date.now();
    await Promise.all(VECTORS.map(([, , hash]) => verifyPasswordHash(PASSWORD, hash, log)));
    const elapsed = Date.now() - started;
    clearInterval(timer);
    // A blocked loop would run the 1 ms timer a handful of times in the whole span.
    assert.ok(ticks > elapsed / 20, `${ticks} timer ticks in ${elapsed} ms`);
  });
});

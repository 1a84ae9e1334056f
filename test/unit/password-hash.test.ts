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

/** A logger that keeps its lines. */
function capturingLog() {
  const lines: string[] = [];
  return { lines, log: createLogger({ level: "debug", write: (line) => lines.push(line) }) };
}

const PASSWORD = "correct horse";

/** [format, who made it, hash of PASSWORD]. */
const VECTORS: [string, string, string][] = [
  // php -r 'echo password_hash("correct horse", PASSWORD_BCRYPT, ["cost"=>10]);'
  ["bcrypt", "PHP 8.2 password_hash", "$2y$10$CPOxtCva0aqJct23NCM6Fu8D9eqsWMBqNdmpn.LfFboSOFjICH.um"],
  // php -r 'echo password_hash("correct horse", PASSWORD_ARGON2ID);'
  [
    "argon2",
    "PHP 8.2 password_hash ARGON2ID",
    "$argon2id$v=19$m=65536,t=4,p=1$Q1g1TEVDejJGVXNnZzNQYw$cnpFb0EKG7q8v1rZKcxlCDUoxOtUGDtl9bQMkBihovU",
  ],
  [
    "argon2",
    "PHP 8.2 password_hash ARGON2I",
    "$argon2i$v=19$m=8192,t=2,p=1$U3hOVDJhYUl6QmsyWlJ3MQ$rixtQ8CIKcAXC9MmvgA7aLjo381Zz3pIjhhr9oQ5ymo",
  ],
  // php: '$wp' . password_hash(base64_encode(hash_hmac('sha384', $pw, 'wp-sha384', true)), PASSWORD_BCRYPT)
  ["wordpress-bcrypt", "WordPress 6.8", "$wp$2y$10$AeGhGRTlrTEn9/wL3MM3WO5XpmIiCIKy/Wb016rLwPP9vvMoViyp6"],
  // Django's PBKDF2PasswordHasher: base64(hashlib.pbkdf2_hmac("sha256", pw, salt, 870000))
  [
    "django-pbkdf2",
    "Django 5",
    "pbkdf2_sha256$870000$seasalt2024abcd$ypHyGxlUkdZOYesvI4RJf3CW3g0vLc8W18Nz2r2t1cs=",
  ],
  [
    "werkzeug-pbkdf2",
    "Werkzeug 2.3",
    "pbkdf2:sha256:600000$Zq8Yh3kLmN0pQr2S$e2218f9414db7e55427f181b5e9f1a18cbee1ff04b2e3fe36690e7a19a646308",
  ],
  [
    "werkzeug-scrypt",
    "Werkzeug 3",
    "scrypt:32768:8:1$Zq8Yh3kLmN0pQr2S$f331093d9b82e9730b84a90ade9b090546ed25478c861525f6a864e5955eb3d73877afd6ad267b9080c74a642ee085a9ce78ae245d750380bb4dbfa905bf3c3f",
  ],
  // passlib.hash.phpass.using(rounds=13, ident="P", salt="Wu9i4oSp").hash("correct horse")
  ["phpass", "WordPress before 6.8 (passlib)", "$P$BWu9i4oSphCRPby93shI2ZqGnL9LsD/"],
  ["phpass", "phpBB 3.0 (passlib)", "$H$9Wu9i4oSqqU/1n93UcLOs8SRHeE7Cu0"],
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
    // From phpass 0.3 test.php, also in passlib's test suite.
    const { log } = capturingLog();
    assert.equal(await verifyPasswordHash("test12345", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", log), true);
    assert.equal(await verifyPasswordHash("test12346", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", log), false);
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

/**
 * Password hashes as web applications store them, each made by the application's own software
 * (not by Starling), all of {@link PASSWORD} except phpass's published vector. Shared by the
 * unit tests of password-hash.ts and the sql provider's tables. Nothing runs at import.
 */

/** The password every hash below (but `phpassPublished`) was made from. */
export const PASSWORD = "correct horse";

/** Each hash with the software that made it. */
export const HASHES = {
  /** php -r 'echo password_hash("correct horse", PASSWORD_BCRYPT, ["cost"=>10]);' (PHP 8.2). */
  phpBcrypt: "$2y$10$CPOxtCva0aqJct23NCM6Fu8D9eqsWMBqNdmpn.LfFboSOFjICH.um",
  /** password_hash(…, PASSWORD_ARGON2ID) with PHP 8.2's defaults. */
  phpArgon2id:
    "$argon2id$v=19$m=65536,t=4,p=1$Q1g1TEVDejJGVXNnZzNQYw$cnpFb0EKG7q8v1rZKcxlCDUoxOtUGDtl9bQMkBihovU",
  /** password_hash(…, PASSWORD_ARGON2I, ["memory_cost"=>8192, "time_cost"=>2, "threads"=>1]). */
  phpArgon2i:
    "$argon2i$v=19$m=8192,t=2,p=1$U3hOVDJhYUl6QmsyWlJ3MQ$rixtQ8CIKcAXC9MmvgA7aLjo381Zz3pIjhhr9oQ5ymo",
  /** WordPress 6.8's wp_hash_password, run in PHP 8.2: '$wp' . bcrypt(base64(HMAC-SHA384)). */
  wordpress68: "$wp$2y$10$AeGhGRTlrTEn9/wL3MM3WO5XpmIiCIKy/Wb016rLwPP9vvMoViyp6",
  /** Django 5's PBKDF2PasswordHasher: base64(hashlib.pbkdf2_hmac("sha256", pw, salt, 870000)). */
  django: "pbkdf2_sha256$870000$seasalt2024abcd$ypHyGxlUkdZOYesvI4RJf3CW3g0vLc8W18Nz2r2t1cs=",
  /** Django's Argon2PasswordHasher format ("argon2" + the PHC string), made with PHP 8.2's argon2id. */
  djangoArgon2:
    "argon2$argon2id$v=19$m=19456,t=2,p=1$QXQyNWNpYzJYWFpJa3g5SA$zncqDjjFVDQ8MeC5qL0/feIGdjT78DwqWOWKKqpuU7Q",
  /** Django's BCryptSHA256PasswordHasher format: bcrypt of hex SHA-256, made with PHP 8.2 ($2y$ named $2b$). */
  djangoBcryptSha256: "bcrypt_sha256$$2b$10$t5EwUu90x4OAyGFWxdBiGeKWKU6A8fYJOTgtjyH6EYN2mubYBjTQq",
  /** Werkzeug 2.3's generate_password_hash(method="pbkdf2:sha256:600000"), via hashlib. */
  werkzeugPbkdf2:
    "pbkdf2:sha256:600000$Zq8Yh3kLmN0pQr2S$e2218f9414db7e55427f181b5e9f1a18cbee1ff04b2e3fe36690e7a19a646308",
  /** Werkzeug 3's default (scrypt:32768:8:1), via hashlib.scrypt. */
  werkzeugScrypt:
    "scrypt:32768:8:1$Zq8Yh3kLmN0pQr2S$f331093d9b82e9730b84a90ade9b090546ed25478c861525f6a864e5955eb3d73877afd6ad267b9080c74a642ee085a9ce78ae245d750380bb4dbfa905bf3c3f",
  /** passlib.hash.phpass.using(rounds=13, ident="P", salt="Wu9i4oSp"): WordPress before 6.8. */
  wordpressPhpass: "$P$BWu9i4oSphCRPby93shI2ZqGnL9LsD/",
  /** passlib.hash.phpass.using(rounds=11, ident="H", salt="Wu9i4oSq"): phpBB 3.0. */
  phpbbPhpass: "$H$9Wu9i4oSqqU/1n93UcLOs8SRHeE7Cu0",
} as const;

/** phpass 0.3's own test vector (test.php; also in passlib's suite): "test12345". */
export const PHPASS_PUBLISHED = {
  password: "test12345",
  hash: "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0",
} as const;

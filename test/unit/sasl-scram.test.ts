import assert from "node:assert/strict";
import { createHash, createHmac, pbkdf2Sync } from "node:crypto";
import { describe, test } from "node:test";
import type { ScramHash } from "../../src/auth/auth-provider.ts";
import { InternalAuthProvider } from "../../src/auth/internal-auth.ts";
import { deriveScramCredential } from "../../src/auth/scram.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { createSaslMechanism, SASL_MECHANISMS, type SaslStep } from "../../src/xmpp/sasl/mechanism.ts";
import { MAX_SCRAM_MESSAGE_BYTES, ScramServerMechanism } from "../../src/xmpp/sasl/scram.ts";

const DOMAIN = "example.com";
const USER = "user@example.com" as BareJid;

/** The salts of RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256); password "pencil", i=4096. */
const RFC_ACCOUNT: Account = {
  jid: USER,
  scramSha1: deriveScramCredential("pencil", "sha1", 4096, Buffer.from("QSXCR+Q6sek8bf92", "base64")),
  scramSha256: deriveScramCredential(
    "pencil",
    "sha256",
    4096,
    Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64"),
  ),
  createdAt: 0,
};

function account(jid: string, password: string): Account {
  return {
    jid: jid as BareJid,
    scramSha1: deriveScramCredential(password, "sha1", 4096),
    scramSha256: deriveScramCredential(password, "sha256", 4096),
    createdAt: 0,
  };
}

/** The accounts part of a Store, in memory: all that InternalAuthProvider reads. */
function authOver(...accounts: Account[]): InternalAuthProvider {
  const byJid = new Map(accounts.map((a) => [a.jid, a]));
  return new InternalAuthProvider({ getAccount: async (jid: BareJid) => byJid.get(jid) });
}

function scram(hash: ScramHash, accounts: Account[] = [RFC_ACCOUNT], nonce?: string): ScramServerMechanism {
  const options = nonce === undefined ? {} : { nonce: () => nonce };
  return new ScramServerMechanism(hash, { domain: DOMAIN, auth: authOver(...accounts) }, options);
}

function challengeText(step: SaslStep): string {
  assert.equal(step.kind, "challenge", `expected a challenge, got ${JSON.stringify(step)}`);
  return step.kind === "challenge" ? step.data.toString("utf8") : "";
}

/**
 * The client's half of RFC 5802 §3, written out in the test (PBKDF2 straight from node:crypto,
 * not src/auth/scram.ts) so that each message can be tampered with. The RFC vectors below
 * check that it reproduces the published client-final-messages.
 */
function clientFinal(
  hash: ScramHash,
  password: string,
  clientFirstBare: string,
  serverFirst: string,
  overrides: { binding?: string; nonce?: string } = {},
): string {
  const attrs = new Map(serverFirst.split(",").map((part) => [part[0], part.slice(2)]));
  const length = hash === "sha1" ? 20 : 32;
  const salted = pbkdf2Sync(
    password,
    Buffer.from(attrs.get("s")!, "base64"),
    Number(attrs.get("i")),
    length,
    hash,
  );
  const clientKey = createHmac(hash, salted).update("Client Key").digest();
  const storedKey = createHash(hash).update(clientKey).digest();
  const withoutProof = `c=${overrides.binding ?? "biws"},r=${overrides.nonce ?? attrs.get("r")}`;
  const signature = createHmac(hash, storedKey)
    .update(`${clientFirstBare},${serverFirst},${withoutProof}`)
    .digest();
  const proof = Buffer.from(clientKey.map((byte, i) => byte ^ signature[i]!));
  return `${withoutProof},p=${proof.toString("base64")}`;
}

/** Runs client-first, then a client-final computed with `password`; returns the final step. */
async function exchange(
  mech: ScramServerMechanism,
  hash: ScramHash,
  clientFirst: string,
  password: string,
  overrides: { binding?: string; nonce?: string } = {},
): Promise<SaslStep> {
  const serverFirst = challengeText(await mech.start(Buffer.from(clientFirst)));
  const bare = clientFirst.slice(clientFirst.indexOf(",", clientFirst.indexOf(",") + 1) + 1);
  return mech.next(Buffer.from(clientFinal(hash, password, bare, serverFirst, overrides)));
}

describe("SCRAM test vectors", () => {
  test("SCRAM-SHA-1 reproduces the RFC 5802 §5 exchange byte for byte", async () => {
    const mech = scram("sha1", [RFC_ACCOUNT], "3rfcNHYJY1ZVvWVs7j");
    assert.equal(mech.name, "SCRAM-SHA-1");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")));
    assert.equal(serverFirst, "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
    const final = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";
    assert.equal(clientFinal("sha1", "pencil", "n=user,r=fyko+d2lbbFgONRv9qkxdawL", serverFirst), final);
    const success = await mech.next(Buffer.from(final));
    assert.deepEqual(success, {
      kind: "success",
      jid: USER,
      data: Buffer.from("v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
    });
  });

  test("SCRAM-SHA-256 reproduces the RFC 7677 §3 exchange byte for byte", async () => {
    const mech = scram("sha256", [RFC_ACCOUNT], "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    assert.equal(mech.name, "SCRAM-SHA-256");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")));
    assert.equal(
      serverFirst,
      "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    );
    const final =
      "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    assert.equal(clientFinal("sha256", "pencil", "n=user,r=rOprNGfwEbeRWgbNEkqO", serverFirst), final);
    const success = await mech.next(Buffer.from(final));
    assert.deepEqual(success, {
      kind: "success",
      jid: USER,
      data: Buffer.from("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
    });
  });
});

describe("SCRAM server", () => {
  for (const hash of ["sha1", "sha256"] as const) {
    test(`${hash} authenticates with a random server nonce`, async () => {
      const mech = scram(hash);
      const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=abc")));
      assert.match(serverFirst, /^r=abc[\x21-\x2b\x2d-\x7e]{16,},s=[^,]+,i=4096$/);
      const result = await mech.next(Buffer.from(clientFinal(hash, "pencil", "n=user,r=abc", serverFirst)));
      assert.equal(result.kind, "success");
    });

    test(`${hash} fails with not-authorized on a wrong password`, async () => {
      const result = await exchange(scram(hash), hash, "n,,n=user,r=abc", "pencil2");
      assert.deepEqual(result, { kind: "failure", condition: "not-authorized", jid: USER });
    });
  }

  test("SCRAM asks for the client-first-message with an empty challenge when <auth/> had none", async () => {
    const mech = scram("sha256");
    const empty = await mech.start(undefined);
    assert.deepEqual(empty, { kind: "challenge", data: Buffer.alloc(0) });
    const serverFirst = challengeText(await mech.next(Buffer.from("n,,n=user,r=abc")));
    const result = await mech.next(Buffer.from(clientFinal("sha256", "pencil", "n=user,r=abc", serverFirst)));
    assert.equal(result.kind, "success");
  });

  test("SCRAM fails with malformed-request when the client-final nonce differs", async () => {
    const mech = scram("sha1", [RFC_ACCOUNT], "server");
    const result = await exchange(mech, "sha1", "n,,n=user,r=abc", "pencil", { nonce: "abcserveX" });
    assert.deepEqual(result, {
      kind: "failure",
      condition: "malformed-request",
      text: "Nonce mismatch",
      jid: USER,
    });
  });

  test("SCRAM fails with malformed-request when the nonce is only the client's", async () => {
    const result = await exchange(scram("sha1"), "sha1", "n,,n=user,r=abc", "pencil", { nonce: "abc" });
    assert.equal(result.kind === "failure" && result.condition, "malformed-request");
  });

  test("SCRAM fails with not-authorized on a tampered ClientProof", async () => {
    const mech = scram("sha256");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=abc")));
    const good = clientFinal("sha256", "pencil", "n=user,r=abc", serverFirst);
    const proof = Buffer.from(good.slice(good.indexOf(",p=") + 3), "base64");
    proof[0] = proof[0]! ^ 1;
    const result = await mech.next(
      Buffer.from(`${good.slice(0, good.indexOf(",p="))},p=${proof.toString("base64")}`),
    );
    assert.deepEqual(result, { kind: "failure", condition: "not-authorized", jid: USER });
  });

  test("SCRAM fails with not-authorized on a ClientProof of the wrong length", async () => {
    const mech = scram("sha256");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=abc")));
    const good = clientFinal("sha1", "pencil", "n=user,r=abc", serverFirst);
    const result = await mech.next(Buffer.from(good));
    assert.deepEqual(result, { kind: "failure", condition: "not-authorized", jid: USER });
  });

  test("SCRAM fails when the channel-binding echo differs from the gs2 header", async () => {
    const result = await exchange(scram("sha1"), "sha1", "n,,n=user,r=abc", "pencil", { binding: "eSws" });
    assert.deepEqual(result, {
      kind: "failure",
      condition: "malformed-request",
      text: "Channel binding does not match the gs2 header",
      jid: USER,
    });
  });

  test("SCRAM accepts the gs2 flag y with c=eSws", async () => {
    const result = await exchange(scram("sha256"), "sha256", "y,,n=user,r=abc", "pencil", {
      binding: "eSws",
    });
    assert.equal(result.kind, "success");
  });

  test("SCRAM rejects the gs2 flag p because channel binding is not offered", async () => {
    const result = await scram("sha256").start(Buffer.from("p=tls-exporter,,n=user,r=abc"));
    assert.deepEqual(result, {
      kind: "failure",
      condition: "malformed-request",
      text: "Channel binding is not supported",
    });
  });

  test("SCRAM accepts an authzid equal to the user's bare JID", async () => {
    const gs2 = "n,a=User@Example.com,";
    const binding = Buffer.from(gs2).toString("base64");
    const result = await exchange(scram("sha256"), "sha256", `${gs2}n=user,r=abc`, "pencil", { binding });
    assert.equal(result.kind === "success" && result.jid, USER);
  });

  test("SCRAM fails with invalid-authzid on another user's JID", async () => {
    const result = await scram("sha256").start(Buffer.from("n,a=admin@example.com,n=user,r=abc"));
    assert.deepEqual(result, { kind: "failure", condition: "invalid-authzid", jid: USER });
  });

  test("SCRAM fails with invalid-authzid on a JID that is not a user JID", async () => {
    const result = await scram("sha256").start(Buffer.from("n,a=example.com,n=user,r=abc"));
    assert.equal(result.kind === "failure" && result.condition, "invalid-authzid");
  });

  test("SCRAM unescapes =2C and =3D in the user name", async () => {
    const odd = account("a,b=c@example.com", "secret");
    const result = await exchange(scram("sha1", [odd]), "sha1", "n,,n=a=2Cb=3Dc,r=abc", "secret");
    assert.equal(result.kind === "success" && result.jid, "a,b=c@example.com");
  });

  test("SCRAM normalises the user name and accepts a bare JID of its domain", async () => {
    for (const name of ["USER", "user@EXAMPLE.com"]) {
      const result = await exchange(scram("sha256"), "sha256", `n,,n=${name},r=abc`, "pencil");
      assert.equal(result.kind === "success" && result.jid, USER, name);
    }
  });

  test("SCRAM treats a JID of another domain as an unknown user", async () => {
    const mech = scram("sha256");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user@example.org,r=abc")));
    assert.match(serverFirst, /,i=4096$/);
    const result = await mech.next(
      Buffer.from(clientFinal("sha256", "pencil", "n=user@example.org,r=abc", serverFirst)),
    );
    assert.deepEqual(result, { kind: "failure", condition: "not-authorized" });
  });

  test("SCRAM does not reveal an unknown user until the final step", async () => {
    const known = account("alice@example.com", "right");
    const accounts = [known];
    const aliceFirst = challengeText(await scram("sha256", accounts).start(Buffer.from("n,,n=alice,r=abc")));
    const shape = /^r=abc[^,]+,s=[A-Za-z0-9+/]{22}==,i=4096$/;
    assert.match(aliceFirst, shape);

    // The unknown user gets a challenge of the same shape, with a salt that stays the same...
    const salts: string[] = [];
    for (const name of ["nobody", "nobody", "someone"]) {
      const first = challengeText(await scram("sha256", accounts).start(Buffer.from(`n,,n=${name},r=abc`)));
      assert.match(first, shape);
      salts.push(first.split(",")[1]!);
    }
    assert.equal(salts[0], salts[1]);
    assert.notEqual(salts[0], salts[2]);

    // ...and fails exactly as a known user with a wrong password does.
    const wrong = await exchange(scram("sha256", accounts), "sha256", "n,,n=alice,r=abc", "guess");
    const unknown = await exchange(scram("sha256", accounts), "sha256", "n,,n=nobody,r=abc", "guess");
    assert.deepEqual(wrong, { kind: "failure", condition: "not-authorized", jid: "alice@example.com" });
    assert.deepEqual(unknown, { kind: "failure", condition: "not-authorized", jid: "nobody@example.com" });
  });

  test("SCRAM fails with incorrect-encoding on bytes that are not UTF-8", async () => {
    const result = await scram("sha1").start(
      Buffer.from([0x6e, 0x2c, 0x2c, 0x6e, 0x3d, 0xff, 0x2c, 0x72, 0x3d, 0x61]),
    );
    assert.deepEqual(result, {
      kind: "failure",
      condition: "incorrect-encoding",
      text: "SCRAM message is not UTF-8",
    });
  });

  test("SCRAM fails with incorrect-encoding on a proof that is not base64", async () => {
    const mech = scram("sha1", [RFC_ACCOUNT], "srv");
    await mech.start(Buffer.from("n,,n=user,r=abc"));
    const result = await mech.next(Buffer.from("c=biws,r=abcsrv,p=not*base64"));
    assert.deepEqual(result, {
      kind: "failure",
      condition: "incorrect-encoding",
      text: "Bad base64",
      jid: USER,
    });
  });

  test("SCRAM fails with malformed-request on each malformed client-first-message", async () => {
    const cases = [
      "",
      "n,,",
      "n,,n=user",
      "n,,r=abc,n=user",
      "n,,n=,r=abc",
      "n,,n=us=er,r=abc",
      "n,,n=user,r=",
      "n,,n=user,r=a\u00e9",
      "x,,n=user,r=abc",
      "n,b=c,n=user,r=abc",
      "n,a=,n=user,r=abc",
      "n,,m=ext,n=user,r=abc",
      "n,,n=user,r=abc,bad",
      `n,,n=user,r=${"a".repeat(MAX_SCRAM_MESSAGE_BYTES)}`,
    ];
    for (const message of cases) {
      const result = await scram("sha1").start(Buffer.from(message));
      assert.equal(result.kind === "failure" && result.condition, "malformed-request", message);
    }
  });

  test("SCRAM fails with malformed-request on each malformed client-final-message", async () => {
    const cases = [
      "",
      "c=biws,r=abcsrv",
      "r=abcsrv,c=biws,p=AAAA",
      "c=biws,p=AAAA",
      "c=biws,r=abcsrv,m=x,p=AAAA",
    ];
    for (const message of cases) {
      const mech = scram("sha1", [RFC_ACCOUNT], "srv");
      await mech.start(Buffer.from("n,,n=user,r=abc"));
      const result = await mech.next(Buffer.from(message));
      assert.equal(result.kind === "failure" && result.condition, "malformed-request", message);
    }
  });

  test("SCRAM ignores unknown extensions in the client-final-message", async () => {
    const mech = scram("sha256");
    const serverFirst = challengeText(await mech.start(Buffer.from("n,,n=user,r=abc")));
    // RFC 5802 §7: the extension goes before the proof and is part of the AuthMessage.
    const withExtension = `c=biws,r=${serverFirst.slice(2, serverFirst.indexOf(","))},x=ext`;
    const attrs = new Map(serverFirst.split(",").map((part) => [part[0], part.slice(2)]));
    const salted = pbkdf2Sync("pencil", Buffer.from(attrs.get("s")!, "base64"), 4096, 32, "sha256");
    const clientKey = createHmac("sha256", salted).update("Client Key").digest();
    const storedKey = createHash("sha256").update(clientKey).digest();
    const signature = createHmac("sha256", storedKey)
      .update(`n=user,r=abc,${serverFirst},${withExtension}`)
      .digest();
    const proof = Buffer.from(clientKey.map((byte, i) => byte ^ signature[i]!)).toString("base64");
    const result = await mech.next(Buffer.from(`${withExtension},p=${proof}`));
    assert.equal(result.kind, "success");
  });

  test("SCRAM fails a response sent after the exchange ended", async () => {
    const mech = scram("sha1", [RFC_ACCOUNT], "3rfcNHYJY1ZVvWVs7j");
    await mech.start(Buffer.from("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"));
    await mech.next(
      Buffer.from("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="),
    );
    const extra = await mech.next(Buffer.alloc(0));
    assert.equal(extra.kind === "failure" && extra.condition, "malformed-request");
    await assert.rejects(mech.start(undefined), TypeError);
  });

  test("SCRAM refuses a server nonce that is not printable", async () => {
    await assert.rejects(
      scram("sha1", [RFC_ACCOUNT], "a,b").start(Buffer.from("n,,n=user,r=abc")),
      TypeError,
    );
  });
});

describe("createSaslMechanism", () => {
  test("createSaslMechanism creates each advertised mechanism, strongest first", () => {
    assert.deepEqual([...SASL_MECHANISMS], ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    const context = { domain: DOMAIN, auth: authOver() };
    for (const name of SASL_MECHANISMS) assert.equal(createSaslMechanism(name, context)?.name, name);
  });

  test("createSaslMechanism returns undefined for a mechanism it does not implement", () => {
    const context = { domain: DOMAIN, auth: authOver() };
    for (const name of ["SCRAM-SHA-1-PLUS", "DIGEST-MD5", "plain", "ANONYMOUS", "toString"]) {
      assert.equal(createSaslMechanism(name, context), undefined, name);
    }
  });
});

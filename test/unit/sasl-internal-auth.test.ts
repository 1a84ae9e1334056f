import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InternalAuthProvider } from "../../src/auth/internal-auth.ts";
import { createAccountRecord, deriveScramCredential } from "../../src/auth/scram.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";

const ALICE = "alice@example.com" as BareJid;

function providerWith(...accounts: Account[]): InternalAuthProvider {
  const byJid = new Map(accounts.map((a) => [a.jid, a]));
  return new InternalAuthProvider({ getAccount: async (jid: BareJid) => byJid.get(jid) });
}

describe("InternalAuthProvider", () => {
  const alice = createAccountRecord(ALICE, "correct horse", 4096);
  const auth = providerWith(alice);

  test("InternalAuthProvider returns the stored SCRAM credential for each hash", async () => {
    assert.deepEqual(await auth.getScramCredential(ALICE, "sha1"), alice.scramSha1);
    assert.deepEqual(await auth.getScramCredential(ALICE, "sha256"), alice.scramSha256);
  });

  test("InternalAuthProvider returns undefined credentials for an unknown user", async () => {
    assert.equal(await auth.getScramCredential("bob@example.com" as BareJid, "sha256"), undefined);
  });

  test("InternalAuthProvider verifies a password against the stored keys", async () => {
    assert.equal(await auth.verifyPassword(ALICE, "correct horse"), true);
    assert.equal(await auth.verifyPassword(ALICE, "correct horse "), false);
    assert.equal(await auth.verifyPassword(ALICE, ""), false);
  });

  test("InternalAuthProvider rejects any password for an unknown user", async () => {
    assert.equal(await auth.verifyPassword("bob@example.com" as BareJid, "correct horse"), false);
  });

  test("InternalAuthProvider uses the stored salt and iteration count", async () => {
    const salt = Buffer.from("W22ZaJ0SNY7soEsUEjb6gQ==", "base64");
    const carol: Account = {
      jid: "carol@example.com" as BareJid,
      scramSha1: deriveScramCredential("pencil", "sha1", 1000, salt),
      scramSha256: deriveScramCredential("pencil", "sha256", 1000, salt),
      createdAt: 0,
    };
    const provider = providerWith(carol);
    assert.equal(await provider.verifyPassword(carol.jid, "pencil"), true);
    assert.equal(await provider.verifyPassword(carol.jid, "pencil2"), false);
  });

  test("InternalAuthProvider compares passwords after NFKC, as the keys were derived", async () => {
    // U+2168 ROMAN NUMERAL NINE is "IX" under NFKC (RFC 5802 Normalize, approximated by NFKC).
    const dave = createAccountRecord("dave@example.com" as BareJid, "IX", 4096);
    assert.equal(await providerWith(dave).verifyPassword(dave.jid, "\u2168"), true);
  });

  test("InternalAuthProvider reports which users exist", async () => {
    assert.equal(await auth.userExists(ALICE), true);
    assert.equal(await auth.userExists("bob@example.com" as BareJid), false);
  });
});

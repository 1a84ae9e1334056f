import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InternalAuthProvider } from "../../src/auth/internal-auth.ts";
import { createAccountRecord } from "../../src/auth/scram.ts";
import type { Account } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import type { SaslStep } from "../../src/xmpp/sasl/mechanism.ts";
import { MAX_PLAIN_MESSAGE_BYTES, PlainServerMechanism } from "../../src/xmpp/sasl/plain.ts";

const USER = "user@example.com" as BareJid;
const ACCOUNTS: Account[] = [createAccountRecord(USER, "pencil", 4096)];

function plain(): PlainServerMechanism {
  const byJid = new Map(ACCOUNTS.map((a) => [a.jid, a]));
  const auth = new InternalAuthProvider({ getAccount: async (jid: BareJid) => byJid.get(jid) });
  return new PlainServerMechanism({ domain: "Example.COM", auth });
}

function login(message: string): Promise<SaslStep> {
  return plain().start(Buffer.from(message, "utf8"));
}

describe("PLAIN server", () => {
  test("PLAIN authenticates a localpart with the right password", async () => {
    assert.deepEqual(await login("\0user\0pencil"), { kind: "success", jid: USER });
  });

  test("PLAIN accepts a bare JID of its own domain as authcid, normalised", async () => {
    assert.deepEqual(await login("\0User@example.com\0pencil"), { kind: "success", jid: USER });
  });

  test("PLAIN accepts an authzid equal to the user's bare JID", async () => {
    assert.deepEqual(await login("USER@example.com\0user\0pencil"), { kind: "success", jid: USER });
  });

  test("PLAIN fails with not-authorized on a wrong password", async () => {
    assert.deepEqual(await login("\0user\0Pencil"), {
      kind: "failure",
      condition: "not-authorized",
      jid: USER,
    });
  });

  test("PLAIN fails an unknown user exactly as a wrong password", async () => {
    const result = await login("\0nobody\0pencil");
    assert.deepEqual(result, { kind: "failure", condition: "not-authorized", jid: "nobody@example.com" });
  });

  test("PLAIN fails with not-authorized on a JID of another domain or an impossible name", async () => {
    for (const authcid of ["user@example.org", "us/er", "us er", "@example.com"]) {
      assert.deepEqual(
        await login(`\0${authcid}\0pencil`),
        { kind: "failure", condition: "not-authorized" },
        authcid,
      );
    }
  });

  test("PLAIN fails with invalid-authzid when the authzid names someone else", async () => {
    for (const authzid of ["admin@example.com", "example.com", "user@example.com/res", "user@example.org"]) {
      const result = await login(`${authzid}\0user\0pencil`);
      assert.deepEqual(result, { kind: "failure", condition: "invalid-authzid", jid: USER }, authzid);
    }
  });

  test("PLAIN fails with malformed-request on an empty user name or password", async () => {
    for (const message of ["\0\0pencil", "\0user\0", "\0\0", ""]) {
      const result = await login(message);
      assert.equal(
        result.kind === "failure" && result.condition,
        "malformed-request",
        JSON.stringify(message),
      );
    }
  });

  test("PLAIN fails with malformed-request without exactly two NUL separators", async () => {
    for (const message of ["user\0pencil", "userpencil", "\0user\0pencil\0", "a\0\0user\0pencil"]) {
      const result = await login(message);
      assert.equal(
        result.kind === "failure" && result.condition,
        "malformed-request",
        JSON.stringify(message),
      );
    }
  });

  test("PLAIN fails with malformed-request on a message over the size limit", async () => {
    const result = await login(`\0user\0${"p".repeat(MAX_PLAIN_MESSAGE_BYTES)}`);
    assert.equal(result.kind === "failure" && result.condition, "malformed-request");
  });

  test("PLAIN fails with incorrect-encoding on bytes that are not UTF-8", async () => {
    const result = await plain().start(Buffer.from([0x00, 0x75, 0x00, 0xc3, 0x28]));
    assert.deepEqual(result, {
      kind: "failure",
      condition: "incorrect-encoding",
      text: "PLAIN message is not UTF-8",
    });
  });

  test("PLAIN sends an empty challenge without an initial response, then takes the response", async () => {
    const mech = plain();
    assert.deepEqual(await mech.start(undefined), { kind: "challenge", data: Buffer.alloc(0) });
    assert.deepEqual(await mech.next(Buffer.from("\0user\0pencil")), { kind: "success", jid: USER });
  });

  test("PLAIN treats an empty initial response as a malformed message", async () => {
    const result = await plain().start(Buffer.alloc(0));
    assert.equal(result.kind === "failure" && result.condition, "malformed-request");
  });

  test("PLAIN fails a response after the exchange ended and refuses a second start", async () => {
    const mech = plain();
    await mech.start(Buffer.from("\0user\0pencil"));
    const extra = await mech.next(Buffer.from("\0user\0pencil"));
    assert.equal(extra.kind === "failure" && extra.condition, "malformed-request");
    await assert.rejects(mech.start(undefined), TypeError);
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { bareOf, formatJid, parseJid, parseUserJid } from "../../src/xmpp/jid.ts";

describe("jid", () => {
  it("parseJid normalises case in local and domain parts but not in the resource", () => {
    const jid = parseJid("Alice@LocalHost./Phone");
    assert.deepEqual(jid, { local: "alice", domain: "localhost", resource: "Phone" });
    assert.equal(formatJid(jid!), "alice@localhost/Phone");
    assert.equal(bareOf(jid!), "alice@localhost");
  });

  it("parseJid keeps slashes and @ inside the resource", () => {
    assert.deepEqual(parseJid("a@b/c/d@e"), { local: "a", domain: "b", resource: "c/d@e" });
  });

  it("parseJid rejects empty parts, forbidden characters and oversized parts", () => {
    for (const bad of [
      "",
      "@b",
      "a@",
      "a@b/",
      "a b@c",
      'a"@b',
      "a@b c",
      `${"x".repeat(1024)}@b`,
      "a@b/\u0001",
    ]) {
      assert.equal(parseJid(bad), undefined, JSON.stringify(bad));
    }
  });

  it("parseUserJid accepts only bare JIDs with a localpart", () => {
    assert.equal(parseUserJid("bob@example.org"), "bob@example.org");
    assert.equal(parseUserJid("example.org"), undefined);
    assert.equal(parseUserJid("bob@example.org/r"), undefined);
  });
});

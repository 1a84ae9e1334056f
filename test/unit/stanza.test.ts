import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { readdress } from "../../src/xmpp/stanza.ts";
import { parseElement } from "../../src/xmpp/stream-parser.ts";

describe("readdress", () => {
  it("readdress replaces or adds the root's 'to' and keeps everything else", () => {
    const out = readdress(
      '<presence xmlns="jabber:client" from="a@b/c" to="x@y"><show>away</show></presence>',
      "z@y",
    );
    const el = parseElement(out);
    assert.equal(el.attrs.to, "z@y");
    assert.equal(el.attrs.from, "a@b/c");
    assert.equal(el.getChildText("show"), "away");
    assert.equal(parseElement(readdress('<presence from="a@b/c"/>', "q@y")).attrs.to, "q@y");
  });

  it("readdress is not fooled by ' to=' inside another attribute's value", () => {
    // A client sent <presence id='x to='/>; ltx serialised the id as "x to=".
    const out = readdress('<presence id="x to=" from="a@b/c"/>', "bob@d");
    const el = parseElement(out);
    assert.equal(el.attrs.id, "x to=");
    assert.equal(el.attrs.to, "bob@d");
    assert.equal(el.attrs.from, "a@b/c");
  });

  it("readdress escapes the new address", () => {
    const el = parseElement(readdress("<message><body>1</body></message>", 'a"b@c'));
    assert.equal(el.attrs.to, 'a"b@c');
  });
});

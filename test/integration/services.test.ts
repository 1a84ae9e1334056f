/**
 * What clients ask for on login: service discovery (XEP-0030) on the server and on bare JIDs,
 * ping (XEP-0199), software version (XEP-0092), vcard-temp (XEP-0054) and private XML storage
 * (XEP-0049).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Element, xml } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
import { loginRaw, newUser, newUsers, useNode } from "../helpers/fixtures.ts";
import { NS_PING, stanzaError } from "../helpers/raw-client.ts";

const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
const NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items";
const NS_VERSION = "jabber:iq:version";
const NS_VCARD = "vcard-temp";
const NS_PRIVATE = "jabber:iq:private";

const getNode = useNode();

function features(reply: Element): string[] {
  return (
    reply
      .getChild("query", NS_DISCO_INFO)
      ?.getChildren("feature")
      .map((f) => f.attrs.var ?? "") ?? []
  );
}

function identities(reply: Element): Array<{ category: string | undefined; type: string | undefined }> {
  return (
    reply
      .getChild("query", NS_DISCO_INFO)
      ?.getChildren("identity")
      .map((i) => ({ category: i.attrs.category, type: i.attrs.type })) ?? []
  );
}

describe("service discovery", () => {
  test("disco#info on the server shows an IM server and the features it implements", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<query xmlns='${NS_DISCO_INFO}'/>`, { to: node.domain });
    assert.equal(reply.attrs.type, "result", reply.toString());
    assert.equal(reply.attrs.from, node.domain);
    assert.ok(
      identities(reply).some((i) => i.category === "server" && i.type === "im"),
      `identity server/im: ${reply.toString()}`,
    );
    const vars = features(reply);
    for (const feature of [
      NS_DISCO_INFO,
      NS_DISCO_ITEMS,
      NS_PING,
      NS_VERSION,
      NS_VCARD,
      "urn:xmpp:blocking",
      "urn:xmpp:carbons:2",
    ]) {
      assert.ok(vars.includes(feature), `feature ${feature} in ${vars.join(", ")}`);
    }
    assert.equal(new Set(vars).size, vars.length, "no duplicate features");
  });

  test("disco#items on the server returns a result", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<query xmlns='${NS_DISCO_ITEMS}'/>`, { to: node.domain });
    assert.equal(reply.attrs.type, "result", reply.toString());
    assert.ok(reply.getChild("query", NS_DISCO_ITEMS), reply.toString());
  });

  test("disco#info on an unknown node of the server gets item-not-found", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq(
      "get",
      `<query xmlns='${NS_DISCO_INFO}' node='urn:example:no-such-node'/>`,
      {
        to: node.domain,
      },
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "item-not-found");
  });

  test("disco#info and disco#items on the user's own bare JID are answered by the server", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const info = await client.iq("get", `<query xmlns='${NS_DISCO_INFO}'/>`, { to: user.jid });
    assert.equal(info.attrs.type, "result", info.toString());
    // XEP-0030 §3.1 / the registry: an account has the identity account/registered.
    assert.ok(
      identities(info).some((i) => i.category === "account"),
      `an account identity: ${info.toString()}`,
    );
    const items = await client.iq("get", `<query xmlns='${NS_DISCO_ITEMS}'/>`, { to: user.jid });
    assert.equal(items.attrs.type, "result", items.toString());
  });

  test("disco#info on a contact's bare JID is answered by the server", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!);
    const reply = await a.iq("get", `<query xmlns='${NS_DISCO_INFO}'/>`, { to: bob!.jid });
    // The account exists: either its info, or a refusal to tell a non-contact — not a timeout.
    if (reply.attrs.type === "result") {
      assert.ok(
        identities(reply).some((i) => i.category === "account"),
        reply.toString(),
      );
    } else {
      assert.ok(
        ["service-unavailable", "forbidden", "subscription-required"].includes(
          stanzaError(reply)?.condition ?? "",
        ),
        reply.toString(),
      );
    }
  });

  test("disco#info on a user that does not exist gets service-unavailable", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<query xmlns='${NS_DISCO_INFO}'/>`, {
      to: `ghost-${Date.now()}@${node.domain}`,
    });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "service-unavailable");
  });
});

describe("ping and version", () => {
  test("the server answers a ping with an empty result", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: node.domain });
    assert.equal(reply.attrs.type, "result", reply.toString());
    assert.equal(reply.getChildElements().length, 0, "XEP-0199 §4.2: the pong is an empty result");
    // Addressed to a resource of the server, it is answered from that address: clients match a
    // reply by who it was sent to (Smack's reply filter dropped the bare domain's answer).
    const toResource = await client.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: `${node.domain}/probe` });
    assert.equal(toResource.attrs.type, "result", toResource.toString());
    assert.equal(toResource.attrs.from, `${node.domain}/probe`, toResource.toString());
  });

  test("an xmpp.js client pings the server through its iq caller", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectClient(node, { ...user, streamManagement: false }, t);
    const reply = await client.iqCaller.request(
      xml("iq", { type: "get", to: node.domain }, xml("ping", { xmlns: NS_PING })),
    );
    assert.equal(reply.attrs.type, "result");
  });

  test("the server reports its software version", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<query xmlns='${NS_VERSION}'/>`, { to: node.domain });
    assert.equal(reply.attrs.type, "result", reply.toString());
    const query = reply.getChild("query", NS_VERSION);
    assert.ok(query?.getChildText("name"), `a name: ${reply.toString()}`);
    assert.ok(query?.getChildText("version"), `a version: ${reply.toString()}`);
  });
});

describe("vcard-temp", () => {
  test("a user stores a vCard, reads it back, and others can read it", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!);
    const card = `<vCard xmlns='${NS_VCARD}'><FN>Alice Liddell</FN><NICKNAME>alice</NICKNAME><EMAIL><USERID>alice@example.org</USERID></EMAIL></vCard>`;
    const set = await a.iq("set", card);
    assert.equal(set.attrs.type, "result", set.toString());
    const own = await a.iq("get", `<vCard xmlns='${NS_VCARD}'/>`);
    assert.equal(own.attrs.type, "result", own.toString());
    assert.equal(own.getChild("vCard", NS_VCARD)?.getChildText("FN"), "Alice Liddell");
    assert.equal(
      own.getChild("vCard", NS_VCARD)?.getChild("EMAIL")?.getChildText("USERID"),
      "alice@example.org",
      "the whole vCard is kept",
    );
    const b = await loginRaw(t, node, bob!);
    const theirs = await b.iq("get", `<vCard xmlns='${NS_VCARD}'/>`, { to: alice!.jid });
    assert.equal(theirs.attrs.type, "result", theirs.toString());
    assert.equal(theirs.attrs.from, alice!.jid);
    assert.equal(theirs.getChild("vCard", NS_VCARD)?.getChildText("NICKNAME"), "alice");
  });

  test("a vCard set replaces the previous one", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    await client.iq("set", `<vCard xmlns='${NS_VCARD}'><FN>One</FN><TITLE>old</TITLE></vCard>`);
    await client.iq("set", `<vCard xmlns='${NS_VCARD}'><FN>Two</FN></vCard>`);
    const card = (await client.iq("get", `<vCard xmlns='${NS_VCARD}'/>`)).getChild("vCard", NS_VCARD);
    assert.equal(card?.getChildText("FN"), "Two");
    assert.equal(card?.getChild("TITLE"), undefined, "not merged with the old one");
  });

  test("a user without a vCard gets an empty vCard or item-not-found", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<vCard xmlns='${NS_VCARD}'/>`);
    // XEP-0054 §3.1: "the server MUST return a stanza error ... or an IQ-result containing an empty <vCard/>".
    if (reply.attrs.type === "result") {
      assert.equal(reply.getChild("vCard", NS_VCARD)?.getChildElements().length ?? 0, 0, reply.toString());
    } else {
      assert.equal(stanzaError(reply)?.condition, "item-not-found");
    }
  });

  test("setting another user's vCard is refused", async (t) => {
    const node = getNode();
    const [alice, mallory] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!);
    await a.iq("set", `<vCard xmlns='${NS_VCARD}'><FN>Real Alice</FN></vCard>`);
    const m = await loginRaw(t, node, mallory!);
    const reply = await m.iq("set", `<vCard xmlns='${NS_VCARD}'><FN>Fake</FN></vCard>`, { to: alice!.jid });
    assert.equal(reply.attrs.type, "error", reply.toString());
    const card = (await a.iq("get", `<vCard xmlns='${NS_VCARD}'/>`)).getChild("vCard", NS_VCARD);
    assert.equal(card?.getChildText("FN"), "Real Alice");
  });
});

describe("private XML storage", () => {
  const exodus = (nick: string) => `<exodus xmlns='exodus:prefs'><defaultnick>${nick}</defaultnick></exodus>`;

  test("private data is stored and returned per namespace", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    const set = await client.iq("set", `<query xmlns='${NS_PRIVATE}'>${exodus("Hamlet")}</query>`);
    assert.equal(set.attrs.type, "result", set.toString());
    const other = await loginRaw(t, node, user, { resource: "other" });
    const get = await other.iq("get", `<query xmlns='${NS_PRIVATE}'><exodus xmlns='exodus:prefs'/></query>`);
    assert.equal(get.attrs.type, "result", get.toString());
    assert.equal(
      get.getChild("query", NS_PRIVATE)?.getChild("exodus", "exodus:prefs")?.getChildText("defaultnick"),
      "Hamlet",
    );
  });

  test("a namespace with nothing stored returns the empty element", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const get = await client.iq(
      "get",
      `<query xmlns='${NS_PRIVATE}'><nothing xmlns='urn:example:nothing'/></query>`,
    );
    assert.equal(get.attrs.type, "result", get.toString());
    const element = get.getChild("query", NS_PRIVATE)?.getChild("nothing", "urn:example:nothing");
    assert.ok(element, `XEP-0049 §2.2: the empty element comes back: ${get.toString()}`);
    assert.equal(element.getChildElements().length, 0);
  });

  test("storing in a jabber: namespace gets not-acceptable", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    // XEP-0049 §3: protocol namespaces such as jabber:client are reserved; storing in them is
    // refused with not-acceptable.
    for (const ns of ["jabber:client"]) {
      const reply = await client.iq("set", `<query xmlns='${NS_PRIVATE}'><x xmlns='${ns}'/></query>`);
      assert.equal(reply.attrs.type, "error", reply.toString());
      assert.equal(stanzaError(reply)?.condition, "not-acceptable", ns);
    }
  });

  test("a private storage query without a child gets not-acceptable or bad-request", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", `<query xmlns='${NS_PRIVATE}'/>`);
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.ok(
      ["not-acceptable", "bad-request"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
  });

  test("another user's private data is forbidden", async (t) => {
    const node = getNode();
    const [alice, mallory] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!);
    await a.iq("set", `<query xmlns='${NS_PRIVATE}'>${exodus("secret")}</query>`);
    const m = await loginRaw(t, node, mallory!);
    const reply = await m.iq("get", `<query xmlns='${NS_PRIVATE}'><exodus xmlns='exodus:prefs'/></query>`, {
      to: alice!.jid,
    });
    assert.equal(reply.attrs.type, "error", reply.toString());
    // XEP-0049 §3: "the server MUST return a <forbidden/> error" (service-unavailable also hides it).
    assert.ok(
      ["forbidden", "service-unavailable"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
    assert.doesNotMatch(reply.toString(), /secret/);
  });
});

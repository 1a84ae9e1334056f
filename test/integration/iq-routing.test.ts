/**
 * RFC 6120 §8.2.3 and RFC 6121 §8.5: iq semantics and routing errors — unknown payloads,
 * bare and full JIDs of other users, offline resources, malformed iqs, and replies that must
 * not be answered.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { connectClient } from "../helpers/client.ts";
import { loginRaw, newUser, newUsers, useNode } from "../helpers/fixtures.ts";
import { NS_PING, stanzaError } from "../helpers/raw-client.ts";

const getNode = useNode();

const UNKNOWN = "<query xmlns='urn:example:unknown-namespace'/>";

describe("iq routing", () => {
  test("c2s replies service-unavailable to an unknown iq get to the server", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("get", UNKNOWN, { to: node.domain, id: "unknown-1" });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(reply.attrs.id, "unknown-1", "the error mirrors the id (RFC 6120 §8.1.3)");
    assert.deepEqual(stanzaError(reply), { type: "cancel", condition: "service-unavailable" });
  });

  test("c2s replies service-unavailable to an unknown iq set with no 'to'", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    // RFC 6120 §10.3.3: no 'to' means the user's own account, which the server answers.
    const reply = await client.iq("set", UNKNOWN);
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "service-unavailable");
  });

  test("an iq with an unknown payload to another user's bare JID is answered by the server", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    const b = await loginRaw(t, node, bob!, { priority: 0 });
    // RFC 6121 §8.5.2.1.2: an iq to a bare JID is handled by the server on the user's behalf,
    // never delivered to a resource.
    const reply = await a.iq("get", UNKNOWN, { to: bob!.jid });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "service-unavailable");
    assert.equal(reply.attrs.from, bob!.jid);
    const earlier = b.pending().filter((el) => el.getName() === "iq" && el.attrs.type === "get");
    assert.deepEqual(earlier.map(String), [], "not delivered to bob's resource");
  });

  test("an iq to a full JID is delivered to that resource and its reply comes back", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    // An independent client (xmpp.js) answers pings itself.
    const b = await connectClient(node, { ...bob!, resource: "pingable", streamManagement: false }, t);
    const reply = await a.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: b.jid, id: "c2c-ping" });
    assert.equal(reply.attrs.type, "result", reply.toString());
    assert.equal(reply.attrs.from, b.jid);
    assert.equal(reply.attrs.id, "c2c-ping");
  });

  test("an iq to the full JID of an offline resource gets service-unavailable", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2);
    const a = await loginRaw(t, node, alice!, { priority: 0 });
    await loginRaw(t, node, bob!, { resource: "online", priority: 0 });
    // RFC 6121 §8.5.3.2.1: "For an IQ stanza, the server MUST return a <service-unavailable/>".
    const reply = await a.iq("get", `<ping xmlns='${NS_PING}'/>`, { to: `${bob!.jid}/offline` });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "service-unavailable");
  });

  test("an iq to a user that does not exist gets service-unavailable", async (t) => {
    const node = getNode();
    const a = await loginRaw(t, node, await newUser(node));
    // RFC 6121 §8.5.1: "For an IQ stanza, the server MUST return a <service-unavailable/>".
    for (const to of [`nobody-${Date.now()}@${node.domain}`, `nobody-${Date.now()}@${node.domain}/res`]) {
      const reply = await a.iq("get", `<ping xmlns='${NS_PING}'/>`, { to });
      assert.equal(reply.attrs.type, "error", reply.toString());
      assert.equal(stanzaError(reply)?.condition, "service-unavailable", to);
    }
  });

  test("an iq get without a child gets bad-request", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    // RFC 6120 §8.2.3: "An IQ stanza of type "get" or "set" MUST contain exactly one child element".
    const reply = await client.iq("get", "", { to: node.domain });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "bad-request");
  });

  test("an iq set with two children gets bad-request", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    const reply = await client.iq("set", `<ping xmlns='${NS_PING}'/><ping xmlns='${NS_PING}'/>`, {
      to: node.domain,
    });
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "bad-request");
  });

  test("an iq with an unknown type gets bad-request", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    client.send(`<iq type='fetch' id='bad-type' to='${node.domain}'><ping xmlns='${NS_PING}'/></iq>`);
    const reply = await client.waitFor(
      (el) => el.getName() === "iq" && el.attrs.id === "bad-type",
      "the reply to an iq of type 'fetch'",
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "bad-request");
  });

  test("an unsolicited iq result or error is not answered", async (t) => {
    const node = getNode();
    const client = await loginRaw(t, node, await newUser(node));
    client.send(`<iq type='result' id='unsolicited-1' to='${node.domain}'/>`);
    client.send(
      `<iq type='error' id='unsolicited-2' to='${node.domain}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`,
    );
    // RFC 6120 §8.2.3: an entity "MUST NOT respond" to an iq result or error (no reply loops).
    client.send(`<iq type='get' id='after-unsolicited' to='${node.domain}'><ping xmlns='${NS_PING}'/></iq>`);
    const { match, before } = await client.collectUntil(
      (el) => el.getName() === "iq" && el.attrs.id === "after-unsolicited",
      "the ping reply",
    );
    assert.equal(match.attrs.type, "result", match.toString());
    assert.deepEqual(
      before.filter((el) => el.attrs.id?.startsWith("unsolicited")).map(String),
      [],
      "no reply to an unsolicited result or error",
    );
    assert.equal(client.streamError, undefined);
  });
});

describe("pipelined requests", () => {
  test("a client that pipelines 300 store-backed iqs gets every answer", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await loginRaw(t, node, user);
    // Far more than a session may have in its handlers at once: the server stops reading the
    // socket while its store work is in flight, and must resume, or the tail never arrives.
    const count = 300;
    let batch = "";
    for (let i = 0; i < count; i++) batch += `<iq type='get' id='pipe-${i}'><vCard xmlns='vcard-temp'/></iq>`;
    client.write(batch);
    const answered: string[] = [];
    while (answered.length < count) {
      const reply = await client.waitFor(
        (el) =>
          el.getName() === "iq" &&
          (el.attrs.id ?? "").startsWith("pipe-") &&
          !answered.includes(el.attrs.id!),
        `answer ${answered.length}`,
      );
      assert.equal(reply.attrs.type, "result", reply.toString());
      answered.push(reply.attrs.id!);
    }
    assert.equal(new Set(answered).size, count);
  });
});

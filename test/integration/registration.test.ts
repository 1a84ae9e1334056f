/**
 * XEP-0077 In-Band Registration: off by default, on with --allow-registration, rate-limited per
 * address except for allow-listed addresses (loopback by default).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { connectRaw, useNode } from "../helpers/fixtures.ts";
import { bareJid, esc, NS_SASL, type RawClient, stanzaError } from "../helpers/raw-client.ts";
import { type StartedNode, startNode } from "../helpers/start-node.ts";

const NS_REGISTER = "jabber:iq:register";
const NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register";

const getDefaultNode = useNode();

/** Connects, negotiates TLS, and returns the pre-authentication features. */
async function preAuth(
  t: Parameters<typeof connectRaw>[0],
  node: StartedNode,
): Promise<[RawClient, Element]> {
  const client = await connectRaw(t, node, { label: "registrant" });
  await client.openStream();
  const features = await client.startTls();
  return [client, features];
}

function register(client: RawClient, username: string, password: string): Promise<Element> {
  return client.iq(
    "set",
    `<query xmlns='${NS_REGISTER}'><username>${esc(username)}</username><password>${esc(password)}</password></query>`,
  );
}

async function canLogIn(
  t: Parameters<typeof connectRaw>[0],
  node: StartedNode,
  username: string,
  password: string,
) {
  const client = await connectRaw(t, node, { label: `login-${username}` });
  await client.openStream();
  await client.startTls();
  const outcome = await client.authScram("SCRAM-SHA-256", username, password);
  client.destroy();
  return outcome.is("success", NS_SASL);
}

function freshName(prefix = "reg"): string {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

describe("registration off (the default)", () => {
  test("registration is not advertised and an attempt creates no account", async (t) => {
    const node = getDefaultNode();
    const [client, features] = await preAuth(t, node);
    assert.equal(features.getChild("register", NS_REGISTER_FEATURE), undefined, features.toString());
    const username = freshName();
    client.send(
      `<iq type='set' id='reg-off'><query xmlns='${NS_REGISTER}'><username>${username}</username><password>pw</password></query></iq>`,
    );
    const answer = await client.waitForElementOrStreamError((el) => el.attrs.id === "reg-off", "the reply");
    if (answer.element) {
      assert.equal(answer.element.attrs.type, "error", answer.element.toString());
      // XEP-0077 §3.2 / §8: not-allowed (or service-unavailable when the feature is absent).
      assert.ok(
        ["not-allowed", "service-unavailable", "forbidden"].includes(
          stanzaError(answer.element)?.condition ?? "",
        ),
        answer.element.toString(),
      );
    } else {
      // Or, registration being off, the iq is just a stanza before authentication.
      assert.equal(answer.streamError, "not-authorized");
    }
    assert.equal(await canLogIn(t, node, username, "pw"), false, "no account was created");
  });
});

describe("registration on (--allow-registration)", () => {
  const getNode = useNode({ allowRegistration: true });

  test("registration is advertised, the form asks for username and password, and the new account logs in", async (t) => {
    const node = await startNode(t, { allowRegistration: true });
    const [client, features] = await preAuth(t, node);
    assert.ok(
      features.getChild("register", NS_REGISTER_FEATURE),
      `iq-register feature: ${features.toString()}`,
    );
    const form = await client.iq("get", `<query xmlns='${NS_REGISTER}'/>`);
    assert.equal(form.attrs.type, "result", form.toString());
    const query = form.getChild("query", NS_REGISTER);
    assert.ok(query?.getChild("username"), `a username field: ${form.toString()}`);
    assert.ok(query?.getChild("password"), `a password field: ${form.toString()}`);

    const username = freshName();
    const done = await register(client, username, "s3cret-pw");
    assert.equal(done.attrs.type, "result", done.toString());
    assert.equal(await canLogIn(t, node, username, "s3cret-pw"), true, "the registered account logs in");
    // The registering stream can go on to authenticate as the new account too.
    const outcome = await client.authPlain(username, "s3cret-pw");
    assert.ok(outcome.is("success", NS_SASL), outcome.toString());
    await client.openStream();
    assert.equal(bareJid(await client.bind()), `${username}@${node.domain}`);
  });

  test("a logged-in user changes its password in-band (XEP-0077 §3.3)", async (t) => {
    const node = getNode();
    const username = freshName("chpw");
    await node.createUser(`${username}@${node.domain}`, "old-pw");
    const client = await connectRaw(t, node, { label: username });
    await client.login(username, "old-pw");
    const changed = await client.iq(
      "set",
      `<query xmlns='${NS_REGISTER}'><username>${username}</username><password>new-pw</password></query>`,
    );
    assert.equal(changed.attrs.type, "result", changed.toString());
    assert.equal(await canLogIn(t, node, username, "new-pw"), true, "the new password works");
    assert.equal(await canLogIn(t, node, username, "old-pw"), false, "the old password no longer works");
  });

  test("a taken username gets conflict and the existing password is kept", async (t) => {
    const node = getNode();
    const username = freshName();
    const [first] = await preAuth(t, node);
    assert.equal((await register(first, username, "original")).attrs.type, "result");
    const [second] = await preAuth(t, node);
    const reply = await register(second, username, "hijack");
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.equal(stanzaError(reply)?.condition, "conflict");
    assert.equal(await canLogIn(t, node, username, "original"), true);
    assert.equal(await canLogIn(t, node, username, "hijack"), false);
  });

  test("a registration without a password gets not-acceptable", async (t) => {
    const node = getNode();
    const [client] = await preAuth(t, node);
    const reply = await client.iq(
      "set",
      `<query xmlns='${NS_REGISTER}'><username>${freshName()}</username></query>`,
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    // XEP-0077 §3.1: missing required information → <not-acceptable/> (bad-request is also seen).
    assert.ok(
      ["not-acceptable", "bad-request"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
  });

  test("an invalid username gets jid-malformed or not-acceptable", async (t) => {
    const node = getNode();
    const [client] = await preAuth(t, node);
    const reply = await register(client, "bad@name", "pw");
    assert.equal(reply.attrs.type, "error", reply.toString());
    assert.ok(
      ["jid-malformed", "not-acceptable", "bad-request"].includes(stanzaError(reply)?.condition ?? ""),
      reply.toString(),
    );
  });

  test("registrations from loopback are not rate-limited by default", async (t) => {
    const node = getNode();
    // The default limit is 5 per window for addresses that are not allow-listed.
    for (let i = 0; i < 7; i++) {
      const [client] = await preAuth(t, node);
      const reply = await register(client, freshName(`many${i}`), "pw");
      assert.equal(reply.attrs.type, "result", `registration ${i}: ${reply.toString()}`);
      client.destroy();
    }
  });
});

describe("registration rate limit", () => {
  test("registrations per address are limited when the address is not allow-listed", async (t) => {
    const node = await startNode(t, {
      allowRegistration: true,
      config: { registration: { allowList: [], perAddressPerWindow: 2, windowMs: 3_600_000 } },
    });
    for (let i = 0; i < 2; i++) {
      const [client] = await preAuth(t, node);
      const reply = await register(client, freshName(`ok${i}`), "pw");
      assert.equal(reply.attrs.type, "result", `registration ${i}: ${reply.toString()}`);
      client.destroy();
    }
    // Every further attempt is refused, whichever worker accepts the connection.
    for (let i = 0; i < 3; i++) {
      const [client] = await preAuth(t, node);
      const username = freshName(`over${i}`);
      const reply = await register(client, username, "pw");
      assert.equal(reply.attrs.type, "error", `attempt ${i}: ${reply.toString()}`);
      assert.ok(
        ["resource-constraint", "policy-violation", "not-allowed", "not-acceptable"].includes(
          stanzaError(reply)?.condition ?? "",
        ),
        reply.toString(),
      );
      client.destroy();
      assert.equal(await canLogIn(t, node, username, "pw"), false, "no account over the limit");
    }
  });
});

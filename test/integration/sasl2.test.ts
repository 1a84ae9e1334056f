/**
 * XEP-0388 (SASL2) with XEP-0386 (Bind 2) and XEP-0198 inline, as Conversations, Monal and
 * xmpp.js log in: one `<authenticate/>` authenticates, binds a resource and enables stream
 * management (or resumes a session) in one round trip, with no stream restart. Raw XML where
 * the protocol's shape matters, and xmpp.js' own SASL2, Bind 2 and stream management beside it.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import type { Element } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
import {
  connectRaw,
  isMessageWithBody,
  loginRaw,
  newUsers,
  type TestUser,
  useNode,
} from "../helpers/fixtures.ts";
import {
  bareJid,
  NS_BIND,
  NS_BIND2,
  NS_SASL,
  NS_SASL2,
  NS_SM,
  NS_STREAM,
  NS_TLS,
  type RawClient,
} from "../helpers/raw-client.ts";
import type { AfterHook, StartedNode } from "../helpers/start-node.ts";

const getNode = useNode();

/** A raw connection up to SASL2's features (STARTTLS when offered). */
async function beforeAuth(
  t: AfterHook,
  node: StartedNode,
  label: string,
): Promise<{ client: RawClient; features: Element }> {
  const client = await connectRaw(t, node, { label });
  let features = await client.openStream();
  if (features.getChild("starttls", NS_TLS) !== undefined) features = await client.startTls();
  return { client, features };
}

/** What a mobile client sends beside SASL2: its user agent, and Bind 2 with XEP-0198 enabled. */
function bindInline(agent: string, tag = "Conversations"): string {
  return (
    `<user-agent id='${agent}'><software>Test</software><device>Phone</device></user-agent>` +
    `<bind xmlns='${NS_BIND2}'><tag>${tag}</tag><enable xmlns='${NS_SM}' resume='true'/></bind>`
  );
}

/** The features that follow SASL2's <success/> (XEP-0388 §2.6.1: no restart). */
function featuresAfter(client: RawClient, success: Element): Promise<Element> {
  const at = client.received.indexOf(success);
  return client.waitFor(
    (el) => el.is("features", NS_STREAM) && client.received.indexOf(el) > at,
    "the stream features after <success/>",
  );
}

async function sasl2Login(
  t: AfterHook,
  node: StartedNode,
  user: TestUser,
  inner: string,
  label: string,
  options: { autoAck?: boolean; resumeH?: number } = {},
): Promise<{ client: RawClient; success: Element }> {
  const { client } = await beforeAuth(t, node, label);
  const success = await client.authSasl2("SCRAM-SHA-1", user.username, user.password, inner, options);
  assert.ok(success.is("success", NS_SASL2), `${label}: ${success.toString()}`);
  return { client, success };
}

describe("SASL2 and Bind 2", () => {
  test("the features offer SASL2 beside SASL, with Bind 2 and XEP-0198 inline", async (t) => {
    const { features } = await beforeAuth(t, getNode(), "features");
    const sasl2 = features.getChild("authentication", NS_SASL2);
    assert.ok(sasl2, `SASL2 offered: ${features.toString()}`);
    assert.deepEqual(
      sasl2.getChildren("mechanism").map((m) => m.text()),
      features
        .getChild("mechanisms", NS_SASL)!
        .getChildren("mechanism")
        .map((m) => m.text()),
      "the same mechanisms as SASL",
    );
    const inline = sasl2.getChild("inline");
    assert.ok(inline?.getChild("sm", NS_SM), "XEP-0198 resumption inline");
    const bind = inline?.getChild("bind", NS_BIND2);
    assert.ok(
      bind
        ?.getChild("inline")
        ?.getChildren("feature")
        .some((f) => f.attrs.var === NS_SM),
      `Bind 2 with XEP-0198 inline: ${sasl2.toString()}`,
    );
  });

  test("one <authenticate/> authenticates, binds a resource named after the tag and enables XEP-0198", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2, "bindtwo");
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    const { client: a, success } = await sasl2Login(t, node, alice!, bindInline(randomUUID()), "alice");
    const jid = success.getChildText("authorization-identifier") ?? "";
    assert.match(jid, new RegExp(`^${alice!.jid.replaceAll(".", "\\.")}/Conversations/[A-Za-z0-9_-]+$`), jid);
    const enabled = success.getChild("bound", NS_BIND2)?.getChild("enabled", NS_SM);
    assert.equal(enabled?.attrs.resume, "true", `XEP-0198 enabled in <bound/>: ${success.toString()}`);
    const features = await featuresAfter(a, success);
    assert.equal(features.getChild("bind", NS_BIND), undefined, "already bound: no RFC 6120 bind offered");
    assert.ok(
      features.getChild("ver", "urn:xmpp:features:rosterver"),
      `roster versioning: ${features.toString()}`,
    );
    assert.equal(features.getChild("sm", NS_SM), undefined, "XEP-0198 already enabled");
    // The stream is live without a restart: presence, a message each way, and XEP-0198 counts.
    a.send(`<presence><priority>0</priority></presence>`);
    a.send(`<message to='${bob!.jid}' type='chat'><body>hello over SASL2</body></message>`);
    const got = await b.waitFor(isMessageWithBody("hello over SASL2"), "alice's message");
    assert.equal(got.attrs.from, jid);
    b.send(`<message to='${jid}' type='chat'><body>back</body></message>`);
    await a.waitFor(isMessageWithBody("back"), "bob's answer");
    assert.equal(await a.requestAck(), 2, "the server handled alice's presence and message");
  });

  test("the same device gets the same resource and replaces its old session; another device another", async (t) => {
    const node = getNode();
    const [alice] = await newUsers(node, 1, "device");
    const agent = randomUUID();
    const first = await sasl2Login(t, node, alice!, bindInline(agent), "phone");
    const again = await sasl2Login(t, node, alice!, bindInline(agent), "phone again");
    const other = await sasl2Login(t, node, alice!, bindInline(randomUUID()), "laptop");
    const resource = (s: Element) => s.getChildText("authorization-identifier");
    assert.equal(resource(again.success), resource(first.success), "stable per user agent");
    assert.notEqual(resource(other.success), resource(first.success));
    // RFC 6120 §7.7.2.2: the older session of that resource is replaced.
    assert.equal(await first.client.waitForStreamError(), "conflict");
    assert.ok(!resource(first.success)!.includes(agent), "the user agent's id is not shown");
  });

  test("a wrong password is SASL2's <failure/> with the RFC 6120 condition; nothing is bound", async (t) => {
    const node = getNode();
    const [alice] = await newUsers(node, 1, "wrong");
    const { client } = await beforeAuth(t, node, "wrong password");
    const outcome = await client.authSasl2(
      "SCRAM-SHA-1",
      alice!.username,
      "not the password",
      bindInline(randomUUID()),
    );
    assert.ok(outcome.is("failure", NS_SASL2), outcome.toString());
    assert.ok(outcome.getChild("not-authorized", NS_SASL), outcome.toString());
    client.send(`<message to='${alice!.jid}'><body>x</body></message>`);
    assert.equal(await client.waitForStreamError(), "not-authorized", "still unauthenticated");
  });

  test("a <resume/> inline: <resumed/> in <success/>, then exactly what the client had not acknowledged", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2, "inlres");
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    const agent = randomUUID();
    const { client: a, success } = await sasl2Login(t, node, alice!, bindInline(agent), "alice");
    const full = success.getChildText("authorization-identifier")!;
    const previd = success.getChild("bound", NS_BIND2)!.getChild("enabled", NS_SM)!.attrs.id!;
    a.send(`<presence><priority>0</priority></presence>`);
    assert.equal(await a.requestAck(), 1);
    for (const body of ["m1", "m2", "m3"])
      b.send(`<message to='${full}' type='chat'><body>${body}</body></message>`);
    await a.waitFor(isMessageWithBody("m3"), "m3");
    // Only m1 acknowledged (its XEP-0198 number), then the connection is gone.
    const counted = a.received
      .slice(a.received.indexOf(success) + 1)
      .filter((el) => ["message", "presence", "iq"].includes(el.getName()));
    const m1Count = counted.findIndex(isMessageWithBody("m1")) + 1;
    a.send(`<a xmlns='${NS_SM}' h='${m1Count}'/>`);
    a.reset();
    await a.whenClosed;
    // As Conversations does: the <resume/> and, should it fail, a <bind/> to fall back on.
    const { client: back, success: resumedSuccess } = await sasl2Login(
      t,
      node,
      alice!,
      `<resume xmlns='${NS_SM}' previd='${previd}' h='${m1Count}'/>${bindInline(agent)}`,
      "alice back",
      { resumeH: m1Count, autoAck: true },
    );
    const resumed = resumedSuccess.getChild("resumed", NS_SM);
    assert.equal(resumed?.attrs.previd, previd, resumedSuccess.toString());
    assert.equal(resumed?.attrs.h, "1", "the server had handled alice's presence");
    assert.equal(resumedSuccess.getChild("bound", NS_BIND2), undefined, "resumed: the bind is ignored");
    assert.equal(resumedSuccess.getChildText("authorization-identifier"), full, "the same full JID");
    const afterResume = await featuresAfter(back, resumedSuccess);
    assert.equal(afterResume.getChild("sm", NS_SM), undefined, "resumed: XEP-0198 is on");
    await back.waitFor(isMessageWithBody("m3"), "m3 again");
    assert.deepEqual(
      back.received.filter((el) => el.getName() === "message").map((el) => el.getChildText("body")),
      ["m2", "m3"],
      "the unacknowledged stanzas, in order, m1 not repeated",
    );
    back.send(`<message to='${bob!.jid}' type='chat'><body>resumed</body></message>`);
    assert.equal((await b.waitFor(isMessageWithBody("resumed"), "alice after resuming")).attrs.from, full);
  });

  test("a resumption that fails inline binds instead: <failed/> and <bound/> in one <success/>", async (t) => {
    const node = getNode();
    const [alice] = await newUsers(node, 1, "inlfail");
    const { success } = await sasl2Login(
      t,
      node,
      alice!,
      `<resume xmlns='${NS_SM}' previd='0.not-a-session' h='0'/>${bindInline(randomUUID())}`,
      "alice",
    );
    assert.ok(success.getChild("failed", NS_SM)?.getChild("item-not-found"), success.toString());
    assert.ok(success.getChild("bound", NS_BIND2)?.getChild("enabled", NS_SM), success.toString());
    assert.equal(bareJid(success.getChildText("authorization-identifier")!), alice!.jid);
  });

  test("an inline <resume/> acknowledging more than was sent: <failed h/>, a fresh bind, the old stanzas offline", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2, "inlhigh");
    const b = await loginRaw(t, node, bob!, { label: "bob" });
    const agent = randomUUID();
    const { client: a, success } = await sasl2Login(t, node, alice!, bindInline(agent), "alice");
    const full = success.getChildText("authorization-identifier")!;
    const previd = success.getChild("bound", NS_BIND2)!.getChild("enabled", NS_SM)!.attrs.id!;
    b.send(`<message to='${full}' type='chat'><body>not acknowledged</body></message>`);
    await a.waitFor(isMessageWithBody("not acknowledged"), "the message");
    a.reset();
    await a.whenClosed;
    const { client: again, success: second } = await sasl2Login(
      t,
      node,
      alice!,
      `<resume xmlns='${NS_SM}' previd='${previd}' h='40'/>${bindInline(agent)}`,
      "alice again",
    );
    const failed = second.getChild("failed", NS_SM);
    assert.ok(failed?.getChild("undefined-condition") !== undefined, second.toString());
    assert.equal(failed?.attrs.h, "0", "the server had handled none of alice's stanzas");
    // The old session ended, so the device's resource is free for the fresh bind.
    assert.equal(second.getChildText("authorization-identifier"), full, second.toString());
    assert.ok(second.getChild("bound", NS_BIND2)?.getChild("enabled", NS_SM), second.toString());
    again.send("<presence/>");
    await again.waitFor(isMessageWithBody("not acknowledged"), "the message, from offline storage");
  });

  test("Bind 2 without XEP-0198 inline: the features offer it, and <enable/> the §3 way works", async (t) => {
    const node = getNode();
    const [alice] = await newUsers(node, 1, "latesm");
    const { client, success } = await sasl2Login(
      t,
      node,
      alice!,
      `<user-agent id='${randomUUID()}'/><bind xmlns='${NS_BIND2}'><tag>Plain</tag></bind>`,
      "alice",
    );
    assert.equal(success.getChild("bound", NS_BIND2)?.getChild("enabled", NS_SM), undefined);
    const features = await featuresAfter(client, success);
    assert.ok(features.getChild("sm", NS_SM), features.toString());
    const enabled = await client.enableSm({ resume: true });
    assert.ok(enabled.is("enabled", NS_SM), enabled.toString());
  });

  test("without Bind 2 the client binds the RFC 6120 way on the same stream", async (t) => {
    const node = getNode();
    const [alice] = await newUsers(node, 1, "nobind");
    const { client, success } = await sasl2Login(t, node, alice!, "", "alice");
    assert.equal(success.getChildText("authorization-identifier"), alice!.jid, "a bare JID: nothing bound");
    const features = await featuresAfter(client, success);
    assert.ok(features.getChild("bind", NS_BIND), features.toString());
    const jid = await client.bind("desk");
    assert.equal(jid, `${alice!.jid}/desk`);
  });

  test("xmpp.js logs in with its own SASL2, Bind 2 and XEP-0198 inline", async (t) => {
    const node = getNode();
    const [alice, bob] = await newUsers(node, 2, "xmppjs");
    const b = await loginRaw(t, node, bob!, { priority: 0, label: "bob" });
    const client = await connectClient(
      node,
      { username: alice!.username, password: alice!.password, mechanism: "SCRAM-SHA-1", sasl2: "xmppjs" },
      t,
    );
    assert.match(client.jid, new RegExp(`^${alice!.jid.replaceAll(".", "\\.")}/xmppjs/`), client.jid);
    assert.equal(client.smEnabled?.attrs.resume, "true", "XEP-0198 enabled inline, resumable");
    b.send(`<message to='${client.jid}' type='chat'><body>to xmpp.js</body></message>`);
    await client.waitForStanza((el) => el.getChildText("body") === "to xmpp.js", "bob's message");
  });
});

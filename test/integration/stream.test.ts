/**
 * RFC 6120 stream negotiation as a client sees it: features at each stage, STARTTLS and direct
 * TLS, SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN), failures and their throttling, resource binding,
 * the legacy session iq, whitespace keepalives and the closing handshake.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { connectClient } from "../helpers/client.ts";
import { connectRaw, newUser, newUsers, useNode } from "../helpers/fixtures.ts";
import {
  bareJid,
  NS_BIND,
  NS_SASL,
  NS_SESSION,
  NS_SM,
  NS_STREAM,
  NS_TLS,
  type RawClient,
} from "../helpers/raw-client.ts";
import { readGeneratedCertificate, startNode } from "../helpers/start-node.ts";
import { tcpOnly } from "../helpers/ws-bridge.ts";

const getNode = useNode();

function mechanisms(features: import("@xmpp/xml").Element): string[] {
  return (
    features
      .getChild("mechanisms", NS_SASL)
      ?.getChildren("mechanism")
      .map((m) => m.text()) ?? []
  );
}

/** A PLAIN attempt's outcome as text: the SASL answer, or the stream error that came instead. */
async function plainOutcome(client: RawClient, username: string, password: string): Promise<string> {
  const payload = Buffer.from(`\0${username}\0${password}`).toString("base64");
  client.send(`<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${payload}</auth>`);
  const answer = await client.waitForElementOrStreamError(
    (el) => el.getNS() === NS_SASL && ["success", "failure"].includes(el.getName()),
    "the SASL outcome",
  );
  return answer.element ? answer.element.toString() : `stream error ${answer.streamError}`;
}

describe("stream negotiation", () => {
  test("c2s opens a stream with its own header and requires STARTTLS before anything else", async (t) => {
    if (tcpOnly(t, "STARTTLS (RFC 7395 carries TLS below the WebSocket)")) return;
    const node = getNode();
    const client = await connectRaw(t, node);
    const features = await client.openStream();
    const header = client.header!;
    // RFC 6120 §4.7: the response header carries from (the domain), a fresh id and version 1.0.
    assert.equal(header.attrs.from, node.domain);
    assert.ok(
      header.attrs.id && header.attrs.id.length >= 8,
      `stream id should be unpredictable: ${header.attrs.id}`,
    );
    assert.equal(header.attrs.version, "1.0");
    assert.equal(header.attrs.xmlns, "jabber:client");
    const starttls = features.getChild("starttls", NS_TLS);
    assert.ok(starttls, `STARTTLS offered: ${features.toString()}`);
    // RFC 6120 §5.3.1: mandatory-to-negotiate TLS is flagged with <required/>.
    assert.ok(starttls.getChild("required"), "STARTTLS is marked <required/>");
    assert.equal(features.getChild("bind", NS_BIND), undefined, "no bind before authentication");
  });

  test("c2s refuses SASL before TLS when TLS is required", async (t) => {
    if (tcpOnly(t, "STARTTLS")) return;
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    const features = await client.openStream();
    // Either mechanisms are not offered at all before TLS, or using one gets <encryption-required/>
    // (RFC 6120 §6.5.5); either way the login must not succeed.
    client.send(
      `<auth xmlns='${NS_SASL}' mechanism='PLAIN'>${Buffer.from(`\0${user.username}\0${user.password}`).toString("base64")}</auth>`,
    );
    const answer = await client.waitForElementOrStreamError(
      (el) => el.getNS() === NS_SASL && ["success", "failure"].includes(el.getName()),
      "a SASL answer",
    );
    if (answer.streamError !== undefined) {
      assert.ok(
        ["policy-violation", "not-authorized", "unsupported-feature"].includes(answer.streamError),
        `stream error: ${answer.streamError}`,
      );
    } else {
      const element = answer.element;
      assert.equal(element.getName(), "failure", `PLAIN before TLS must not succeed: ${element.toString()}`);
      if (mechanisms(features).length > 0) {
        assert.ok(
          element.getChild("encryption-required"),
          `expected <encryption-required/>: ${element.toString()}`,
        );
      }
    }
  });

  test("c2s negotiates STARTTLS, then SASL, then bind, with the right features at each stage", async (t) => {
    if (tcpOnly(t, "STARTTLS")) return;
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.openStream();
    const firstId = client.header!.attrs.id;
    const tlsFeatures = await client.startTls();
    assert.ok(client.secure);
    assert.notEqual(
      client.header!.attrs.id,
      firstId,
      "a new stream id after the TLS restart (RFC 6120 §4.3.2)",
    );
    assert.equal(tlsFeatures.getChild("starttls", NS_TLS), undefined, "no STARTTLS over TLS");
    for (const mechanism of ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]) {
      assert.ok(
        mechanisms(tlsFeatures).includes(mechanism),
        `${mechanism} offered: ${tlsFeatures.toString()}`,
      );
    }
    assert.equal(tlsFeatures.getChild("bind", NS_BIND), undefined, "no bind before SASL");
    const outcome = await client.authScram("SCRAM-SHA-256", user.username, user.password);
    assert.equal(outcome.getName(), "success", outcome.toString());
    const postAuth = await client.openStream();
    assert.ok(postAuth.getChild("bind", NS_BIND), `bind offered after SASL: ${postAuth.toString()}`);
    assert.equal(postAuth.getChild("mechanisms", NS_SASL), undefined, "no SASL after SASL");
    assert.ok(postAuth.getChild("sm", NS_SM), `XEP-0198 offered after SASL: ${postAuth.toString()}`);
    const session = postAuth.getChild("session", NS_SESSION);
    if (session) assert.ok(session.getChild("optional"), "a session feature, if advertised, is <optional/>");
    const jid = await client.bind("laptop");
    assert.equal(jid, `${user.jid}/laptop`);
  });

  test("with tls.requireBeforeAuth false, STARTTLS is optional and SASL works over plain TCP", async (t) => {
    if (tcpOnly(t, "STARTTLS")) return;
    const node = await startNode(t, { config: { tls: { requireBeforeAuth: false } } });
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    const features = await client.openStream();
    const starttls = features.getChild("starttls", NS_TLS);
    assert.ok(starttls, `STARTTLS still offered: ${features.toString()}`);
    assert.equal(starttls.getChild("required"), undefined, "but not required");
    assert.ok(
      mechanisms(features).includes("SCRAM-SHA-1"),
      `SASL offered before TLS: ${features.toString()}`,
    );
    const plain = await connectRaw(t, node, { label: "plain" });
    const jid = await plain.login(user.username, user.password, { starttls: false, resource: "plain" });
    assert.equal(jid, `${user.jid}/plain`);
    assert.equal(plain.secure, false);
  });

  test("direct TLS port speaks XMPP over TLS from the first byte (XEP-0368)", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node, { directTls: true });
    assert.ok(client.secure);
    const features = await client.openStream();
    assert.equal(features.getChild("starttls", NS_TLS), undefined, "no STARTTLS on a TLS connection");
    assert.ok(mechanisms(features).includes("SCRAM-SHA-1"), features.toString());
    const outcome = await client.authPlain(user.username, user.password);
    assert.equal(outcome.getName(), "success", outcome.toString());
    await client.openStream();
    assert.equal(await client.bind("phone"), `${user.jid}/phone`);
  });

  test("the TLS certificate is the self-signed one generated in the data dir, for the domain", async (t) => {
    if (tcpOnly(t, "the c2s TLS handshake")) return;
    const node = getNode();
    const pem =
      node.kind === "prosody"
        ? await readFile(join(node.dataDir, "cert.pem"), "utf8")
        : await readGeneratedCertificate(node.dataDir);
    assert.ok(pem, `a PEM certificate under ${join(node.dataDir, "tls")}`);
    const onDisk = new X509Certificate(pem);
    assert.ok(
      onDisk.checkHost(node.domain),
      `certificate is valid for ${node.domain}: ${onDisk.subjectAltName}`,
    );
    for (const directTls of [true, false]) {
      const client = await connectRaw(t, node, { directTls });
      if (!directTls) {
        await client.openStream();
        await client.startTls();
      }
      const peer = (client.socket as TLSSocket).getPeerX509Certificate();
      assert.ok(peer, "the server presents a certificate");
      assert.equal(
        peer.fingerprint256,
        onDisk.fingerprint256,
        `${directTls ? "direct TLS" : "STARTTLS"} cert`,
      );
    }
  });
});

describe("SASL", () => {
  for (const mechanism of ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"] as const) {
    test(`an xmpp.js client logs in with ${mechanism} over STARTTLS and binds`, async (t) => {
      const node = getNode();
      const user = await newUser(node);
      const client = await connectClient(node, { ...user, mechanism, resource: "desk" }, t);
      assert.equal(client.jid, `${user.jid}/desk`);
      assert.ok(client.entity.isSecure(), "the stream is encrypted");
      await client.stop();
    });
  }

  test("an xmpp.js client logs in over direct TLS", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectClient(node, { ...user, mechanism: "SCRAM-SHA-1", directTls: true }, t);
    assert.equal(bareJid(client.jid), user.jid);
  });

  test("SCRAM-SHA-256 from a raw client verifies the server signature", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    // login() checks the v= server signature in <success/> (RFC 5802 §5.1); a server that does
    // not hold the right keys fails here.
    const jid = await client.login(user.username, user.password, { mechanism: "SCRAM-SHA-256" });
    assert.equal(bareJid(jid), user.jid);
  });

  for (const mechanism of ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"] as const) {
    test(`a wrong password gets <not-authorized/> with ${mechanism}, and a retry on the same stream works`, async (t) => {
      const node = getNode();
      const user = await newUser(node);
      const client = await connectRaw(t, node);
      await client.openStream();
      await client.startTls();
      const bad =
        mechanism === "PLAIN"
          ? await client.authPlain(user.username, "wrong")
          : await client.authScram(mechanism, user.username, "wrong");
      assert.equal(bad.getName(), "failure", bad.toString());
      assert.ok(bad.getChild("not-authorized"), `<not-authorized/>: ${bad.toString()}`);
      // RFC 6120 §6.4.5: "the receiving entity SHOULD allow a configurable but reasonable number
      // of retries (at least 2 and no more than 5)".
      const good =
        mechanism === "PLAIN"
          ? await client.authPlain(user.username, user.password)
          : await client.authScram(mechanism, user.username, user.password);
      assert.equal(good.getName(), "success", good.toString());
    });
  }

  test("an unknown account gets the same <not-authorized/> as a wrong password", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    const failure = await client.authScram("SCRAM-SHA-1", "nobody-here", "whatever");
    assert.equal(failure.getName(), "failure", failure.toString());
    assert.ok(failure.getChild("not-authorized"), failure.toString());
  });

  test("an unknown mechanism gets <invalid-mechanism/>", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    client.send(`<auth xmlns='${NS_SASL}' mechanism='X-NOPE'/>`);
    const failure = await client.waitFor((el) => el.is("failure", NS_SASL), "SASL failure");
    assert.ok(failure.getChild("invalid-mechanism"), failure.toString());
  });

  test("failed logins are throttled per account, without locking out other accounts", async (t) => {
    const node = await startNode(t, {
      config: {
        limits: { loginFailuresPerAccount: 3, loginFailuresPerAddress: 1000, loginFailureWindowMs: 60_000 },
      },
    });
    const [victim, bystander] = await newUsers(node, 2);
    for (let i = 0; i < 3; i++) {
      const client = await connectRaw(t, node);
      await client.openStream();
      await client.startTls();
      const failure = await client.authPlain(victim!.username, `wrong-${i}`);
      assert.equal(failure.getName(), "failure", failure.toString());
      client.destroy();
    }
    // Now even the right password is refused for a while, on every connection: the limit is the
    // cluster's, whichever worker accepts the socket (the address never logged in to the account).
    for (let attempt = 0; attempt < 4; attempt++) {
      const refused = await connectRaw(t, node, { label: `attempt-${attempt}` });
      await refused.openStream();
      await refused.startTls();
      const outcome = await plainOutcome(refused, victim!.username, victim!.password);
      assert.doesNotMatch(
        outcome,
        /<success/,
        `attempt ${attempt}: the throttled account logged in: ${outcome}`,
      );
      refused.destroy();
    }
    // ...while another account from the same address still logs in.
    const other = await connectRaw(t, node);
    assert.equal(bareJid(await other.login(bystander!.username, bystander!.password)), bystander!.jid);
  });

  test("failed logins are throttled per address", async (t) => {
    const node = await startNode(t, {
      config: {
        limits: { loginFailuresPerAccount: 1000, loginFailuresPerAddress: 3, loginFailureWindowMs: 60_000 },
      },
    });
    const users = await newUsers(node, 4);
    for (let i = 0; i < 3; i++) {
      const client = await connectRaw(t, node);
      await client.openStream();
      await client.startTls();
      const failure = await client.authPlain(users[i]!.username, "wrong");
      assert.equal(failure.getName(), "failure", failure.toString());
      client.destroy();
    }
    for (let attempt = 0; attempt < 4; attempt++) {
      const refused = await connectRaw(t, node, { label: `attempt-${attempt}` });
      const outcome = await (async () => {
        const features = await refused.openStream().catch(() => undefined);
        if (!features) return `closed: ${refused.describe()}`;
        await refused.startTls();
        return plainOutcome(refused, users[3]!.username, users[3]!.password);
      })();
      assert.doesNotMatch(
        outcome,
        /<success/,
        `attempt ${attempt}: a login from a throttled address succeeded: ${outcome}`,
      );
      refused.destroy();
    }
  });
});

describe("resource binding and session", () => {
  test("bind gives the client-chosen resource", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    assert.equal(
      await client.login(user.username, user.password, { resource: "Home Laptop" }),
      `${user.jid}/Home Laptop`,
    );
  });

  test("bind without a resource gets a distinct server-chosen one", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const a = await connectRaw(t, node);
    const b = await connectRaw(t, node);
    const jidA = await a.login(user.username, user.password);
    const jidB = await b.login(user.username, user.password);
    for (const jid of [jidA, jidB]) {
      assert.equal(bareJid(jid), user.jid);
      assert.ok(jid.length > user.jid.length + 1, `a non-empty resource: ${jid}`);
    }
    assert.notEqual(jidA, jidB);
  });

  test("a conflicting bind replaces the old session, which gets a <conflict/> stream error", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const old = await connectRaw(t, node, { label: "old" });
    await old.login(user.username, user.password, { resource: "same" });
    const fresh = await connectRaw(t, node, { label: "new" });
    assert.equal(await fresh.login(user.username, user.password, { resource: "same" }), `${user.jid}/same`);
    assert.equal(await old.waitForStreamError(), "conflict");
    await old.waitForClose();
    // The new session is the one that stays: it still gets answers.
    const reply = await fresh.iq("set", `<session xmlns='${NS_SESSION}'/>`);
    assert.equal(reply.attrs.type, "result");
  });

  test("the legacy session iq gets a result", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.login(user.username, user.password);
    const reply = await client.iq("set", `<session xmlns='${NS_SESSION}'/>`);
    assert.equal(reply.attrs.type, "result", reply.toString());
  });

  test("a bind request with an invalid resource gets bad-request or not-allowed", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.startTls();
    await client.authPlain(user.username, user.password);
    await client.openStream();
    // U+0000 cannot appear in XML; a resource over 1023 bytes is invalid (RFC 7622 §3.1).
    const reply = await client.iq(
      "set",
      `<bind xmlns='${NS_BIND}'><resource>${"r".repeat(1100)}</resource></bind>`,
    );
    assert.equal(reply.attrs.type, "error", reply.toString());
    const condition = reply
      .getChild("error")
      ?.getChildElements()
      .find((el) => el.getName() !== "text")
      ?.getName();
    assert.ok(
      condition === "bad-request" || condition === "not-allowed",
      `RFC 6120 §7.7.2.1: ${reply.toString()}`,
    );
  });
});

describe("keepalive and close", () => {
  test("whitespace keepalives between stanzas are accepted", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.login(user.username, user.password);
    for (let i = 0; i < 5; i++) client.write(i % 2 === 0 ? " " : "\n\t \r\n");
    const reply = await client.iq("set", `<session xmlns='${NS_SESSION}'/>`);
    assert.equal(reply.attrs.type, "result");
    assert.equal(client.streamError, undefined);
    assert.equal(client.closed, false);
  });

  test("a clean </stream:stream> is answered by </stream:stream> and a closed socket", async (t) => {
    const node = getNode();
    const user = await newUser(node);
    const client = await connectRaw(t, node);
    await client.login(user.username, user.password);
    await client.close();
    assert.ok(client.streamEnded, `the server closed its stream too (RFC 6120 §4.4): ${client.describe()}`);
    assert.equal(client.streamError, undefined, "no stream error on a clean close");
  });

  test("a stream to an unknown domain gets <host-unknown/> after a stream header", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    client.write(
      `<?xml version='1.0'?><stream:stream to='not-served.example' version='1.0' xmlns='jabber:client' xmlns:stream='${NS_STREAM}'>`,
    );
    assert.equal(await client.waitForStreamError(), "host-unknown");
    // RFC 6120 §4.9.1.2: the receiving entity sends its stream header before the error.
    assert.ok(client.header, "a stream header preceded the error");
    await client.waitForClose();
  });

  test("a stream with the wrong content namespace gets <invalid-namespace/>", async (t) => {
    if (tcpOnly(t, "the <stream:stream> element (WebSocket frames the stream with <open/>)")) return;
    const node = getNode();
    const client = await connectRaw(t, node);
    client.write(
      `<?xml version='1.0'?><stream:stream to='${node.domain}' version='1.0' xmlns='urn:example:not-jabber-client' xmlns:stream='${NS_STREAM}'>`,
    );
    assert.equal(await client.waitForStreamError(), "invalid-namespace");
    await client.waitForClose();
  });

  test("a stream header in the wrong stream namespace gets <invalid-namespace/>", async (t) => {
    if (tcpOnly(t, "the <stream:stream> element (WebSocket frames the stream with <open/>)")) return;
    const node = getNode();
    const client = await connectRaw(t, node);
    client.write(
      `<?xml version='1.0'?><stream:stream to='${node.domain}' version='1.0' xmlns='jabber:client' xmlns:stream='urn:example:wrong'>`,
    );
    const condition = await client.waitForStreamError();
    assert.ok(["invalid-namespace", "bad-namespace-prefix"].includes(condition), condition);
  });

  test("the server pings a silent client and disconnects it when the ping goes unanswered", async (t) => {
    const node = await startNode(t, {
      config: { limits: { clientPingIntervalMs: 300, clientPingTimeoutMs: 500 } },
    });
    const [patient, silent] = await newUsers(node, 2);
    const answering = await connectRaw(t, node, { label: "answering" });
    await answering.login(patient!.username, patient!.password);
    const mute = await connectRaw(t, node, { label: "mute" });
    await mute.login(silent!.username, silent!.password);
    // XEP-0199 §3: a server-to-client ping is an iq get with <ping xmlns='urn:xmpp:ping'/>.
    const ping = await answering.waitFor(
      (el) =>
        el.getName() === "iq" &&
        el.attrs.type === "get" &&
        el.getChild("ping", "urn:xmpp:ping") !== undefined,
      "a ping from the server",
    );
    answering.send(`<iq type='result' id='${ping.attrs.id}' to='${ping.attrs.from ?? node.domain}'/>`);
    await mute.waitFor(
      (el) => el.getName() === "iq" && el.getChild("ping", "urn:xmpp:ping") !== undefined,
      "a ping",
    );
    await mute.waitForClose(5_000);
    // The client that answered is still connected: it is pinged again and answers again.
    const second = await answering.waitFor(
      (el) =>
        el.getName() === "iq" &&
        el.attrs.type === "get" &&
        el.getChild("ping", "urn:xmpp:ping") !== undefined,
      "a second ping",
    );
    answering.send(`<iq type='result' id='${second.attrs.id}' to='${second.attrs.from ?? node.domain}'/>`);
    assert.equal(answering.closed, false);
    assert.equal(answering.streamError, undefined);
  });

  test("a clean close before authentication is answered the same way", async (t) => {
    const node = getNode();
    const client = await connectRaw(t, node);
    await client.openStream();
    await client.close();
    assert.ok(client.streamEnded, client.describe());
    assert.equal(client.streamError, undefined);
  });

  test("SIGTERM ends every client stream with <system-shutdown/> and the node exits with code 0", async (t) => {
    const node = await startNode(t);
    const [first, second] = await newUsers(node, 2);
    const a = await connectRaw(t, node, { label: "a" });
    await a.login(first!.username, first!.password);
    const b = await connectRaw(t, node, { label: "b", directTls: true });
    await b.login(second!.username, second!.password);
    const stopped = node.stop(10_000);
    assert.equal(await a.waitForStreamError(), "system-shutdown");
    assert.equal(await b.waitForStreamError(), "system-shutdown");
    await a.waitForClose();
    await b.waitForClose();
    assert.deepEqual(await stopped, { code: 0, signal: null });
  });
});

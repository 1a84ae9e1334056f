/**
 * `limits.loginStepsPerTurn` on a real node: with one login step started per turn on each
 * worker, a burst of clients logging in at once (xmpp.js: STARTTLS, SCRAM, bind) all get in, in
 * turn, and can chat. Waiting streams are not read while they wait and are read again when their
 * step starts: a stream left unread, or a waiting step never started, leaves logins hanging here.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import { connectClient } from "../helpers/client.ts";
import { newUsers } from "../helpers/fixtures.ts";
import { startNode } from "../helpers/start-node.ts";

describe("login steps per turn (limits.loginStepsPerTurn)", () => {
  it("a burst of logins with one step started per turn per worker: every client gets in and can chat", async (t) => {
    const node = await startNode(t, { config: { limits: { loginStepsPerTurn: 1 } } });
    const users = await newUsers(node, 24, "burst");
    const clients = await Promise.all(
      users.map((user) => connectClient(node, { username: user.username, password: user.password }, t)),
    );
    assert.equal(new Set(clients.map((c) => c.jid)).size, 24, "24 distinct bound sessions");
    const [first, last] = [clients[0]!, clients[23]!];
    await first.send(
      xml("message", { to: last.jid, type: "chat", id: "b1" }, xml("body", {}, "after the burst")),
    );
    const got = await last.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "after the burst",
      "the message after the burst",
    );
    assert.equal(got.attrs.from, first.jid);
  });
});

/**
 * `starling token` and `starling kick` against a running node: a token the CLI prints logs the
 * user in once; kick ends the user's session (the stream gets <policy-violation/>).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newUser } from "../helpers/fixtures.ts";
import { NS_SASL, RawClient } from "../helpers/raw-client.ts";
import { startNode } from "../helpers/start-node.ts";
import { runStarling } from "./run-starling.ts";

describe("starling token and kick with the node running", () => {
  it("prints a one-time token that logs the user in, and kick ends the user's session", async (t) => {
    const node = await startNode(t, { workers: 1 });
    const run = (args: string[]) =>
      runStarling([...args, "--http-port", String(node.ports.http)], { cwd: node.dataDir });
    const alice = await newUser(node, "cli");

    const issued = await run(["token", alice.jid, "--ttl", "30"]);
    assert.equal(issued.code, 0, issued.stderr);
    const token = issued.stdout.trim();
    assert.match(token, /^stl1_[A-Za-z0-9_-]{43}$/, "only the token on stdout");

    const client = await RawClient.connectTo(node);
    t.after(() => client.destroy());
    const features = await client.openStream();
    if (features.getChild("starttls") !== undefined) await client.startTls();
    assert.ok((await client.authPlain(alice.username, token)).is("success", NS_SASL));
    await client.openStream();
    await client.bind("cli");

    const kicked = await run(["kick", alice.jid]);
    assert.equal(kicked.code, 0, kicked.stderr);
    assert.equal(kicked.stdout, `${alice.jid}: 1 session ended\n`);
    assert.equal(await client.waitForStreamError(), "policy-violation");
  });
});

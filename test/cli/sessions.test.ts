/**
 * The admin commands against a running node: a token the CLI prints logs the user in once;
 * kick ends the user's session (the stream gets <policy-violation/>); status, sessions, send and
 * announce through an API that wants its key.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { goOnline, isMessageWithBody, loginRaw, newUser } from "../helpers/fixtures.ts";
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

describe("starling status, sessions, send and announce against a node with an admin key", () => {
  it("uses the key from the configuration, and says so when it is missing", async (t) => {
    const key = `test-admin-key-${"x".repeat(24)}`;
    const node = await startNode(t, { workers: 2, config: { admin: { key } } });
    const configFile = join(node.dataDir, "test-config.json");
    const run = (args: string[]) =>
      runStarling([...args, "--config", configFile, "--http-port", String(node.ports.http)], {
        cwd: node.dataDir,
      });
    const [alice, bob] = [await newUser(node, "cs"), await newUser(node, "cs")];
    const a = await loginRaw(t, node, alice, { resource: "desk" });
    await goOnline(a);
    await loginRaw(t, node, bob, { resource: "phone" });

    const status = await run(["status"]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(
      status.stdout,
      /^node local: Starling \S+ for localhost, up .*, 2 workers, \d+ connections, 2 sessions, 2 accounts/m,
    );
    assert.match(status.stdout, /^not clustered: a single node$/m);

    const listed = await run(["sessions"]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(
      listed.stdout,
      new RegExp(
        `^${alice.jid}/desk\\s+local\\s+\\d\\s+127\\.0\\.0\\.1\\S*\\s+connected\\s+available \\(0\\)$`,
        "m",
      ),
    );
    assert.match(
      listed.stdout,
      new RegExp(`^${bob.jid}/phone\\s+local\\s+\\d\\s+\\S+\\s+connected\\s+unavailable$`, "m"),
    );
    assert.match(listed.stdout, /^2 sessions$/m);
    const one = await run(["sessions", bob.jid, "--json"]);
    assert.deepEqual(
      (JSON.parse(one.stdout) as { jid: string }[]).map((s) => s.jid),
      [`${bob.jid}/phone`],
    );

    const sent = await run(["send", alice.jid, "hello", "from", "the", "shell"]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.equal(sent.stdout, `sent to ${alice.jid}\n`);
    await a.waitFor(isMessageWithBody("hello from the shell"), "the CLI's message");
    const announced = await run(["announce", "server", "restarts", "soon"]);
    assert.equal(announced.stdout, "announced to 2 users\n", announced.stderr);
    const headline = await a.waitFor(isMessageWithBody("server restarts soon"), "the announcement");
    assert.equal(headline.attrs.type, "headline");

    // Without the key (another configuration), the node refuses and the CLI says why.
    const keyless = await runStarling(["sessions", "--http-port", String(node.ports.http)], {
      cwd: node.dataDir,
    });
    assert.equal(keyless.code, 1);
    assert.match(keyless.stderr, /^starling: this endpoint needs Authorization: Bearer <admin\.key>$/m);
    const usage = await run(["send", alice.jid]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /expected a user JID and a message/);
  });
});

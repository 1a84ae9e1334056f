/**
 * A node on PostgreSQL (`store.url`) instead of its embedded LevelDB store: accounts, rosters
 * and offline messages live in the database, so a second node started on another data
 * directory, pointing at the same database, sees them.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { goOnline, isMessageWithBody, loginRaw } from "../helpers/fixtures.ts";
import { startPostgres } from "../helpers/postgres.ts";
import { startNode } from "../helpers/start-node.ts";

const root = await mkdtemp(join(tmpdir(), "starling-postgres-node-"));
await chmod(root, 0o755);
const server = await startPostgres(root);
after(async () => {
  await server.stop();
  await rm(root, { recursive: true, force: true });
});

async function freshDatabaseUrl(name: string): Promise<string> {
  const base = `postgres://postgres:${server.password}@127.0.0.1:${server.port}`;
  const admin = new pg.Client({ connectionString: `${base}/postgres` });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name} TEMPLATE template0`);
  await admin.end();
  return `${base}/${name}`;
}

test("a node on PostgreSQL keeps accounts and offline messages where another node finds them", async (t) => {
  const url = await freshDatabaseUrl("starling_node_test");
  const first = await startNode(t, { config: { store: { url } } });
  await first.createUser(`alice@${first.domain}`, "pw-alice");
  await first.createUser(`bob@${first.domain}`, "pw-bob");
  const alice = { username: "alice", jid: `alice@${first.domain}`, password: "pw-alice" };
  const bob = { username: "bob", jid: `bob@${first.domain}`, password: "pw-bob" };

  const a = await loginRaw(t, first, alice, { priority: 0 });
  a.send(`<message to='${bob.jid}' type='chat'><body>kept in postgres</body></message>`);
  // A roster change and the offline message go to the database; wait for the roster push as
  // the sign the roster write is done, then stop the node.
  a.send(
    `<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='${bob.jid}' name='Bob'/></query></iq>`,
  );
  await a.waitFor((el) => el.getName() === "iq" && el.attrs.id === "r1", "roster set result");
  a.destroy();
  const stopped = await first.stop();
  assert.equal(stopped.code, 0);

  // Another node, its own (empty) data directory, the same database.
  const second = await startNode(t, { config: { store: { url } } });
  assert.notEqual(second.dataDir, first.dataDir);
  const b = await loginRaw(t, second, bob);
  await goOnline(b, { priority: 0 });
  const message = await b.waitFor(isMessageWithBody("kept in postgres"), "the offline message");
  assert.ok(message.getChild("delay", "urn:xmpp:delay"), message.toString());
  const a2 = await loginRaw(t, second, alice, { roster: false });
  const roster = await a2.iq("get", "<query xmlns='jabber:iq:roster'/>");
  const item = roster.getChild("query", "jabber:iq:roster")?.getChild("item");
  assert.equal(item?.attrs.jid, bob.jid);
  assert.equal(item?.attrs.name, "Bob");
});

/**
 * `starling migrate` from a node's LevelDB store into a real PostgreSQL: everything a user owns
 * arrives, the counts are verified, a second run leaves existing accounts alone, and bad
 * arguments are usage errors.
 */
import assert from "node:assert/strict";
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import pg from "pg";
import { createAccountRecord } from "../../src/auth/scram.ts";
import { LevelStore } from "../../src/storage/level-store.ts";
import { PostgresStore } from "../../src/storage/postgres/postgres-store.ts";
import type { Store } from "../../src/storage/store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { startPostgres } from "../helpers/postgres.ts";
import { runStarling } from "./run-starling.ts";

const root = await mkdtemp(join(tmpdir(), "starling-migrate-"));
await chmod(root, 0o755);
const server = await startPostgres(root);
after(async () => {
  await server.stop();
  await rm(root, { recursive: true, force: true });
});

const jid = (text: string) => text as BareJid;
const alice = jid("alice@localhost");
const bob = jid("bob@localhost");
const carol = jid("carol@localhost");

/** Fills a LevelDB store the way a running node would have. */
async function fill(store: Store): Promise<void> {
  for (const user of [alice, bob, carol])
    await store.createAccount(createAccountRecord(user, `pw-${user}`, 1024));
  await store.putRosterItem(alice, { jid: bob, subscription: "both", groups: ["Friends"], name: "Bob" });
  await store.putRosterItem(alice, { jid: carol, subscription: "none", ask: true, groups: [] });
  await store.putRosterItem(bob, { jid: alice, subscription: "both", groups: [] });
  await store.putPendingSubscription(carol, { from: alice, stanza: "<presence type='subscribe'/>" });
  for (let i = 0; i < 3; i++) {
    await store.pushOffline(
      carol,
      { stanza: `<message><body>${i}</body></message>`, storedAt: 1_700_000_000_000 + i },
      10,
    );
  }
  await store.putVCard(alice, "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>");
  await store.putPrivate(alice, "storage storage:bookmarks", "<storage xmlns='storage:bookmarks'/>");
  await store.putPrivate(alice, "prefs urn:example", "<prefs xmlns='urn:example'/>");
  await store.addBlocked(bob, ["spammer@example.org", "example.net"]);
}

/** Everything the store holds for the three users, in a comparable shape. */
async function snapshot(store: Store) {
  const users = await store.listAccounts();
  const out: Record<string, unknown> = { users };
  for (const user of users) {
    const roster = await store.getRoster(user);
    out[user] = {
      account: await store.getAccount(user),
      roster: [...roster.items].sort((a, b) => (a.jid < b.jid ? -1 : 1)),
      pending: await store.getPendingSubscriptions(user),
      offline: await store.listOffline(user),
      vcard: await store.getVCard(user),
      private: await store.listPrivate(user),
      blocked: await store.getBlocklist(user),
    };
  }
  return out;
}

test("starling migrate copies a LevelDB store into PostgreSQL and verifies it", async () => {
  const dataDir = join(root, "node-data");
  const level = new LevelStore(join(dataDir, "store"));
  await level.open();
  await fill(level);
  const expected = await snapshot(level);
  await level.close();

  const base = `postgres://postgres:${server.password}@127.0.0.1:${server.port}`;
  const admin = new pg.Client({ connectionString: `${base}/postgres` });
  await admin.connect();
  await admin.query("CREATE DATABASE starling_migrate TEMPLATE template0");
  await admin.end();
  const url = `${base}/starling_migrate`;

  const first = await runStarling(["migrate", "--from", `level:${dataDir}`, "--to", url], { cwd: root });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /copied 3 of 3 accounts/);
  assert.match(
    first.stdout,
    /3 roster items, 1 pending subscriptions, 3 offline messages, 1 vCards, 2 private XML items, 2 blocked JIDs/,
  );
  assert.match(first.stdout, /verified: every count matches/);

  const postgres = new PostgresStore(url);
  await postgres.open();
  try {
    assert.deepEqual(await snapshot(postgres), expected);
  } finally {
    await postgres.close();
  }

  // The source is untouched, and a second run leaves the copied accounts as they are.
  const again = await runStarling(["migrate", "--from", `level:${dataDir}`, "--to", url], { cwd: root });
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /copied 0 of 3 accounts/);
  assert.match(again.stdout, /skipped alice@localhost: it already exists in the target/);
});

test("starling migrate refuses bad arguments with exit code 2 and a line naming the flag", async () => {
  const missing = await runStarling(["migrate", "--to", "postgres://x@127.0.0.1/db"], { cwd: root });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--from is required/);
  const bad = await runStarling(["migrate", "--from", "mysql://x", "--to", "level:/tmp/x"], { cwd: root });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--from must be level:DIR or a postgres:\/\/ URL/);
  assert.equal(bad.stderr.trim().split("\n").length, 1);
});

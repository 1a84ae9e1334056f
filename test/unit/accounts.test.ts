/**
 * The accounts layer (src/auth/accounts.ts) over a real LevelDB store: changes go through when
 * Starling owns the accounts, and each is refused with XSRV_ACCOUNTS_EXTERNAL when the web site
 * does; what each provider says of itself agrees with what the CLI derives from the config.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Accounts, providerManagesAccounts } from "../../src/auth/accounts.ts";
import { createAuthProvider } from "../../src/auth/create-provider.ts";
import { InternalAuthProvider } from "../../src/auth/internal-auth.ts";
import { loadConfig } from "../../src/config/load-config.ts";
import { createLogger } from "../../src/log.ts";
import { LevelStore } from "../../src/storage/level-store.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";

test("accounts change when Starling owns them, and are refused, untouched, when the site does", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "starling-accounts-"));
  const store = new LevelStore(join(root, "store"));
  await store.open();
  t.after(async () => {
    await store.close();
    await rm(root, { recursive: true, force: true });
  });
  let managed = true;
  const accounts = new Accounts(store, () => managed);
  const alice = "alice@localhost" as BareJid;
  assert.equal(await accounts.create(alice, "one"), true);
  assert.equal(await accounts.create(alice, "again"), false, "exists");
  assert.equal(await accounts.setPassword(alice, "two"), true);
  assert.ok(await new InternalAuthProvider(store).verifyPassword(alice, "two"), "the new password's keys");
  assert.equal(await accounts.setPassword("nobody@localhost" as BareJid, "x"), false);
  assert.deepEqual(
    await accounts.createMany(
      [
        { jid: alice, password: "x" },
        { jid: "bob@localhost" as BareJid, password: "y" },
      ],
      { concurrency: 2 },
    ),
    { created: 1, existing: 1 },
  );

  managed = false;
  for (const change of [
    () => accounts.create("carol@localhost" as BareJid, "z"),
    () => accounts.setPassword(alice, "three"),
    () => accounts.remove(alice),
    () => accounts.createMany([{ jid: "dave@localhost" as BareJid, password: "w" }], { concurrency: 1 }),
  ]) {
    await assert.rejects(change(), { code: "XSRV_ACCOUNTS_EXTERNAL" });
  }
  assert.ok(await new InternalAuthProvider(store).verifyPassword(alice, "two"), "nothing changed");
  assert.deepEqual([...(await accounts.list())].sort(), [alice, "bob@localhost"]);
  assert.equal(await store.getAccount("carol@localhost" as BareJid), undefined);
});

test("each provider's managesAccounts is what providerManagesAccounts derives from the config", async () => {
  const log = createLogger({ level: "silent" });
  const configs = [
    loadConfig({ env: {}, cwd: tmpdir(), overrides: { "auth.provider": "internal" } }),
    loadConfig({
      env: {},
      cwd: tmpdir(),
      overrides: { "auth.provider": "http", "auth.http.url": "http://127.0.0.1:9/auth" },
    }),
    loadConfig({
      env: {},
      overrides: {
        "auth.provider": "sql",
        "auth.sql.url": "postgres://site@127.0.0.1:9/site",
        "auth.sql.passwordQuery": "SELECT hash FROM users WHERE name = :user",
      },
    }),
  ];
  const store = { getAccount: async () => undefined, takeLoginToken: async () => undefined };
  for (const config of configs) {
    const provider = createAuthProvider(config, store, log);
    assert.equal(provider.managesAccounts, providerManagesAccounts(config), config.auth.provider);
    await provider.close?.();
  }
});

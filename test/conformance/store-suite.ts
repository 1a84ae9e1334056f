/**
 * The one suite every `Store` adapter must pass, in the manner of abstract-level's shared test
 * suite: an adapter's test file calls {@link runStoreSuite} with a factory, and nothing here
 * knows which adapter it is testing.
 *
 * Contract details pinned down here (the interface leaves them open):
 * - "sorted" (listAccounts, getBlocklist) means JavaScript's default string order, i.e. UTF-16
 *   code units, whatever order the backend keeps its keys in;
 * - optional fields that were absent when written are absent when read (not `undefined`,
 *   not `null`);
 * - roster items come back in no particular order.
 *
 * No import side effects: `node --test` may load this file on its own.
 */
import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";
import type { Account, OfflineMessage, RosterItem, Store } from "../../src/storage/store.ts";
import { type BareJid, parseUserJid } from "../../src/xmpp/jid.ts";

/** What an adapter's factory hands the suite: an open, empty store and how to dispose of it. */
export interface StoreFixture {
  store: Store;
  cleanup: () => Promise<void>;
  /**
   * For durable adapters: a new, opened instance on the same location (directory, database).
   * The suite then checks that a restart keeps every kind of data.
   */
  reopen?: () => Promise<Store>;
}

/** Parses a user JID the way the server would, so every key the suite uses is normalised. */
function user(input: string): BareJid {
  const jid = parseUserJid(input);
  assert.ok(jid !== undefined, `test JID ${input} must be valid`);
  return jid;
}

function account(jid: BareJid, seed = 1): Account {
  const credential = (hash: string) => ({
    salt: Buffer.from(`salt-${hash}-${seed}`).toString("base64"),
    iterations: 4096 + seed,
    storedKey: Buffer.from(`stored-${hash}-${seed}`).toString("base64"),
    serverKey: Buffer.from(`server-${hash}-${seed}`).toString("base64"),
  });
  return {
    jid,
    scramSha1: credential("sha1"),
    scramSha256: credential("sha256"),
    createdAt: 1_700_000_000_000 + seed,
  };
}

function offline(n: number): OfflineMessage {
  return {
    stanza: `<message xmlns='jabber:client' id='m${n}'><body>${n}</body></message>`,
    storedAt: 1_700_000_000_000 + n,
  };
}

function byJid(items: RosterItem[]): RosterItem[] {
  return [...items].sort((a, b) => (a.jid < b.jid ? -1 : a.jid > b.jid ? 1 : 0));
}

/**
 * Registers the store conformance tests under `describe(name)`. `makeStore` is called once per
 * test and must return an open, empty store; `cleanup` runs after the test, and must cope with a
 * store the test already closed.
 */
export function runStoreSuite(
  name: string,
  makeStore: () => Promise<StoreFixture>,
  options: { durable?: boolean } = {},
): void {
  async function setup(t: TestContext): Promise<Store> {
    const fixture = await makeStore();
    t.after(fixture.cleanup);
    return fixture.store;
  }

  const alice = user("alice@example.com");
  const bob = user("bob@example.com");
  const carol = user("carol@example.com");

  describe(name, () => {
    // Durable adapters only: the remote store has no location of its own to reopen.
    if (options.durable) {
      it("store keeps every kind of data when a new instance opens the same location", async (t) => {
        const fixture = await makeStore();
        t.after(fixture.cleanup);
        assert.ok(fixture.reopen, "a durable adapter's fixture provides reopen()");
        const first = fixture.store;
        await first.createAccount(account(alice));
        await first.putRosterItem(alice, { jid: bob, subscription: "both", ask: false, groups: ["G", "A"] });
        await first.putPendingSubscription(alice, { from: bob, stanza: "<presence type='subscribe'/>" });
        await first.pushOffline(alice, { stanza: "<message/>", storedAt: 5 }, 10);
        await first.putVCard(alice, "<vCard xmlns='vcard-temp'/>");
        await first.putPrivate(alice, "k urn:k", "<k xmlns='urn:k'/>");
        await first.addBlocked(alice, ["spam@example.com"]);
        await first.close();

        const second = await fixture.reopen();
        t.after(() => second.close());
        assert.deepEqual(await second.getAccount(alice), account(alice));
        assert.deepEqual(await second.getRoster(alice), {
          version: 1,
          items: [{ jid: bob, subscription: "both", ask: false, groups: ["G", "A"] }],
        });
        assert.deepEqual(await second.getPendingSubscriptions(alice), [
          { from: bob, stanza: "<presence type='subscribe'/>" },
        ]);
        assert.equal(await second.getVCard(alice), "<vCard xmlns='vcard-temp'/>");
        assert.equal(await second.getPrivate(alice, "k urn:k"), "<k xmlns='urn:k'/>");
        assert.deepEqual(await second.getBlocklist(alice), ["spam@example.com"]);
        assert.equal(await second.putRosterItem(alice, { jid: bob, subscription: "to", groups: [] }), 2);
        // The offline sequence continues after the stored one, so order holds across restarts.
        await second.pushOffline(alice, { stanza: "<message id='2'/>", storedAt: 6 }, 10);
        assert.deepEqual(await second.takeOffline(alice), [
          { stanza: "<message/>", storedAt: 5 },
          { stanza: "<message id='2'/>", storedAt: 6 },
        ]);
      });
    }

    describe("lifecycle", () => {
      it("store open is idempotent, sequentially and concurrently", async (t) => {
        const store = await setup(t);
        await store.open();
        await Promise.all([store.open(), store.open()]);
        assert.equal(await store.createAccount(account(alice)), true);
        assert.deepEqual(await store.getAccount(alice), account(alice));
      });

      it("store operations reject with XSRV_STORE when the store is closed", async (t) => {
        const store = await setup(t);
        await store.createAccount(account(alice));
        await store.close();
        await assert.rejects(store.getAccount(alice), { code: "XSRV_STORE" });
        await assert.rejects(store.createAccount(account(bob)), { code: "XSRV_STORE" });
        await store.open();
        assert.deepEqual(await store.getAccount(alice), account(alice));
        assert.equal(await store.getAccount(bob), undefined);
      });
    });

    describe("accounts", () => {
      it("getAccount returns undefined when the account is absent", async (t) => {
        const store = await setup(t);
        assert.equal(await store.getAccount(alice), undefined);
      });

      it("createAccount stores an account that getAccount returns", async (t) => {
        const store = await setup(t);
        assert.equal(await store.createAccount(account(alice)), true);
        assert.deepEqual(await store.getAccount(alice), account(alice));
        assert.equal(await store.getAccount(bob), undefined);
      });

      it("createAccount returns false and keeps the first account when it exists", async (t) => {
        const store = await setup(t);
        assert.equal(await store.createAccount(account(alice, 1)), true);
        assert.equal(await store.createAccount(account(alice, 2)), false);
        assert.deepEqual(await store.getAccount(alice), account(alice, 1));
        assert.equal(await store.countAccounts(), 1);
      });

      it("updateAccount replaces the credentials of an existing account", async (t) => {
        const store = await setup(t);
        await store.createAccount(account(alice, 1));
        assert.equal(await store.updateAccount(account(alice, 2)), true);
        assert.deepEqual(await store.getAccount(alice), account(alice, 2));
      });

      it("updateAccount returns false and creates nothing when the account is absent", async (t) => {
        const store = await setup(t);
        assert.equal(await store.updateAccount(account(alice)), false);
        assert.equal(await store.getAccount(alice), undefined);
        assert.equal(await store.countAccounts(), 0);
      });

      it("deleteAccount returns true once, then false", async (t) => {
        const store = await setup(t);
        await store.createAccount(account(alice));
        assert.equal(await store.deleteAccount(alice), true);
        assert.equal(await store.getAccount(alice), undefined);
        assert.equal(await store.deleteAccount(alice), false);
        assert.equal(await store.deleteAccount(bob), false);
      });

      it("listAccounts returns every JID sorted and countAccounts counts them", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.listAccounts(), []);
        assert.equal(await store.countAccounts(), 0);
        for (const jid of [carol, alice, bob]) await store.createAccount(account(jid));
        assert.deepEqual(await store.listAccounts(), [alice, bob, carol]);
        assert.equal(await store.countAccounts(), 3);
        await store.deleteAccount(bob);
        assert.deepEqual(await store.listAccounts(), [alice, carol]);
        assert.equal(await store.countAccounts(), 2);
      });
    });

    describe("roster", () => {
      it("getRoster returns version 0 and no items when the user has no roster", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.getRoster(alice), { version: 0, items: [] });
      });

      it("putRosterItem adds and replaces items with increasing versions", async (t) => {
        const store = await setup(t);
        const bobItem: RosterItem = { jid: bob, subscription: "none", ask: true, groups: [] };
        const carolItem: RosterItem = { jid: carol, name: "Carol", subscription: "to", groups: ["Friends"] };
        assert.equal(await store.putRosterItem(alice, bobItem), 1);
        assert.equal(await store.putRosterItem(alice, carolItem), 2);
        const bobBoth: RosterItem = {
          jid: bob,
          name: "Bob",
          subscription: "both",
          approved: true,
          groups: ["Work", "Friends"],
        };
        assert.equal(await store.putRosterItem(alice, bobBoth), 3);
        const roster = await store.getRoster(alice);
        assert.equal(roster.version, 3);
        assert.deepEqual(byJid(roster.items), [bobBoth, carolItem]);
      });

      it("deleteRosterItem removes an item and bumps the version", async (t) => {
        const store = await setup(t);
        await store.putRosterItem(alice, { jid: bob, subscription: "both", groups: [] });
        await store.putRosterItem(alice, { jid: carol, subscription: "from", groups: [] });
        assert.equal(await store.deleteRosterItem(alice, bob), 3);
        assert.deepEqual(await store.getRoster(alice), {
          version: 3,
          items: [{ jid: carol, subscription: "from", groups: [] }],
        });
      });

      it("deleteRosterItem returns undefined and keeps the version when the item is absent", async (t) => {
        const store = await setup(t);
        assert.equal(await store.deleteRosterItem(alice, bob), undefined);
        await store.putRosterItem(alice, { jid: carol, subscription: "none", groups: [] });
        assert.equal(await store.deleteRosterItem(alice, bob), undefined);
        assert.equal((await store.getRoster(alice)).version, 1);
      });

      it("roster versions keep increasing after the store is closed and reopened", async (t) => {
        const store = await setup(t);
        assert.equal(await store.putRosterItem(alice, { jid: bob, subscription: "none", groups: [] }), 1);
        await store.close();
        await store.open();
        assert.equal((await store.getRoster(alice)).version, 1);
        assert.equal(await store.putRosterItem(alice, { jid: carol, subscription: "none", groups: [] }), 2);
        assert.equal((await store.getRoster(alice)).items.length, 2);
      });

      it("rosters of users whose JIDs share a prefix stay apart", async (t) => {
        const store = await setup(t);
        // "a@b.c" is a string prefix of "a@b.co": a range scan must not leak one into the other.
        const short = user("a@b.c");
        const long = user("a@b.co");
        await store.putRosterItem(short, { jid: bob, subscription: "both", groups: [] });
        await store.putRosterItem(long, { jid: carol, subscription: "to", groups: [] });
        await store.putRosterItem(long, { jid: alice, subscription: "from", groups: [] });
        assert.deepEqual(await store.getRoster(short), {
          version: 1,
          items: [{ jid: bob, subscription: "both", groups: [] }],
        });
        const longRoster = await store.getRoster(long);
        assert.equal(longRoster.version, 2);
        assert.deepEqual(
          byJid(longRoster.items).map((item) => item.jid),
          [alice, carol],
        );
      });
    });

    describe("pending subscriptions", () => {
      it("pending subscriptions are kept per sender, replaced and deleted", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.getPendingSubscriptions(alice), []);
        const fromBob = { from: bob, stanza: "<presence from='bob@example.com' type='subscribe'/>" };
        const fromCarol = { from: carol, stanza: "<presence from='carol@example.com' type='subscribe'/>" };
        const fromBobAgain = {
          from: bob,
          stanza: "<presence from='bob@example.com' type='subscribe' id='2'/>",
        };
        await store.putPendingSubscription(alice, fromBob);
        await store.putPendingSubscription(alice, fromCarol);
        await store.putPendingSubscription(alice, fromBobAgain);
        const pending = await store.getPendingSubscriptions(alice);
        assert.deepEqual(
          [...pending].sort((a, b) => (a.from < b.from ? -1 : 1)),
          [fromBobAgain, fromCarol],
        );
        assert.deepEqual(await store.getPendingSubscriptions(bob), []);
        await store.deletePendingSubscription(alice, bob);
        await store.deletePendingSubscription(alice, user("nobody@example.com"));
        assert.deepEqual(await store.getPendingSubscriptions(alice), [fromCarol]);
      });
    });

    describe("offline messages", () => {
      it("takeOffline returns messages oldest first and empties the queue", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.takeOffline(alice), []);
        // Twelve messages, so that "10" sorting before "2" would show.
        const messages = Array.from({ length: 12 }, (_, i) => offline(i));
        for (const message of messages) assert.equal(await store.pushOffline(alice, message, 100), true);
        assert.equal(await store.countOffline(alice), 12);
        assert.deepEqual(await store.takeOffline(alice), messages);
        assert.equal(await store.countOffline(alice), 0);
        assert.deepEqual(await store.takeOffline(alice), []);
      });

      it("listOffline returns messages oldest first and leaves them stored", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.listOffline(alice), []);
        const messages = Array.from({ length: 12 }, (_, i) => offline(i));
        for (const message of messages) await store.pushOffline(alice, message, 100);
        await store.pushOffline(bob, offline(99), 100);
        assert.deepEqual(await store.listOffline(alice), messages);
        assert.equal(await store.countOffline(alice), 12);
        assert.deepEqual(await store.takeOffline(alice), messages);
        assert.deepEqual(await store.listOffline(bob), [offline(99)]);
      });

      it("pushOffline returns false and stores nothing when the user has limit messages", async (t) => {
        const store = await setup(t);
        for (let i = 0; i < 3; i++) assert.equal(await store.pushOffline(alice, offline(i), 3), true);
        assert.equal(await store.pushOffline(alice, offline(3), 3), false);
        assert.equal(await store.countOffline(alice), 3);
        assert.deepEqual(await store.takeOffline(alice), [offline(0), offline(1), offline(2)]);
        assert.equal(await store.pushOffline(alice, offline(4), 3), true);
        assert.deepEqual(await store.takeOffline(alice), [offline(4)]);
      });

      it("pushOffline stores nothing when the limit is 0", async (t) => {
        const store = await setup(t);
        assert.equal(await store.pushOffline(alice, offline(0), 0), false);
        assert.equal(await store.countOffline(alice), 0);
      });

      it("offline queues are kept per user and keep order across takes", async (t) => {
        const store = await setup(t);
        await store.pushOffline(alice, offline(1), 10);
        await store.pushOffline(bob, offline(2), 10);
        await store.pushOffline(alice, offline(3), 10);
        assert.equal(await store.countOffline(alice), 2);
        assert.equal(await store.countOffline(bob), 1);
        assert.deepEqual(await store.takeOffline(alice), [offline(1), offline(3)]);
        await store.pushOffline(alice, offline(5), 10);
        await store.pushOffline(alice, offline(4), 10);
        assert.deepEqual(await store.takeOffline(alice), [offline(5), offline(4)]);
        assert.deepEqual(await store.takeOffline(bob), [offline(2)]);
      });
    });

    describe("login tokens", () => {
      it("a login token is taken once, with its account and expiry; an unknown one is undefined", async (t) => {
        const store = await setup(t);
        const token = { hash: "a".repeat(64), jid: alice, expiresAt: 2_000_000_000_000 };
        await store.putLoginToken(token, 1_000);
        assert.equal(await store.takeLoginToken("b".repeat(64)), undefined);
        assert.deepEqual(await store.takeLoginToken(token.hash), token);
        assert.equal(await store.takeLoginToken(token.hash), undefined, "used up");
      });

      it("of concurrent takes of one token exactly one gets it", async (t) => {
        const store = await setup(t);
        const token = { hash: "c".repeat(64), jid: bob, expiresAt: 2_000_000_000_000 };
        await store.putLoginToken(token, 1_000);
        const taken = await Promise.all(Array.from({ length: 8 }, () => store.takeLoginToken(token.hash)));
        assert.equal(taken.filter((x) => x !== undefined).length, 1);
      });

      it("storing a token drops the tokens that expired before now", async (t) => {
        const store = await setup(t);
        await store.putLoginToken({ hash: "d".repeat(64), jid: alice, expiresAt: 5_000 }, 1_000);
        await store.putLoginToken({ hash: "e".repeat(64), jid: alice, expiresAt: 50_000 }, 10_000);
        assert.equal(
          await store.takeLoginToken("d".repeat(64)),
          undefined,
          "expired at 5,000, dropped at 10,000",
        );
        assert.equal((await store.takeLoginToken("e".repeat(64)))?.expiresAt, 50_000);
      });
    });

    describe("vCard and private XML", () => {
      it("vCards are stored, replaced and read back", async (t) => {
        const store = await setup(t);
        assert.equal(await store.getVCard(alice), undefined);
        await store.putVCard(alice, "<vCard xmlns='vcard-temp'><FN>Alice</FN></vCard>");
        await store.putVCard(alice, "<vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard>");
        assert.equal(await store.getVCard(alice), "<vCard xmlns='vcard-temp'><FN>Alice A.</FN></vCard>");
        assert.equal(await store.getVCard(bob), undefined);
      });

      it("private XML is stored per user and per key", async (t) => {
        const store = await setup(t);
        const bookmarks = "storage storage:bookmarks";
        const prefs = "prefs urn:example:prefs";
        assert.equal(await store.getPrivate(alice, bookmarks), undefined);
        await store.putPrivate(alice, bookmarks, "<storage xmlns='storage:bookmarks'/>");
        await store.putPrivate(alice, prefs, "<prefs xmlns='urn:example:prefs'/>");
        await store.putPrivate(alice, bookmarks, "<storage xmlns='storage:bookmarks'><url/></storage>");
        assert.equal(
          await store.getPrivate(alice, bookmarks),
          "<storage xmlns='storage:bookmarks'><url/></storage>",
        );
        assert.equal(await store.getPrivate(alice, prefs), "<prefs xmlns='urn:example:prefs'/>");
        assert.equal(await store.getPrivate(alice, "other urn:x"), undefined);
        assert.equal(await store.getPrivate(bob, bookmarks), undefined);
      });

      it("listPrivate returns every item of a user, sorted by key", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.listPrivate(alice), []);
        await store.putPrivate(alice, "storage storage:bookmarks", "<storage xmlns='storage:bookmarks'/>");
        await store.putPrivate(alice, "prefs urn:example:prefs", "<prefs xmlns='urn:example:prefs'/>");
        await store.putPrivate(bob, "x urn:x", "<x xmlns='urn:x'/>");
        assert.deepEqual(await store.listPrivate(alice), [
          { key: "prefs urn:example:prefs", xml: "<prefs xmlns='urn:example:prefs'/>" },
          { key: "storage storage:bookmarks", xml: "<storage xmlns='storage:bookmarks'/>" },
        ]);
        assert.deepEqual(await store.listPrivate(bob), [{ key: "x urn:x", xml: "<x xmlns='urn:x'/>" }]);
      });
    });

    describe("blocklist", () => {
      it("addBlocked returns the sorted list without duplicates", async (t) => {
        const store = await setup(t);
        assert.deepEqual(await store.getBlocklist(alice), []);
        assert.deepEqual(await store.addBlocked(alice, ["z@example.com", "b@example.com"]), [
          "b@example.com",
          "z@example.com",
        ]);
        assert.deepEqual(await store.addBlocked(alice, ["example.org", "b@example.com"]), [
          "b@example.com",
          "example.org",
          "z@example.com",
        ]);
        assert.deepEqual(await store.getBlocklist(alice), ["b@example.com", "example.org", "z@example.com"]);
        assert.deepEqual(await store.getBlocklist(bob), []);
      });

      it("removeBlocked removes the given JIDs, or every JID when none are given", async (t) => {
        const store = await setup(t);
        await store.addBlocked(alice, ["a@example.com", "b@example.com", "c@example.com"]);
        assert.deepEqual(await store.removeBlocked(alice, ["b@example.com", "absent@example.com"]), [
          "a@example.com",
          "c@example.com",
        ]);
        assert.deepEqual(await store.getBlocklist(alice), ["a@example.com", "c@example.com"]);
        assert.deepEqual(await store.removeBlocked(alice), []);
        assert.deepEqual(await store.getBlocklist(alice), []);
        assert.deepEqual(await store.removeBlocked(bob), []);
      });
    });

    describe("deleteAccount", () => {
      it("deleteAccount removes every kind of user data and only that user's", async (t) => {
        const store = await setup(t);
        const fill = async (jid: BareJid, contact: BareJid) => {
          await store.createAccount(account(jid));
          await store.putRosterItem(jid, { jid: contact, subscription: "both", groups: ["G"] });
          await store.putPendingSubscription(jid, { from: contact, stanza: "<presence type='subscribe'/>" });
          await store.pushOffline(jid, offline(1), 10);
          await store.putVCard(jid, "<vCard xmlns='vcard-temp'/>");
          await store.putPrivate(jid, "storage storage:bookmarks", "<storage xmlns='storage:bookmarks'/>");
          await store.addBlocked(jid, [`spam@${contact}`]);
        };
        await fill(alice, bob);
        await fill(bob, alice);

        assert.equal(await store.deleteAccount(alice), true);
        assert.equal(await store.getAccount(alice), undefined);
        assert.deepEqual(await store.getRoster(alice), { version: 0, items: [] });
        assert.deepEqual(await store.getPendingSubscriptions(alice), []);
        assert.equal(await store.countOffline(alice), 0);
        assert.deepEqual(await store.takeOffline(alice), []);
        assert.equal(await store.getVCard(alice), undefined);
        assert.equal(await store.getPrivate(alice, "storage storage:bookmarks"), undefined);
        assert.deepEqual(await store.getBlocklist(alice), []);
        assert.deepEqual(await store.listAccounts(), [bob]);

        assert.deepEqual(await store.getAccount(bob), account(bob));
        assert.equal((await store.getRoster(bob)).items.length, 1);
        assert.equal((await store.getPendingSubscriptions(bob)).length, 1);
        assert.equal(await store.countOffline(bob), 1);
        assert.notEqual(await store.getVCard(bob), undefined);
        assert.notEqual(await store.getPrivate(bob, "storage storage:bookmarks"), undefined);
        assert.deepEqual(await store.getBlocklist(bob), [`spam@${alice}`]);
      });

      it("a deleted user starts afresh when the account is created again", async (t) => {
        const store = await setup(t);
        await store.createAccount(account(alice, 1));
        await store.pushOffline(alice, offline(1), 10);
        await store.putRosterItem(alice, { jid: bob, subscription: "both", groups: [] });
        await store.deleteAccount(alice);
        assert.equal(await store.createAccount(account(alice, 2)), true);
        assert.deepEqual(await store.getAccount(alice), account(alice, 2));
        assert.deepEqual(await store.takeOffline(alice), []);
        assert.deepEqual((await store.getRoster(alice)).items, []);
      });
    });

    describe("concurrency", () => {
      it("concurrent createAccount for one JID lets exactly one succeed", async (t) => {
        const store = await setup(t);
        const attempts = Array.from({ length: 10 }, (_, i) => account(alice, i));
        const results = await Promise.all(attempts.map((a) => store.createAccount(a)));
        assert.equal(results.filter(Boolean).length, 1);
        const winner = attempts[results.indexOf(true)];
        assert.deepEqual(await store.getAccount(alice), winner);
        assert.equal(await store.countAccounts(), 1);
      });

      it("concurrent pushOffline never exceeds the limit", async (t) => {
        const store = await setup(t);
        await store.pushOffline(alice, offline(0), 5);
        const results = await Promise.all(
          Array.from({ length: 20 }, (_, i) => store.pushOffline(alice, offline(i + 1), 5)),
        );
        assert.equal(results.filter(Boolean).length, 4);
        assert.equal(await store.countOffline(alice), 5);
        assert.equal((await store.takeOffline(alice)).length, 5);
      });

      it("concurrent putRosterItem calls get distinct increasing versions", async (t) => {
        const store = await setup(t);
        const contacts = Array.from({ length: 20 }, (_, i) => user(`contact${i}@example.com`));
        const versions = await Promise.all(
          contacts.map((jid) => store.putRosterItem(alice, { jid, subscription: "none", groups: [] })),
        );
        assert.deepEqual(
          [...versions].sort((a, b) => a - b),
          Array.from({ length: 20 }, (_, i) => i + 1),
        );
        const roster = await store.getRoster(alice);
        assert.equal(roster.version, 20);
        assert.equal(roster.items.length, 20);
      });

      it("concurrent addBlocked calls lose no JID", async (t) => {
        const store = await setup(t);
        const items = Array.from({ length: 10 }, (_, i) => `blocked${i}@example.com`);
        await Promise.all(items.map((item) => store.addBlocked(alice, [item])));
        assert.deepEqual(await store.getBlocklist(alice), [...items].sort());
      });

      it("concurrent takeOffline calls hand each message out once", async (t) => {
        const store = await setup(t);
        for (let i = 0; i < 10; i++) await store.pushOffline(alice, offline(i), 100);
        const taken = await Promise.all([
          store.takeOffline(alice),
          store.takeOffline(alice),
          store.takeOffline(alice),
        ]);
        assert.deepEqual(
          taken.flat().map((m) => m.storedAt),
          Array.from({ length: 10 }, (_, i) => offline(i).storedAt),
        );
      });
    });

    describe("unicode", () => {
      it("unicode JIDs and payloads round-trip and sort in JavaScript order", async (t) => {
        const store = await setup(t);
        const jids = [
          user("Ünïcödé@Bücher.example"),
          user("\u{1F99C}@example.com"),
          user("\u{E000}x@example.com"),
          user("日本語@例え.jp"),
          user("zoë@example.com"),
        ];
        for (const [i, jid] of jids.entries()) assert.equal(await store.createAccount(account(jid, i)), true);
        // U+E000 sorts after the surrogate pair of U+1F99C in UTF-16, before it in UTF-8 bytes.
        assert.deepEqual(await store.listAccounts(), [...jids].sort());
        for (const [i, jid] of jids.entries()) assert.deepEqual(await store.getAccount(jid), account(jid, i));

        const [first, second] = jids as [BareJid, BareJid];
        const item: RosterItem = {
          jid: second,
          name: "Pärrot \u{1F99C}",
          subscription: "both",
          groups: ["Fréunde"],
        };
        await store.putRosterItem(first, item);
        assert.deepEqual(await store.getRoster(first), { version: 1, items: [item] });
        const message = { stanza: "<message><body>héllo \u{1F30D} 世界</body></message>", storedAt: 1 };
        await store.pushOffline(second, message, 10);
        assert.deepEqual(await store.takeOffline(second), [message]);
        await store.putPrivate(
          first,
          "données urn:exemple:données",
          "<données xmlns='urn:exemple:données'/>",
        );
        assert.equal(
          await store.getPrivate(first, "données urn:exemple:données"),
          "<données xmlns='urn:exemple:données'/>",
        );
        assert.deepEqual(await store.addBlocked(first, ["\u{1F99C}@example.com", "\u{E000}@example.com"]), [
          "\u{1F99C}@example.com",
          "\u{E000}@example.com",
        ]);
        assert.equal(await store.deleteAccount(first), true);
        assert.deepEqual(await store.listAccounts(), jids.filter((jid) => jid !== first).sort());
      });
    });
  });
}

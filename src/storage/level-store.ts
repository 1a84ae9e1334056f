/**
 * The embedded store: one LevelDB directory, opened by one process, with one sublevel per kind
 * of data and msgpack values. It is the default for a one-node install; clusters use the
 * PostgreSQL adapter instead, and both pass `test/conformance/store-suite.ts`.
 *
 * LevelDB gives atomic batches but no transactions, so every write for one user runs under a
 * per-user async lock: the read-modify-write steps (create-if-absent, version bumps, the
 * offline limit) cannot interleave inside this process, and LevelDB's LOCK file keeps every
 * other process out.
 */
import { Level } from "level";
import { Packr } from "msgpackr";
import { XmppServerError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type {
  Account,
  LoginToken,
  OfflineMessage,
  PendingSubscription,
  Roster,
  RosterItem,
  ScramCredential,
  Store,
} from "./store.ts";
import { wrapStoreError } from "./store-error.ts";

/** Options for {@link LevelStore}. */
export interface LevelStoreOptions {
  /** Receives lifecycle events (open, close); silent when absent. */
  log?: Logger;
}

/**
 * Stored values are decoded one at a time, possibly years after they were written, so records
 * (shared structures) are off: every value carries its own keys and stays decodable forever
 * (STYLE.md §6).
 */
const packr = new Packr({ useRecords: false });

/** A level-transcoder encoding that stores values as msgpack. */
const msgpackEncoding = {
  name: "msgpackr",
  format: "buffer" as const,
  encode: (value: unknown): Buffer => packr.pack(value),
  decode: (buffer: Buffer): unknown => packr.unpack(buffer),
};

/**
 * Separates the user's bare JID from the rest of a compound key. A normalised JID never
 * contains a control character (RFC 7622 §3.3.1 and the PRECIS IdentifierClass), so the range
 * `[jid + "\0", jid + "\x01")` holds exactly that user's keys.
 */
const SEP = "\u0000";
const SEP_END = "\u0001";

/** Offline sequence numbers are zero-padded so that byte order is arrival order. */
const SEQ_DIGITS = 16;

/** How the offline queue of one user is summed up, kept in the same batch as the messages. */
interface OfflineMeta {
  /** The sequence number the next message gets. */
  next: number;
  /** How many messages are stored. */
  count: number;
}

type Db = Level<string, unknown>;
type Sub = ReturnType<typeof openSublevel>;

function openSublevel(db: Db, name: string) {
  return db.sublevel<string, unknown>(name, { valueEncoding: msgpackEncoding });
}

/** The sublevels, one per kind of data. */
interface Sublevels {
  /** jid → Account */
  accounts: Sub;
  /** jid SEP contact → RosterItem */
  roster: Sub;
  /** jid → roster version (number) */
  rosterVersion: Sub;
  /** jid SEP from → PendingSubscription */
  pending: Sub;
  /** jid SEP seq → OfflineMessage */
  offline: Sub;
  /** jid → OfflineMeta */
  offlineMeta: Sub;
  /** jid → vCard XML */
  vcard: Sub;
  /** jid SEP "name xmlns" → private XML */
  private: Sub;
  /** jid → sorted string[] */
  blocklist: Sub;
  /** SHA-256 of a login token → { jid, expiresAt } */
  tokens: Sub;
}

/** The lock key of the login tokens (not a JID: no account can hold it). */
const TOKENS_LOCK = "\0tokens";

function userKey(jid: BareJid, suffix: string): string {
  return `${jid}${SEP}${suffix}`;
}

function userRange(jid: BareJid): { gt: string; lt: string } {
  return { gt: `${jid}${SEP}`, lt: `${jid}${SEP_END}` };
}

function seqKey(jid: BareJid, seq: number): string {
  return userKey(jid, String(seq).padStart(SEQ_DIGITS, "0"));
}

/** Copies only the fields of the contract, so a caller's extra properties are never persisted. */
function cleanCredential(credential: ScramCredential): ScramCredential {
  return {
    salt: credential.salt,
    iterations: credential.iterations,
    storedKey: credential.storedKey,
    serverKey: credential.serverKey,
  };
}

function cleanAccount(account: Account): Account {
  return {
    jid: account.jid,
    scramSha1: cleanCredential(account.scramSha1),
    scramSha256: cleanCredential(account.scramSha256),
    createdAt: account.createdAt,
  };
}

function cleanRosterItem(item: RosterItem): RosterItem {
  const out: RosterItem = { jid: item.jid, subscription: item.subscription, groups: [...item.groups] };
  if (item.name !== undefined) out.name = item.name;
  if (item.ask !== undefined) out.ask = item.ask;
  if (item.approved !== undefined) out.approved = item.approved;
  return out;
}

/** Runs async functions one at a time per key; different keys run concurrently. */
class KeyedLock {
  #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key);
    const { promise: done, resolve: release } = Promise.withResolvers<void>();
    const tail = previous === undefined ? done : previous.then(() => done);
    this.#tails.set(key, tail);
    if (previous !== undefined) await previous;
    try {
      return await fn();
    } finally {
      release();
      // The last holder removes the entry, so the map only holds keys with work queued.
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

/** Whether `error` (or an error in its cause chain) is level's "LOCK already held" error. */
function hasLockedCause(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if ((e as { code?: unknown }).code === "LEVEL_LOCKED") return true;
  }
  return false;
}

/**
 * Whether `error` is the XSRV_STORE error {@link LevelStore.open} throws when another process
 * holds the directory. The CLI uses it to fall back to the running node's admin endpoint.
 */
export function isStoreLocked(error: unknown): boolean {
  return error instanceof XmppServerError && error.code === "XSRV_STORE" && hasLockedCause(error.cause);
}

function assertJid(jid: BareJid): void {
  // A control character would let a prefix range reach into another user's keys.
  if (typeof jid !== "string" || jid.length === 0 || jid.includes(SEP) || jid.includes(SEP_END)) {
    throw new TypeError(`Invalid bare JID ${JSON.stringify(jid)}`);
  }
}

/**
 * {@link Store} on an embedded LevelDB directory.
 *
 * @example
 * const store = new LevelStore(join(config.dataDir, "store"), { log });
 * await store.open(); // throws XSRV_STORE (isStoreLocked) when another process has it open
 */
export class LevelStore implements Store {
  readonly location: string;
  #log: Logger | undefined;
  #db: Db | undefined;
  #subs: Sublevels | undefined;
  #opening: Promise<void> | undefined;
  #closing = false;
  #locks = new KeyedLock();
  #inFlight = new Set<Promise<unknown>>();

  constructor(location: string, options: LevelStoreOptions = {}) {
    if (typeof location !== "string" || location.length === 0) {
      throw new TypeError("The store location must be a non-empty path");
    }
    this.location = location;
    this.#log = options.log;
  }

  /** Opens (or reopens after {@link close}) the directory, creating it when missing; idempotent. */
  async open(): Promise<void> {
    if (this.#db?.status === "open") return;
    this.#opening ??= this.#open().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  async #open(): Promise<void> {
    // The Level is created here, not in the constructor: a Level opens itself on construction,
    // and a LevelStore that is never opened must not touch the disk.
    const db: Db = this.#db ?? new Level<string, unknown>(this.location, { valueEncoding: msgpackEncoding });
    this.#db = db;
    try {
      await db.open();
    } catch (error) {
      if (hasLockedCause(error)) {
        throw new XmppServerError(
          "XSRV_STORE",
          `Cannot open store at "${this.location}": it is in use by another process (LevelDB allows one opener at a time)`,
          { cause: error },
        );
      }
      throw wrapStoreError(error, `open store at "${this.location}"`);
    }
    this.#subs = {
      accounts: openSublevel(db, "accounts"),
      roster: openSublevel(db, "roster"),
      rosterVersion: openSublevel(db, "roster-version"),
      pending: openSublevel(db, "pending"),
      offline: openSublevel(db, "offline"),
      offlineMeta: openSublevel(db, "offline-meta"),
      vcard: openSublevel(db, "vcard"),
      private: openSublevel(db, "private"),
      blocklist: openSublevel(db, "blocklist"),
      tokens: openSublevel(db, "tokens"),
    };
    this.#closing = false;
    this.#log?.info({ location: this.location }, "store opened");
  }

  /** Waits for operations in progress, then closes the directory and releases its lock. */
  async close(): Promise<void> {
    const db = this.#db;
    if (db === undefined) return;
    if (this.#opening !== undefined) await this.#opening.catch(() => {});
    if (db.status !== "open") return;
    this.#closing = true;
    try {
      await Promise.allSettled([...this.#inFlight]);
      await db.close();
    } catch (error) {
      throw wrapStoreError(error, `close store at "${this.location}"`);
    } finally {
      this.#closing = false;
    }
    this.#log?.info({ location: this.location }, "store closed");
  }

  /** Runs one operation: checks the store is open, tracks it for close(), wraps level's errors. */
  #run<T>(what: string, fn: (db: Db, subs: Sublevels) => Promise<T>): Promise<T> {
    const db = this.#db;
    const subs = this.#subs;
    if (db === undefined || subs === undefined || db.status !== "open" || this.#closing) {
      return Promise.reject(
        new XmppServerError("XSRV_STORE", `Cannot ${what}: the store at "${this.location}" is not open`),
      );
    }
    const promise = (async () => {
      try {
        return await fn(db, subs);
      } catch (error) {
        throw wrapStoreError(error, what);
      }
    })();
    this.#inFlight.add(promise);
    const forget = () => this.#inFlight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  /** {@link #run} under the user's lock, for everything that writes that user's data. */
  #runLocked<T>(jid: BareJid, what: string, fn: (db: Db, subs: Sublevels) => Promise<T>): Promise<T> {
    assertJid(jid);
    return this.#run(what, (db, subs) => this.#locks.run(jid, () => fn(db, subs)));
  }

  // --- accounts -------------------------------------------------------------------------------

  async getAccount(jid: BareJid): Promise<Account | undefined> {
    assertJid(jid);
    return this.#run(`get account "${jid}"`, async (_db, s) => {
      return (await s.accounts.get(jid)) as Account | undefined;
    });
  }

  async createAccount(account: Account): Promise<boolean> {
    return this.#runLocked(account.jid, `create account "${account.jid}"`, async (_db, s) => {
      if ((await s.accounts.get(account.jid)) !== undefined) return false;
      await s.accounts.put(account.jid, cleanAccount(account));
      return true;
    });
  }

  async updateAccount(account: Account): Promise<boolean> {
    return this.#runLocked(account.jid, `update account "${account.jid}"`, async (_db, s) => {
      if ((await s.accounts.get(account.jid)) === undefined) return false;
      await s.accounts.put(account.jid, cleanAccount(account));
      return true;
    });
  }

  async deleteAccount(jid: BareJid): Promise<boolean> {
    return this.#runLocked(jid, `delete account "${jid}"`, async (db, s) => {
      const existed = (await s.accounts.get(jid)) !== undefined;
      // Stray data of a user without an account is removed too: "every piece of data the user
      // owns" goes, in one batch, so a crash cannot leave half an account behind.
      const batch = db.batch();
      for (const sub of [s.accounts, s.rosterVersion, s.offlineMeta, s.vcard, s.blocklist]) {
        batch.del(jid, { sublevel: sub });
      }
      for (const sub of [s.roster, s.pending, s.offline, s.private]) {
        for (const key of await sub.keys(userRange(jid)).all()) batch.del(key, { sublevel: sub });
      }
      await batch.write();
      return existed;
    });
  }

  async listAccounts(): Promise<BareJid[]> {
    return this.#run("list accounts", async (_db, s) => {
      const keys = (await s.accounts.keys().all()) as BareJid[];
      // LevelDB orders by UTF-8 bytes; the contract's "sorted" is JavaScript's default order.
      return keys.sort();
    });
  }

  async countAccounts(): Promise<number> {
    return this.#run("count accounts", async (_db, s) => {
      let count = 0;
      for await (const _ of s.accounts.keys()) count++;
      return count;
    });
  }

  // --- roster ---------------------------------------------------------------------------------

  async getRoster(jid: BareJid): Promise<Roster> {
    // Under the lock so that the version and the items are read from the same state.
    return this.#runLocked(jid, `get roster of "${jid}"`, async (_db, s) => {
      const version = ((await s.rosterVersion.get(jid)) as number | undefined) ?? 0;
      const items = (await s.roster.values(userRange(jid)).all()) as RosterItem[];
      return { version, items };
    });
  }

  async putRosterItem(jid: BareJid, item: RosterItem): Promise<number> {
    assertJid(item.jid);
    return this.#runLocked(jid, `put roster item "${item.jid}" of "${jid}"`, async (db, s) => {
      const version = (((await s.rosterVersion.get(jid)) as number | undefined) ?? 0) + 1;
      await db
        .batch()
        .put(userKey(jid, item.jid), cleanRosterItem(item), { sublevel: s.roster })
        .put(jid, version, { sublevel: s.rosterVersion })
        .write();
      return version;
    });
  }

  async deleteRosterItem(jid: BareJid, contact: BareJid): Promise<number | undefined> {
    assertJid(contact);
    return this.#runLocked(jid, `delete roster item "${contact}" of "${jid}"`, async (db, s) => {
      const key = userKey(jid, contact);
      if ((await s.roster.get(key)) === undefined) return undefined;
      const version = (((await s.rosterVersion.get(jid)) as number | undefined) ?? 0) + 1;
      await db
        .batch()
        .del(key, { sublevel: s.roster })
        .put(jid, version, { sublevel: s.rosterVersion })
        .write();
      return version;
    });
  }

  // --- pending subscriptions ------------------------------------------------------------------

  async getPendingSubscriptions(jid: BareJid): Promise<PendingSubscription[]> {
    assertJid(jid);
    return this.#run(`get pending subscriptions of "${jid}"`, async (_db, s) => {
      return (await s.pending.values(userRange(jid)).all()) as PendingSubscription[];
    });
  }

  async putPendingSubscription(jid: BareJid, pending: PendingSubscription): Promise<void> {
    assertJid(pending.from);
    return this.#runLocked(jid, `put pending subscription from "${pending.from}" to "${jid}"`, (_db, s) =>
      s.pending.put(userKey(jid, pending.from), { from: pending.from, stanza: pending.stanza }),
    );
  }

  async deletePendingSubscription(jid: BareJid, from: BareJid): Promise<void> {
    return this.#runLocked(jid, `delete pending subscription from "${from}" to "${jid}"`, (_db, s) =>
      s.pending.del(userKey(jid, from)),
    );
  }

  // --- offline messages -----------------------------------------------------------------------

  async pushOffline(jid: BareJid, message: OfflineMessage, limit: number): Promise<boolean> {
    if (Number.isNaN(limit) || limit < 0) {
      throw new RangeError(`The offline limit must be a non-negative number, got ${limit}`);
    }
    return this.#runLocked(jid, `store offline message for "${jid}"`, async (db, s) => {
      const meta = ((await s.offlineMeta.get(jid)) as OfflineMeta | undefined) ?? { next: 0, count: 0 };
      if (meta.count >= limit) return false;
      const stored: OfflineMessage = { stanza: message.stanza, storedAt: message.storedAt };
      await db
        .batch()
        .put(seqKey(jid, meta.next), stored, { sublevel: s.offline })
        .put(jid, { next: meta.next + 1, count: meta.count + 1 }, { sublevel: s.offlineMeta })
        .write();
      return true;
    });
  }

  async takeOffline(jid: BareJid): Promise<OfflineMessage[]> {
    return this.#runLocked(jid, `take offline messages of "${jid}"`, async (db, s) => {
      const entries = (await s.offline.iterator(userRange(jid)).all()) as [string, OfflineMessage][];
      if (entries.length === 0) return [];
      const batch = db.batch();
      for (const [key] of entries) batch.del(key, { sublevel: s.offline });
      batch.del(jid, { sublevel: s.offlineMeta });
      await batch.write();
      return entries.map(([, message]) => message);
    });
  }

  async listOffline(jid: BareJid): Promise<OfflineMessage[]> {
    assertJid(jid);
    return this.#run(`list offline messages of "${jid}"`, async (_db, s) => {
      const entries = (await s.offline.iterator(userRange(jid)).all()) as [string, OfflineMessage][];
      return entries.map(([, message]) => message);
    });
  }

  async countOffline(jid: BareJid): Promise<number> {
    assertJid(jid);
    return this.#run(`count offline messages of "${jid}"`, async (_db, s) => {
      return ((await s.offlineMeta.get(jid)) as OfflineMeta | undefined)?.count ?? 0;
    });
  }

  // --- one-time login tokens ------------------------------------------------------------------

  async putLoginToken(token: LoginToken, now: number): Promise<void> {
    assertJid(token.jid);
    return this.#runTokens("put a login token", async (s) => {
      const expired: string[] = [];
      for await (const [hash, value] of s.tokens.iterator() as AsyncIterable<
        [string, { expiresAt: number }]
      >) {
        if (value.expiresAt < now) expired.push(hash);
      }
      await s.tokens.batch([
        ...expired.map((key) => ({ type: "del" as const, key })),
        { type: "put" as const, key: token.hash, value: { jid: token.jid, expiresAt: token.expiresAt } },
      ]);
    });
  }

  /** Runs `fn` under the one lock of the login tokens. */
  #runTokens<T>(what: string, fn: (subs: Sublevels) => Promise<T>): Promise<T> {
    return this.#run(what, (_db, subs) => this.#locks.run(TOKENS_LOCK, () => fn(subs)));
  }

  async takeLoginToken(hash: string): Promise<LoginToken | undefined> {
    // One lock for every token: a take reads then deletes, and two must not both read it.
    return this.#runTokens("take a login token", async (s) => {
      const value = (await s.tokens.get(hash)) as { jid: BareJid; expiresAt: number } | undefined;
      if (value === undefined) return undefined;
      await s.tokens.del(hash);
      return { hash, jid: value.jid, expiresAt: value.expiresAt };
    });
  }

  // --- vCard and private XML ------------------------------------------------------------------

  async getVCard(jid: BareJid): Promise<string | undefined> {
    assertJid(jid);
    return this.#run(
      `get vCard of "${jid}"`,
      async (_db, s) => (await s.vcard.get(jid)) as string | undefined,
    );
  }

  async putVCard(jid: BareJid, vcard: string): Promise<void> {
    return this.#runLocked(jid, `put vCard of "${jid}"`, (_db, s) => s.vcard.put(jid, vcard));
  }

  async getPrivate(jid: BareJid, key: string): Promise<string | undefined> {
    assertJid(jid);
    return this.#run(
      `get private XML "${key}" of "${jid}"`,
      async (_db, s) => (await s.private.get(userKey(jid, key))) as string | undefined,
    );
  }

  async listPrivate(jid: BareJid): Promise<{ key: string; xml: string }[]> {
    assertJid(jid);
    return this.#run(`list private XML of "${jid}"`, async (_db, s) => {
      const entries = (await s.private.iterator(userRange(jid)).all()) as [string, string][];
      const prefix = userKey(jid, "").length;
      return entries
        .map(([key, xml]) => ({ key: key.slice(prefix), xml }))
        .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    });
  }

  async putPrivate(jid: BareJid, key: string, xml: string): Promise<void> {
    return this.#runLocked(jid, `put private XML "${key}" of "${jid}"`, (_db, s) =>
      s.private.put(userKey(jid, key), xml),
    );
  }

  // --- blocklist ------------------------------------------------------------------------------

  async getBlocklist(jid: BareJid): Promise<string[]> {
    assertJid(jid);
    return this.#run(
      `get blocklist of "${jid}"`,
      async (_db, s) => ((await s.blocklist.get(jid)) as string[] | undefined) ?? [],
    );
  }

  async addBlocked(jid: BareJid, items: string[]): Promise<string[]> {
    return this.#runLocked(jid, `add to blocklist of "${jid}"`, async (_db, s) => {
      const current = ((await s.blocklist.get(jid)) as string[] | undefined) ?? [];
      const next = [...new Set([...current, ...items])].sort();
      if (next.length !== current.length) await s.blocklist.put(jid, next);
      return next;
    });
  }

  async removeBlocked(jid: BareJid, items?: string[]): Promise<string[]> {
    return this.#runLocked(jid, `remove from blocklist of "${jid}"`, async (_db, s) => {
      if (items === undefined) {
        await s.blocklist.del(jid);
        return [];
      }
      const current = ((await s.blocklist.get(jid)) as string[] | undefined) ?? [];
      const removed = new Set(items);
      const next = current.filter((item) => !removed.has(item));
      if (next.length === 0) await s.blocklist.del(jid);
      else if (next.length !== current.length) await s.blocklist.put(jid, next);
      return next;
    });
  }
}

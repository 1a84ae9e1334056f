/**
 * The accounts layer: every change of an account (the admin API, `starling user`, in-band
 * registration, a password change over XMPP) goes through here, so that each respects what the
 * configured provider can do. With the `internal` provider Starling owns the accounts and keeps
 * their SCRAM keys in its store; with `http` or `sql` they belong to the web site, and every
 * change is refused with `XSRV_ACCOUNTS_EXTERNAL` (the site changes its own users).
 */
import type { Config } from "../config/defaults.ts";
import { XmppServerError } from "../errors.ts";
import type { Store } from "../storage/store.ts";
import type { BareJid } from "../xmpp/jid.ts";
import { createAccountRecordAsync } from "./scram.ts";

/** The store operations accounts need. */
export type AccountStore = Pick<
  Store,
  "getAccount" | "createAccount" | "updateAccount" | "deleteAccount" | "listAccounts"
>;

/** Whether the provider `config.auth` names keeps its accounts in Starling (its `managesAccounts`). */
export function providerManagesAccounts(config: Readonly<Config>): boolean {
  return config.auth.provider === "internal";
}

/** Account changes, refused when the accounts are not Starling's. */
export class Accounts {
  readonly #store: AccountStore;
  readonly #managed: () => boolean;

  /**
   * `managed` is asked at each change (a reload may change the provider): the provider's
   * `managesAccounts`, or {@link providerManagesAccounts} where no provider runs (the CLI).
   */
  constructor(store: AccountStore, managed: () => boolean) {
    this.#store = store;
    this.#managed = managed;
  }

  /** Whether accounts can be created and changed here. */
  get managed(): boolean {
    return this.#managed();
  }

  /** Creates an account; false when it exists already. */
  async create(jid: BareJid, password: string): Promise<boolean> {
    this.#requireManaged();
    return this.#store.createAccount(await createAccountRecordAsync(jid, password));
  }

  /**
   * Creates accounts, `concurrency` at a time, until done or `stopped()`; existing ones are left
   * as they are. Each PBKDF2 runs on the libuv threadpool, which the store shares; one account
   * per pool thread keeps every thread busy without queueing thousands of jobs before the
   * store's own reads and writes.
   */
  async createMany(
    entries: readonly { jid: BareJid; password: string }[],
    options: { concurrency: number; stopped?: () => boolean },
  ): Promise<{ created: number; existing: number }> {
    this.#requireManaged();
    let created = 0;
    let existing = 0;
    let next = 0;
    const worker = async () => {
      while (options.stopped?.() !== true && next < entries.length) {
        const { jid, password } = entries[next++]!;
        if ((await this.#store.getAccount(jid)) !== undefined) existing++;
        else if (await this.#store.createAccount(await createAccountRecordAsync(jid, password))) created++;
        else existing++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, entries.length) }, worker));
    return { created, existing };
  }

  /** Sets a new password (new salt, new SCRAM keys); false when there is no such account. */
  async setPassword(jid: BareJid, password: string): Promise<boolean> {
    this.#requireManaged();
    const existing = await this.#store.getAccount(jid);
    if (existing === undefined) return false;
    const fresh = await createAccountRecordAsync(jid, password);
    return this.#store.updateAccount({ ...fresh, createdAt: existing.createdAt });
  }

  /** Deletes an account and its data; false when there is no such account. */
  async remove(jid: BareJid): Promise<boolean> {
    this.#requireManaged();
    return this.#store.deleteAccount(jid);
  }

  /** The accounts in Starling's store (none of a web site's, with an external provider). */
  list(): Promise<readonly string[]> {
    return this.#store.listAccounts();
  }

  #requireManaged(): void {
    if (!this.#managed()) {
      throw new XmppServerError(
        "XSRV_ACCOUNTS_EXTERNAL",
        "accounts belong to the web site (auth.provider is not internal): create and change them there",
      );
    }
  }
}

/**
 * The store across a thread boundary. LevelDB allows one opener per process, so the main thread
 * owns the store and exposes it on a MessagePort; each worker thread gets a {@link Store} whose
 * every method is a comlink round trip to it. Errors keep their `code` on the way back
 * (`comlink-setup.ts`), so worker code branches on `XSRV_STORE` exactly as it would in-process.
 *
 * ```
 *   main thread                                  worker thread
 *   const { port1, port2 } = new MessageChannel();
 *   exposeStore(levelStore, port1);  ── port2 ──▶  const store = connectStore(port2);
 *                                                  await store.getAccount(jid);
 * ```
 */
import type { MessagePort } from "node:worker_threads";
import { expose, nodeEndpoint, type Remote, wrap } from "../comlink-setup.ts";
import { XmppServerError } from "../errors.ts";
import type { BareJid } from "../xmpp/jid.ts";
import type {
  Account,
  LoginToken,
  OfflineMessage,
  PendingSubscription,
  Roster,
  RosterItem,
  Store,
} from "./store.ts";

/** The methods a worker may call; `open` and `close` stay with the thread that owns the store. */
type ForwardedMethod = Exclude<keyof Store, "open" | "close">;
type ForwardedStore = Pick<Store, ForwardedMethod>;

const FORWARDED_METHODS = [
  "getAccount",
  "createAccount",
  "updateAccount",
  "deleteAccount",
  "listAccounts",
  "countAccounts",
  "getRoster",
  "putRosterItem",
  "deleteRosterItem",
  "getPendingSubscriptions",
  "putPendingSubscription",
  "deletePendingSubscription",
  "pushOffline",
  "takeOffline",
  "countOffline",
  "listOffline",
  "getVCard",
  "putVCard",
  "putLoginToken",
  "takeLoginToken",
  "getPrivate",
  "putPrivate",
  "listPrivate",
  "getBlocklist",
  "addBlocked",
  "removeBlocked",
] as const satisfies readonly ForwardedMethod[];

/** Fails to compile when a method is added to `Store` but not to {@link FORWARDED_METHODS}. */
type Unforwarded = Exclude<ForwardedMethod, (typeof FORWARDED_METHODS)[number]>;
const everyMethodForwarded: [Unforwarded] extends [never] ? true : Unforwarded = true;
void everyMethodForwarded;

/**
 * Serves `store` on `port` (the thread that owns the store calls this). Only the data methods
 * are exposed: a worker can neither open nor close the shared store, whose lifecycle belongs to
 * its owner. The port stays referenced (keeping this thread alive) until its owner closes it,
 * typically when the worker it was handed to exits. Use one port per link, for comlink only.
 */
export function exposeStore(store: Store, port: MessagePort): void {
  const facade: Record<string, unknown> = {};
  for (const name of FORWARDED_METHODS) {
    // One cast at the comlink boundary: each entry is a Store method bound to its store.
    facade[name] = (store[name] as (...args: unknown[]) => Promise<unknown>).bind(store);
  }
  expose(facade, nodeEndpoint(port));
}

/**
 * A {@link Store} whose methods run on the store exposed at the other end of `port` (the worker
 * calls this). It is usable at once; `close()` waits for the calls in progress, then refuses new
 * ones with XSRV_STORE and unreferences the port so it no longer keeps the thread alive; `open()`
 * undoes that. Neither touches the store itself.
 */
export function connectStore(port: MessagePort): Store {
  return new RemoteStore(port);
}

/** The worker side of {@link connectStore}: every method is one comlink call. */
class RemoteStore implements Store {
  #port: MessagePort;
  #remote: Remote<ForwardedStore>;
  #closed = false;
  #inFlight = new Set<Promise<unknown>>();

  constructor(port: MessagePort) {
    this.#port = port;
    this.#remote = wrap<ForwardedStore>(nodeEndpoint(port));
  }

  async open(): Promise<void> {
    if (!this.#closed) return;
    this.#closed = false;
    this.#port.ref();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#inFlight]);
    this.#port.unref();
  }

  #call<T>(method: ForwardedMethod, call: (remote: Remote<ForwardedStore>) => Promise<T>): Promise<T> {
    if (this.#closed) {
      return Promise.reject(
        new XmppServerError("XSRV_STORE", `Cannot call ${method}: the remote store is closed`),
      );
    }
    const promise = call(this.#remote);
    this.#inFlight.add(promise);
    const forget = () => this.#inFlight.delete(promise);
    promise.then(forget, forget);
    return promise;
  }

  getAccount(jid: BareJid): Promise<Account | undefined> {
    return this.#call("getAccount", (r) => r.getAccount(jid));
  }
  createAccount(account: Account): Promise<boolean> {
    return this.#call("createAccount", (r) => r.createAccount(account));
  }
  updateAccount(account: Account): Promise<boolean> {
    return this.#call("updateAccount", (r) => r.updateAccount(account));
  }
  deleteAccount(jid: BareJid): Promise<boolean> {
    return this.#call("deleteAccount", (r) => r.deleteAccount(jid));
  }
  listAccounts(): Promise<BareJid[]> {
    return this.#call("listAccounts", (r) => r.listAccounts());
  }
  countAccounts(): Promise<number> {
    return this.#call("countAccounts", (r) => r.countAccounts());
  }

  getRoster(jid: BareJid): Promise<Roster> {
    return this.#call("getRoster", (r) => r.getRoster(jid));
  }
  putRosterItem(jid: BareJid, item: RosterItem): Promise<number> {
    return this.#call("putRosterItem", (r) => r.putRosterItem(jid, item));
  }
  deleteRosterItem(jid: BareJid, contact: BareJid): Promise<number | undefined> {
    return this.#call("deleteRosterItem", (r) => r.deleteRosterItem(jid, contact));
  }

  getPendingSubscriptions(jid: BareJid): Promise<PendingSubscription[]> {
    return this.#call("getPendingSubscriptions", (r) => r.getPendingSubscriptions(jid));
  }
  putPendingSubscription(jid: BareJid, pending: PendingSubscription): Promise<void> {
    return this.#call("putPendingSubscription", (r) => r.putPendingSubscription(jid, pending));
  }
  deletePendingSubscription(jid: BareJid, from: BareJid): Promise<void> {
    return this.#call("deletePendingSubscription", (r) => r.deletePendingSubscription(jid, from));
  }

  pushOffline(jid: BareJid, message: OfflineMessage, limit: number): Promise<boolean> {
    return this.#call("pushOffline", (r) => r.pushOffline(jid, message, limit));
  }
  takeOffline(jid: BareJid): Promise<OfflineMessage[]> {
    return this.#call("takeOffline", (r) => r.takeOffline(jid));
  }
  countOffline(jid: BareJid): Promise<number> {
    return this.#call("countOffline", (r) => r.countOffline(jid));
  }

  listOffline(jid: BareJid): Promise<OfflineMessage[]> {
    return this.#call("listOffline", (r) => r.listOffline(jid));
  }

  getVCard(jid: BareJid): Promise<string | undefined> {
    return this.#call("getVCard", (r) => r.getVCard(jid));
  }
  putVCard(jid: BareJid, vcard: string): Promise<void> {
    return this.#call("putVCard", (r) => r.putVCard(jid, vcard));
  }

  putLoginToken(token: LoginToken, now: number): Promise<void> {
    return this.#call("putLoginToken", (r) => r.putLoginToken(token, now));
  }
  takeLoginToken(hash: string): Promise<LoginToken | undefined> {
    return this.#call("takeLoginToken", (r) => r.takeLoginToken(hash));
  }

  getPrivate(jid: BareJid, key: string): Promise<string | undefined> {
    return this.#call("getPrivate", (r) => r.getPrivate(jid, key));
  }

  listPrivate(jid: BareJid): Promise<{ key: string; xml: string }[]> {
    return this.#call("listPrivate", (r) => r.listPrivate(jid));
  }
  putPrivate(jid: BareJid, key: string, xml: string): Promise<void> {
    return this.#call("putPrivate", (r) => r.putPrivate(jid, key, xml));
  }

  getBlocklist(jid: BareJid): Promise<string[]> {
    return this.#call("getBlocklist", (r) => r.getBlocklist(jid));
  }
  addBlocked(jid: BareJid, items: string[]): Promise<string[]> {
    return this.#call("addBlocked", (r) => r.addBlocked(jid, items));
  }
  removeBlocked(jid: BareJid, items?: string[]): Promise<string[]> {
    return this.#call("removeBlocked", (r) => r.removeBlocked(jid, items));
  }
}

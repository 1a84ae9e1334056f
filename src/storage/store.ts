/**
 * The one storage interface. Adapters: `level-store.ts` (embedded, one node) and, later, a
 * PostgreSQL adapter for clusters. Every adapter passes `test/conformance/store-suite.ts`.
 *
 * Users are keyed by their normalised bare JID. Stanzas are stored as serialised XML strings.
 * An absent record is `undefined`, never an error. Every method that writes more than one key
 * writes them atomically, so a crash never leaves data half-written.
 */
import type { BareJid } from "../xmpp/jid.ts";

import type { ScramCredential } from "../xmpp/sasl/scram-credential.ts";

export type { ScramCredential };

/** An account. */
export interface Account {
  jid: BareJid;
  scramSha1: ScramCredential;
  scramSha256: ScramCredential;
  /** Milliseconds since the epoch. */
  createdAt: number;
}

/** A one-time login token as stored: its hash, the account, the expiry (ms since the epoch). */
export interface LoginToken {
  hash: string;
  jid: BareJid;
  expiresAt: number;
}

/** RFC 6121 §2.1.2.5 subscription states as stored on a roster item. */
export type Subscription = "none" | "to" | "from" | "both";

/** One roster item (RFC 6121 §2.1.2). */
export interface RosterItem {
  jid: BareJid;
  name?: string;
  subscription: Subscription;
  /** We asked the contact for a subscription and wait for the answer ("pending out"). */
  ask?: boolean;
  /** We pre-approved the contact's subscription request (RFC 6121 §3.4). */
  approved?: boolean;
  groups: string[];
}

/** A user's roster with its version (RFC 6121 §2.6). */
export interface Roster {
  /** Increases on every change; sent to clients as the `ver` attribute. */
  version: number;
  items: RosterItem[];
}

/** An inbound subscription request waiting for the user's answer ("pending in"). */
export interface PendingSubscription {
  from: BareJid;
  /** The presence stanza as received, redelivered on every login until answered. */
  stanza: string;
}

/** One message kept for a user who was offline. */
export interface OfflineMessage {
  /** The message stanza as it will be delivered (already carrying a XEP-0203 delay). */
  stanza: string;
  /** Milliseconds since the epoch. */
  storedAt: number;
}

/** The store contract every adapter implements. */
export interface Store {
  /** Opens the store; idempotent. */
  open(): Promise<void>;
  close(): Promise<void>;

  getAccount(jid: BareJid): Promise<Account | undefined>;
  /** Creates an account; returns false (and changes nothing) when it already exists. */
  createAccount(account: Account): Promise<boolean>;
  /** Replaces the credentials of an existing account; returns false when it does not exist. */
  updateAccount(account: Account): Promise<boolean>;
  /** Deletes an account and every piece of data the user owns; returns false when absent. */
  deleteAccount(jid: BareJid): Promise<boolean>;
  /** Every account JID, sorted. */
  listAccounts(): Promise<BareJid[]>;
  countAccounts(): Promise<number>;

  /** The roster; an empty roster at version 0 when the user has none. */
  getRoster(jid: BareJid): Promise<Roster>;
  /** Adds or replaces an item; returns the new roster version. */
  putRosterItem(jid: BareJid, item: RosterItem): Promise<number>;
  /** Removes an item; returns the new version, or undefined when there was no such item. */
  deleteRosterItem(jid: BareJid, contact: BareJid): Promise<number | undefined>;

  getPendingSubscriptions(jid: BareJid): Promise<PendingSubscription[]>;
  putPendingSubscription(jid: BareJid, pending: PendingSubscription): Promise<void>;
  deletePendingSubscription(jid: BareJid, from: BareJid): Promise<void>;

  /** Appends a message; returns false (storing nothing) when the user already has `limit`. */
  pushOffline(jid: BareJid, message: OfflineMessage, limit: number): Promise<boolean>;
  /** Removes and returns every stored message, oldest first. */
  takeOffline(jid: BareJid): Promise<OfflineMessage[]>;
  countOffline(jid: BareJid): Promise<number>;
  /** Every stored message, oldest first, without removing them (for export and migration). */
  listOffline(jid: BareJid): Promise<OfflineMessage[]>;

  /** The user's vCard (XEP-0054) as serialised `<vCard xmlns='vcard-temp'>`. */
  getVCard(jid: BareJid): Promise<string | undefined>;
  putVCard(jid: BareJid, vcard: string): Promise<void>;

  /** Private XML (XEP-0049), keyed by `name xmlns` of the stored element. */
  getPrivate(jid: BareJid, key: string): Promise<string | undefined>;
  putPrivate(jid: BareJid, key: string, xml: string): Promise<void>;
  /** Every private XML item of a user, sorted by key (for export and migration). */
  listPrivate(jid: BareJid): Promise<{ key: string; xml: string }[]>;

  /**
   * One-time login tokens: stored under the SHA-256 of the token (never the token), with the
   * account they log in and when they expire. Storing also drops tokens expired before `now`.
   */
  putLoginToken(token: LoginToken, now: number): Promise<void>;
  /**
   * Removes the token stored under `hash` and returns it, or undefined when there is none: of
   * any number of concurrent calls (on every node of a cluster) exactly one gets it.
   */
  takeLoginToken(hash: string): Promise<LoginToken | undefined>;

  /** The blocklist (XEP-0191), sorted. */
  getBlocklist(jid: BareJid): Promise<string[]>;
  /** Adds JIDs; returns the resulting list. */
  addBlocked(jid: BareJid, items: string[]): Promise<string[]>;
  /** Removes JIDs, or every JID when `items` is undefined; returns the resulting list. */
  removeBlocked(jid: BareJid, items?: string[]): Promise<string[]>;
}

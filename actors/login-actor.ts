/**
 * The login throttle's two actor kinds (the rules are login-state.ts):
 *
 * - `login-address:<prefix>`: one per client address prefix (IPv4 address, IPv6 /64). Its
 *   partition is the hash of the prefix, so every node's logins from that address are counted
 *   in one place: N nodes do not give an attacker N budgets.
 * - `login-account:<bare jid>`: one per account, on the shard of the account's partition (the
 *   same shard as its UserActor). It is an actor of its own rather than part of the UserActor
 *   so that a check never waits behind the user's stanzas, never loads the roster (an attacker
 *   trying accounts that are offline or do not exist must not cost a store read each), and so
 *   that the UserActor still passivates when its sessions end while the known addresses stay.
 *
 * Both are in-memory only: a handoff carries them to a partition's next owner, a node or worker
 * that dies takes its share with it (known addresses are learnt again at the owners' next
 * logins). Memory is bounded per shard and kind: past `maxEntries` actors holding something,
 * the one touched least recently forgets it, and the host drops it at the next idle sweep.
 */
import type { BareJid } from "../src/xmpp/jid.ts";
import type { ActorKind, ActorSelf } from "./actor.ts";
import {
  type AccountLoginSnapshot,
  type AccountLoginState,
  type AddressLoginState,
  accountEmpty,
  accountFromSnapshot,
  accountSnapshot,
  addressEmpty,
  chargeAccount,
  checkAddress,
  failAddress,
  isKnown,
  type LoginLimits,
  newAccountLoginState,
  newAddressLoginState,
  settleAccount,
} from "./login-state.ts";
import type { ActorRouter, LoginMessage } from "./messages.ts";

/** What the login actors need from their shard. */
export interface LoginActorContext {
  router: Pick<ActorRouter, "reply">;
  /** The limits, read at each message (the configuration's `limits.login*`). */
  limits(): LoginLimits;
  /** Actors of each kind holding state on this shard before the least recent forgets. */
  maxEntries: number;
  now?: () => number;
}

/** The key of an address prefix's login actor. */
export function loginAddressKey(prefix: string): `login-address:${string}` {
  return `login-address:${prefix}`;
}

/** The key of an account's login actor. */
export function loginAccountKey(account: BareJid): `login-account:${string}` {
  return `login-account:${account}`;
}

/**
 * The actors of one kind that hold something, least recently touched first, in two tiers: those
 * that hold known addresses (an owner's way in) are forgotten only when no actor holding
 * failures alone is left, so spraying failures at many names cannot evict the owners' addresses.
 */
class Holders {
  readonly #max: number;
  readonly #failuresOnly = new Map<string, { forget(): void }>();
  readonly #precious = new Map<string, { forget(): void }>();

  constructor(max: number) {
    this.#max = max;
  }

  touch(name: string, actor: { forget(): void }, empty: boolean, precious: boolean): void {
    this.#failuresOnly.delete(name);
    this.#precious.delete(name);
    if (empty) return;
    (precious ? this.#precious : this.#failuresOnly).set(name, actor);
    if (this.#failuresOnly.size + this.#precious.size > this.#max) {
      const tier = this.#failuresOnly.size > 0 ? this.#failuresOnly : this.#precious;
      const [oldest, holder] = tier.entries().next().value!;
      tier.delete(oldest);
      holder.forget();
    }
  }
}

abstract class LoginActor<S> {
  readonly name: string;
  protected readonly ctx: LoginActorContext;
  readonly #holders: Holders;

  constructor(name: string, ctx: LoginActorContext, holders: Holders) {
    this.name = name;
    this.ctx = ctx;
    this.#holders = holders;
  }

  protected get now(): number {
    return (this.ctx.now ?? Date.now)();
  }

  async activate(): Promise<void> {}

  get disposable(): boolean {
    return false;
  }

  abstract get empty(): boolean;
  /** It holds what an owner needs (known addresses), not only failures. */
  abstract get precious(): boolean;
  abstract forget(): void;
  abstract snapshot(): S;
  protected abstract restoreState(snapshot: S): void;
  protected abstract handleMessage(msg: LoginMessage): void;

  /** Takes over a previous owner's state; it counts against this shard's bound like any other. */
  restore(snapshot: S): void {
    this.restoreState(snapshot);
    this.#holders.touch(this.name, this, this.empty, this.precious);
  }

  async handle(msg: LoginMessage): Promise<void> {
    this.handleMessage(msg);
    this.#holders.touch(this.name, this, this.empty, this.precious);
  }

  failed(msg: LoginMessage, error: unknown): void {
    if ("reqId" in msg) this.ctx.router.reply(msg.shard, msg.reqId, { ok: false, error });
  }

  protected answer(msg: { shard: number; reqId: number }, value: unknown): void {
    this.ctx.router.reply(msg.shard, msg.reqId, { ok: true, value });
  }
}

/** The attempts of one address prefix. */
class LoginAddressActor extends LoginActor<AddressLoginState> {
  #state = newAddressLoginState();

  get empty(): boolean {
    return addressEmpty(this.#state, this.ctx.limits(), this.now);
  }

  get precious(): boolean {
    return false;
  }

  forget(): void {
    this.#state = newAddressLoginState();
  }

  snapshot(): AddressLoginState {
    return { failures: [...this.#state.failures] };
  }

  protected restoreState(snapshot: AddressLoginState): void {
    this.#state = { failures: [...snapshot.failures] };
  }

  protected handleMessage(msg: LoginMessage): void {
    switch (msg.kind) {
      case "login-address-check":
        return this.answer(msg, checkAddress(this.#state, this.ctx.limits(), this.now));
      case "login-address-failed":
        return failAddress(this.#state, this.ctx.limits(), this.now);
      case "login-account-charge":
      case "login-account-known":
      case "login-account-settle":
        throw new TypeError(`${msg.kind} sent to the address actor ${this.name}`);
      default: {
        const unreachable: never = msg;
        throw new TypeError(`Unknown login message ${JSON.stringify(unreachable)}`);
      }
    }
  }
}

/** The attempts on one account, per address and overall, and its known addresses. */
class LoginAccountActor extends LoginActor<AccountLoginSnapshot> {
  #state: AccountLoginState = newAccountLoginState();

  get empty(): boolean {
    return accountEmpty(this.#state, this.ctx.limits(), this.now);
  }

  get precious(): boolean {
    return this.#state.known.size > 0;
  }

  forget(): void {
    this.#state = newAccountLoginState();
  }

  snapshot(): AccountLoginSnapshot {
    return accountSnapshot(this.#state);
  }

  protected restoreState(snapshot: AccountLoginSnapshot): void {
    this.#state = accountFromSnapshot(snapshot);
  }

  protected handleMessage(msg: LoginMessage): void {
    switch (msg.kind) {
      case "login-account-charge":
        return this.answer(msg, chargeAccount(this.#state, msg.prefix, this.ctx.limits(), this.now));
      case "login-account-known":
        return this.answer(msg, {
          allowed: true,
          known: isKnown(this.#state, msg.prefix, this.ctx.limits(), this.now),
        });
      case "login-account-settle":
        return settleAccount(this.#state, msg.prefix, msg, this.ctx.limits(), this.now);
      case "login-address-check":
      case "login-address-failed":
        throw new TypeError(`${msg.kind} sent to the account actor ${this.name}`);
      default: {
        const unreachable: never = msg;
        throw new TypeError(`Unknown login message ${JSON.stringify(unreachable)}`);
      }
    }
  }
}

/**
 * The two kinds, for the actor host. Their messages are never refused: each client stream has
 * at most one login attempt in flight, so a mailbox is bounded by the connections, and a turn is
 * a few array operations.
 */
export function loginActorKinds(
  ctx: LoginActorContext,
): [ActorKind<LoginMessage, AddressLoginState>, ActorKind<LoginMessage, AccountLoginSnapshot>] {
  const addresses = new Holders(ctx.maxEntries);
  const accounts = new Holders(ctx.maxEntries);
  const common = { refusable: () => false, dedupeKey: () => undefined };
  return [
    {
      kind: "login-address",
      create: (name: string, _self: ActorSelf<LoginMessage>) => new LoginAddressActor(name, ctx, addresses),
      ...common,
    },
    {
      kind: "login-account",
      create: (name: string, _self: ActorSelf<LoginMessage>) => new LoginAccountActor(name, ctx, accounts),
      ...common,
    },
  ];
}

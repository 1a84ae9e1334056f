/**
 * The login actor kinds on a real ActorHost (no sockets): requests are answered through the
 * router's reply, state survives a handoff (release, restore), and each kind holds state for at
 * most `maxEntries` keys per shard.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ActorKey } from "../../actors/actor.ts";
import { loginAccountKey, loginActorKinds, loginAddressKey } from "../../actors/login-actor.ts";
import type { LoginLimits } from "../../actors/login-state.ts";
import { ActorHost } from "../../src/cluster/actor-host.ts";
import { createLogger } from "../../src/log.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";

const LIMITS: LoginLimits = {
  failuresPerAddress: 2,
  failuresPerAccount: 2,
  failuresPerAccountAddress: 2,
  windowMs: 60_000,
  knownAddresses: 4,
  knownAddressTtlMs: 3_600_000,
};

/** A host with both kinds; `ask` sends a request and resolves with the actor's reply. */
function shard(maxEntries = 100) {
  const replies = new Map<number, (value: unknown) => void>();
  let nextReqId = 1;
  const host = new ActorHost({
    log: createLogger({ level: "silent" }),
    accept: () => {},
    maxMailbox: () => 10,
  });
  const kinds = loginActorKinds({
    router: {
      reply: (_shard, reqId, result) => replies.get(reqId)?.(result.ok ? result.value : result.error),
    },
    limits: () => LIMITS,
    maxEntries,
    now: () => 1_000_000,
  });
  for (const kind of kinds) host.define(kind);
  const ask = (key: ActorKey, msg: Record<string, unknown>) =>
    new Promise<unknown>((resolve) => {
      const reqId = nextReqId++;
      replies.set(reqId, resolve);
      assert.equal(host.deliver(key, { ...msg, shard: 0, reqId }), true);
    });
  return { host, ask };
}

const ALICE = "alice@example.com" as BareJid;

describe("login actors", () => {
  it("an address actor lets attempts through until its failures reach the budget", async () => {
    const { host, ask } = shard();
    const key = loginAddressKey("192.0.2.1");
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(
        await ask(key, { kind: "login-address-check" }),
        { allowed: true },
        "checking charges nothing",
      );
    }
    host.tell(key, { kind: "login-address-failed" });
    host.tell(key, { kind: "login-address-failed" });
    assert.deepEqual(await ask(key, { kind: "login-address-check" }), {
      allowed: false,
      retryAfterMs: 60_000,
    });
  });

  it("an account actor's known addresses and counts move with a handoff", async () => {
    const from = shard();
    const key = loginAccountKey(ALICE);
    assert.deepEqual(await from.ask(key, { kind: "login-account-charge", prefix: "owner" }), {
      allowed: true,
      known: false,
    });
    from.host.tell(key, {
      kind: "login-account-settle",
      prefix: "owner",
      succeeded: true,
      pair: true,
      account: true,
    });
    for (const prefix of ["a", "b"]) await from.ask(key, { kind: "login-account-charge", prefix });
    await from.host.quiesce();
    const to = shard();
    for (const snapshot of from.host.release([key])) to.host.restore(structuredClone(snapshot));
    assert.equal(from.host.has(key), false);
    assert.deepEqual(await to.ask(key, { kind: "login-account-charge", prefix: "c" }), {
      allowed: false,
      retryAfterMs: 60_000,
    });
    assert.deepEqual(await to.ask(key, { kind: "login-account-charge", prefix: "owner" }), {
      allowed: true,
      known: true,
    });
  });

  it("each kind holds state for at most maxEntries keys per shard, the least recent forgotten", async () => {
    const { host, ask } = shard(2);
    for (const address of ["a", "b", "c"]) {
      host.tell(loginAddressKey(address), { kind: "login-address-failed" });
      host.tell(loginAddressKey(address), { kind: "login-address-failed" });
      await ask(loginAddressKey(address), { kind: "login-address-check" });
    }
    // "a" forgot its charges when "c" came; "b" and "c" still refuse.
    const refused = { allowed: false, retryAfterMs: 60_000 };
    assert.deepEqual(await ask(loginAddressKey("c"), { kind: "login-address-check" }), refused);
    assert.deepEqual(await ask(loginAddressKey("b"), { kind: "login-address-check" }), refused);
    assert.deepEqual(await ask(loginAddressKey("a"), { kind: "login-address-check" }), { allowed: true });
    // "a", forgotten, holds nothing (checking charges nothing): the idle sweep drops it, and
    // "b" and "c" keep theirs.
    host.passivateIdle(Number.POSITIVE_INFINITY);
    assert.deepEqual(
      ["a", "b", "c"].map((address) => host.has(loginAddressKey(address))),
      [false, true, true],
    );
  });

  it("spraying failures at many accounts does not push out an owner's known address", async () => {
    const { ask, host } = shard(3);
    const owner = loginAccountKey(ALICE);
    await ask(owner, { kind: "login-account-charge", prefix: "home" });
    host.tell(owner, {
      kind: "login-account-settle",
      prefix: "home",
      succeeded: true,
      pair: true,
      account: true,
    });
    // Failures on many other accounts, far more than the bound: they push out one another.
    for (let i = 0; i < 10; i++) {
      await ask(loginAccountKey(`sprayed${i}@example.com` as BareJid), {
        kind: "login-account-charge",
        prefix: "x",
      });
    }
    assert.deepEqual(await ask(owner, { kind: "login-account-known", prefix: "home" }), {
      allowed: true,
      known: true,
    });
  });
});

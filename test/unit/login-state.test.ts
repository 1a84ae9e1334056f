import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type AccountLoginState,
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
} from "../../actors/login-state.ts";
import { addressPrefix } from "../../src/auth/address-prefix.ts";

const LIMITS: LoginLimits = {
  failuresPerAddress: 5,
  failuresPerAccount: 3,
  failuresPerAccountAddress: 2,
  windowMs: 60_000,
  knownAddresses: 2,
  knownAddressTtlMs: 86_400_000,
};

const T0 = 1_000_000;

/** Charges an attempt on `state` from `prefix` and lets it fail (the charge stays). */
function fail(state: AccountLoginState, prefix: string, now = T0): boolean {
  return chargeAccount(state, prefix, LIMITS, now).allowed;
}

/** An admitted attempt from `prefix` that succeeds. */
function succeed(state: AccountLoginState, prefix: string, now = T0): boolean {
  const verdict = chargeAccount(state, prefix, LIMITS, now);
  if (!verdict.allowed) return false;
  settleAccount(
    state,
    prefix,
    { succeeded: true, pair: true, account: verdict.known === false },
    LIMITS,
    now,
  );
  return true;
}

describe("addressPrefix", () => {
  test("addressPrefix keeps an IPv4 address whole", () => {
    assert.equal(addressPrefix("192.0.2.1"), "192.0.2.1");
    assert.notEqual(addressPrefix("192.0.2.1"), addressPrefix("192.0.2.2"));
  });

  test("addressPrefix groups IPv6 addresses by /64, however they are written", () => {
    const prefix = "2001:db8:0:1::/64";
    for (const address of [
      "2001:db8:0:1::1",
      "2001:DB8:0000:0001:ffff:ffff:ffff:ffff",
      "2001:db8::1:0:0:0:2",
      "2001:db8:0:1:1:2:3:4",
      "2001:db8:0:1::5%eth0",
    ]) {
      assert.equal(addressPrefix(address), prefix, address);
    }
    assert.equal(addressPrefix("2001:db8:0:2::1"), "2001:db8:0:2::/64");
    assert.equal(addressPrefix("::1"), "0:0:0:0::/64");
    assert.equal(addressPrefix("fe80::1"), "fe80:0:0:0::/64");
  });

  test("addressPrefix counts an IPv4-mapped IPv6 address as its IPv4 address", () => {
    assert.equal(addressPrefix("::ffff:192.0.2.1"), "192.0.2.1");
    assert.equal(addressPrefix("::FFFF:c000:0201"), "192.0.2.1");
    // Not mapped: an IPv6 address that merely ends in a dotted quad.
    assert.equal(addressPrefix("64:ff9b::192.0.2.1"), "64:ff9b:0:0::/64");
  });

  test("addressPrefix returns what is not an IP address as it is", () => {
    assert.equal(addressPrefix(""), "");
    assert.equal(addressPrefix("unix"), "unix");
  });
});

describe("login state per address", () => {
  test("an address is refused after failuresPerAddress failures, until the oldest leaves the window", () => {
    const state = newAddressLoginState();
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(checkAddress(state, LIMITS, T0 + i * 1000), { allowed: true });
      failAddress(state, LIMITS, T0 + i * 1000);
    }
    assert.deepEqual(checkAddress(state, LIMITS, T0 + 10_000), { allowed: false, retryAfterMs: 50_000 });
    assert.deepEqual(checkAddress(state, LIMITS, T0 + 60_000), { allowed: true });
  });

  test("checking charges nothing: any number of logins may pass, only failures count", () => {
    const state = newAddressLoginState();
    for (let i = 0; i < 100; i++) assert.equal(checkAddress(state, LIMITS, T0).allowed, true, `login ${i}`);
    for (let i = 0; i < 5; i++) failAddress(state, LIMITS, T0);
    assert.equal(checkAddress(state, LIMITS, T0).allowed, false);
    assert.equal(addressEmpty(state, LIMITS, T0 + 60_000), true);
  });
});

describe("login state per account", () => {
  test("the account's count refuses unknown addresses only; known ones keep their own budget", () => {
    const state = newAccountLoginState();
    assert.equal(succeed(state, "owner"), true);
    // Three failures from three unknown addresses spend the account's budget.
    for (const prefix of ["a", "b", "c"]) assert.equal(fail(state, prefix), true, prefix);
    assert.deepEqual(chargeAccount(state, "d", LIMITS, T0 + 1), { allowed: false, retryAfterMs: 59_999 });
    // The owner's known address is not refused, however long the attack goes on...
    for (let i = 0; i < 20; i++) assert.equal(succeed(state, "owner", T0 + i), true, `login ${i}`);
    assert.equal(chargeAccount(state, "d", LIMITS, T0 + 30).allowed, false);
    // ...but guessing from it is bounded by the (account, address) budget.
    assert.equal(fail(state, "owner"), true);
    assert.equal(fail(state, "owner"), true);
    assert.equal(chargeAccount(state, "owner", LIMITS, T0).allowed, false);
  });

  test("a success forgives its address's failures on the account but not the account's", () => {
    const state = newAccountLoginState();
    assert.equal(fail(state, "a"), true);
    assert.equal(fail(state, "b"), true);
    assert.equal(succeed(state, "b"), true);
    assert.equal(state.pairs.has("b"), false);
    assert.equal(state.failures.length, 2, "the owner logging in hands the attacker no fresh budget");
    assert.equal(isKnown(state, "b", LIMITS, T0), true);
  });

  test("a withdrawn attempt takes back exactly what it was charged", () => {
    const state = newAccountLoginState();
    const verdict = chargeAccount(state, "a", LIMITS, T0);
    assert.deepEqual(verdict, { allowed: true, known: false });
    settleAccount(state, "a", { succeeded: false, pair: true, account: true }, LIMITS, T0);
    assert.deepEqual([state.failures, state.pairs.get("a")], [[], []]);
    assert.equal(isKnown(state, "a", LIMITS, T0), false);
  });

  test("known addresses are bounded and age out", () => {
    const state = newAccountLoginState();
    for (const prefix of ["x", "y", "z"]) assert.equal(succeed(state, prefix), true);
    assert.deepEqual([...state.known.keys()], ["y", "z"]);
    assert.equal(isKnown(state, "z", LIMITS, T0 + LIMITS.knownAddressTtlMs - 1), true);
    assert.equal(isKnown(state, "z", LIMITS, T0 + LIMITS.knownAddressTtlMs), false);
    assert.equal(accountEmpty(state, LIMITS, T0), false);
    assert.equal(accountEmpty(state, LIMITS, T0 + LIMITS.knownAddressTtlMs), true);
  });

  test("an account's state survives its snapshot (a handoff)", () => {
    const state = newAccountLoginState();
    succeed(state, "owner");
    for (const prefix of ["a", "b", "c"]) fail(state, prefix);
    const copy = accountFromSnapshot(structuredClone(accountSnapshot(state)));
    assert.equal(chargeAccount(copy, "d", LIMITS, T0).allowed, false);
    assert.equal(chargeAccount(copy, "owner", LIMITS, T0).allowed, true);
  });
});

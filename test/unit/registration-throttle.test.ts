import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  RegistrationThrottle,
  type RegistrationThrottleOptions,
} from "../../src/auth/registration-throttle.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";

const ALICE = "alice@example.com" as BareJid;
const BOB = "bob@example.com" as BareJid;

/** A throttle on a hand-driven clock: the window logic is pure, so time is just a number here. */
function throttle(options: Partial<RegistrationThrottleOptions> = {}): {
  throttle: RegistrationThrottle;
  clock: { now: number };
} {
  const clock = { now: 1_000_000 };
  const instance = new RegistrationThrottle({
    failuresPerAddress: 5,
    failuresPerAccount: 3,
    windowMs: 60_000,
    now: () => clock.now,
    ...options,
  });
  return { throttle: instance, clock };
}

describe("RegistrationThrottle", () => {
  test("RegistrationThrottle refuses an address after failuresPerAddress failures", () => {
    const { throttle: t } = throttle();
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(t.check("192.0.2.1"), { allowed: true }, `attempt ${i}`);
      t.recordFailure("192.0.2.1");
    }
    assert.deepEqual(t.check("192.0.2.1"), { allowed: false, retryAfterMs: 60_000 });
    assert.deepEqual(t.check("192.0.2.2"), { allowed: true });
  });

  test("RegistrationThrottle refuses an account after failuresPerAccount failures from any address", () => {
    const { throttle: t } = throttle();
    t.recordFailure("192.0.2.1", ALICE);
    t.recordFailure("192.0.2.2", ALICE);
    assert.deepEqual(t.check("192.0.2.3", ALICE), { allowed: true });
    t.recordFailure("192.0.2.3", ALICE);
    assert.deepEqual(t.check("192.0.2.4", ALICE), { allowed: false, retryAfterMs: 60_000 });
    // The addresses themselves are still under their own limit, and other accounts are unaffected.
    assert.deepEqual(t.check("192.0.2.4"), { allowed: true });
    assert.deepEqual(t.check("192.0.2.4", BOB), { allowed: true });
  });

  test("RegistrationThrottle counts address failures whether or not the account was known", () => {
    const { throttle: t } = throttle({ failuresPerAddress: 2 });
    t.recordFailure("192.0.2.1");
    t.recordFailure("192.0.2.1", BOB);
    assert.equal(t.check("192.0.2.1", ALICE).allowed, false);
  });

  test("RegistrationThrottle lets a failure expire when the sliding window passes it", () => {
    const { throttle: t, clock } = throttle({ failuresPerAddress: 3 });
    t.recordFailure("192.0.2.1");
    clock.now += 20_000;
    t.recordFailure("192.0.2.1");
    clock.now += 20_000;
    t.recordFailure("192.0.2.1");
    // The oldest failure is 40 s old: it leaves the 60 s window in 20 s.
    assert.deepEqual(t.check("192.0.2.1"), { allowed: false, retryAfterMs: 20_000 });
    clock.now += 19_999;
    assert.deepEqual(t.check("192.0.2.1"), { allowed: false, retryAfterMs: 1 });
    clock.now += 1;
    assert.deepEqual(t.check("192.0.2.1"), { allowed: true });
    // Only that one failure left: a new failure refuses again until the second oldest expires.
    t.recordFailure("192.0.2.1");
    assert.deepEqual(t.check("192.0.2.1"), { allowed: false, retryAfterMs: 20_000 });
  });

  test("RegistrationThrottle answers with the longer wait when address and account are both refused", () => {
    const { throttle: t, clock } = throttle({ failuresPerAddress: 1, failuresPerAccount: 1 });
    t.recordFailure("192.0.2.1", ALICE);
    clock.now += 10_000;
    t.recordFailure("192.0.2.2", BOB);
    assert.deepEqual(t.check("192.0.2.1", BOB), { allowed: false, retryAfterMs: 60_000 });
    assert.deepEqual(t.check("192.0.2.2", ALICE), { allowed: false, retryAfterMs: 60_000 });
    assert.deepEqual(t.check("192.0.2.1", ALICE), { allowed: false, retryAfterMs: 50_000 });
  });

  test("RegistrationThrottle forgives an account's failures on success but keeps the address's", () => {
    const { throttle: t } = throttle({ failuresPerAddress: 4 });
    for (let i = 0; i < 3; i++) t.recordFailure("192.0.2.1", ALICE);
    assert.equal(t.check("192.0.2.9", ALICE).allowed, false);
    t.recordSuccess("192.0.2.1", ALICE);
    assert.deepEqual(t.check("192.0.2.9", ALICE), { allowed: true });
    t.recordFailure("192.0.2.1", BOB);
    assert.equal(t.check("192.0.2.1").allowed, false);
  });

  test("RegistrationThrottle does not store anything on check", () => {
    const { throttle: t } = throttle();
    for (let i = 0; i < 100; i++) t.check(`198.51.100.${i}`, `user${i}@example.com` as BareJid);
    assert.deepEqual(t.size, { addresses: 0, accounts: 0 });
  });

  test("RegistrationThrottle forgets keys whose failures have all expired", () => {
    const { throttle: t, clock } = throttle();
    t.recordFailure("192.0.2.1", ALICE);
    clock.now += 60_000;
    assert.deepEqual(t.check("192.0.2.1", ALICE), { allowed: true });
    assert.deepEqual(t.size, { addresses: 0, accounts: 0 });
  });

  test("RegistrationThrottle holds at most maxEntries keys and evicts the least recently failed", () => {
    const { throttle: t } = throttle({ failuresPerAddress: 1, maxEntries: 3 });
    for (const address of ["a", "b", "c"]) t.recordFailure(address);
    t.recordFailure("a"); // a is now the most recent.
    t.recordFailure("d"); // evicts b, the oldest.
    assert.deepEqual(t.size, { addresses: 3, accounts: 0 });
    assert.deepEqual(t.check("b"), { allowed: true });
    for (const address of ["a", "c", "d"]) assert.equal(t.check(address).allowed, false, address);
    for (let i = 0; i < 1000; i++) t.recordFailure(`addr${i}`, `user${i}@example.com` as BareJid);
    assert.deepEqual(t.size, { addresses: 3, accounts: 3 });
  });

  test("RegistrationThrottle rejects limits that are not positive integers", () => {
    const base = { failuresPerAddress: 1, failuresPerAccount: 1, windowMs: 1 };
    for (const bad of [
      { failuresPerAddress: 0 },
      { failuresPerAccount: 1.5 },
      { windowMs: 0 },
      { windowMs: Number.POSITIVE_INFINITY },
      { maxEntries: -1 },
    ]) {
      assert.throws(() => new RegistrationThrottle({ ...base, ...bad }), RangeError, JSON.stringify(bad));
    }
  });
});

describe("RegistrationThrottle.admit", () => {
  test("admit refuses a throttled account and clears an allowed account's failures", () => {
    let now = 1_000;
    const throttle = new RegistrationThrottle({
      failuresPerAddress: 100,
      failuresPerAccount: 2,
      windowMs: 60_000,
      now: () => now,
    });
    const alice = "alice@localhost" as BareJid;
    throttle.recordFailure("10.0.0.1", alice);
    assert.equal(throttle.admit("10.0.0.1", alice).allowed, true);
    // The success cleared alice's failures: two more are needed before she is throttled.
    throttle.recordFailure("10.0.0.1", alice);
    assert.equal(throttle.check("10.0.0.1", alice).allowed, true);
    throttle.recordFailure("10.0.0.1", alice);
    const refused = throttle.admit("10.0.0.1", alice);
    assert.equal(refused.allowed, false);
    now += 60_001;
    assert.equal(throttle.admit("10.0.0.1", alice).allowed, true);
  });
});

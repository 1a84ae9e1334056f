/**
 * Where a client's XEP-0198 `h` stands against a session's log (actors/session-state.ts
 * `ackStanding`), across the wrap of the 32-bit counts (XEP-0198 §4).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ackStanding, applySessionChange, newSessionState, SEQ_MOD } from "../../actors/session-state.ts";

/** A session that sent `sent` stanzas in all and still holds the last `unacked` of them. */
function sessionAt(sent: number, unacked: number) {
  const state = newSessionState("a@example.org/r" as never, "1.t");
  state.sentOut = (sent - unacked + SEQ_MOD) % SEQ_MOD;
  for (let i = 0; i < unacked; i++)
    applySessionChange(state, { c: "out", xml: "<message/>", storable: true });
  return state;
}

test("an h between the last acknowledgement and the count sent is ok; above is too high, below stale", () => {
  const state = sessionAt(10, 3); // 8, 9, 10 unacknowledged: 7 was acknowledged
  assert.equal(ackStanding(state, 7), "ok");
  assert.equal(ackStanding(state, 10), "ok");
  assert.equal(ackStanding(state, 11), "too-high");
  assert.equal(ackStanding(state, 6), "stale");
  assert.equal(ackStanding(state, 0), "stale");
});

test("across the wrap at 2^32", () => {
  const state = sessionAt(2, 4); // 2^32-1, 0, 1, 2 unacknowledged: 2^32-2 was acknowledged
  assert.equal(state.sentOut, 2);
  assert.equal(ackStanding(state, SEQ_MOD - 2), "ok");
  assert.equal(ackStanding(state, 0), "ok");
  assert.equal(ackStanding(state, 3), "too-high");
  assert.equal(ackStanding(state, SEQ_MOD - 3), "stale");
});

test("what is not a 32-bit count is invalid", () => {
  const state = sessionAt(1, 1);
  for (const h of [Number.NaN, -1, 1.5, SEQ_MOD]) assert.equal(ackStanding(state, h), "invalid", String(h));
});

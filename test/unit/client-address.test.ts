/**
 * The client address behind a reverse proxy (src/transport/client-address.ts): X-Forwarded-For
 * is believed only from a trusted proxy, read from the right, and a forged entry on its left
 * changes nothing.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { clientAddressOf } from "../../src/transport/client-address.ts";

const LOOPBACK = ["127.0.0.1", "::1"];

test("a trusted proxy's X-Forwarded-For names the client; anyone else's is ignored", () => {
  assert.equal(clientAddressOf("127.0.0.1", "203.0.113.7", LOOPBACK), "203.0.113.7");
  assert.equal(clientAddressOf("::ffff:127.0.0.1", "2001:db8::5", LOOPBACK), "2001:db8::5");
  assert.equal(
    clientAddressOf("198.51.100.9", "203.0.113.7", LOOPBACK),
    "198.51.100.9",
    "not a proxy of ours",
  );
  assert.equal(clientAddressOf("127.0.0.1", undefined, LOOPBACK), "127.0.0.1", "no header");
  assert.equal(clientAddressOf("127.0.0.1", "203.0.113.7", []), "127.0.0.1", "no proxy trusted");
});

test("read from the right: what the client wrote on the left cannot pose as another address", () => {
  // The client sent "X-Forwarded-For: 192.0.2.1"; the proxy appended the address it saw.
  assert.equal(clientAddressOf("127.0.0.1", "192.0.2.1, 203.0.113.7", LOOPBACK), "203.0.113.7");
  // Two proxies we trust in a row: the client is the first hop that is not one of them.
  assert.equal(
    clientAddressOf("127.0.0.1", ["203.0.113.7, 10.0.0.2", "127.0.0.1"], [...LOOPBACK, "10.0.0.2"]),
    "203.0.113.7",
  );
  // A malformed hop ends the trust at the proxy that handed it over.
  assert.equal(clientAddressOf("127.0.0.1", "203.0.113.7, not-an-address", LOOPBACK), "127.0.0.1");
});

/**
 * `limits.smMaxUnackedBytes` and the peer links' budget (src/config/load-config.ts): unset, the
 * limit follows a budget lowered below 32 MiB (a deployment that lowered it still starts); set,
 * it must fit a quarter of the budget. `web.behindProxy`: null unless set, and a boolean.
 */
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadConfig } from "../../src/config/load-config.ts";

// A directory without cluster.config.json, so only the defaults and the overrides count.
const cwd = mkdtempSync(join(tmpdir(), "starling-config-"));

test("unset, the XEP-0198 byte limit is 8 MiB, or a quarter of a smaller link budget", () => {
  assert.equal(loadConfig({ cwd, env: {} }).limits.smMaxUnackedBytes, 8 * 1024 * 1024);
  const small = loadConfig({ cwd, env: {}, overrides: { "cluster.maxPeerBufferBytes": 2 * 1024 * 1024 } });
  assert.equal(small.limits.smMaxUnackedBytes, 512 * 1024);
});

test("set above a quarter of the link budget, it is refused with both values named", () => {
  assert.throws(
    () =>
      loadConfig({
        cwd,
        env: {},
        overrides: { "cluster.maxPeerBufferBytes": 2 * 1024 * 1024, "limits.smMaxUnackedBytes": 1024 * 1024 },
      }),
    /limits\.smMaxUnackedBytes \(1048576\) must be at most a quarter of cluster\.maxPeerBufferBytes \(2097152\)/,
  );
});

test("web.behindProxy is null (derived from ports.webPlain) unless set, and only true or false", () => {
  assert.equal(loadConfig({ cwd, env: {} }).web.behindProxy, null);
  assert.equal(loadConfig({ cwd, env: {}, overrides: { "web.behindProxy": true } }).web.behindProxy, true);
  assert.throws(
    () => loadConfig({ cwd, env: {}, overrides: { "web.behindProxy": "yes" } }),
    /web\.behindProxy.*must be true or false/,
  );
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createLogger } from "../../src/log.ts";

describe("log", () => {
  it("createLogger writes one JSON line per event with level, bindings and message", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "info", write: (line) => lines.push(line) });
    log.child({ worker: 1 }).child({ conn: 7 }).warn({ remote: "127.0.0.1" }, "slow client");
    assert.equal(lines.length, 1);
    assert.ok(lines[0]!.endsWith("\n"));
    const record = JSON.parse(lines[0]!);
    assert.equal(record.level, "warn");
    assert.equal(record.worker, 1);
    assert.equal(record.conn, 7);
    assert.equal(record.remote, "127.0.0.1");
    assert.equal(record.msg, "slow client");
  });

  it("createLogger drops events below its level", () => {
    const lines: string[] = [];
    const log = createLogger({ level: "warn", write: (line) => lines.push(line) });
    log.info("lifecycle");
    log.debug({ a: 1 }, "traffic");
    assert.equal(lines.length, 0);
    assert.equal(log.isLevelEnabled("error"), true);
    assert.equal(log.isLevelEnabled("info"), false);
  });

  it("createLogger redacts secrets and serialises errors with their code", () => {
    const lines: string[] = [];
    const log = createLogger({ write: (line) => lines.push(line) });
    const error = Object.assign(new Error("boom"), { code: "XSRV_STORE" });
    log.error({ password: "hunter2", token: "t", err: error }, "failed");
    const record = JSON.parse(lines[0]!);
    assert.equal(record.password, "[redacted]");
    assert.equal(record.token, "[redacted]");
    assert.equal(record.err.code, "XSRV_STORE");
    assert.equal(record.err.message, "boom");
    assert.ok(!lines[0]!.includes("hunter2"));
  });
});

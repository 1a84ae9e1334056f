/**
 * `/metrics` (Prometheus text format) and `/health` on the admin listener: the format itself,
 * and a real node whose figures follow what clients do (a login, a failed login, a session).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderMetrics } from "../../src/http/metrics.ts";
import { newUser, useNode } from "../helpers/fixtures.ts";
import { RawClient } from "../helpers/raw-client.ts";

/** Sums a family's samples (over workers) from the text format. */
function sum(text: string, name: string): number {
  let total = 0;
  let seen = false;
  for (const line of text.split("\n")) {
    const match = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (match !== null) {
      total += Number(match[2]);
      seen = true;
    }
  }
  assert.ok(seen, `no ${name} in:\n${text}`);
  return total;
}

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return response.text();
}

describe("the Prometheus text format", () => {
  it("writes HELP and TYPE, then one line per sample with escaped labels", () => {
    const text = renderMetrics([
      {
        name: "starling_x_total",
        help: "A counter\nover two lines.",
        type: "counter",
        samples: [{ labels: { worker: 0, peer: 'n"1' }, value: 3 }, { value: Number.POSITIVE_INFINITY }],
      },
    ]);
    assert.equal(
      text,
      '# HELP starling_x_total A counter\\nover two lines.\n# TYPE starling_x_total counter\nstarling_x_total{worker="0",peer="n\\"1"} 3\nstarling_x_total +Inf\n',
    );
  });
});

describe("/metrics and /health on a node", () => {
  const node = useNode();

  it("counts logins, failed logins and sessions over every worker", async (t) => {
    const port = node().ports.http;
    const before = await scrape(port);
    const user = await newUser(node(), "metrics");
    const client = await RawClient.connectTo(node());
    t.after(() => client.destroy());
    await client.login(user.username, user.password);
    const wrong = await RawClient.connectTo(node());
    t.after(() => wrong.destroy());
    await wrong.openStream();
    await wrong.startTls();
    const outcome = await wrong.authPlain(user.username, "not the password");
    assert.equal(outcome.getName(), "failure");

    // A log line per login and per failed login, with the address and the account (fail2ban).
    const failed = await node().waitForLog(
      (line) => line.event === "login-failed" && line.user === user.jid,
      "the failed login's line",
    );
    assert.equal(failed.address, "127.0.0.1");
    const succeeded = await node().waitForLog(
      (line) => line.event === "login" && line.user === user.jid,
      "the login's line",
    );
    assert.equal(succeeded.address, "127.0.0.1");
    const after = await scrape(port);
    assert.equal(sum(after, "starling_logins_total") - sum(before, "starling_logins_total"), 1);
    assert.equal(
      sum(after, "starling_login_failures_total") - sum(before, "starling_login_failures_total"),
      1,
    );
    assert.ok(sum(after, "starling_sessions") >= 1);
    assert.ok(sum(after, "starling_stanzas_in_total") > sum(before, "starling_stanzas_in_total"));
    assert.ok(sum(after, "starling_stanzas_out_total") > sum(before, "starling_stanzas_out_total"));
    // The replication lag is published per worker.
    assert.equal((after.match(/^starling_replication_lag_changes\{worker="\d+"\} /gm) ?? []).length, 2);
    assert.match(after, /^starling_replication_stalled_seconds\{worker="\d+"\} /m);
    // One sample per worker (the test node has two), each family announced.
    assert.equal((after.match(/^starling_sessions\{worker="\d+"\} /gm) ?? []).length, 2);
    for (const name of after.matchAll(/^(starling_[a-z_]+)[{ ]/gm)) {
      assert.match(after, new RegExp(`^# TYPE ${name[1]} (counter|gauge)$`, "m"));
    }
  });

  it("/health says up while the node serves", async () => {
    const response = await fetch(`http://127.0.0.1:${node().ports.http}/health`);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: "up" });
  });
});

/**
 * End to end: `npm run bench -- steady` starts a real one-node Starling (LevelDB), logs 20
 * clients in, sends for 3 s and writes its report; on a healthy node nothing is lost,
 * duplicated or left unacknowledged, the servers' CPU per message is reported, the
 * replication factor asked for reaches the node, and both report files exist.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { REPO_ROOT } from "../helpers/start-node.ts";
import { withTimeout } from "../helpers/wait-for.ts";

test("bench steady against a one-node Starling reports no loss, no duplicate, and writes report.html", async (t) => {
  const out = await mkdtemp(join(tmpdir(), "failover-steady-"));
  t.after(() => rm(out, { recursive: true, force: true }));
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, "bench", "run.ts"),
      "steady",
      ...["--clients", "20", "--rate", "50", "--duration", "3", "--workers", "2", "--out", out],
      // Above the default, so the node's log shows the flag reached it.
      ...["--replication-factor", "3"],
    ],
    // The option wins over the variable the nodes would otherwise inherit and read last.
    {
      cwd: REPO_ROOT,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, STARLING_REPLICATION_FACTOR: "2" },
    },
  );
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk));
  t.after(() => child.kill("SIGKILL"));
  const [code] = (await withTimeout(once(child, "exit"), "the steady run to finish", 45_000)) as [
    number | null,
  ];
  assert.equal(code, 0, output);

  const report = JSON.parse(await readFile(join(out, "report.json"), "utf8")) as Record<string, unknown>;
  assert.equal(report.scenario, "steady");
  assert.equal(report.clients, 20);
  assert.equal(report.logins_ok, 20);
  assert.ok((report.sent as number) >= 100, `only ${report.sent} messages acknowledged`);
  assert.equal(report.delivered, report.sent);
  assert.equal(report.lost, 0);
  assert.equal(report.duplicated, 0);
  assert.equal(report.unacked_at_end, 0);
  assert.equal(report.disconnected, 0);
  assert.equal(typeof report.latency_p99_ms, "number");
  assert.ok(
    typeof report.server_cpu_s_per_1000_msgs === "number" && report.server_cpu_s_per_1000_msgs > 0,
    `server CPU per 1,000 messages: ${report.server_cpu_s_per_1000_msgs}`,
  );
  assert.equal((report.options as Record<string, unknown>).replication_factor, 3);
  assert.equal(
    (report.per_node as Record<string, unknown>[])[0]!.replication_factor,
    3,
    "what the node said",
  );
  const html = await readFile(join(out, "report.html"), "utf8");
  assert.match(html, /<svg[^>]*aria-label="Connected clients per node/);
  const ready = (await readFile(join(out, "node-0.log"), "utf8"))
    .split("\n")
    .find((line) => line.includes('"node ready"'));
  assert.match(ready ?? "", /"replicationFactor":3/, "the node runs with the bench's replication factor");
  assert.match(output, /lost \/ duplicated\s+0 \/ 0/, "the summary table is printed");
  assert.match(output, /server CPU\s+[\d.]+ s per 1,000 messages/);
});

/**
 * The cluster's promise, checked per client with real node processes on one real PostgreSQL:
 * three nodes serve one domain while clients chat; a fourth joins, one drains, one is killed
 * with SIGKILL. Clients on the nodes that stay notice nothing: no disconnect, no lost message,
 * no message twice.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { xml } from "@xmpp/xml";
import { ChatTraffic, type TrafficClient } from "../helpers/chat-traffic.ts";
import { clusterStatus, startThreeNodes, waitForOwners } from "../helpers/cluster.ts";
import { chatters } from "../helpers/cluster-traffic.ts";
import { newUsers } from "../helpers/fixtures.ts";
import { RawClient } from "../helpers/raw-client.ts";
import { REPO_ROOT } from "../helpers/start-node.ts";

const run = promisify(execFile);
const CLIENTS_PER_NODE = 3;
const INTERVAL_MS = 100;

function names(clients: TrafficClient[], onNodes: string[]): string[] {
  return clients.filter((c) => onNodes.includes(c.node)).map((c) => c.name);
}

test("three nodes under traffic: a fourth joins, one drains, one is SIGKILLed; survivors notice nothing", async (t) => {
  const { cluster, n1, n2, n3 } = await startThreeNodes(t);
  const status = await clusterStatus(n2);
  assert.deepEqual(
    status.members.map((m) => [m.node, m.status]),
    [
      ["n1", "up"],
      ["n2", "up"],
      ["n3", "up"],
    ],
  );
  const shares = status.members.map((m) => m.partitions);
  assert.equal(
    shares.reduce((a, b) => a + b, 0),
    4096,
  );
  assert.ok(Math.max(...shares) - Math.min(...shares) <= 1, `an even split: ${shares.join("/")}`);

  const clients = await chatters(t, [n1, n2, n3], CLIENTS_PER_NODE, "c");
  const traffic = new ChatTraffic("join", clients);
  traffic.start(INTERVAL_MS);
  t.after(() => traffic.stop());

  // --- join a fourth node under traffic -------------------------------------------------
  await traffic.rounds(10);
  await cluster.start("n4", { workers: 1, join: n2.peerAddr });
  await waitForOwners(n1, ["n1", "n2", "n3", "n4"]);
  await traffic.rounds(10);
  traffic.stop();
  const all = clients.map((c) => c.name);
  await traffic.flush(all);
  let report = traffic.check(all);
  t.diagnostic(
    `join: sent ${report.sent}, delivered ${report.delivered}, lost ${report.lost.length}, duplicated ${report.duplicated.length}`,
  );
  assert.deepEqual([...traffic.disconnected], [], "nobody is disconnected by a join");
  assert.deepEqual(report.lost, [], "nothing lost during the join");
  assert.deepEqual(report.duplicated, [], "nothing delivered twice during the join");
  assert.ok(report.sent > 100, `traffic ran (${report.sent} messages)`);

  // --- drain n3 under traffic: its clients move, a resumable session resumes elsewhere ----
  const [user] = await newUsers(n1, 1, "r");
  const raw = await RawClient.connect({
    host: n3.host,
    port: n3.ports.c2s,
    domain: n3.domain,
    directTls: false,
    label: "resumer",
  });
  t.after(() => raw.destroy());
  await raw.login(user!.username, user!.password);
  const enabled = await raw.enableSm({ resume: true });
  const previd = enabled.attrs.id!;
  raw.send("<presence/>");
  await raw.waitFor((el) => el.is("presence") && el.attrs.from === raw.jid, "own presence");
  const second = new ChatTraffic("drain", clients);
  second.start(INTERVAL_MS);
  t.after(() => second.stop()); // also when an assertion below fails: no timer left running
  await second.rounds(5);
  const leaving = run(
    process.execPath,
    [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(n3.ports.http)],
    {
      timeout: 60_000,
    },
  );
  // RFC 6120 §4.9.3.19: told where to go (a member that stays).
  assert.equal(
    await raw.waitForStreamError(10_000),
    "see-other-host",
    "the drained node's clients are told to go",
  );
  // While the session waits on the leaving node, a message for it goes into its log...
  await clients[0]!.client.send(
    xml("message", { to: user!.jid, type: "chat" }, xml("body", {}, "while moving")),
  );
  // ...and it resumes on another node with nothing lost (XEP-0198 §5).
  const resumer = await RawClient.connect({
    host: n1.host,
    port: n1.ports.c2s,
    domain: n1.domain,
    directTls: false,
    label: "resumed",
  });
  t.after(() => resumer.destroy());
  await resumer.openStream();
  await resumer.startTls();
  const sasl = await resumer.authScram("SCRAM-SHA-1", user!.username, user!.password);
  assert.equal(sasl.getName(), "success", sasl.toString());
  await resumer.openStream();
  const resumed = await resumer.resumeSm(previd, raw.smInbound ?? 0);
  assert.equal(resumed.getName(), "resumed", `resumption on another node: ${resumed.toString()}`);
  await resumer.waitFor((el) => el.getChildText("body") === "while moving", "the message sent while moving");
  const { stdout } = await leaving;
  assert.match(stdout, /left the cluster/);
  const exited = await n3.exited;
  assert.equal(exited.code, 0, "a drained node exits cleanly");
  await second.rounds(10);
  second.stop();
  const survivors = names(clients, ["n1", "n2"]);
  await second.flush(survivors);
  report = second.check(survivors);
  t.diagnostic(
    `drain: sent ${report.sent}, delivered ${report.delivered}, lost ${report.lost.length}, duplicated ${report.duplicated.length}`,
  );
  assert.deepEqual(
    [...second.disconnected].sort(),
    names(clients, ["n3"]).sort(),
    "only the drained node's clients are disconnected",
  );
  assert.deepEqual(report.lost, [], "nothing lost between clients of the other nodes during the drain");
  assert.deepEqual(report.duplicated, [], "nothing twice during the drain");
  await waitForOwners(n1, ["n1", "n2", "n4"]);

  // --- SIGKILL n2 under traffic --------------------------------------------------------
  const stay = clients.filter((c) => c.node !== "n3");
  const third = new ChatTraffic("kill", stay);
  third.start(INTERVAL_MS);
  t.after(() => third.stop());
  await third.rounds(5);
  const killedAt = Date.now();
  n2.kill("SIGKILL");
  const epochLine = await n1.waitForLog(
    (line) =>
      line.msg === "owner table changed" && Array.isArray(line.deadNodes) && line.deadNodes.length > 0,
    "the epoch without n2",
    20_000,
  );
  const takeoverMs = Date.parse(String(epochLine.time)) - killedAt;
  t.diagnostic(`kill: SIGKILL to new epoch on n1: ${takeoverMs} ms`);
  await third.rounds(30);
  third.stop();
  const afterKill = names(stay, ["n1", "n4"]);
  await third.flush(afterKill);
  report = third.check(afterKill);
  t.diagnostic(
    `kill: sent ${report.sent}, delivered ${report.delivered}, lost ${report.lost.length}, duplicated ${report.duplicated.length}`,
  );
  assert.deepEqual(
    [...third.disconnected].sort(),
    names(stay, ["n2"]).sort(),
    "only the killed node's clients are disconnected",
  );
  assert.deepEqual(report.lost, [], "nothing lost between clients of surviving nodes");
  assert.deepEqual(report.duplicated, [], "nothing twice between clients of surviving nodes");
  await waitForOwners(n1, ["n1", "n4"]);
  assert.ok(takeoverMs < 5_000, `the cluster settled on a new epoch within seconds (${takeoverMs} ms)`);
  for (const run of [traffic, second, third]) run.finish();
});

/**
 * A node that leaves tells its clients where to go: `<see-other-host/>` (RFC 6120 §4.9.3.19)
 * with the client address another member advertised, where the client resumes its XEP-0198
 * session at once, with what was sent to it meanwhile.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { goOnline, isMessageWithBody, loginRaw, newUsers } from "../helpers/fixtures.ts";
import { NS_SASL, NS_SM, NS_STREAMS_ERROR, RawClient } from "../helpers/raw-client.ts";
import { REPO_ROOT } from "../helpers/start-node.ts";

const run = promisify(execFile);

test("a leaving node sends its clients to another member with <see-other-host/>, where they resume", async (t) => {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1", { workers: 1 });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);
  const [mover, friend] = await newUsers(n1, 2, "drain");
  const client = await loginRaw(t, n2, mover!, { label: "mover" });
  await goOnline(client);
  const enabled = await client.enableSm({ resume: true, autoAck: false });
  const other = await loginRaw(t, n1, friend!, { label: "friend" });

  // The node waits (drainTimeoutMs) for its clients to resume elsewhere before it exits.
  const leaving = run(
    process.execPath,
    [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(n2.ports.http)],
    { timeout: 60_000 },
  );
  t.after(() => leaving.catch(() => {}));
  await client.waitForStreamError(20_000);
  const error = client.streamError;
  assert.ok(error !== undefined, `a stream error before the close: ${client.describe()}`);
  const seeOther = error.getChild("see-other-host", NS_STREAMS_ERROR);
  assert.ok(seeOther, `RFC 6120 §4.9.3.19 see-other-host: ${error.toString()}`);
  assert.equal(seeOther.text(), `127.0.0.1:${n1.ports.c2s}`, "n1's client address");

  // Sent while the client moves: it waits in the detached session and comes with the resumption.
  other.send(`<message to='${mover!.jid}' type='chat'><body>while you moved</body></message>`);

  const [host, port] = seeOther.text().split(":");
  const again = await RawClient.connect({
    host: host!,
    port: Number(port),
    domain: n1.domain,
    label: "mover-again",
  });
  t.after(() => again.destroy());
  await again.openStream();
  await again.startTls();
  const outcome = await again.authScram("SCRAM-SHA-1", mover!.username, mover!.password);
  assert.ok(outcome.is("success", NS_SASL), outcome.toString());
  await again.openStream();
  const resumed = await again.resumeSm(enabled.attrs.id!, client.smInbound ?? 0);
  assert.ok(resumed.is("resumed", NS_SM), resumed.toString());
  await again.waitFor(isMessageWithBody("while you moved"), "the message sent while moving");
  await leaving;
});

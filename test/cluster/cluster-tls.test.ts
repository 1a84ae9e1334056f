/**
 * Encrypted peer links between real node processes on one real PostgreSQL (docs/cluster.md,
 * "Encrypted peer links"): nodes publish the fingerprint of their own generated certificate in
 * their member rows and link over TLS pinned to it; an impostor on a member's peer address is
 * refused; plain links only when every node says so.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { MembershipStore } from "../../src/cluster/membership/membership-store.ts";
import { PEER_PROTOCOL_VERSION, PeerNetwork } from "../../src/cluster/peer/peer-network.ts";
import { createLogger } from "../../src/log.ts";
import { makeCertificate } from "../helpers/certificates.ts";
import { type ClusterNode, startTestCluster, TEST_SECRET, waitForOwners } from "../helpers/cluster.ts";
import { goOnline, isMessageWithBody, loginRaw, newUsers } from "../helpers/fixtures.ts";
import { waitUntil } from "../helpers/wait-for.ts";

/** The members' rows as PostgreSQL holds them. */
async function memberRows(url: string) {
  const membership = new MembershipStore({ url, log: createLogger({ level: "silent" }) });
  await membership.open();
  try {
    return (await membership.read()).members;
  } finally {
    await membership.close();
  }
}

/** A user on `from` sends a user on `to` a message, which crosses the peer link; once. */
async function messageCrosses(t: TestContext, from: ClusterNode, to: ClusterNode, body: string) {
  const [alice, bob] = await newUsers(from, 2, "tls");
  const sender = await loginRaw(t, from, alice!);
  const receiver = await loginRaw(t, to, bob!);
  await goOnline(receiver);
  sender.send(`<message to='${bob!.jid}' type='chat'><body>${body}</body></message>`);
  await receiver.waitFor(isMessageWithBody(body), `"${body}" on ${to.name}`);
}

test("nodes link over TLS pinned to the certificates their member rows publish; an impostor is refused", async (t) => {
  const cluster = await startTestCluster(t);
  const n1 = await cluster.start("n1", { workers: 1 });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr });
  await waitForOwners(n1, ["n1", "n2"]);

  // Each row pins the node's own generated certificate (in its data directory).
  const rows = await memberRows(cluster.url);
  for (const node of [n1, n2]) {
    const pem = await readFile(join(node.dataDir, "tls", "cert.pem"), "utf8");
    const row = rows.find((m) => m.node === node.name);
    assert.equal(row?.peerCertSha256, new X509Certificate(pem).fingerprint256, `${node.name}'s pin`);
    assert.ok(node.logs.some((l) => l.msg === "peer server listening" && l.tls === true));
    assert.ok(!node.logs.some((l) => /plainLinks is on/.test(String(l.msg))));
  }
  await messageCrosses(t, n1, n2, "over TLS");

  // n2 dies, and something else that knows the secret takes its peer address: n1 redials it,
  // sees a certificate that is not the one n2's row pins, and refuses it before the handshake.
  const impostorCert = await makeCertificate("impostor");
  const impostor = new PeerNetwork({
    self: {
      node: "n2",
      incarnation: Date.now(),
      partitions: 4096,
      hash: "sha1-64",
      protocol: PEER_PROTOCOL_VERSION,
      peerAddr: n2.peerAddr,
    },
    secret: TEST_SECRET,
    tls: { cert: impostorCert.cert, key: impostorCert.key },
    host: "127.0.0.1",
    port: Number(n2.peerAddr.split(":")[1]),
    log: createLogger({ level: "silent" }),
  });
  t.after(() => impostor.close());
  let delivered = 0;
  impostor.on("message", () => delivered++);
  n2.process.kill("SIGKILL");
  await n2.exited;
  await impostor.listen();
  const refusal = await waitUntil(
    () => n1.logs.find((l) => l.code === "XSRV_PEER_UNTRUSTED"),
    "n1 refusing the impostor's certificate",
    15_000,
  );
  assert.equal(refusal.level, "error");
  assert.match(String(refusal.msg), /refused its certificate/);
  assert.ok(String(refusal.msg).includes(impostorCert.certSha256), "names the fingerprint presented");
  assert.ok(String(refusal.msg).includes(rows.find((m) => m.node === "n2")!.peerCertSha256!), "and the pin");
  assert.equal(delivered, 0, "nothing reached the impostor");
  await waitForOwners(n1, ["n1"]);
  assert.equal(delivered, 0);
});

test("with cluster.plainLinks on every node, links are plain, nothing is pinned, and each node warns", async (t) => {
  const cluster = await startTestCluster(t);
  const plain = { plainLinks: true };
  const n1 = await cluster.start("n1", { workers: 1, cluster: plain });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, cluster: plain });
  await waitForOwners(n1, ["n1", "n2"]);
  for (const node of [n1, n2]) {
    const warnings = node.logs.filter((l) => /plainLinks is on/.test(String(l.msg)));
    assert.equal(warnings.length, 1, `${node.name} warns once`);
    assert.equal(warnings[0]!.level, "warn");
    assert.ok(node.logs.some((l) => l.msg === "peer server listening" && l.tls === false));
  }
  for (const row of await memberRows(cluster.url)) assert.equal(row.peerCertSha256, undefined);
  await messageCrosses(t, n2, n1, "in clear, by choice");
});

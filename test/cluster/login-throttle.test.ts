/**
 * The login throttle counts cluster-wide (issue 11, item 8): an attacker that spreads its
 * attempts over two nodes gets one budget in total, not one per node, per address and per
 * account; the owner still logs in from its known address on either node. Two real node
 * processes on one real PostgreSQL.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { newUsers } from "../helpers/fixtures.ts";
import { loginAttempt } from "../helpers/login-attempt.ts";

const LIMITS = {
  loginFailuresPerAddress: 6,
  loginFailuresPerAccountAddress: 3,
  loginFailuresPerAccount: 4,
  loginFailureWindowMs: 60_000,
};

test("an attacker splitting its attempts over two nodes gets one node's budget in total", async (t) => {
  const cluster = await startTestCluster(t);
  const a = await cluster.start("n1", { config: { limits: LIMITS } });
  const b = await cluster.start("n2", { join: a.peerAddr, config: { limits: LIMITS } });
  for (const node of [a, b]) await waitForOwners(node, ["n1", "n2"]);
  const nodes = [a, b];
  // Accounts whose actors live on either node: the counts are wherever the ring puts them.
  const [owner, ...users] = await newUsers(a, 6, "ct");

  // Per address: 127.0.0.2 tries a different account each time, alternating nodes.
  const byAddress: string[] = [];
  for (let i = 0; i < 10; i++) {
    const user = users[i % users.length]!;
    byAddress.push(await loginAttempt(t, nodes[i % 2]!, "127.0.0.2", user.username, `guess-${i}`));
  }
  assert.deepEqual(
    byAddress,
    [...Array(6).fill("not-authorized"), ...Array(4).fill("temporary-auth-failure")],
    "the address's budget (6) is the cluster's, not each node's",
  );

  // Per account: the owner logged in from 127.0.0.1 before; four attacker addresses, two
  // attempts each, alternating nodes, share the account's budget (4).
  assert.equal(await loginAttempt(t, b, "127.0.0.1", owner!.username, owner!.password), "success");
  const byAccount: string[] = [];
  for (let i = 0; i < 8; i++) {
    const from = `127.0.1.${1 + (i % 4)}`;
    byAccount.push(await loginAttempt(t, nodes[i % 2]!, from, owner!.username, `guess-${i}`));
    // The owner, from its known address, gets in on both nodes throughout.
    for (const node of nodes) {
      assert.equal(
        await loginAttempt(t, node, "127.0.0.1", owner!.username, owner!.password, "SCRAM-SHA-1"),
        "success",
        `the owner on ${node === a ? "n1" : "n2"} after ${i + 1} guesses: ${byAccount.join()}`,
      );
    }
  }
  assert.deepEqual(
    byAccount,
    [...Array(4).fill("not-authorized"), ...Array(4).fill("temporary-auth-failure")],
    "the account's budget (4) is the cluster's, not each node's",
  );
});

/**
 * Login throttling (issue 11, item 8, "nobody can lock a user out"): an attacker guessing an
 * account's password, from one address or several, never locks out the account's owner, who
 * logs in from an address it logged in from before, or with a one-time token; the attacker's
 * own addresses run out of attempts. Real node processes and real sockets; the attacker and the
 * owner are told apart by their source address (127.0.0.1 and 127.0.0.2... on Linux, where
 * all of 127/8 is the loopback interface).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { newUser, newUsers } from "../helpers/fixtures.ts";
import { connectFrom, loginAttempt } from "../helpers/login-attempt.ts";
import { NS_SASL } from "../helpers/raw-client.ts";
import { ScramClient } from "../helpers/scram.ts";
import { type AfterHook, type StartedNode, startNode } from "../helpers/start-node.ts";

const OWNER = "127.0.0.1";

const attempt = loginAttempt;

/**
 * A SCRAM-SHA-1 exchange from `from` stopped after the server's first answer (a challenge when
 * the attempt was admitted, else a failure); `finish` sends the client's proof.
 */
async function startScram(t: AfterHook, node: StartedNode, from: string, username: string, password: string) {
  const client = await connectFrom(t, node, from, username);
  const scram = new ScramClient("SCRAM-SHA-1", username, password);
  const saslAnswer = () =>
    client.waitFor(
      (el) => el.getNS() === NS_SASL && ["challenge", "failure", "success"].includes(el.getName()),
    );
  client.send(`<auth xmlns='${NS_SASL}' mechanism='SCRAM-SHA-1'>${base64(scram.clientFirst())}</auth>`);
  const answer = await saslAnswer();
  return {
    answer,
    async finish() {
      const serverFirst = Buffer.from(answer.text(), "base64").toString("utf8");
      client.send(`<response xmlns='${NS_SASL}'>${base64(scram.clientFinal(serverFirst))}</response>`);
      return saslAnswer();
    },
  };
}

const base64 = (text: string) => Buffer.from(text).toString("base64");

/** Small budgets, so a test spends them in a few dozen connections. */
const LIMITS = {
  loginFailuresPerAddress: 8,
  loginFailuresPerAccountAddress: 3,
  loginFailuresPerAccount: 5,
  loginFailureWindowMs: 60_000,
};

async function tokenFor(node: StartedNode, jid: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${node.ports.http}/api/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ jid }),
  });
  assert.equal(response.status, 201, await response.clone().text());
  return ((await response.json()) as { token: string }).token;
}

describe("login throttle", () => {
  test("an attacker hammering an account never locks its owner out of a known address", async (t) => {
    const node = await startNode(t, { config: { limits: LIMITS } });
    const owner = await newUser(node, "owner");
    // The owner has logged in from home before: that address is known to the account.
    assert.equal(await attempt(t, node, OWNER, owner.username, owner.password), "success");
    const attacker: string[] = [];
    for (let round = 0; round < 3; round++) {
      // Six guesses a round, more than the account's budget, from four addresses.
      for (let i = 0; i < 6; i++) {
        const from = `127.0.0.${2 + (attacker.length % 4)}`;
        attacker.push(await attempt(t, node, from, owner.username, `guess-${attacker.length}`));
      }
      for (const mechanism of ["PLAIN", "SCRAM-SHA-1"] as const) {
        assert.equal(
          await attempt(t, node, OWNER, owner.username, owner.password, mechanism),
          "success",
          `the owner's login (${mechanism}) in round ${round}; the attacker got ${attacker.join(", ")}`,
        );
      }
    }
    assert.ok(
      attacker.every((o) => o === "not-authorized" || o === "temporary-auth-failure"),
      attacker.join(),
    );
    // The account's budget (5) was spent in the first round: the attacker's addresses, never
    // logged in to the account, are refused from then on, even with the right password.
    assert.deepEqual(attacker.slice(0, 5), Array(5).fill("not-authorized"), attacker.join());
    assert.deepEqual(attacker.slice(5), Array(13).fill("temporary-auth-failure"), attacker.join());
    assert.equal(
      await attempt(t, node, "127.0.0.2", owner.username, owner.password),
      "temporary-auth-failure",
      "a refusal is the same whether the password is right or wrong",
    );
  });

  test("an address is refused after its own budget, on every account it does not know, and one account's after less", async (t) => {
    const node = await startNode(t, { config: { limits: { ...LIMITS, loginFailuresPerAccount: 1000 } } });
    const [victim, other, third, colleague] = await newUsers(node, 4, "addr");
    const from = "127.0.0.2";
    // Someone else at the same address (an office, a NAT) logged in to their account before.
    assert.equal(await attempt(t, node, from, colleague!.username, colleague!.password), "success");
    const onVictim: string[] = [];
    for (let i = 0; i < 4; i++) onVictim.push(await attempt(t, node, from, victim!.username, `guess-${i}`));
    // Three failures on one account from one address (loginFailuresPerAccountAddress), then refused.
    assert.deepEqual(onVictim, [...Array(3).fill("not-authorized"), "temporary-auth-failure"]);
    const onOthers: string[] = [];
    for (let i = 0; i < 6; i++) {
      const user = i % 2 === 0 ? other! : third!;
      onOthers.push(await attempt(t, node, from, user.username, `guess-${i}`));
    }
    // The address's own budget (8) is spent after 3 + 5 failures, whatever account it tries...
    assert.deepEqual(
      onOthers,
      [...Array(5).fill("not-authorized"), "temporary-auth-failure"],
      onOthers.join(),
    );
    assert.equal(await attempt(t, node, from, third!.username, third!.password), "temporary-auth-failure");
    // ...but not on an account that knows the address: its owner there is not locked out...
    assert.equal(await attempt(t, node, from, colleague!.username, colleague!.password), "success");
    // ...with a one-time token either (a token asks the account whether it knows the address)...
    assert.equal(
      await attempt(t, node, from, colleague!.username, await tokenFor(node, colleague!.jid)),
      "success",
    );
    // ...and other addresses are not affected.
    assert.equal(await attempt(t, node, OWNER, victim!.username, victim!.password), "success");
    assert.equal(await attempt(t, node, "127.0.0.3", third!.username, third!.password), "success");
  });

  test("a fresh address is refused only once the account's budget is spent, and a token still works", async (t) => {
    const node = await startNode(t, { config: { limits: LIMITS } });
    const owner = await newUser(node, "fresh");
    const outcomes: string[] = [];
    // Five failures from five addresses: each within its own budgets, together the account's.
    for (let i = 0; i < 5; i++)
      outcomes.push(await attempt(t, node, `127.0.1.${i + 1}`, owner.username, `guess-${i}`));
    assert.deepEqual(outcomes, Array(5).fill("not-authorized"));
    // An address that never logged in to the account, with the right password: refused now.
    assert.equal(
      await attempt(t, node, "127.0.2.1", owner.username, owner.password),
      "temporary-auth-failure",
    );
    // A one-time token from that same fresh address is not refused by the account's count...
    const token = await tokenFor(node, owner.jid);
    assert.equal(await attempt(t, node, "127.0.2.1", owner.username, token), "success");
    // ...and the address it logged in from is known to the account from then on.
    assert.equal(await attempt(t, node, "127.0.2.1", owner.username, owner.password), "success");
    // Guessing tokens does not spend the account's budget (the attempt is charged to the address).
    assert.equal(
      await attempt(t, node, "127.0.3.1", owner.username, `stl1_${"A".repeat(43)}`),
      "not-authorized",
    );
  });

  test("many users behind one address log in at once; only a worker's cap on attempts in progress holds some back", async (t) => {
    const node = await startNode(t, { config: { limits: LIMITS } });
    const users = await newUsers(node, 20, "nat");
    // More than the address's failure budget (8) at once, all right: none is refused.
    const outcomes = await Promise.all(
      users.map((u) => attempt(t, node, "127.0.0.9", u.username, u.password)),
    );
    assert.deepEqual(outcomes, Array(20).fill("success"));
    // With at most 2 in progress per address on each worker (the node has two): 20 SCRAM
    // exchanges held after the server's first answer stay in progress, so whatever the timing
    // at most 4 are admitted and the others are told to try again.
    const capped = await startNode(t, {
      config: { limits: { ...LIMITS, loginAttemptsInFlightPerAddress: 2 } },
    });
    const more = await newUsers(capped, 20, "cap");
    const held = await Promise.all(
      more.map((u) => startScram(t, capped, "127.0.0.9", u.username, u.password)),
    );
    const admitted = held.filter((h) => h.answer.getName() === "challenge");
    const refused = held.filter((h) => h.answer.getName() !== "challenge");
    assert.ok(admitted.length >= 1 && admitted.length <= 4, `${admitted.length} admitted at once`);
    assert.deepEqual(
      refused.map((h) => h.answer.getChildElements()[0]?.getName()),
      Array(20 - admitted.length).fill("temporary-auth-failure"),
    );
    // The admitted ones finish and get in; their places are free again for the others.
    for (const h of admitted) assert.equal((await h.finish()).getName(), "success");
    const again = more[held.indexOf(refused[0]!)]!;
    assert.equal(await attempt(t, capped, "127.0.0.9", again.username, again.password), "success");
  });

  test("parallel guesses get no more than the budget while the owner logs in at the same time", async (t) => {
    const node = await startNode(t, { config: { limits: LIMITS } });
    const owner = await newUser(node, "parallel");
    assert.equal(await attempt(t, node, OWNER, owner.username, owner.password), "success");
    // 24 guesses from four addresses, all at once, while the owner logs in again and again.
    const attacker = Array.from({ length: 24 }, (_, i) =>
      attempt(t, node, `127.0.0.${2 + (i % 4)}`, owner.username, `guess-${i}`),
    );
    const logins: string[] = [];
    for (let i = 0; i < 8; i++) {
      logins.push(
        await attempt(t, node, OWNER, owner.username, owner.password, i % 2 ? "PLAIN" : "SCRAM-SHA-1"),
      );
    }
    assert.deepEqual(logins, Array(8).fill("success"));
    const outcomes = await Promise.all(attacker);
    // Attempts are charged when they start, so parallel ones cannot all pass the check before
    // the first failure is counted: the account's budget (5) holds.
    assert.equal(outcomes.filter((o) => o === "not-authorized").length, 5, outcomes.join());
    assert.equal(outcomes.filter((o) => o === "temporary-auth-failure").length, 19, outcomes.join());
  });
});

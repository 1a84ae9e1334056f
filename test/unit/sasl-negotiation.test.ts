/**
 * The SASL step (src/xmpp/negotiation/sasl.ts) handles one element at a time: a second `<auth/>`
 * sent before the first is answered ends the stream. Run side by side, the two exchanges shared
 * the throttle's ticket, and the success of an account the client knew the password of settled
 * the charge of the account it was guessing as a success (its address became one the victim
 * "logs in from"). Socket-free: a stream stand-in, a throttle whose victim answers last.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Element } from "@xmpp/xml";
import { createLogger } from "../../src/log.ts";
import { SaslNegotiation } from "../../src/xmpp/negotiation/sasl.ts";

test("a second <auth/> before the first is answered ends the stream; no charge is settled by the other account", async () => {
  const settled: string[] = [];
  let tickets = 0;
  const guard = {
    isToken: () => false,
    async admit(address: string, account: string) {
      // The victim's admission answers after the attacker's own.
      await new Promise((resolve) => setTimeout(resolve, account.startsWith("victim") ? 20 : 5));
      return { allowed: true as const, ticket: { address, account, id: ++tickets } };
    },
    settle: (ticket: { account: string }, succeeded: boolean) =>
      settled.push(`${ticket.account} ${succeeded}`),
    failedWithoutAccount: () => settled.push("without account"),
  };
  const auth = {
    scram: false,
    managesAccounts: true,
    async verifyPassword(jid: string, password: string) {
      await new Promise((resolve) => setTimeout(resolve, 30));
      return jid.startsWith("mallory@") && password === "right";
    },
    getScramCredential: async () => undefined,
    userExists: async () => true,
  };
  const sent: string[] = [];
  const errors: string[] = [];
  const stream = {
    host: {
      config: { domain: "example.org", tls: { requireBeforeAuth: false } },
      auth,
      loginGuard: guard,
      counters: { logins: 0, loginFailures: 0 },
    },
    log: createLogger({ level: "silent" }),
    secure: true,
    closing: false,
    remoteAddress: "192.0.2.7",
    send: (xml: string) => sent.push(xml),
    authenticated: (jid: string) => sent.push(`authenticated ${jid}`),
    closeWithError(condition: string) {
      errors.push(condition);
      this.closing = true;
    },
  };
  const sasl = new SaslNegotiation(stream as unknown as ConstructorParameters<typeof SaslNegotiation>[0]);
  const plain = (user: string, password: string) =>
    new Element("auth", { xmlns: "urn:ietf:params:xml:ns:xmpp-sasl", mechanism: "PLAIN" }).t(
      Buffer.from(`\0${user}\0${password}`).toString("base64"),
    );
  await Promise.all([sasl.handle(plain("victim", "guess")), sasl.handle(plain("mallory", "right"))]);
  assert.deepEqual(errors, ["policy-violation"], "the second <auth/> ends the stream");
  assert.ok(
    !settled.includes("victim@example.org true"),
    `the victim's charge stays a failure: ${settled.join(", ")}`,
  );
  assert.ok(!sent.some((x) => x.startsWith("authenticated")), "nobody is authenticated");
});

/**
 * Shared fixtures for the integration suites: one node per test file, fresh accounts per test,
 * logged-in raw clients that are destroyed after their test, and the common IM steps (initial
 * presence, mutual subscription) done the way a client does them. Nothing runs at import.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before } from "node:test";
import type { Element } from "@xmpp/xml";
import {
  bareJid,
  esc,
  isStanza,
  NS_CLIENT,
  NS_ROSTER,
  NS_SASL,
  NS_TLS,
  RawClient,
  type RawConnectOptions,
  type RawLoginOptions,
  suiteTransport,
} from "./raw-client.ts";
import { type AfterHook, type StartedNode, type StartNodeOptions, startNode } from "./start-node.ts";

/**
 * Starts one node for the whole test file (in `before`) and stops it in `after`. Returns a getter,
 * because the node exists only once `before` has run.
 */
export function useNode(options: StartNodeOptions = {}): () => StartedNode {
  let node: StartedNode | undefined;
  const cleanups: Array<() => unknown> = [];
  before(async () => {
    node = await startNode({ after: (fn) => cleanups.push(fn) }, options);
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });
  return () => {
    if (!node) throw new Error("the node is not started (useNode's before hook failed)");
    return node;
  };
}

/** An account created for one test. */
export interface TestUser {
  /** The local part. */
  username: string;
  /** The bare JID. */
  jid: string;
  password: string;
}

/** Creates a fresh account with a unique name. */
export async function newUser(node: StartedNode, prefix = "u"): Promise<TestUser> {
  const username = `${prefix}-${randomBytes(4).toString("hex")}`;
  const password = `pw-${randomBytes(6).toString("hex")}`;
  await node.createUser(`${username}@${node.domain}`, password);
  return { username, jid: `${username}@${node.domain}`, password };
}

/** Creates `count` fresh accounts. */
export async function newUsers(node: StartedNode, count: number, prefix = "u"): Promise<TestUser[]> {
  const users: TestUser[] = [];
  for (let i = 0; i < count; i++) users.push(await newUser(node, `${prefix}${i}`));
  return users;
}

/** Opens a raw connection that is destroyed after the test. */
export async function connectRaw(
  t: AfterHook,
  node: StartedNode,
  options: { directTls?: boolean; label?: string } = {},
): Promise<RawClient> {
  const client = await RawClient.connectTo(node, options);
  t.after(() => client.destroy());
  return client;
}

/** Options for {@link loginRaw}. */
export interface LoginOptions extends RawLoginOptions {
  directTls?: boolean;
  label?: string;
  /** Request the roster after bind, as clients do (it makes this resource "interested"); default true. */
  roster?: boolean;
  /** Send initial presence with this priority after the roster (and wait for its reflection); default: none. */
  priority?: number;
}

/**
 * Connects and logs in a raw client as `user` with STARTTLS and SCRAM-SHA-1 by default, answers
 * roster pushes and pings like a client, requests the roster and, if `priority` is given, becomes
 * available. The socket is destroyed after the test.
 */
export async function loginRaw(
  t: AfterHook,
  node: StartedNode,
  user: TestUser,
  options: LoginOptions = {},
): Promise<RawClient> {
  const client = await RawClient.connect({
    port: options.directTls ? node.ports.tls : node.ports.c2s,
    host: node.host,
    domain: node.domain,
    directTls: options.directTls ?? false,
    label: options.label ?? options.resource ?? user.username,
    ...suiteTransport(node, options.directTls),
  } satisfies RawConnectOptions);
  t.after(() => client.destroy());
  client.autoReply.rosterPush = true;
  client.autoReply.ping = true;
  await client.login(user.username, user.password, options);
  if (options.roster !== false) await getRoster(client);
  if (options.priority !== undefined) await goOnline(client, { priority: options.priority });
  return client;
}

/**
 * Connects as `user` (STARTTLS, SCRAM-SHA-1) and asks to resume XEP-0198 session `previd` with
 * the client's count `h` instead of binding; resolves with the client and the server's answer
 * (`<resumed/>` or `<failed/>`). Acknowledgements are answered automatically.
 */
export async function resumeRaw(
  t: AfterHook,
  node: StartedNode,
  user: TestUser,
  previd: string,
  h: number,
): Promise<{ client: RawClient; answer: Element }> {
  const client = await RawClient.connect({
    host: node.host,
    port: node.ports.c2s,
    domain: node.domain,
    label: "resumed",
    ...suiteTransport(node),
  });
  t.after(() => client.destroy());
  const features = await client.openStream();
  if (features.getChild("starttls", NS_TLS) !== undefined) await client.startTls();
  const outcome = await client.authScram("SCRAM-SHA-1", user.username, user.password);
  if (!outcome.is("success", NS_SASL)) throw new Error(`${user.jid}: login refused: ${outcome.toString()}`);
  await client.openStream();
  return { client, answer: await client.resumeSm(previd, h, { autoAck: true }) };
}

/** Requests the roster (RFC 6121 §2.2) and returns the result. */
export async function getRoster(client: RawClient, ver?: string): Promise<Element> {
  const verAttr = ver === undefined ? "" : ` ver='${esc(ver)}'`;
  const reply = await client.iq("get", `<query xmlns='${NS_ROSTER}'${verAttr}/>`);
  assert.equal(reply.attrs.type, "result", `roster get failed: ${reply.toString()}`);
  return reply;
}

/** Clients that sent available presence through {@link goOnline}. */
const availableClients = new WeakSet<RawClient>();

/**
 * Sends available presence and waits until the server has reflected it to this resource. RFC
 * 6121 §4.2.2: "The user's server MUST also broadcast initial presence from the user's newly
 * available resource to all of the user's available resources, including the resource that
 * generated the presence notification in the first place."
 */
export async function goOnline(
  client: RawClient,
  options: { priority?: number; show?: string; status?: string } = {},
): Promise<Element> {
  const children = [
    options.show ? `<show>${esc(options.show)}</show>` : "",
    options.status ? `<status>${esc(options.status)}</status>` : "",
    options.priority !== undefined ? `<priority>${options.priority}</priority>` : "",
  ].join("");
  client.send(`<presence>${children}</presence>`);
  availableClients.add(client);
  return client.waitFor(
    (el) => isStanza("presence")(el) && el.attrs.from === client.jid && el.attrs.type === undefined,
    `the reflection of ${client.label}'s own presence`,
  );
}

/** A roster push (iq set with one item) for `jid`, matching `check` on the item. */
export function isRosterPush(jid: string, check: (item: Element) => boolean = () => true) {
  return (el: Element): boolean => {
    if (!isStanza("iq", { type: "set" })(el)) return false;
    const item = el.getChild("query", NS_ROSTER)?.getChild("item");
    return item !== undefined && item.attrs.jid === jid && check(item);
  };
}

/** A presence stanza from `from` (full or bare JID, exact match) of the given type (undefined = available). */
export function isPresenceFrom(from: string, type?: string) {
  return (el: Element): boolean =>
    el.getName() === "presence" &&
    el.getNS() === NS_CLIENT &&
    el.attrs.from === from &&
    el.attrs.type === type;
}

/** A message stanza with the given body. */
export function isMessageWithBody(body: string) {
  return (el: Element): boolean =>
    el.getName() === "message" && el.getNS() === NS_CLIENT && el.getChildText("body") === body;
}

/**
 * Makes `a` and `b` mutual contacts (subscription "both") through the RFC 6121 §3 exchange, and
 * waits for everything the exchange produces (roster pushes, presence of available resources) so
 * that the inboxes are quiet afterwards. Both must have requested their roster; `b` must be
 * logged in.
 */
export async function becomeContacts(a: RawClient, b: RawClient): Promise<void> {
  const aBare = bareJid(a.jid!);
  const bBare = bareJid(b.jid!);
  await subscribe(a, b);
  await subscribe(b, a);
  await a.waitFor(
    isRosterPush(bBare, (item) => item.attrs.subscription === "both"),
    `${bBare} "both" push`,
  );
  await b.waitFor(
    isRosterPush(aBare, (item) => item.attrs.subscription === "both"),
    `${aBare} "both" push`,
  );
}

/**
 * `user` subscribes to `contact`'s presence and `contact` approves (RFC 6121 §3.1), waiting until
 * `user` has the "subscribed" presence and, when `contact` is available, its presence.
 */
export async function subscribe(
  user: RawClient,
  contact: RawClient,
  contactAvailable?: boolean,
): Promise<void> {
  const userBare = bareJid(user.jid!);
  const contactBare = bareJid(contact.jid!);
  user.send(`<presence to='${esc(contactBare)}' type='subscribe'/>`);
  await contact.waitFor(isPresenceFrom(userBare, "subscribe"), `subscribe from ${userBare}`);
  contact.send(`<presence to='${esc(userBare)}' type='subscribed'/>`);
  await user.waitFor(isPresenceFrom(contactBare, "subscribed"), `subscribed from ${contactBare}`);
  const available = contactAvailable ?? availableClients.has(contact);
  if (available) {
    // RFC 6121 §3.1.5: the contact's server sends the user the contact's current presence.
    await user.waitFor(isPresenceFrom(contact.jid!), `${contact.jid}'s presence after approval`);
  }
}

/**
 * An ordering barrier through the server: an iq to the user's own account that the server
 * answers. Stanzas the server had already routed to this client before answering are received
 * before the answer.
 */
export async function roundTrip(client: RawClient): Promise<Element[]> {
  const id = `barrier-${randomBytes(4).toString("hex")}`;
  client.send(`<iq type='get' id='${id}'><query xmlns='${NS_ROSTER}'/></iq>`);
  const { before: earlier } = await client.collectUntil(
    (el) => el.getName() === "iq" && el.attrs.id === id,
    "the barrier iq reply",
  );
  return earlier;
}

/**
 * An ordering barrier through another user's account: an iq with an unknown payload to `jid`
 * (a bare JID), which the server answers on that user's behalf (RFC 6121 §8.5.2.1.2). Whatever
 * that account had sent this client before handling the iq arrives before the answer.
 */
export async function roundTripVia(client: RawClient, jid: string): Promise<Element[]> {
  const id = `barrier-${randomBytes(4).toString("hex")}`;
  client.send(`<iq type='get' id='${id}' to='${esc(jid)}'><query xmlns='urn:example:barrier'/></iq>`);
  const { before: earlier } = await client.collectUntil(
    (el) => el.getName() === "iq" && el.attrs.id === id,
    `the barrier iq reply from ${jid}`,
  );
  return earlier;
}

/**
 * Starling's own chat page (/chat) in Debian's Chromium: sign in with a password and with a
 * one-time token link, chat with a TCP client both ways, a wrong password's message, a phone's
 * screen, a dropped connection resumed (XEP-0198) with what arrived meanwhile, and a token
 * sign-in that signs in again through the site's credentials URL once its session is lost; and a
 * page on one node of a cluster chatting with a TCP client on the other.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { after, before, describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import { type Browser, chromium, type Page } from "playwright-core";
import { connectClient } from "../helpers/client.ts";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { newUsers, type TestUser } from "../helpers/fixtures.ts";
import { type StartedNode, startNode } from "../helpers/start-node.ts";

const CHROMIUM = process.env.STARLING_CHROMIUM ?? "/usr/bin/chromium";

describe("the chat page", {
  skip: existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (.ci/run installs it)`,
}, () => {
  let node: StartedNode;
  let browser: Browser;
  const cleanups: (() => unknown)[] = [];
  /** The web site: it answers its signed-in user's fresh token to the chat page (with CORS). */
  const site = {
    server: undefined as Server | undefined,
    origin: "",
    user: undefined as string | undefined,
    calls: 0,
  };
  before(async () => {
    site.server = createServer(async (request, response) => {
      site.calls++;
      // Only the chat page's origin may read it, with the site's cookies.
      response.setHeader("access-control-allow-origin", `http://127.0.0.1:${node.ports.webPlain}`);
      response.setHeader("access-control-allow-credentials", "true");
      if (request.url !== "/chat-credentials" || site.user === undefined) {
        response.statusCode = 401;
        return response.end();
      }
      const issued = await fetch(`http://127.0.0.1:${node.ports.http}/api/tokens`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ jid: site.user }),
      });
      const { token } = (await issued.json()) as { token: string };
      response.setHeader("content-type", "application/json");
      response.end(JSON.stringify({ jid: site.user, token }));
    });
    site.server.listen(0, "127.0.0.1");
    await once(site.server, "listening");
    site.origin = `http://127.0.0.1:${(site.server.address() as { port: number }).port}`;
    cleanups.push(() => site.server?.close());
    node = await startNode(
      { after: (fn) => cleanups.push(fn) },
      { config: { web: { origins: [site.origin] } } },
    );
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser?.close();
    for (const fn of cleanups.reverse()) await fn();
  });

  const chatUrl = () => `http://127.0.0.1:${node.ports.webPlain}/chat`;

  async function signIn(page: Page, user: TestUser, password = user.password): Promise<void> {
    await page.goto(chatUrl());
    await page.fill("#jid", user.jid);
    await page.fill("#password", password);
    await page.click("#login button[type=submit]");
  }

  async function online(page: Page, user: TestUser): Promise<void> {
    await page.getByText(`online as ${user.jid}/`).waitFor({ timeout: 15_000 });
  }

  it("signs in with a password and chats with a TCP client both ways", async (t) => {
    const [alice, bob] = await newUsers(node, 2, "page");
    const page = await browser.newPage();
    t.after(() => page.close());
    await signIn(page, alice!);
    await online(page, alice!);
    const app = await connectClient(node, { username: bob!.username, password: bob!.password }, t);
    await app.send(xml("presence"));
    await app.send(xml("message", { to: alice!.jid, type: "chat" }, xml("body", {}, "hi from the app")));
    // The sender shows up in the list with an unread message; the user opens it.
    await page.locator(`nav button[data-jid="${bob!.jid}"]`).click();
    await page.getByText("hi from the app").waitFor({ timeout: 10_000 });
    await page.fill("#text", "hi from the page");
    await page.press("#text", "Enter");
    const got = await app.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "hi from the page",
    );
    assert.ok(got.attrs.from?.startsWith(`${alice!.jid}/chat-`), got.toString());
  });

  it("two pages chat with each other, each seeing the other come online", async (t) => {
    const [alice, bob] = await newUsers(node, 2, "pages");
    const app = await connectClient(node, { username: alice!.username, password: alice!.password }, t);
    // Contacts, so that each page lists the other with its presence.
    for (const [from, to] of [
      [alice!, bob!],
      [bob!, alice!],
    ] as const) {
      const client = await connectClient(node, { username: from.username, password: from.password }, t);
      await client.send(
        xml(
          "iq",
          { type: "set", id: "add" },
          xml("query", { xmlns: "jabber:iq:roster" }, xml("item", { jid: to.jid })),
        ),
      );
      await client.send(xml("presence", { to: to.jid, type: "subscribe" }));
      await client.send(xml("presence", { to: to.jid, type: "subscribed" }));
      await client.stop();
    }
    await app.stop();
    const pageA = await browser.newPage();
    const pageB = await browser.newPage();
    t.after(() => pageA.close());
    t.after(() => pageB.close());
    await signIn(pageA, alice!);
    await online(pageA, alice!);
    await signIn(pageB, bob!);
    await online(pageB, bob!);
    // Bob's page comes online: Alice's list shows him available.
    await pageA.locator(`nav button[data-jid="${bob!.jid}"] .dot.online`).waitFor({ timeout: 10_000 });
    await pageA.locator(`nav button[data-jid="${bob!.jid}"]`).click();
    await pageA.fill("#text", "hello bob, from a page");
    await pageA.press("#text", "Enter");
    await pageB.locator(`nav button[data-jid="${alice!.jid}"]`).click();
    await pageB.getByText("hello bob, from a page").waitFor({ timeout: 10_000 });
    await pageB.fill("#text", "hello alice, from another page");
    await pageB.press("#text", "Enter");
    await pageA.getByText("hello alice, from another page").waitFor({ timeout: 10_000 });
  });

  it("a site's link with a one-time token signs the user in, and the token leaves the address bar", async (t) => {
    const [alice] = await newUsers(node, 1, "page");
    const issued = await fetch(`http://127.0.0.1:${node.ports.http}/api/tokens`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jid: alice!.jid }),
    });
    const { token } = (await issued.json()) as { token: string };
    const page = await browser.newPage();
    t.after(() => page.close());
    await page.goto(`${chatUrl()}#jid=${encodeURIComponent(alice!.jid)}&token=${token}`);
    await online(page, alice!);
    assert.equal(new URL(page.url()).hash, "", "the token is not left in the address bar");
  });

  it("a wrong password says so", async (t) => {
    const [alice] = await newUsers(node, 1, "page");
    const page = await browser.newPage();
    t.after(() => page.close());
    await signIn(page, alice!, "not the password");
    await page.getByText("wrong address, password or token").waitFor({ timeout: 10_000 });
  });

  it("fits a phone's screen: the list above the chat, the message box in view", async (t) => {
    const [alice] = await newUsers(node, 1, "page");
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
    t.after(() => page.close());
    await signIn(page, alice!);
    await online(page, alice!);
    const box = await page.locator("#text").boundingBox();
    const nav = await page.locator("nav").boundingBox();
    assert.ok(box !== null && nav !== null);
    assert.ok(box.y + box.height <= 844 && box.x >= 0 && box.x + box.width <= 390, JSON.stringify(box));
    assert.ok(
      nav.y < box.y && nav.width > 300,
      `the list spans the width above the chat: ${JSON.stringify(nav)}`,
    );
  });

  it("a dropped connection is resumed, and what arrived meanwhile is shown once", async (t) => {
    const [alice, bob] = await newUsers(node, 2, "page");
    const page = await browser.newPage();
    t.after(() => page.close());
    await signIn(page, alice!);
    await online(page, alice!);
    await page.waitForFunction("window.starlingChat.sm.id !== undefined", undefined, { timeout: 10_000 });
    const before = await page.evaluate("window.starlingChat.sm.id");
    const app = await connectClient(node, { username: bob!.username, password: bob!.password }, t);
    await app.send(xml("presence"));
    await page.evaluate("window.starlingChat.ws.close()"); // the network drops
    await app.send(xml("message", { to: alice!.jid, type: "chat" }, xml("body", {}, "while you were away")));
    await page
      .getByText("reconnecting")
      .waitFor({ timeout: 10_000 })
      .catch(() => undefined);
    await online(page, alice!);
    await page.locator(`nav button[data-jid="${bob!.jid}"]`).click();
    await page.getByText("while you were away").waitFor({ timeout: 10_000 });
    assert.equal(await page.getByText("while you were away").count(), 1, "shown once");
    // Resumed, not a new session (which would have a new id and get the message from offline storage).
    assert.equal(await page.evaluate("window.starlingChat.sm.id"), before, "the same XEP-0198 session");
  });

  it("a token sign-in whose session is lost signs in again through the site's credentials URL", async (t) => {
    const [alice, bob] = await newUsers(node, 2, "page");
    const issued = await fetch(`http://127.0.0.1:${node.ports.http}/api/tokens`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jid: alice!.jid }),
    });
    const { token } = (await issued.json()) as { token: string };
    site.user = alice!.jid;
    site.calls = 0;
    const page = await browser.newPage();
    t.after(() => page.close());
    const credentials = encodeURIComponent(`${site.origin}/chat-credentials`);
    await page.goto(
      `${chatUrl()}#jid=${encodeURIComponent(alice!.jid)}&token=${token}&credentials=${credentials}`,
    );
    await online(page, alice!);
    await page.waitForFunction("window.starlingChat.sm.id !== undefined", undefined, { timeout: 10_000 });
    assert.equal(site.calls, 0, "the link's token was enough");

    // The session cannot be resumed (say the server restarted): the used token cannot sign in
    // again, the site's URL gives a new one, and the page binds a new session.
    const lost = (await page.evaluate("window.starlingChat.full")) as string;
    await page.evaluate("window.starlingChat.sm.id = 'gone'; window.starlingChat.ws.close()");
    // A function, not a string: the page's Content-Security-Policy forbids eval.
    await page.waitForFunction(
      (previous) => {
        const chat = (globalThis as unknown as { starlingChat: { full: string; sm: { id?: string } } })
          .starlingChat;
        return chat.full !== previous && chat.sm.id !== undefined && chat.sm.id !== "gone";
      },
      lost,
      { timeout: 15_000 },
    );
    await online(page, alice!);
    assert.equal(site.calls, 1, "one fresh token from the site");
    const app = await connectClient(node, { username: bob!.username, password: bob!.password }, t);
    await app.send(xml("presence"));
    await app.send(
      xml("message", { to: alice!.jid, type: "chat" }, xml("body", {}, "after the new sign-in")),
    );
    await page.locator(`nav button[data-jid="${bob!.jid}"]`).click();
    await page.getByText("after the new sign-in").waitFor({ timeout: 10_000 });

    // Signed out of the site: the URL refuses, and the page says so instead of looping.
    site.user = undefined;
    await page.evaluate("window.starlingChat.sm.id = 'gone'; window.starlingChat.ws.close()");
    await page.getByText("cannot sign in again: the site answered 401").waitFor({ timeout: 15_000 });
  });
});

describe("the chat page across a cluster", {
  skip: existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (.ci/run installs it)`,
}, () => {
  it("a page on one node chats with a TCP client on the other", async (t) => {
    const cluster = await startTestCluster(t);
    const n1 = await cluster.start("n1", { workers: 1 });
    const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr });
    await waitForOwners(n1, ["n1", "n2"]);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox"],
    });
    t.after(() => browser.close());
    const [alice, bob] = await newUsers(n1, 2, "xpage");
    const page = await browser.newPage();
    await page.goto(`http://127.0.0.1:${n1.ports.webPlain}/chat`);
    await page.fill("#jid", alice!.jid);
    await page.fill("#password", alice!.password);
    await page.click("#login button[type=submit]");
    await page.getByText(`online as ${alice!.jid}/`).waitFor({ timeout: 15_000 });
    const app = await connectClient(n2, { username: bob!.username, password: bob!.password }, t);
    await app.send(xml("presence"));
    await app.send(xml("message", { to: alice!.jid, type: "chat" }, xml("body", {}, "from the other node")));
    await page.locator(`nav button[data-jid="${bob!.jid}"]`).click();
    await page.getByText("from the other node").waitFor({ timeout: 10_000 });
    await page.fill("#text", "back across the cluster");
    await page.press("#text", "Enter");
    const got = await app.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "back across the cluster",
    );
    assert.ok(got.attrs.from?.startsWith(`${alice!.jid}/chat-`), got.toString());
  });
});

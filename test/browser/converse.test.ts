/**
 * An ordinary web client in a real browser: Converse.js (npm) in headless Chromium (Debian's
 * package, driven by playwright-core), served from a page on another origin, logs in to a real
 * node over WebSocket and over BOSH, receives a message from a TCP client (xmpp.js) and answers
 * it by typing into its message box as a user does.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import { type Browser, chromium } from "playwright-core";
import { connectClient } from "../helpers/client.ts";
import { newUsers } from "../helpers/fixtures.ts";
import { REPO_ROOT, startNode } from "../helpers/start-node.ts";

const CHROMIUM = process.env.STARLING_CHROMIUM ?? "/usr/bin/chromium";
const DIST = join(REPO_ROOT, "node_modules", "converse.js", "dist");

const TYPES: Record<string, string> = {
  ".js": "text/javascript",
  ".css": "text/css",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".map": "application/json",
};

/** A page that starts Converse with `settings`, and Converse's files under /dist/. */
async function startSite(
  settings: () => Record<string, unknown>,
): Promise<{ origin: string; close(): Promise<void> }> {
  const server = http.createServer(async (request, response) => {
    const path = (request.url ?? "/").split("?")[0]!;
    if (path === "/") {
      response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
      response.end(`<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="/dist/converse.min.css"><script type="module" src="/dist/converse.min.js"></script></head>
<body><script type="module">converse.initialize(${JSON.stringify(settings())});</script></body></html>`);
      return;
    }
    const file = path.startsWith("/dist/")
      ? join(DIST, path.slice("/dist/".length).replaceAll("..", ""))
      : undefined;
    if (file === undefined || !existsSync(file)) {
      response.writeHead(404);
      response.end();
      return;
    }
    const extension = file.slice(file.lastIndexOf("."));
    response.writeHead(200, { "content-type": TYPES[extension] ?? "application/octet-stream" });
    response.end(await readFile(file));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe("Converse.js in Chromium", () => {
  for (const transport of ["websocket", "bosh"] as const) {
    it(`logs in over ${transport}, gets a TCP client's message and answers it`, async (t) => {
      if (!existsSync(CHROMIUM)) {
        t.skip(`no Chromium at ${CHROMIUM} (Debian package chromium; .ci/run installs it)`);
        return;
      }
      let connection: Record<string, unknown> = {};
      let user = { jid: "", password: "" };
      const site = await startSite(() => ({
        ...connection,
        jid: user.jid,
        password: user.password,
        auto_login: true,
        discover_connection_methods: false,
        view_mode: "fullscreen",
        allow_non_roster_messaging: true,
        assets_path: "/dist/",
        loglevel: process.env.STARLING_DEBUG_BROWSER ? "debug" : "warn",
      }));
      t.after(() => site.close());
      // The page is on another origin: BOSH needs it listed for CORS.
      const node = await startNode(t, {
        config: { web: { origins: [site.origin] } },
        dataDir: await mkdtemp(join(tmpdir(), "converse-")),
      });
      const [web, app] = await newUsers(node, 2, "cv");
      user = { jid: web!.jid, password: web!.password };
      connection =
        transport === "websocket"
          ? { websocket_url: `ws://127.0.0.1:${node.ports.webPlain}/xmpp-websocket` }
          : { bosh_service_url: `http://127.0.0.1:${node.ports.webPlain}/http-bind` };

      let browser: Browser;
      try {
        browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
      } catch (error) {
        assert.fail(`Chromium at ${CHROMIUM} did not start: ${(error as Error).message}`);
      }
      t.after(() => browser.close());
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on("pageerror", (error) => problems.push(error.message));
      page.on("console", (message) => {
        if (process.env.STARLING_DEBUG_BROWSER) process.stderr.write(`[page] ${message.text()}\n`);
      });
      await page.goto(site.origin);

      // Logged in: the node has the page's session bound.
      const other = await connectClient(node, { username: app!.username, password: app!.password }, t);
      // Available, so that the page's answer to the bare JID reaches it (RFC 6121 §8.5.2.1).
      await other.send(xml("presence"));
      // The page shows the user online once it has logged in and sent its presence; then the
      // user follows a link to a chat with the app's user, as a site puts on its pages.
      await page.getByText("I am online").first().waitFor({ timeout: 20_000 });
      await page.evaluate(`location.hash = ${JSON.stringify(`#converse/chat?jid=${app!.jid}`)}`);
      const box = page.locator("textarea.chat-textarea").first();
      await box.waitFor({ timeout: 10_000 });
      await other.send(
        xml("message", { to: web!.jid, type: "chat", id: "m1" }, xml("body", {}, "hello from the app")),
      );
      await page
        .getByText("hello from the app")
        .first()
        .waitFor({ timeout: 10_000 })
        .catch(async () => {
          const shot = join(node.dataDir, "converse.png");
          await page.screenshot({ path: shot });
          assert.fail(
            `the message never showed in the page (screenshot ${shot}); page errors: ${problems.join("; ") || "none"}`,
          );
        });

      // The user types an answer and presses Enter.
      await box.fill("hello from the browser");
      await box.press("Enter");
      const answer = await other.waitForStanza(
        (el) => el.is("message") && el.getChildText("body") === "hello from the browser",
        "the page's answer",
        15_000,
      );
      assert.ok(answer.attrs.from?.startsWith(`${web!.jid}/`), answer.toString());
    });
  }
});

/**
 * The promise of issue 10 as a web chat user meets it: Converse.js (npm) in headless Chromium,
 * on a site whose nginx spreads web chat over a three-node cluster (docs/web-chat.md, "Several
 * nodes": its upstream and locations, read from the page), is connected through nginx to one
 * node, and that node is SIGKILLed. Converse notices
 * the closed WebSocket, connects again through nginx (which reaches a survivor), and resumes
 * its XEP-0198 stream there: the messages its contact sent while it was away show once, the
 * one it had before does not show again, and the contact never sees it go offline.
 *
 * What the browser sent and got is read from its WebSocket frames (Playwright's `websocket`
 * events), so the test tells a resumption from a new login that fetched the history.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { makeCa, makeCertificate } from "../helpers/certificates.ts";
import { startTestCluster, waitForOwners } from "../helpers/cluster.ts";
import { becomeContacts, goOnline, isPresenceFrom, loginRaw, newUsers } from "../helpers/fixtures.ts";
import { docClusterUpstream, docLocations, nginxMissing, startNginx } from "../helpers/nginx.ts";
import { NS_SM } from "../helpers/raw-client.ts";
import { REPO_ROOT } from "../helpers/start-node.ts";
import { waitUntil } from "../helpers/wait-for.ts";

const CHROMIUM = process.env.STARLING_CHROMIUM ?? "/usr/bin/chromium";
const execFileAsync = promisify(execFile);
const CONVERSE_DIST = join(REPO_ROOT, "node_modules", "converse.js", "dist");

const missing =
  (await nginxMissing()) ??
  (existsSync(CHROMIUM)
    ? undefined
    : `no Chromium at ${CHROMIUM} (Debian package chromium; .ci/run installs it)`);

/** One WebSocket frame of the page, in order. */
interface Frame {
  sent: boolean;
  text: string;
}

/** How the page's node goes away. */
type Departure = "SIGKILL" | "starling leave";

async function nodeGoesAway(t: TestContext, departure: Departure): Promise<void> {
  const cleanups: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
  });
  // Configured as docs/web-chat.md "Several nodes" says: no plain web port, behind a proxy.
  const cluster = await startTestCluster(t);
  const proxied = { ports: { webPlain: null }, web: { behindProxy: true } };
  const n1 = await cluster.start("n1", { workers: 1, config: proxied });
  const n2 = await cluster.start("n2", { workers: 1, join: n1.peerAddr, config: proxied });
  const n3 = await cluster.start("n3", { workers: 1, join: n1.peerAddr, config: proxied });
  await waitForOwners(n1, ["n1", "n2", "n3"]);
  const [webUser, appUser] = await newUsers(n2, 2, "fo");

  // The two are contacts, set up by a first login of each.
  const appSetup = await loginRaw(t, n2, appUser!, { label: "app-setup" });
  await goOnline(appSetup);
  const webSetup = await loginRaw(t, n2, webUser!, { label: "web-setup" });
  await goOnline(webSetup);
  await becomeContacts(webSetup, appSetup);
  webSetup.send("</stream:stream>");
  await appSetup.waitFor(isPresenceFrom(webSetup.jid!, "unavailable"), "the web setup login's end");
  appSetup.send("</stream:stream>");

  // nginx with docs/web-chat.md's upstream for several nodes (ip_hash, every node's TLS
  // listener) and its locations, proxying to TLS.
  const nodes = [n1, n2, n3];
  const upstream = await docClusterUpstream(nodes.map((node) => `127.0.0.1:${node.ports.web}`));
  const locations = (await docLocations()).replaceAll(
    "proxy_pass http://starling_web;",
    "proxy_pass https://starling_web;",
  );
  const ca = await makeCa("Example site CA");
  const site = await makeCertificate("127.0.0.1", ca);
  const siteDir = await mkdtemp(join(tmpdir(), "starling-site-"));
  cleanups.push(() => rm(siteDir, { recursive: true, force: true }));
  const nginx = await startNginx({
    upstreams: { starling_web: upstream },
    serverDirectives: `${locations}
    location = /converse.html { alias ${siteDir}/index.html; default_type text/html; }
    location /dist/ {
        alias ${CONVERSE_DIST}/;
        types { text/javascript js mjs; text/css css; application/wasm wasm; application/json json map; }
    }
`,
    cert: site.cert,
    key: site.key,
  });
  cleanups.push(() => nginx.stop());
  const at = `127.0.0.1:${nginx.port}`;
  const settings = {
    jid: webUser!.jid,
    password: webUser!.password,
    auto_login: true,
    discover_connection_methods: false,
    websocket_url: `wss://${at}/xmpp-websocket`,
    enable_smacks: true,
    view_mode: "fullscreen",
    assets_path: "/dist/",
    loglevel: process.env.STARLING_DEBUG_BROWSER ? "debug" : "warn",
  };
  await writeFile(
    join(siteDir, "index.html"),
    `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script></head>
<body><script type="module">converse.initialize(${JSON.stringify(settings)});</script></body></html>`,
  );

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox"],
  });
  cleanups.push(() => browser.close());
  const page = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  const frames: Frame[] = [];
  const socketUrls: string[] = [];
  page.on("websocket", (ws) => {
    socketUrls.push(ws.url());
    ws.on("framesent", (frame) => frames.push({ sent: true, text: String(frame.payload) }));
    ws.on("framereceived", (frame) => frames.push({ sent: false, text: String(frame.payload) }));
  });
  page.on("console", (message) => {
    if (process.env.STARLING_DEBUG_BROWSER) process.stderr.write(`[page] ${message.text()}\n`);
  });
  // The setup login above logged a login too: only the page's counts.
  const earlierLines = new Set(nodes.flatMap((node) => node.logs));
  await page.goto(`https://${at}/converse.html`);
  await page.getByText("I am online").first().waitFor({ timeout: 20_000 });
  // Which node nginx chose for this browser (ip_hash): that one is killed.
  const victim = await Promise.any(
    nodes.map((node) =>
      node
        .waitForLog(
          (line) => line.event === "login" && line.user === webUser!.jid && !earlierLines.has(line),
          "the page's login",
          10_000,
        )
        .then(() => node),
    ),
  );
  // The app logs in on another node than the page's, and sees the page online.
  const app = await loginRaw(t, nodes.find((node) => node !== victim)!, appUser!, { label: "app" });
  await app.enableSm({ autoAck: true });
  await goOnline(app);
  const online = await app.waitFor(
    (el) =>
      el.is("presence") &&
      el.attrs.type === undefined &&
      el.attrs.from?.startsWith(`${webUser!.jid}/`) === true,
    "the page's available presence",
  );
  const pageJid = online.attrs.from!;
  const watchedFrom = app.received.length;

  // A chat is open, and one message has arrived before the kill.
  await page.evaluate(`location.hash = ${JSON.stringify(`#converse/chat?jid=${appUser!.jid}`)}`);
  await page.locator("textarea.chat-textarea").first().waitFor({ timeout: 10_000 });
  const say = (id: string, body: string) =>
    app.send(`<message to='${webUser!.jid}' type='chat' id='${id}'><body>${body}</body></message>`);
  say("m1", "before the node died");
  await page.getByText("before the node died").first().waitFor({ timeout: 10_000 });
  const framesBefore = frames.length;

  if (departure === "SIGKILL") victim.kill("SIGKILL");
  else {
    const leaving = execFileAsync(
      process.execPath,
      [join(REPO_ROOT, "src", "main.ts"), "leave", "--http-port", String(victim.ports.http)],
      { timeout: 60_000 },
    );
    cleanups.push(() => leaving);
    // The node hands its partitions off first, then ends its client streams: what is sent
    // from then on reaches the page only through its next connection.
    await waitUntil(
      () => frames.slice(framesBefore).some((f) => !f.sent && /system-shutdown|see-other-uri/.test(f.text)),
      "the leaving node's end of the page's stream",
      30_000,
    );
  }
  say("m2", "while the page was away, first");
  say("m3", "while the page was away, second");
  app.send(`<r xmlns='${NS_SM}'/>`);

  for (const body of ["while the page was away, first", "while the page was away, second"]) {
    await page
      .getByText(body)
      .first()
      .waitFor({ timeout: 40_000 })
      .catch(async () => {
        const shot = join(siteDir, "..", "converse-failover.png");
        await page.screenshot({ path: shot }).catch(() => undefined);
        assert.fail(
          `"${body}" never showed (screenshot ${shot}); frames since the kill:\n${frames
            .slice(framesBefore)
            .map((f) => `${f.sent ? "->" : "<-"} ${f.text}`)
            .join("\n")}`,
        );
      });
  }
  const after = frames.slice(framesBefore);
  const trace = after.map((f) => `${f.sent ? "->" : "<-"} ${f.text}`).join("\n");
  // A resumption, not a new login.
  assert.ok(
    after.some((f) => f.sent && /<resume\b/.test(f.text)),
    `the page asked to resume:\n${trace}`,
  );
  assert.ok(
    after.some((f) => !f.sent && /<resumed\b/.test(f.text)),
    `the survivor resumed it:\n${trace}`,
  );
  assert.ok(!after.some((f) => !f.sent && /<failed\b/.test(f.text)), `no <failed/>:\n${trace}`);
  // Every connection went through nginx: no node sent the page to its own listener
  // (`see-other-uri`, which web.behindProxy prevents).
  assert.deepEqual(
    [...new Set(socketUrls)],
    [`wss://${at}/xmpp-websocket`],
    "the page connected only through nginx",
  );
  // The survivor says so in its log: who came back, and how much went again.
  const resumedLine = await Promise.any(
    nodes
      .filter((node) => node !== victim)
      .map((node) =>
        node.waitForLog(
          (line) => line.event === "resumed" && line.jid === pageJid,
          "the resumption's log line",
          5_000,
        ),
      ),
  );
  assert.ok(
    Number.isInteger(resumedLine.handled) && Number.isInteger(resumedLine.resent),
    JSON.stringify(resumedLine),
  );
  assert.ok(!after.some((f) => f.sent && /<bind\b/.test(f.text)), `no new bind:\n${trace}`);
  // The app's stanzas (its presence, then the three messages) were all accepted.
  await app.waitFor((el) => el.is("a", NS_SM) && Number(el.attrs.h) >= 4, "<a h='4'/>", 30_000);
  // The page still works on the survivor: an answer typed now reaches the app.
  const box = page.locator("textarea.chat-textarea").first();
  await box.fill("back on a survivor");
  await box.press("Enter");
  const answer = await app.waitFor(
    (el) => el.is("message") && el.getChildText("body") === "back on a survivor",
    "the page's answer after the resumption",
    15_000,
  );
  // Counted only now, so that a copy or an unavailable presence arriving late is seen: each
  // message came once, live (a history query's results aside), and shows once.
  const live = (body: string) =>
    frames.filter((f) => !f.sent && f.text.includes(body) && !f.text.includes("urn:xmpp:mam:")).length;
  const everything = frames.map((f) => `${f.sent ? "->" : "<-"} ${f.text}`).join("\n");
  for (const body of [
    "before the node died",
    "while the page was away, first",
    "while the page was away, second",
  ]) {
    assert.equal(live(body), 1, `"${body}" arrived once:\n${everything}`);
    assert.equal(await page.getByText(body).count(), 1, `"${body}" shows once`);
  }
  const offline = app.received
    .slice(watchedFrom)
    .filter((el) => el.is("presence") && el.attrs.from === pageJid && el.attrs.type === "unavailable");
  assert.deepEqual(
    offline.map((el) => el.toString()),
    [],
    "the app saw no unavailable presence",
  );
  assert.equal(answer.attrs.from, pageJid, "sent from the resumed resource");
}

describe("Converse.js behind nginx in front of three nodes", { skip: missing ?? false }, () => {
  it("its node SIGKILLed, it resumes on a survivor: what was sent meanwhile shows once, its contact sees no offline", (t) =>
    nodeGoesAway(t, "SIGKILL"));
  it("its node leaving (starling leave), it resumes on another: what was sent meanwhile shows once, its contact sees no offline", (t) =>
    nodeGoesAway(t, "starling leave"));
});

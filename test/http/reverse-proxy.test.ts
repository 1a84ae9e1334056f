/**
 * Web chat behind a reverse proxy that terminates TLS (docs/web-chat.md): a real nginx with the
 * site's certificate (a throwaway CA's) in front of a real node's plain web port, configured
 * with the location blocks docs/web-chat.md shows, read from that page between its
 * `starling locations` markers so the page and the test cannot drift apart (markers in the page
 * rather than a file the page includes: Markdown has no include, and operators copy the block
 * from the page as it renders). The test supplies only what is the operator's own: the listen
 * address, the certificate and the upstream's port. Clients trust only the site's CA, as a
 * browser trusts only the site's certificate. The two Chromium tests (the /chat page, and
 * Converse.js discovering the WebSocket through host-meta) skip without Debian's chromium.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { xml } from "@xmpp/xml";
import { chromium } from "playwright-core";
import { BoshClient } from "../helpers/bosh-client.ts";
import { makeCa, makeCertificate, type TestCertificate } from "../helpers/certificates.ts";
import { connectClient } from "../helpers/client.ts";
import { newUsers } from "../helpers/fixtures.ts";
import { docLocations, nginxMissing, startNginx, type TestNginx } from "../helpers/nginx.ts";
import { REPO_ROOT, type StartedNode, startNode } from "../helpers/start-node.ts";
import { waitUntil } from "../helpers/wait-for.ts";
import { NS_FRAMING, WsClient, wsLogin } from "../helpers/ws-client.ts";

const CHROMIUM = process.env.STARLING_CHROMIUM ?? "/usr/bin/chromium";
const CONVERSE_DIST = join(REPO_ROOT, "node_modules", "converse.js", "dist");
const BROWSER = { executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] };
/** The throwaway CA is not the browser's: its errors are ignored, and the pages stay https. */
const CONTEXT = { ignoreHTTPSErrors: true };
/** The directives of `location <match>` in `locations` (one level of braces, as the page has). */
function locationBlock(locations: string, match: string): string {
  const at = locations.indexOf(`location ${match} {`);
  assert.ok(at >= 0, `the page has a "location ${match}" block`);
  return locations.slice(at, locations.indexOf("}", at));
}

/** An nginx time (`90s`, `15m`, `1h`, `60`) in seconds. */
function nginxSeconds(value: string): number {
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(value);
  assert.ok(match, `an nginx time: ${value}`);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] ?? "s"]!;
  return Number(match[1]) * unit;
}

/**
 * Starts nginx with `locations` in front of `node`'s plain web port (or its TLS one, `web`),
 * with the site's certificate.
 */
function proxy(
  node: StartedNode,
  site: TestCertificate,
  locations: string,
  upstream: "webPlain" | "web" = "webPlain",
): Promise<TestNginx> {
  return startNginx({
    upstreams: { starling_web: `127.0.0.1:${node.ports[upstream]}` },
    serverDirectives: locations,
    cert: site.cert,
    key: site.key,
  });
}

/** GETs `url` trusting only `ca`. */
function getWith(ca: string, url: string): Promise<{ status: number; type: string; text: string }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (response) => {
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          text += chunk;
        });
        response.on("end", () =>
          resolve({ status: response.statusCode ?? 0, type: response.headers["content-type"] ?? "", text }),
        );
      })
      .on("error", reject);
  });
}

const missing = await nginxMissing();

describe("web chat behind nginx terminating TLS (docs/web-chat.md)", { skip: missing ?? false }, () => {
  let node: StartedNode;
  let nginx: TestNginx;
  let ca: TestCertificate;
  let site: TestCertificate;
  let locations: string;
  const cleanups: (() => unknown)[] = [];
  before(async () => {
    locations = await docLocations();
    ca = await makeCa("Example site CA");
    site = await makeCertificate("127.0.0.1", ca);
    // Debug lines say when a BOSH request is held (the held-poll test waits for one).
    node = await startNode({ after: (fn) => cleanups.push(fn) }, { config: { log: { level: "debug" } } });
    nginx = await proxy(node, site, locations);
    cleanups.push(() => nginx.stop());
  });
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  const origin = () => `127.0.0.1:${nginx.port}`;
  const get = (url: string) => getWith(ca.cert, url);

  it("an XMPP-over-WebSocket client logs in at wss://…/xmpp-websocket and chats with a TCP client", async (t) => {
    const [web, tcp] = await newUsers(node, 2, "proxied");
    // From 127.0.0.2, so that the browser's address and the proxy's (127.0.0.1) differ.
    const { client, full } = await wsLogin(`wss://${origin()}/xmpp-websocket`, node.domain, web!, "web", {
      ca: ca.cert,
      localAddress: "127.0.0.2",
    });
    t.after(() => client.terminate());
    const other = await connectClient(node, { username: tcp!.username, password: tcp!.password }, t);
    client.send(
      `<message xmlns="jabber:client" to="${other.jid}" type="chat" id="w1"><body>through nginx</body></message>`,
    );
    const got = await other.waitForStanza(
      (el) => el.is("message") && el.getChildText("body") === "through nginx",
    );
    assert.equal(got.attrs.from, full);
    const mark = client.received.length;
    await other.send(xml("message", { to: full, type: "chat", id: "t1" }, xml("body", {}, "and back")));
    await client.waitFor((el) => el.getChildText("body") === "and back", "the TCP client's message", mark);

    // What the node takes for the client's address: what its trusted proxy (loopback, by
    // default) forwarded for, not the proxy's own.
    const login = await node.waitForLog(
      (line) => line.event === "login" && line.user === web!.jid,
      "the login's log line",
    );
    assert.equal(login.address, "127.0.0.2", JSON.stringify(login));
    // nginx knew the client's (it logs a WebSocket request once the connection has ended).
    client.send(`<close xmlns="${NS_FRAMING}"/>`);
    await client.closed();
    await waitUntil(async () => {
      const log = await readFile(`${nginx.dir}/access.log`, "utf8").catch(() => "");
      return /^127\.0\.0\.2 .*"GET \/xmpp-websocket HTTP\/1\.1" 101 /m.test(log);
    }, "nginx's access log line with the client's address 127.0.0.2");
  });

  it("a BOSH session at https://…/http-bind logs in and gets a message sent while its request was held", async (t) => {
    const bosh = locationBlock(locations, "= /http-bind");
    assert.match(bosh, /proxy_buffering off;/);
    const timeout = /proxy_read_timeout (\S+);/.exec(bosh)?.[1];
    assert.ok(
      timeout !== undefined && nginxSeconds(timeout) > 60,
      `read timeout above BOSH's 60 s wait: ${timeout}`,
    );

    const [web, tcp] = await newUsers(node, 2, "proxiedbosh");
    const client = new BoshClient({ url: `https://${origin()}/http-bind`, ca: ca.cert });
    const full = await client.login(node.domain, web!);
    const other = await connectClient(node, { username: tcp!.username, password: tcp!.password }, t);
    const held = client.send();
    // What is tested is a request held across the proxy: the message leaves once the node says
    // it holds the poll (a debug line), not before.
    const rid = client.rid;
    await node.waitForLog(
      (line) => line.msg === "BOSH request held" && line.rid === rid && line.sid === client.sid,
      "the poll held by the node",
    );
    await other.send(
      xml("message", { to: full, type: "chat", id: "b1" }, xml("body", {}, "to the held poll")),
    );
    const answer = await held;
    assert.equal(answer.getChild("message")?.getChildText("body"), "to the held poll", answer.toString());
  });

  it("host-meta names the proxied wss:// and https:// URLs; /chat is served", async () => {
    const json = await get(`https://${origin()}/.well-known/host-meta.json`);
    assert.equal(json.status, 200, json.text);
    assert.deepEqual(JSON.parse(json.text), {
      links: [
        { rel: "urn:xmpp:alt-connections:websocket", href: `wss://${origin()}/xmpp-websocket` },
        { rel: "urn:xmpp:alt-connections:xbosh", href: `https://${origin()}/http-bind` },
      ],
    });
    // Converse.js reads the XML one and keeps only wss:// and https:// links.
    const xrd = await get(`https://${origin()}/.well-known/host-meta`);
    assert.ok(
      xrd.text.includes(
        `<Link rel="urn:xmpp:alt-connections:websocket" href="wss://${origin()}/xmpp-websocket"/>`,
      ),
      xrd.text,
    );
    const page = await get(`https://${origin()}/chat`);
    assert.equal(page.status, 200);
    assert.match(page.type, /^text\/html/);
  });

  it("Starling's /chat page, loaded through the proxy in Chromium, signs in over wss://", async (t) => {
    if (!existsSync(CHROMIUM)) {
      t.skip(`no Chromium at ${CHROMIUM} (Debian package chromium; .ci/run installs it)`);
      return;
    }
    const [alice] = await newUsers(node, 1, "proxiedpage");
    const browser = await chromium.launch(BROWSER);
    t.after(() => browser.close());
    const page = await (await browser.newContext(CONTEXT)).newPage();
    await page.goto(`https://${origin()}/chat`);
    await page.fill("#jid", alice!.jid);
    await page.fill("#password", alice!.password);
    await page.click("#login button[type=submit]");
    await page.getByText(`online as ${alice!.jid}/`).waitFor({ timeout: 15_000 });
    assert.equal(await page.evaluate("window.starlingChat.ws.url"), `wss://${origin()}/xmpp-websocket`);
  });

  it("Converse.js on a page of the site finds the WebSocket through host-meta and logs in", async (t) => {
    if (!existsSync(CHROMIUM)) {
      t.skip(`no Chromium at ${CHROMIUM} (Debian package chromium; .ci/run installs it)`);
      return;
    }
    const [alice] = await newUsers(node, 1, "discovered");
    // The site's own page and Converse's files, beside the page's locations ("the site's own").
    const siteDir = await mkdtemp(join(tmpdir(), "starling-site-"));
    // The browser goes first: Converse would rediscover through a stopped nginx and fail.
    const cleanups: (() => Promise<unknown>)[] = [() => rm(siteDir, { recursive: true, force: true })];
    t.after(async () => {
      for (const fn of cleanups.reverse()) await fn();
    });
    const settings = {
      jid: alice!.jid,
      password: alice!.password,
      auto_login: true,
      discover_connection_methods: true,
      view_mode: "fullscreen",
      assets_path: "/dist/",
      loglevel: "warn",
    };
    await writeFile(
      join(siteDir, "index.html"),
      `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script></head>
<body><script type="module">converse.initialize(${JSON.stringify(settings)});</script></body></html>`,
    );
    const withSite = await proxy(
      node,
      site,
      `${locations}
    location = /converse.html { alias ${siteDir}/index.html; default_type text/html; }
    location /dist/ {
        alias ${CONVERSE_DIST}/;
        types { text/javascript js mjs; text/css css; application/wasm wasm; application/json json map; }
    }
`,
    );
    cleanups.push(() => withSite.stop());
    const at = `127.0.0.1:${withSite.port}`;

    const browser = await chromium.launch(BROWSER);
    cleanups.push(() => browser.close());
    const page = await (await browser.newContext(CONTEXT)).newPage();
    // Converse asks https://<the JID's domain>/.well-known/host-meta, port 443; the domain here
    // is "localhost" and the site is on another port, so that one request is sent to the site.
    let discovered = "";
    await page.route("https://localhost/.well-known/host-meta", async (route) => {
      const response = await route.fetch({ url: `https://${at}/.well-known/host-meta` });
      discovered = await response.text();
      await route.fulfill({ response });
    });
    await page.goto(`https://${at}/converse.html`);
    await page.getByText("I am online").first().waitFor({ timeout: 20_000 });
    assert.ok(discovered.includes(`href="wss://${at}/xmpp-websocket"`), discovered);
    const login = await node.waitForLog(
      (line) => line.event === "login" && line.user === alice!.jid,
      "the page's login",
    );
    assert.equal(login.address, "127.0.0.1");
  });

  it("proxied to the TLS listener (ports.web) instead, a WebSocket client logs in and host-meta says wss://", async (t) => {
    const toTls = locations.replaceAll("proxy_pass http://starling_web;", "proxy_pass https://starling_web;");
    assert.notEqual(toTls, locations);
    const other = await proxy(node, site, toTls, "web");
    t.after(() => other.stop());
    const [web] = await newUsers(node, 1, "proxiedtls");
    const url = `wss://127.0.0.1:${other.port}/xmpp-websocket`;
    const { client } = await wsLogin(url, node.domain, web!, "web", { ca: ca.cert });
    t.after(() => client.terminate());
    const meta = await get(`https://127.0.0.1:${other.port}/.well-known/host-meta.json`);
    assert.ok(meta.text.includes(`"href":"${url}"`), meta.text);
  });

  it("without the Upgrade and Connection lines the WebSocket gets HTTP 404 (the page's troubleshooting)", async (t) => {
    const broken = locations
      .split("\n")
      .filter((line) => !/proxy_set_header (Upgrade|Connection) /.test(line))
      .join("\n");
    assert.notEqual(broken, locations);
    const other = await proxy(node, site, broken);
    t.after(() => other.stop());
    await assert.rejects(
      WsClient.connect(`wss://127.0.0.1:${other.port}/xmpp-websocket`, { ca: ca.cert }),
      /HTTP 404/,
    );
  });
});

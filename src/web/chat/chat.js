// Starling's own chat page: XMPP over WebSocket (RFC 7395) to the server that serves the page.
// Sign in with a password or a one-time login token (docs/auth.md; a site can link to
// /chat#jid=alice@example.org&token=stl1_…), see the roster and who is online, chat one to one.
// A dropped connection is resumed with XEP-0198 (nothing lost, nothing twice) when it can be.
// A token works once: to sign in again after a lost session, the link may name the site's
// credentials URL (…&credentials=https://example.org/chat-credentials), which answers the
// signed-in user's JSON {jid, token} to a request with the site's cookies (as Converse.js's
// credentials_url); the page's Content-Security-Policy lets it reach only the origins the
// server lists in web.origins.

const NS = {
  framing: "urn:ietf:params:xml:ns:xmpp-framing",
  sasl: "urn:ietf:params:xml:ns:xmpp-sasl",
  bind: "urn:ietf:params:xml:ns:xmpp-bind",
  sm: "urn:xmpp:sm:3",
  roster: "jabber:iq:roster",
  client: "jabber:client",
};

const $ = (id) => document.getElementById(id);
const esc = (s) =>
  String(s).replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" })[c],
  );
const bare = (jid) => (jid ?? "").split("/")[0];

const state = {
  ws: undefined,
  jid: "",
  secret: "",
  /** A token works once: after a token login, a new connection can only resume or give up… */
  usedToken: false,
  /** …unless the site's credentials URL gives a fresh one. */
  credentialsUrl: undefined,
  full: "",
  domain: "",
  stopped: true,
  sm: { id: undefined, inbound: 0, outbound: [], acked: 0 },
  contacts: new Map(),
  conversations: new Map(),
  active: "",
  retries: 0,
};

function setStatus(text) {
  $("status").textContent = text;
}

function send(xml) {
  if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(xml);
}

/** A stanza the server must acknowledge (XEP-0198): kept until it is, re-sent after a resumption. */
function sendStanza(xml) {
  state.sm.outbound.push(xml);
  send(xml);
  if (state.sm.id !== undefined) send(`<r xmlns="${NS.sm}"/>`);
}

function open() {
  send(`<open xmlns="${NS.framing}" to="${esc(state.domain)}" version="1.0"/>`);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/xmpp-websocket`, "xmpp");
  state.ws = ws;
  setStatus("connecting…");
  ws.onopen = () => open();
  ws.onmessage = (event) => {
    const doc = new DOMParser().parseFromString(event.data, "text/xml");
    if (doc.getElementsByTagName("parsererror").length > 0) return;
    handle(doc.documentElement);
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = undefined;
    if (state.stopped) return setStatus("signed out");
    if (state.usedToken && state.sm.id === undefined && state.credentialsUrl === undefined)
      return fail("disconnected; sign in again");
    // Back off a little more after each failure, up to 10 s.
    const delay = Math.min(10_000, 500 * 2 ** state.retries++);
    setStatus(`reconnecting in ${Math.round(delay / 1000)} s…`);
    setTimeout(() => {
      if (!state.stopped) connect();
    }, delay);
  };
}

function fail(text) {
  state.stopped = true;
  state.ws?.close();
  $("error").textContent = text;
  $("login").hidden = false;
  $("app").hidden = true;
  $("logout").hidden = true;
  setStatus("signed out");
}

function handle(el) {
  const name = el.localName;
  const ns = el.namespaceURI;
  if (name === "features") return onFeatures(el);
  if (ns === NS.sasl && name === "success") {
    if (state.secret.startsWith("stl1_")) state.usedToken = true;
    return open();
  }
  if (ns === NS.sasl && name === "failure") {
    const condition = el.firstElementChild?.localName ?? "failure";
    return fail(
      condition === "not-authorized" ? "wrong address, password or token" : `sign-in failed: ${condition}`,
    );
  }
  if (ns === NS.sm) return onSm(el);
  if (name === "error" && el.prefix === "stream")
    return setStatus(`stream error: ${el.firstElementChild?.localName}`);
  if (name === "message" || name === "presence" || name === "iq") {
    if (state.sm.id !== undefined) state.sm.inbound++;
    if (name === "message") return onMessage(el);
    if (name === "presence") return onPresence(el);
    return onIq(el);
  }
}

function onFeatures(el) {
  const mechanisms = [...el.getElementsByTagName("mechanism")].map((m) => m.textContent);
  if (mechanisms.length > 0) {
    if (!mechanisms.includes("PLAIN")) return fail("the server offers no sign-in this page can do");
    if (!state.usedToken) return authenticate();
    if (state.credentialsUrl === undefined) return fail("the login token was used; sign in again");
    // Only for this connection: if it closed meanwhile, the next one asks again.
    const ws = state.ws;
    return freshToken().then(
      () => {
        if (state.ws === ws) authenticate();
      },
      (error) => {
        if (state.ws === ws) fail(`cannot sign in again: ${error.message}`);
      },
    );
  }
  if (el.getElementsByTagName("bind").length > 0) {
    if (state.sm.id !== undefined) {
      return send(`<resume xmlns="${NS.sm}" previd="${esc(state.sm.id)}" h="${state.sm.inbound}"/>`);
    }
    send(
      `<iq xmlns="${NS.client}" type="set" id="bind"><bind xmlns="${NS.bind}"><resource>chat-${Math.random().toString(36).slice(2, 8)}</resource></bind></iq>`,
    );
  }
}

function onSm(el) {
  switch (el.localName) {
    case "enabled":
      // The server counts what it sends from here on.
      state.sm.id = el.getAttribute("resume") === "true" ? (el.getAttribute("id") ?? undefined) : undefined;
      state.sm.inbound = 0;
      return;
    case "r":
      return send(`<a xmlns="${NS.sm}" h="${state.sm.inbound}"/>`);
    case "a":
      return acknowledge(Number(el.getAttribute("h")));
    case "resumed": {
      // XEP-0198 §5: what the server did not get is sent again, in order.
      acknowledge(Number(el.getAttribute("h")));
      const again = state.sm.outbound;
      state.sm.outbound = [];
      for (const xml of again) sendStanza(xml);
      state.retries = 0;
      return setStatus(`online as ${state.full}`);
    }
    case "failed":
      // The session could not be resumed (the stream is signed in already): a new one, and the
      // roster again.
      state.sm.id = undefined;
      return send(`<iq xmlns="${NS.client}" type="set" id="bind"><bind xmlns="${NS.bind}"/></iq>`);
  }
}

function authenticate() {
  const local = state.jid.slice(0, state.jid.indexOf("@"));
  const bytes = new TextEncoder().encode(`\0${local}\0${state.secret}`);
  const payload = btoa(String.fromCharCode(...bytes));
  send(`<auth xmlns="${NS.sasl}" mechanism="PLAIN">${payload}</auth>`);
}

/** A new one-time token from the site, for the same user (the site signed it out: refused). */
async function freshToken() {
  const response = await fetch(state.credentialsUrl, { credentials: "include", cache: "no-store" });
  if (!response.ok) throw new Error(`the site answered ${response.status}`);
  const { jid, token } = await response.json();
  if (bare(jid) !== state.jid || typeof token !== "string") throw new Error("the site sent another user");
  state.secret = token;
  state.usedToken = false;
}

function acknowledge(h) {
  const fresh = h - state.sm.acked;
  if (fresh > 0) {
    state.sm.outbound.splice(0, fresh);
    state.sm.acked = h;
  }
}

function onIq(el) {
  const type = el.getAttribute("type");
  const id = el.getAttribute("id");
  if (id === "bind" && type === "result") {
    state.full = el.getElementsByTagName("jid")[0]?.textContent ?? state.jid;
    state.retries = 0;
    // The server counts what we send from <enable/> on (XEP-0198 §4): so do we.
    send(`<enable xmlns="${NS.sm}" resume="true"/>`);
    state.sm = { id: undefined, inbound: 0, outbound: [], acked: 0 };
    sendStanza(`<iq xmlns="${NS.client}" type="get" id="roster"><query xmlns="${NS.roster}"/></iq>`);
    return;
  }
  if (id === "bind" && type === "error") return fail("the server refused this session; try again later");
  if (id === "roster" && type === "result") {
    for (const item of el.getElementsByTagName("item"))
      contact(item.getAttribute("jid"), item.getAttribute("name"));
    renderRoster();
    sendStanza(`<presence xmlns="${NS.client}"/>`);
    setStatus(`online as ${state.full}`);
    return;
  }
  if (type === "set" && el.getElementsByTagName("query")[0]?.namespaceURI === NS.roster) {
    for (const item of el.getElementsByTagName("item")) {
      if (item.getAttribute("subscription") === "remove") state.contacts.delete(item.getAttribute("jid"));
      else contact(item.getAttribute("jid"), item.getAttribute("name"));
    }
    renderRoster();
    return sendStanza(`<iq xmlns="${NS.client}" type="result" id="${esc(id)}"/>`);
  }
  if (type === "get" && el.getElementsByTagName("ping").length > 0) {
    return sendStanza(
      `<iq xmlns="${NS.client}" type="result" id="${esc(id)}" to="${esc(el.getAttribute("from") ?? "")}"/>`,
    );
  }
  if (type === "get" || type === "set") {
    // RFC 6120 §8.4: an iq this page does not understand gets service-unavailable.
    sendStanza(
      `<iq xmlns="${NS.client}" type="error" id="${esc(id)}" to="${esc(el.getAttribute("from") ?? "")}"><error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>`,
    );
  }
}

function contact(jid, name) {
  const existing = state.contacts.get(jid);
  state.contacts.set(jid, {
    name: name || jid,
    online: existing?.online ?? new Set(),
    unread: existing?.unread ?? 0,
  });
  return state.contacts.get(jid);
}

function onPresence(el) {
  const from = el.getAttribute("from") ?? "";
  const who = bare(from);
  if (who === bare(state.full)) return;
  const entry = state.contacts.get(who) ?? contact(who);
  if (el.getAttribute("type") === "unavailable") entry.online.delete(from);
  else if (el.getAttribute("type") === null) entry.online.add(from);
  renderRoster();
}

function onMessage(el) {
  const body = el.getElementsByTagName("body")[0]?.textContent;
  if (body === undefined || el.getAttribute("type") === "error") return;
  const who = bare(el.getAttribute("from"));
  const entry = state.contacts.get(who) ?? contact(who);
  conversation(who).push({ mine: false, body });
  if (state.active === who) renderMessages();
  else entry.unread++;
  renderRoster();
}

function conversation(jid) {
  if (!state.conversations.has(jid)) state.conversations.set(jid, []);
  return state.conversations.get(jid);
}

function renderRoster() {
  const nav = $("roster");
  nav.replaceChildren();
  for (const [jid, entry] of [...state.contacts].sort((a, b) => a[1].name.localeCompare(b[1].name))) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = jid === state.active ? "contact active" : "contact";
    button.dataset.jid = jid;
    const dot = document.createElement("span");
    dot.className = `dot${entry.online.size > 0 ? " online" : ""}`;
    dot.title = entry.online.size > 0 ? "online" : "offline";
    const label = document.createElement("span");
    label.textContent = entry.name;
    button.append(dot, label);
    if (entry.unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(entry.unread);
      button.append(badge);
    }
    button.onclick = () => select(jid);
    nav.append(button);
  }
}

function select(jid) {
  state.active = jid;
  const entry = state.contacts.get(jid) ?? contact(jid);
  entry.unread = 0;
  $("to").hidden = true;
  renderRoster();
  renderMessages();
  $("text").focus();
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  for (const message of conversation(state.active)) {
    const div = document.createElement("div");
    div.className = `msg${message.mine ? " mine" : ""}`;
    div.textContent = message.body;
    box.append(div);
  }
  box.scrollTop = box.scrollHeight;
}

$("login").onsubmit = (event) => {
  event.preventDefault();
  start($("jid").value.trim(), $("password").value);
};

$("compose").onsubmit = (event) => {
  event.preventDefault();
  const to = state.active || $("to").value.trim();
  const text = $("text").value;
  if (to === "" || text.trim() === "") {
    $("to").hidden = false;
    return;
  }
  sendStanza(
    `<message xmlns="${NS.client}" to="${esc(to)}" type="chat" id="m${Date.now()}"><body>${esc(text)}</body></message>`,
  );
  if (state.active === "") select(to);
  conversation(to).push({ mine: true, body: text });
  renderMessages();
  $("text").value = "";
};

$("logout").onclick = () => {
  state.stopped = true;
  send(`<presence xmlns="${NS.client}" type="unavailable"/>`);
  send(`<close xmlns="${NS.framing}"/>`);
  fail("");
};

function start(jid, secret, credentialsUrl) {
  if (!jid.includes("@")) return fail("the address looks like name@example.org");
  Object.assign(state, {
    jid: bare(jid),
    secret,
    usedToken: false,
    stopped: false,
    retries: 0,
    credentialsUrl,
  });
  state.domain = state.jid.slice(state.jid.indexOf("@") + 1);
  state.sm = { id: undefined, inbound: 0, outbound: [], acked: 0 };
  $("error").textContent = "";
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  connect();
}

// A site signs its user in with a link: /chat#jid=alice@example.org&token=stl1_…[&credentials=URL]
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("jid") && fragment.get("token")) {
  const jid = fragment.get("jid");
  const token = fragment.get("token");
  const credentials = fragment.get("credentials") ?? undefined;
  history.replaceState(null, "", location.pathname);
  start(jid, token, credentials);
}

// For tests and debugging in the browser's console.
window.starlingChat = state;

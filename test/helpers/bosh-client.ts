/**
 * A BOSH client driven by hand (XEP-0124, XEP-0206): raw HTTP(S) POSTs through node:http, each
 * on a new connection (so consecutive requests may reach different workers of a node), and
 * the answers parsed on their own. Nothing runs at import.
 */
import assert from "node:assert/strict";
import http from "node:http";
import https from "node:https";
import type { Element } from "@xmpp/xml";
import type { TestUser } from "./fixtures.ts";
import { parseMessage } from "./ws-client.ts";

export const NS_HTTPBIND = "http://jabber.org/protocol/httpbind";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";

/** Where BOSH is served: `http://…/http-bind` or `https://…/http-bind`, checked against `ca` alone (without it, not checked). */
export interface BoshEndpoint {
  url: string;
  ca?: string;
}

/** The plain BOSH endpoint of a node's `ports.webPlain`. */
export function plainBoshEndpoint(port: number): BoshEndpoint {
  return { url: `http://127.0.0.1:${port}/http-bind` };
}

/** An answer: its status, headers and body text. */
export interface BoshHttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** POSTs `body` on a new connection. */
export function boshPost(
  endpoint: BoshEndpoint,
  body: string,
  headers: Record<string, string> = {},
): Promise<BoshHttpAnswer> {
  const secure = endpoint.url.startsWith("https:");
  return new Promise((resolve, reject) => {
    const request = (secure ? https : http).request(
      endpoint.url,
      {
        method: "POST",
        agent: false,
        headers: { "content-type": "text/xml; charset=utf-8", ...headers },
        // Without a CA, any certificate (a node's own self-signed one).
        ...(endpoint.ca === undefined ? { rejectUnauthorized: false } : { ca: endpoint.ca }),
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (c: Buffer) => chunks.push(c));
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            text: Buffer.concat(chunks).toString("utf8"),
          }),
        );
      },
    );
    request.on("error", reject);
    request.end(body);
  });
}

/** A BOSH session driven by hand. */
export class BoshClient {
  rid = 1000 + Math.floor(Math.random() * 1000);
  sid = "";
  readonly endpoint: BoshEndpoint;
  constructor(endpoint: BoshEndpoint) {
    this.endpoint = endpoint;
  }

  /** Sends the next request with `payload` and `attrs`; resolves with the parsed answer. */
  async send(payload = "", attrs = ""): Promise<Element> {
    this.rid++;
    const answer = await boshPost(
      this.endpoint,
      `<body rid="${this.rid}" sid="${this.sid}" xmlns="${NS_HTTPBIND}"${attrs}>${payload}</body>`,
    );
    assert.equal(answer.status, 200, answer.text);
    return parseMessage(answer.text);
  }

  async create(domain: string, wait = 10): Promise<Element> {
    const answer = await boshPost(
      this.endpoint,
      `<body content="text/xml; charset=utf-8" hold="1" rid="${this.rid}" to="${domain}" ver="1.6" wait="${wait}" xml:lang="en" xmpp:version="1.0" xmlns="${NS_HTTPBIND}" xmlns:xmpp="urn:xmpp:xbosh"/>`,
    );
    assert.equal(answer.status, 200, answer.text);
    const body = parseMessage(answer.text);
    this.sid = body.attrs.sid ?? "";
    return body;
  }

  /** Logs in with PLAIN, restarts and binds (asking for `wait` seconds); resolves with the full JID. */
  async login(domain: string, user: TestUser, wait = 10): Promise<string> {
    await this.create(domain, wait);
    const auth = Buffer.from(`\0${user.username}\0${user.password}`).toString("base64");
    const success = await this.send(`<auth xmlns="${NS_SASL}" mechanism="PLAIN">${auth}</auth>`);
    assert.ok(success.getChild("success", NS_SASL), success.toString());
    const restarted = await this.send("", ` xmpp:restart="true" xmlns:xmpp="urn:xmpp:xbosh" to="${domain}"`);
    assert.ok(restarted.getChild("features")?.getChild("bind", NS_BIND), restarted.toString());
    const bound = await this.send(
      `<iq xmlns="jabber:client" type="set" id="b1"><bind xmlns="${NS_BIND}"/></iq>`,
    );
    const jid = bound.getChild("iq")?.getChild("bind")?.getChildText("jid");
    assert.ok(jid, bound.toString());
    return jid;
  }
}

/**
 * The server mechanisms against an independent client: xmpp.js' own SASL negotiation
 * (@xmpp/sasl) with the mechanisms @xmpp/client registers (@xmpp/sasl-scram-sha-1 over
 * sasl-scram-sha-1, @xmpp/sasl-plain over sasl-plain). The `<auth/>`/`<challenge/>` elements
 * pass through an in-memory stand-in for the c2s connection that does what the RFC 6120 §6.4
 * framing asks: base64 both ways, "=" for an empty payload.
 */
import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import { InternalAuthProvider } from "../../src/auth/internal-auth.ts";
import { createAccountRecord } from "../../src/auth/scram.ts";
import type { BareJid } from "../../src/xmpp/jid.ts";
import { NS_SASL } from "../../src/xmpp/ns.ts";
import {
  createSaslMechanism,
  SASL_MECHANISMS,
  type SaslContext,
  type SaslServerMechanism,
  type SaslStep,
} from "../../src/xmpp/sasl/mechanism.ts";

// The xmpp.js packages ship JavaScript without types; these describe the little used here.
interface XmlElement {
  name: string;
  attrs: Record<string, string | undefined>;
  text(): string;
  getChildElements(): XmlElement[];
}
type Xml = (
  name: string,
  attrs?: Record<string, string> | null,
  ...children: Array<XmlElement | string | undefined>
) => XmlElement;
interface ClientMechanism {
  name: string;
  _serverSignature?: Uint8Array;
}
interface SaslFactory {
  create(names: string[]): ClientMechanism | null;
}
type Authenticate = (credentials: { username: string; password: string }, mechanism: string) => Promise<void>;
type FeatureHandler = (
  context: { entity: EventEmitter },
  next: () => unknown,
  element: XmlElement,
) => Promise<void>;
type SaslPlugin = (
  deps: {
    streamFeatures: { use(name: string, ns: string, handler: FeatureHandler): void };
    saslFactory: SaslFactory;
  },
  onAuthenticate: (authenticate: Authenticate, mechanisms: string[]) => Promise<void>,
) => void;

const require = createRequire(import.meta.url);
const { default: xml } = require("@xmpp/xml") as { default: Xml };
const { default: sasl } = require("@xmpp/sasl") as { default: SaslPlugin };
const { default: scramSha1 } = require("@xmpp/sasl-scram-sha-1") as { default: (f: SaslFactory) => void };
const { default: plain } = require("@xmpp/sasl-plain") as { default: (f: SaslFactory) => void };
const SASLFactory = require("saslmechanisms") as new () => SaslFactory;

const DOMAIN = "example.com";
const ALICE = "alice@example.com" as BareJid;

/** What the c2s connection does with SASL elements, in memory. */
class InMemoryServerStream extends EventEmitter {
  readonly options = { domain: DOMAIN };
  readonly results: SaslStep[] = [];
  readonly #context: SaslContext;
  #mechanism: SaslServerMechanism | undefined;

  constructor(context: SaslContext) {
    super();
    this.#context = context;
  }

  async send(element: XmlElement): Promise<void> {
    const reply = await this.#handle(element);
    // Answer on a later turn, as a socket would.
    setImmediate(() => this.emit("nonza", reply));
  }

  async restart(): Promise<void> {}

  async #handle(element: XmlElement): Promise<XmlElement> {
    // RFC 6120 §6.4.2: "=" is an empty response; no text at all is no initial response.
    const text = element.text();
    const payload = text === "=" ? Buffer.alloc(0) : Buffer.from(text, "base64");
    let step: SaslStep;
    if (element.name === "auth") {
      this.#mechanism = createSaslMechanism(element.attrs.mechanism ?? "", this.#context);
      if (this.#mechanism === undefined) return xml("failure", { xmlns: NS_SASL }, xml("invalid-mechanism"));
      step = await this.#mechanism.start(text === "" ? undefined : payload);
    } else {
      step = await this.#mechanism!.next(payload);
    }
    this.results.push(step);
    switch (step.kind) {
      case "challenge":
        return xml(
          "challenge",
          { xmlns: NS_SASL },
          step.data.length === 0 ? "=" : step.data.toString("base64"),
        );
      case "success":
        return xml("success", { xmlns: NS_SASL }, step.data?.toString("base64"));
      case "failure":
        return xml(
          "failure",
          { xmlns: NS_SASL },
          xml(step.condition),
          step.text === undefined ? undefined : xml("text", null, step.text),
        );
    }
  }
}

/** Runs xmpp.js' SASL negotiation against the server mechanisms; resolves or throws its SASLError. */
async function xmppJsLogin(
  username: string,
  password: string,
  pick: (mechanisms: string[]) => string,
): Promise<{ stream: InMemoryServerStream; client: ClientMechanism }> {
  const accounts = new Map([[ALICE, createAccountRecord(ALICE, "s3cret p@ss", 4096)]]);
  const auth = new InternalAuthProvider({ getAccount: async (jid: BareJid) => accounts.get(jid) });
  const stream = new InMemoryServerStream({ domain: DOMAIN, auth });

  // Registered in the order @xmpp/client registers them; keep the instance to read its state.
  const saslFactory = new SASLFactory();
  scramSha1(saslFactory);
  plain(saslFactory);
  const create = saslFactory.create.bind(saslFactory);
  let client: ClientMechanism | null = null;
  saslFactory.create = (names) => {
    client = create(names);
    return client;
  };

  let handler: FeatureHandler | undefined;
  const streamFeatures = {
    use(_name: string, _ns: string, fn: FeatureHandler): void {
      handler = fn;
    },
  };
  sasl({ streamFeatures, saslFactory }, (authenticate, mechanisms) =>
    authenticate({ username, password }, pick(mechanisms)),
  );
  const features = xml(
    "mechanisms",
    { xmlns: NS_SASL },
    ...SASL_MECHANISMS.map((name) => xml("mechanism", null, name)),
  );
  await handler!({ entity: stream }, () => undefined, features);
  assert.ok(client, "xmpp.js created no mechanism");
  return { stream, client };
}

describe("SASL interop with xmpp.js", () => {
  test("xmpp.js picks SCRAM-SHA-1 from the advertised list and authenticates", async () => {
    let offered: string[] = [];
    const { stream, client } = await xmppJsLogin("alice", "s3cret p@ss", (mechanisms) => {
      offered = mechanisms;
      return mechanisms[0]!;
    });
    assert.deepEqual(offered, ["SCRAM-SHA-1", "PLAIN"]);
    assert.equal(client.name, "SCRAM-SHA-1");
    const last = stream.results.at(-1);
    assert.equal(last?.kind, "success");
    // xmpp.js does not check the server signature itself; check it against what it computed.
    const expected = Buffer.from(client._serverSignature!).toString("base64");
    assert.equal(last?.kind === "success" && last.data?.toString(), `v=${expected}`);
    assert.equal(last?.kind === "success" && last.jid, ALICE);
  });

  test("xmpp.js SCRAM-SHA-1 fails with not-authorized on a wrong password", async () => {
    const error = await xmppJsLogin("alice", "wrong", () => "SCRAM-SHA-1").then(
      () => assert.fail("login succeeded"),
      (e: unknown) => e as { name: string; condition: string },
    );
    assert.equal(error.name, "SASLError");
    assert.equal(error.condition, "not-authorized");
  });

  test("xmpp.js SCRAM-SHA-1 fails with not-authorized for an unknown user", async () => {
    await assert.rejects(
      xmppJsLogin("mallory", "s3cret p@ss", () => "SCRAM-SHA-1"),
      {
        name: "SASLError",
        condition: "not-authorized",
      },
    );
  });

  test("xmpp.js PLAIN authenticates and fails with a wrong password", async () => {
    const { stream } = await xmppJsLogin("alice", "s3cret p@ss", () => "PLAIN");
    assert.deepEqual(stream.results, [{ kind: "success", jid: ALICE }]);
    await assert.rejects(
      xmppJsLogin("alice", "s3cret", () => "PLAIN"),
      {
        name: "SASLError",
        condition: "not-authorized",
      },
    );
  });
});

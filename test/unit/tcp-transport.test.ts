import assert from "node:assert/strict";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { describe, it, type TestContext } from "node:test";
import { createSecureContext, connect as tlsConnect } from "node:tls";
import type { Element } from "@xmpp/xml";
import { DEFAULT_CONFIG } from "../../src/config/defaults.ts";
import { createLogger } from "../../src/log.ts";
import { TcpTransport } from "../../src/transport/tcp-transport.ts";
import type { StreamEvents } from "../../src/xmpp/stream-transport.ts";
import { makeDomainCertificate } from "../helpers/certificates.ts";

const HEADER =
  "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/** A loopback TCP connection: the client's end and the server's, closed after the test. */
async function connectedPair(t: TestContext): Promise<{ client: Socket; socket: Socket }> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => server.close());
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
  t.after(() => client.destroy());
  const [socket] = await accepted;
  return { client, socket };
}

describe("TcpTransport", () => {
  it("TcpTransport drops plaintext sent after <starttls/> in the same read, even past a slice", async (t) => {
    // RFC 6120 §5.4.3.3; CVE-2011-0411's class. A read larger than the 8 KB parse slice holds
    // <starttls/>, 56 KB of padding (seven slices, parsed over as many turns while the handshake
    // goes on), then a stream and a message: the rest of the read must not reach the
    // stream that the TLS handshake starts.
    const certificate = await makeDomainCertificate("localhost");
    const { client, socket } = await connectedPair(t);

    const seen: { secure: boolean; element: string }[] = [];
    let secured!: () => void;
    const securedNow = new Promise<void>((resolve) => (secured = resolve));
    let proceed!: () => void;
    const proceedNow = new Promise<void>((resolve) => (proceed = resolve));
    let genuine!: () => void;
    const genuineSeen = new Promise<void>((resolve) => (genuine = resolve));
    const transport = new TcpTransport(socket, {
      directTls: false,
      tlsContext: createSecureContext({ cert: certificate.cert, key: certificate.key }),
      limits: DEFAULT_CONFIG.limits,
      log: createLogger({ level: "silent" }),
    });
    const events: StreamEvents = {
      opened: () => {},
      element: (el: Element) => {
        seen.push({ secure: transport.secure, element: el.toString() });
        if (el.name === "starttls") {
          transport.startTls();
          proceed(); // Where the stream would answer <proceed/>.
        }
        if (el.getChildText("body") === "GENUINE") genuine();
      },
      closedByPeer: () => {},
      failed: (error) => assert.fail(`the stream failed: ${String(error)}`),
      secured: () => secured(),
      gone: () => {},
      active: () => {},
    };
    transport.attach(events);

    client.write(
      `${HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>${" ".repeat(56_000)}` +
        `${HEADER}<message to='b@localhost'><body>INJECTED</body></message>`,
    );
    // Like a client, start TLS once told to proceed (its ClientHello is not part of that read).
    await proceedNow;
    const secure = tlsConnect({ socket: client, servername: "localhost", rejectUnauthorized: false });
    await once(secure, "secureConnect");
    await securedNow;
    secure.write(`${HEADER}<message to='b@localhost'><body>GENUINE</body></message>`);
    await genuineSeen;
    assert.deepEqual(
      seen.map((s) => [s.secure, /INJECTED|GENUINE|starttls/.exec(s.element)?.[0]]),
      [
        [false, "starttls"],
        [true, "GENUINE"],
      ],
    );
    secure.destroy();
  });

  it("a stream the server ends is read to the client's FIN even if its session had paused reading, and parses nothing more", async (t) => {
    // A session pauses reading at 16 iq requests in its handlers; the stream's end must lift it,
    // or the client's closing tag and FIN wait unread for the close grace (5 s).
    const { client, socket } = await connectedPair(t);
    const transport = new TcpTransport(socket, {
      directTls: false,
      tlsContext: createSecureContext({}),
      limits: DEFAULT_CONFIG.limits,
      log: createLogger({ level: "silent" }),
    });
    const elements: string[] = [];
    let opened!: () => void;
    const openedNow = new Promise<void>((resolve) => (opened = resolve));
    let gone!: () => void;
    const goneNow = new Promise<void>((resolve) => (gone = resolve));
    transport.attach({
      opened: () => opened(),
      element: (el: Element) => elements.push(el.getChildText("body") ?? el.name),
      closedByPeer: () => {},
      failed: (error) => assert.fail(`the stream failed: ${String(error)}`),
      secured: () => {},
      gone: () => gone(),
      active: () => {},
    });
    client.write(HEADER);
    await openedNow;
    transport.pause();
    client.write("<message to='b@localhost'><body>after the end</body></message></stream:stream>");
    client.end();
    const started = Date.now();
    transport.end();
    await goneNow;
    assert.ok(Date.now() - started < 2_000, `gone after ${Date.now() - started} ms, not at the 5 s grace`);
    assert.deepEqual(elements, [], "nothing parsed after the end");
  });
});

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Element } from "@xmpp/xml";
import { EVENTS } from "saxes";
import { StreamError } from "../../src/errors.ts";
import { DeclaredSaxesParser, parseElement, StreamParser } from "../../src/xmpp/stream-parser.ts";

const HEADER =
  "<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

function collect(
  limits: { maxStanzaBytes: number; maxStanzaDepth: number; maxStanzaElements?: number } = {
    maxStanzaBytes: 1000,
    maxStanzaDepth: 5,
  },
) {
  const events: { opened?: Record<string, string>; stanzas: Element[]; closed: boolean } = {
    stanzas: [],
    closed: false,
  };
  const parser = new StreamParser(
    {
      onStreamOpen: (attrs) => {
        events.opened = attrs;
      },
      onStanza: (el) => events.stanzas.push(el),
      onStreamClose: () => {
        events.closed = true;
      },
    },
    { maxStanzaElements: 10_000, ...limits },
  );
  return { parser, events };
}

function violation(parser: StreamParser, input: string): StreamError {
  try {
    parser.write(input);
  } catch (error) {
    assert.ok(error instanceof StreamError, `expected a StreamError, got ${String(error)}`);
    return error;
  }
  assert.fail(`no error for ${JSON.stringify(input)}`);
}

describe("StreamParser", () => {
  it("StreamParser reports the header, each stanza and the close, across arbitrary chunk splits", () => {
    const input = `${HEADER}<message to='a@b'><body>hi &amp; bye</body></message> <presence/></stream:stream>`;
    for (let split = 1; split < input.length; split += 7) {
      const { parser, events } = collect();
      parser.write(input.slice(0, split));
      parser.write(input.slice(split));
      assert.equal(events.opened?.to, "localhost");
      assert.deepEqual(
        events.stanzas.map((s) => s.name),
        ["message", "presence"],
      );
      assert.equal(events.stanzas[0]!.getChildText("body"), "hi & bye");
      assert.equal(events.closed, true);
    }
  });

  it("StreamParser answers malformed XML with not-well-formed", () => {
    const { parser } = collect();
    parser.write(HEADER);
    const error = violation(parser, "<message><body></message>");
    assert.equal(error.condition, "not-well-formed");
    assert.equal(error.code, "XSRV_XML_NOT_WELL_FORMED");
  });

  it("StreamParser answers undefined entities with not-well-formed", () => {
    const { parser } = collect();
    parser.write(HEADER);
    assert.equal(violation(parser, "<message><body>&xxe;</body></message>").condition, "not-well-formed");
  });

  it("StreamParser answers a DTD with restricted-xml", () => {
    const { parser } = collect();
    const error = violation(
      parser,
      `<?xml version='1.0'?><!DOCTYPE foo [<!ENTITY x "y">]>${HEADER.slice(21)}`,
    );
    assert.equal(error.condition, "restricted-xml");
    assert.equal(error.code, "XSRV_XML_RESTRICTED");
  });

  it("StreamParser answers processing instructions and comments with restricted-xml", () => {
    for (const bad of ["<?php echo 1; ?>", "<!-- hello -->"]) {
      const { parser } = collect();
      parser.write(HEADER);
      assert.equal(violation(parser, bad).condition, "restricted-xml");
    }
  });

  it("StreamParser answers a stanza over maxStanzaBytes with policy-violation, even split over chunks", () => {
    const { parser, events } = collect({ maxStanzaBytes: 200, maxStanzaDepth: 5 });
    parser.write(HEADER);
    parser.write(`<message><body>${"x".repeat(150)}</body></message>`);
    assert.equal(events.stanzas.length, 1, "a stanza under the limit passes");
    parser.write("<message><body>");
    let error: StreamError | undefined;
    for (let i = 0; i < 10 && error === undefined; i++) {
      try {
        parser.write("y".repeat(50));
      } catch (e) {
        error = e as StreamError;
      }
    }
    assert.equal(error?.condition, "policy-violation");
    assert.equal(error?.code, "XSRV_STANZA_TOO_LARGE");
  });

  it("StreamParser refuses a stanza over maxStanzaBytes that arrives whole in one chunk", () => {
    // A large TCP read or one WebSocket message: the check between chunks never sees it open.
    const { parser, events } = collect({ maxStanzaBytes: 200, maxStanzaDepth: 5 });
    parser.write(HEADER);
    const error = violation(parser, `<message><body>${"x".repeat(500)}</body></message>`);
    assert.equal(error.condition, "policy-violation");
    assert.equal(events.stanzas.length, 0, "nothing of it is handed on");
  });

  it("StreamParser counts a stanza of many small children as a whole", () => {
    // 100 children of 20 characters each: every element is small, the stanza is not.
    const { parser, events } = collect({ maxStanzaBytes: 200, maxStanzaDepth: 5 });
    parser.write(HEADER);
    const error = violation(parser, `<message>${"<x>aaaaaaaaaaaaa</x>".repeat(100)}</message>`);
    assert.equal(error.condition, "policy-violation");
    assert.equal(events.stanzas.length, 0);
  });

  it("StreamParser bounds text between stanzas", () => {
    const { parser } = collect({ maxStanzaBytes: 100, maxStanzaDepth: 5 });
    parser.write(HEADER);
    assert.equal(violation(parser, " ".repeat(500)).condition, "policy-violation");
  });

  it("StreamParser answers nesting deeper than maxStanzaDepth with policy-violation", () => {
    const { parser, events } = collect({ maxStanzaBytes: 10_000, maxStanzaDepth: 3 });
    parser.write(HEADER);
    parser.write("<a><b><c/></b></a>");
    assert.equal(events.stanzas.length, 1);
    const error = violation(parser, "<a><b><c><d/></c></b></a>");
    assert.equal(error.condition, "policy-violation");
    assert.equal(error.code, "XSRV_STANZA_TOO_DEEP");
  });

  it("StreamParser stops at a violation, not at the end of the chunk", () => {
    // 10,000 nested elements in one 60 KB read: saxes' namespace chain grows with the depth,
    // so parsing the rest of the chunk after the limit fired took seconds (bench/abuse.ts).
    const deep = collect({ maxStanzaBytes: 262_144, maxStanzaDepth: 32 });
    deep.parser.write(HEADER);
    const nested = "<nest>".repeat(10_000);
    assert.equal(violation(deep.parser, nested).code, "XSRV_STANZA_TOO_DEEP");
    assert.ok(
      deep.parser.position <= HEADER.length + 33 * 6,
      `parsed ${deep.parser.position} of ${HEADER.length + nested.length} characters`,
    );
    // Many small children: stopped once the stanza passes the limit, not at its end.
    const wide = collect({ maxStanzaBytes: 1_000, maxStanzaDepth: 5 });
    wide.parser.write(HEADER);
    const children = `<message>${"<x/>".repeat(10_000)}</message>`;
    assert.equal(violation(wide.parser, children).code, "XSRV_STANZA_TOO_LARGE");
    assert.ok(wide.parser.position < HEADER.length + 1_100, `parsed ${wide.parser.position} characters`);
  });

  it("StreamParser answers a stanza of more elements than maxStanzaElements with policy-violation, at the first one too many", () => {
    const { parser, events } = collect({
      maxStanzaBytes: 262_144,
      maxStanzaDepth: 5,
      maxStanzaElements: 100,
    });
    parser.write(HEADER);
    // The limit itself passes: the stanza and 99 children, nested or not, spread over writes.
    parser.write(`<message>${"<x/>".repeat(50)}`);
    parser.write(`<y>${"<z/>".repeat(48)}</y></message>`);
    assert.equal(events.stanzas.length, 1);
    assert.equal(events.stanzas[0]!.children.length, 51);
    // The count starts again with each stanza: one element more is refused where it opens.
    const start = parser.position;
    const error = violation(parser, `<message>${"<x/>".repeat(10_000)}</message>`);
    assert.equal(error.code, "XSRV_STANZA_TOO_WIDE");
    assert.equal(error.condition, "policy-violation");
    assert.ok(parser.position - start <= 9 + 100 * 4, `parsed ${parser.position - start} characters of it`);
    assert.equal(events.stanzas.length, 1, "nothing of it delivered");
  });
});

describe("StreamParser and badly closed stanzas", () => {
  it("a stanza closed with another name is not emitted, whole or split anywhere (RFC 6120 §11.4)", () => {
    const input = "<message to='a@b'><body>x</body></iq>";
    for (let split = 0; split < input.length; split++) {
      const { parser, events } = collect();
      parser.write(HEADER);
      if (split > 0) parser.write(input.slice(0, split));
      const error = violation(parser, input.slice(split));
      assert.equal(error.condition, "not-well-formed");
      assert.deepEqual(events.stanzas, [], `split at ${split}`);
    }
  });

  it("a complete stanza before a violation in the same chunk is still emitted", () => {
    const { parser, events } = collect();
    parser.write(HEADER);
    const error = violation(parser, "<message to='a@b'><body>x</body></message><!-- c -->");
    assert.equal(error.condition, "restricted-xml");
    assert.deepEqual(
      events.stanzas.map((s) => s.name),
      ["message"],
    );
  });

  it("a complete stanza, then a badly closed one in the same chunk: only the first is emitted", () => {
    const { parser, events } = collect();
    parser.write(HEADER);
    const error = violation(parser, "<presence/><message><body>x</body></iq>");
    assert.equal(error.condition, "not-well-formed");
    assert.deepEqual(
      events.stanzas.map((s) => s.name),
      ["presence"],
    );
  });
});

describe("DeclaredSaxesParser", () => {
  it("has a slot for every saxes event before on(): setting a handler adds no property", () => {
    // A property added under a computed name is what turned the parser into a dictionary
    // (stream-parser.ts): every handler must find its slot there already.
    const parser = new DeclaredSaxesParser();
    const before = Object.keys(parser).sort();
    for (const event of EVENTS) parser.on(event, () => {});
    assert.deepEqual(Object.keys(parser).sort(), before);
  });
});

describe("parseElement", () => {
  it("parseElement round-trips a serialised stanza", () => {
    const el = parseElement('<message xmlns="jabber:client" to="a@b"><body>1 &lt; 2</body></message>');
    assert.equal(el.attrs.to, "a@b");
    assert.equal(el.getChildText("body"), "1 < 2");
    assert.equal(parseElement(el.toString()).toString(), el.toString());
  });
});

describe("StreamParser namespace prefixes", () => {
  it("StreamParser copies prefixes declared on the stream header onto each stanza", () => {
    const { parser, events } = collect();
    parser.write(`${HEADER.slice(0, -1)} xmlns:e='urn:example'><message><e:x/></message>`);
    const stanza = events.stanzas[0]!;
    assert.equal(stanza.attrs["xmlns:e"], "urn:example");
    assert.equal(stanza.attrs["xmlns:stream"], undefined);
    const text = stanza.toString();
    assert.ok(text.includes('xmlns:e="urn:example"') && text.includes("<e:x/>"), text);
  });
});

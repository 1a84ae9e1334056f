/**
 * `starling check certs` name matching (RFC 6125 §6.4.3) and its reading of Node's
 * subjectAltName text: pure functions, no I/O.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { test } from "node:test";
import { coversDomain, dnsNamesOf } from "../../src/cli/check-certs.ts";
import { makeDomainCertificate } from "../helpers/certificates.ts";

test("coversDomain matches a DNS name exactly, ignoring case and a trailing dot", () => {
  assert.equal(coversDomain("Chat.Example.org.", "chat.example.org"), true);
  assert.equal(coversDomain("example.org", "chat.example.org"), false);
});

test("coversDomain lets a wildcard stand for exactly the left-most label", () => {
  assert.equal(coversDomain("*.example.org", "chat.example.org"), true);
  assert.equal(coversDomain("*.example.org", "example.org"), false);
  assert.equal(coversDomain("*.example.org", "a.chat.example.org"), false);
});

test("coversDomain refuses partial, inner and top-level wildcards", () => {
  assert.equal(coversDomain("ch*.example.org", "chat.example.org"), false);
  assert.equal(coversDomain("chat.*.org", "chat.example.org"), false);
  assert.equal(coversDomain("*.org", "example.org"), false);
  assert.equal(coversDomain("*.*.org", "chat.example.org"), false);
});

test("dnsNamesOf lists the dNSName entries of a certificate's subjectAltName", async () => {
  const { cert } = await makeDomainCertificate("chat.example.org");
  assert.deepEqual(dnsNamesOf(new X509Certificate(cert)), ["chat.example.org"]);
});

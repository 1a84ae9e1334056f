/**
 * docs/admin-api.md's reference is the OpenAPI document written out: it fails while the page
 * and the routes disagree (regenerate with `node src/http/openapi-markdown.ts --write`).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ADMIN_API_PAGE, adminApiReference, withReference } from "../../src/http/openapi-markdown.ts";

test("docs/admin-api.md describes every route the node serves, as the OpenAPI document does", () => {
  const page = readFileSync(ADMIN_API_PAGE, "utf8");
  const reference = adminApiReference();
  assert.match(reference, /### `DELETE \/api\/sessions\/\{jid\}`/);
  assert.equal(
    page,
    withReference(page, reference),
    "docs/admin-api.md is out of date: run node src/http/openapi-markdown.ts --write",
  );
});

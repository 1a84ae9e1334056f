/**
 * The reference part of docs/admin-api.md, written from the OpenAPI document (openapi.ts), so
 * the page says exactly what the node serves. Regenerate it after changing a route:
 *
 *     node src/http/openapi-markdown.ts --write
 *
 * test/http/openapi-markdown.test.ts fails while the page and the routes disagree.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createLogger } from "../log.ts";
import { type AdminRoute, adminRoutes } from "./admin-routes.ts";
import { openApiDocument } from "./openapi.ts";

/** The page that holds the reference, between these two lines. */
export const ADMIN_API_PAGE = new URL("../../docs/admin-api.md", import.meta.url);
export const BEGIN =
  "<!-- BEGIN generated from the OpenAPI document: node src/http/openapi-markdown.ts --write -->";
export const END = "<!-- END generated -->";

interface Operation {
  summary: string;
  parameters?: { name: string }[];
  requestBody?: { content: { "application/json": { schema: Schema } } };
  responses: Record<
    string,
    { description: string; content?: Record<string, { schema: Schema }>; $ref?: string }
  >;
}
type Schema = Record<string, unknown>;

/** The routes as the document describes them; the services are never called here. */
function describedRoutes(): AdminRoute[] {
  return adminRoutes({
    store: undefined as never,
    accounts: undefined as never,
    domain: "example.org",
    log: createLogger({ level: "silent" }),
    status: async () => null,
  });
}

/** The reference in Markdown: one section per operation, in the table's order. */
export function adminApiReference(): string {
  const doc = openApiDocument(describedRoutes(), { tls: false }) as {
    paths: Record<string, Record<string, Operation>>;
  };
  const lines: string[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      lines.push(`### \`${method.toUpperCase()} ${path}\``, "", `${op.summary}.`, "");
      const body = op.requestBody?.content["application/json"].schema;
      if (body !== undefined) lines.push(`Body: \`${schemaText(body)}\``, "");
      const answers = Object.entries(op.responses)
        .filter(([, r]) => r.$ref === undefined)
        .map(([status, r]) => {
          const schema = r.content?.["application/json"]?.schema;
          const shape =
            schema === undefined || Object.keys(schema).length <= 1
              ? ""
              : ` \`${schemaText(schema, false)}\``;
          return `- ${status}: ${r.description}${shape}`;
        });
      lines.push(...answers, "");
    }
  }
  return lines.join("\n").trimEnd();
}

/**
 * `{jid: string, ttlSeconds?: integer}`: a schema as one line a reader can scan; `optional`
 * marks the fields a request may leave out (an answer always has them all).
 */
function schemaText(schema: Schema, optional = true): string {
  if (schema.type === "array") return `[${schemaText(schema.items as Schema, optional)}]`;
  if (schema.type !== "object" || schema.properties === undefined) {
    return Array.isArray(schema.enum)
      ? schema.enum.map((v) => JSON.stringify(v)).join(" | ")
      : String(schema.type);
  }
  const required = new Set((schema.required as string[] | undefined) ?? []);
  const fields = Object.entries(schema.properties as Record<string, Schema>).map(
    ([name, field]) => `${name}${!optional || required.has(name) ? "" : "?"}: ${schemaText(field, optional)}`,
  );
  return `{${fields.join(", ")}}`;
}

/** The page with its generated part replaced by `reference`. */
export function withReference(page: string, reference: string): string {
  const begin = page.indexOf(BEGIN);
  const end = page.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`docs/admin-api.md lacks the ${BEGIN} … ${END} lines`);
  return `${page.slice(0, begin + BEGIN.length)}\n\n${reference}\n\n${page.slice(end)}`;
}

if (import.meta.main && process.argv.includes("--write")) {
  const page = readFileSync(ADMIN_API_PAGE, "utf8");
  writeFileSync(ADMIN_API_PAGE, withReference(page, adminApiReference()));
}

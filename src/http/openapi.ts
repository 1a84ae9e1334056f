/**
 * The OpenAPI 3.1 document of the admin API, built from the route table (admin-routes.ts) so
 * that it describes exactly what the node answers. Served at `/api/openapi.json`; docs/admin-api.md
 * is its reader's guide.
 */
import type { AdminRoute, JsonSchema } from "./admin-routes.ts";

const ERROR_SCHEMA: JsonSchema = {
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string", description: "An XSRV_* code from the error catalogue (src/errors.ts)" },
        message: { type: "string" },
      },
    },
  },
};

const COMMON_ERRORS: Record<number, string> = {
  400: "The request is malformed (the message says how)",
  401: "No Bearer key, or not this node's admin.key",
  403: "Without a key: the caller or its Host header is not loopback",
  404: "No such route, or no such object",
  405: "The method is not allowed on this path (Allow lists those that are)",
  413: "The body is larger than 1 MiB",
  415: "The body is not sent as application/json",
};

/** The document for `routes`; `tls` says whether the endpoint is served over HTTPS. */
export function openApiDocument(routes: readonly AdminRoute[], options: { tls: boolean }): unknown {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const parameters = [...route.path.matchAll(/\{([^}]+)\}/g)].map(([, name]) => ({
      name,
      in: "path",
      required: true,
      schema: { type: "string" },
    }));
    const responses: Record<string, unknown> = {};
    for (const [status, { description, schema }] of Object.entries(route.responses)) {
      responses[status] =
        schema === undefined ? { description } : { description, content: { "application/json": { schema } } };
    }
    for (const [status, description] of Object.entries(COMMON_ERRORS)) {
      responses[status] ??= { $ref: `#/components/responses/E${status}`, description };
    }
    paths[route.path] ??= {};
    paths[route.path]![route.method.toLowerCase()] = {
      summary: route.summary,
      ...(parameters.length === 0 ? {} : { parameters }),
      ...(route.requestBody === undefined
        ? {}
        : {
            requestBody: { required: true, content: { "application/json": { schema: route.requestBody } } },
          }),
      responses,
    };
  }
  paths["/metrics"] = {
    get: {
      summary: "Every worker's figures in the Prometheus text format",
      responses: {
        200: { description: "The metrics", content: { "text/plain": { schema: { type: "string" } } } },
        401: { $ref: "#/components/responses/E401" },
        403: { $ref: "#/components/responses/E403" },
      },
    },
  };
  paths["/health"] = {
    get: {
      summary: "Whether the node serves clients now (no key needed)",
      security: [],
      responses: {
        200: { description: "Serving", content: { "application/json": { schema: { type: "object" } } } },
        503: { description: "Not serving: starting, leaving, fenced or stopping" },
      },
    },
  };
  return {
    openapi: "3.1.0",
    info: {
      title: "Starling admin API",
      version: "1",
      description:
        "The node's admin API. With admin.key set, every call but /health carries Authorization: Bearer <key>; without it, only loopback clients are answered.",
    },
    servers: [
      {
        url: options.tls ? "https://{host}:{port}" : "http://127.0.0.1:{port}",
        variables: { host: { default: "127.0.0.1" }, port: { default: "5280" } },
      },
    ],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: { Error: ERROR_SCHEMA },
      responses: Object.fromEntries(
        Object.entries(COMMON_ERRORS).map(([status, description]) => [
          `E${status}`,
          {
            description,
            content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
          },
        ]),
      ),
    },
  };
}

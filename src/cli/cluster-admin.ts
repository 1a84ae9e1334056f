/**
 * What `starling status`, `leave` and `join` share: finding the running node's admin endpoint
 * (from --http-port, or the configuration) and calling its cluster routes.
 */
import { loadConfig } from "../config/load-config.ts";
import { XmppServerError } from "../errors.ts";
import { adminRequest, replyError } from "./admin-client.ts";
import { type ParsedArgs, parsePortFlag, stringFlag } from "./args.ts";

/** Flags every cluster command takes. */
export const ADMIN_FLAGS = {
  config: { type: "string" },
  "http-port": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The admin port named by the flags or the configuration. */
export function adminPort(values: ParsedArgs["values"]): number {
  const flag = parsePortFlag("http-port", values["http-port"]);
  if (flag !== undefined) return flag;
  const configFile = stringFlag(values.config);
  return loadConfig(configFile === undefined ? {} : { configFile }).ports.http;
}

/** One cluster admin call; a node that is not running or not clustered is a clear error. */
export async function clusterRequest(
  port: number,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const reply = await adminRequest(port, method, path, body);
  if (reply.kind === "refused") {
    throw new XmppServerError(
      "XSRV_CLUSTER_UNREACHABLE",
      `no node answers on 127.0.0.1:${port} (is it running? pass --http-port or --config)`,
    );
  }
  if (reply.status >= 400) throw replyError(reply);
  return reply.body;
}

/**
 * What `starling status`, `leave` and `join` share: finding the running node's admin endpoint
 * (from --http-port, or the configuration) and calling its cluster routes.
 */
import { loadConfig } from "../config/load-config.ts";
import { XmppServerError } from "../errors.ts";
import { type AdminTarget, adminRequest, adminTargetOf, replyError } from "./admin-client.ts";
import { type ParsedArgs, parsePortFlag, stringFlag } from "./args.ts";

/** Flags every cluster command takes. */
export const ADMIN_FLAGS = {
  config: { type: "string" },
  "http-port": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The options every admin command's --help lists, after its own. */
export const ADMIN_OPTIONS_HELP = `  --http-port N       admin port of the running node (default: from the configuration)
  --config FILE       configuration file to read the admin port from
  -h, --help          show this help`;

/** The one positional argument a command takes, or a usage error naming `what` it expected. */
export function oneArgument(positionals: readonly string[], what: string, hint: string): string {
  const [arg, ...rest] = positionals;
  if (arg === undefined || rest.length > 0)
    throw new XmppServerError("XSRV_CLI_USAGE", `expected ${what} (see ${hint})`);
  return arg;
}

/**
 * The running node's admin API: from the configuration (its address, key and certificate; the
 * key may come from STARLING_ADMIN_KEY), on the port of --http-port when given.
 */
export function adminTarget(values: ParsedArgs["values"]): AdminTarget {
  const configFile = stringFlag(values.config);
  const config = loadConfig(configFile === undefined ? {} : { configFile });
  return adminTargetOf(config, parsePortFlag("http-port", values["http-port"]));
}

/** One admin call; a node that is not running, or an error it answers, is a clear error. */
export async function clusterRequest(
  target: AdminTarget,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const reply = await adminRequest(target, method, path, body);
  if (reply.kind === "refused") {
    throw new XmppServerError(
      "XSRV_CLUSTER_UNREACHABLE",
      `no node answers on ${target.host}:${target.port} (is it running? pass --http-port or --config)`,
    );
  }
  if (reply.status >= 400) throw replyError(reply);
  return reply.body;
}

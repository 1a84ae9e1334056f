/** `starling reload`: the running node applies its configuration file again (as SIGHUP does). */
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, ADMIN_OPTIONS_HELP, adminTarget, clusterRequest } from "./cluster-admin.ts";

const HINT = "starling reload --help";

/** `--help` text. */
export const help = `Usage: starling reload [--http-port N | --config FILE]

Asks the running node to read its configuration file again and apply, without a restart, what
can change at run time: the certificate and key, the log level, the limits, registration and
authentication settings. Settings that need a restart (ports, domain, store, cluster) are
listed and left as they were. Sending the node SIGHUP does the same.

Options:
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling reload`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, ADMIN_FLAGS, HINT);
  if (values.help === true) return context.out(help.trimEnd());
  const result = (await clusterRequest(adminTarget(values), "POST", "/api/reload")) as {
    changed: string[];
    needRestart: string[];
  };
  context.out(
    result.changed.length === 0 ? "reloaded: nothing changed" : `reloaded: ${result.changed.join(", ")}`,
  );
  if (result.needRestart.length > 0) {
    context.out(`not applied until a restart: ${result.needRestart.join(", ")}`);
  }
}

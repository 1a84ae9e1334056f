/** `starling join HOST:PORT`: checks a running node's link to a member of its cluster. */
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, ADMIN_OPTIONS_HELP, adminTarget, clusterRequest } from "./cluster-admin.ts";

const HINT = "starling join --help";

/** `--help` text. */
export const help = `Usage: starling join HOST:PORT [--http-port N | --config FILE]

Asks the running node to check the member whose peer port is HOST:PORT: same secret, same
ring, and the same cluster. Membership lives in the shared PostgreSQL store, so a node started
with --secret and --store is a member as soon as it runs (start it with --join HOST:PORT to have
this check made before it serves); this command confirms it, or says why not.

Options:
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling join`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values, positionals } = parseCommandArgs(args, ADMIN_FLAGS, HINT, true);
  if (values.help === true) return context.out(help.trimEnd());
  const [seed, ...rest] = positionals;
  if (seed === undefined || rest.length > 0 || !/^[^\s:]+:\d{1,5}$/.test(seed)) {
    throw new XmppServerError("XSRV_CLI_USAGE", `expected one peer address HOST:PORT (see ${HINT})`);
  }
  const body = (await clusterRequest(adminTarget(values), "POST", "/api/cluster/join", { seed })) as {
    seed: string;
    members: string[];
  };
  context.out(
    `joined: ${seed} is node "${body.seed}"; the cluster has ${body.members.length} members (${body.members.join(", ")})`,
  );
}

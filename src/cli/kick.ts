/** `starling kick JID`: ends every session of a user, as a web site's logout does. */
import { type CommandContext, parseCommandArgs } from "./args.ts";
import {
  ADMIN_FLAGS,
  ADMIN_OPTIONS_HELP,
  adminTarget,
  clusterRequest,
  oneArgument,
} from "./cluster-admin.ts";

const HINT = "starling kick --help";

/** `--help` text. */
export const help = `Usage: starling kick JID [--http-port N | --config FILE]

Ends every session of the user JID (alice@example.org) on every node of the cluster: each of its
streams gets <policy-violation/> ("signed out"), nothing is left to resume, and its contacts see
it go offline. The user may log in again.

Options:
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling kick`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values, positionals } = parseCommandArgs(args, ADMIN_FLAGS, HINT, true);
  if (values.help === true) return context.out(help.trimEnd());
  const jid = oneArgument(positionals, "one user JID", HINT);
  const body = (await clusterRequest(
    adminTarget(values),
    "DELETE",
    `/api/sessions/${encodeURIComponent(jid)}`,
  )) as {
    jid: string;
    ended: number;
  };
  context.out(`${body.jid}: ${body.ended} session${body.ended === 1 ? "" : "s"} ended`);
}

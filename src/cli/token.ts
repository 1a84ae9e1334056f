/** `starling token JID`: a one-time login token for a user (docs/auth.md). */
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import {
  ADMIN_FLAGS,
  ADMIN_OPTIONS_HELP,
  adminTarget,
  clusterRequest,
  oneArgument,
} from "./cluster-admin.ts";

const HINT = "starling token --help";

/** `--help` text. */
export const help = `Usage: starling token JID [--ttl S] [--http-port N | --config FILE]

Prints a one-time login token for the user JID: the user's client logs in with it as the
(PLAIN) password, once, within its lifetime. Only the token goes to standard output, so that a
script can take it: starling token alice@example.org | ...

Options:
  --ttl S             seconds the token stays valid, 1 to 3600 (default: 60)
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling token`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values, positionals } = parseCommandArgs(
    args,
    { ...ADMIN_FLAGS, ttl: { type: "string" } },
    HINT,
    true,
  );
  if (values.help === true) return context.out(help.trimEnd());
  const jid = oneArgument(positionals, "one user JID", HINT);
  const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
  if (ttl !== undefined && (!Number.isInteger(ttl) || ttl < 1 || ttl > 3600)) {
    throw new XmppServerError(
      "XSRV_CLI_USAGE",
      `--ttl must be a whole number of seconds from 1 to 3600, got "${values.ttl}"`,
    );
  }
  const body = (await clusterRequest(adminTarget(values), "POST", "/api/tokens", {
    jid,
    ...(ttl === undefined ? {} : { ttlSeconds: ttl }),
  })) as { token: string };
  context.out(body.token);
}

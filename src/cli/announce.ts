/** `starling announce MESSAGE`: a message from the server to every user. */
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, ADMIN_OPTIONS_HELP, adminTarget, clusterRequest } from "./cluster-admin.ts";

/** `--help` text. */
export const help = `Usage: starling announce MESSAGE [--all] [--subject S] [--http-port N | --config FILE]

Sends MESSAGE from the server to every user online now, on every node (a headline: not kept
for those who are not). With --all, to every account instead, kept for those not online.

Options:
  --all               every account, not only those online
  --subject S         a subject line
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling announce`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const hint = "starling announce --help";
  const { values, positionals } = parseCommandArgs(
    args,
    { ...ADMIN_FLAGS, subject: { type: "string" }, all: { type: "boolean" } },
    hint,
    true,
  );
  if (values.help === true) return context.out(help.trimEnd());
  if (positionals.length === 0)
    throw new XmppServerError("XSRV_CLI_USAGE", `expected a message (see ${hint})`);
  const body = {
    body: positionals.join(" "),
    online: values.all !== true,
    ...(values.subject === undefined ? {} : { subject: values.subject }),
  };
  const { recipients } = (await clusterRequest(adminTarget(values), "POST", "/api/announcements", body)) as {
    recipients: number;
  };
  context.out(`announced to ${recipients} user${recipients === 1 ? "" : "s"}`);
}

/** `starling send JID MESSAGE`: a message from the server to a user. */
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, ADMIN_OPTIONS_HELP, adminTarget, clusterRequest } from "./cluster-admin.ts";

/** `--help` text. */
export const help = `Usage: starling send JID MESSAGE [--subject S] [--http-port N | --config FILE]

Sends MESSAGE to the user JID (bare, or full for one resource) from the server's own address.
A user who is not online gets it at the next login, as any chat message.

Options:
  --subject S         a subject line
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling send`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const hint = "starling send --help";
  const { values, positionals } = parseCommandArgs(
    args,
    { ...ADMIN_FLAGS, subject: { type: "string" } },
    hint,
    true,
  );
  if (values.help === true) return context.out(help.trimEnd());
  const [to, ...words] = positionals;
  if (to === undefined || words.length === 0) {
    throw new XmppServerError("XSRV_CLI_USAGE", `expected a user JID and a message (see ${hint})`);
  }
  const body = {
    to,
    body: words.join(" "),
    ...(values.subject === undefined ? {} : { subject: values.subject }),
  };
  const sent = (await clusterRequest(adminTarget(values), "POST", "/api/messages", body)) as { to: string };
  context.out(`sent to ${sent.to}`);
}

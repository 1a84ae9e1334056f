/** `starling sessions [JID]`: every session of the cluster, or one user's. */
import type { SessionSummary } from "../http/admin-routes.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import {
  ADMIN_FLAGS,
  ADMIN_OPTIONS_HELP,
  adminTarget,
  clusterRequest,
  oneArgument,
} from "./cluster-admin.ts";

const HINT = "starling sessions --help";

/** `--help` text. */
export const help = `Usage: starling sessions [JID] [--json] [--http-port N | --config FILE]

Prints every session on every node of the cluster (or the user JID's only): its full JID, the
node and worker holding it, the client's address, whether it is connected or waiting for an
XEP-0198 resumption, and its presence.

Options:
  --json              print the list as JSON
${ADMIN_OPTIONS_HELP}
`;

/** Runs `starling sessions`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values, positionals } = parseCommandArgs(
    args,
    { ...ADMIN_FLAGS, json: { type: "boolean" } },
    HINT,
    true,
  );
  if (values.help === true) return context.out(help.trimEnd());
  const jid = positionals.length === 0 ? undefined : oneArgument(positionals, "at most one user JID", HINT);
  const path = jid === undefined ? "/api/sessions" : `/api/sessions/${encodeURIComponent(jid)}`;
  const { sessions } = (await clusterRequest(adminTarget(values), "GET", path)) as {
    sessions: SessionSummary[];
  };
  sessions.sort((a, b) => a.jid.localeCompare(b.jid));
  if (values.json === true) return context.out(JSON.stringify(sessions, null, 2));
  const width = Math.max(4, ...sessions.map((s) => s.jid.length));
  context.out(
    `${"JID".padEnd(width)}  ${"NODE".padEnd(12)} WORKER  ${"ADDRESS".padEnd(24)} STATE      PRESENCE`,
  );
  for (const s of sessions) {
    const state = s.connected ? "connected" : "detached";
    const presence = s.available ? `available (${s.priority})` : "unavailable";
    context.out(
      `${s.jid.padEnd(width)}  ${s.node.padEnd(12)} ${String(s.worker).padEnd(7)} ${(s.address ?? "-").padEnd(24)} ${state.padEnd(10)} ${presence}`,
    );
  }
  context.out(`${sessions.length} session${sessions.length === 1 ? "" : "s"}`);
}

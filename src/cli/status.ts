/** `starling status`: the cluster as the running node sees it. */
import type { ClusterStatus } from "../cluster/cluster-member.ts";
import { type CommandContext, parseCommandArgs } from "./args.ts";
import { ADMIN_FLAGS, adminPort, clusterRequest } from "./cluster-admin.ts";

const HINT = "starling status --help";

/** `--help` text. */
export const help = `Usage: starling status [--json] [--http-port N | --config FILE]

Prints the cluster's members with their state, the epoch, each node's share of the
partitions, the latest epoch each member has settled (applied, with every partition it
gained received; the cluster moves partitions again only once all have), and this node's
connection and actor counts.

Options:
  --json              print the whole view as JSON
  --http-port N       admin port of the running node (default: from the configuration)
  --config FILE       configuration file to read the admin port from
  -h, --help          show this help
`;

type StatusBody = ClusterStatus & {
  nodes: Record<
    string,
    { connections: number; sessions: number; actors: number; retained: number; waitingPartitions: number }
  >;
};

/** Runs `starling status`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values } = parseCommandArgs(args, { ...ADMIN_FLAGS, json: { type: "boolean" } }, HINT);
  if (values.help === true) return context.out(help.trimEnd());
  const body = (await clusterRequest(adminPort(values), "GET", "/admin/cluster")) as StatusBody;
  if (values.json === true) return context.out(JSON.stringify(body, null, 2));
  context.out(
    `cluster: ${body.members.length} members, epoch ${body.epoch}, view ${body.version}, ${body.partitions} partitions (asked ${body.node}, ${body.state})`,
  );
  context.out(
    `${"NODE".padEnd(16)} ${"STATUS".padEnd(8)} ${"PEER".padEnd(22)} ${"PARTS".padStart(6)} ${"SHARE".padStart(6)} ${"LINK".padEnd(4)} ${"SETTLED".padStart(7)} CONNS  ACTORS`,
  );
  for (const m of body.members) {
    const counts = body.nodes[m.node];
    const share = body.partitions > 0 ? `${((100 * m.partitions) / body.partitions).toFixed(1)}%` : "-";
    context.out(
      `${m.node.padEnd(16)} ${m.status.padEnd(8)} ${m.peerAddr.padEnd(22)} ${String(m.partitions).padStart(6)} ${share.padStart(6)} ${(m.linkUp ? "up" : "down").padEnd(4)} ${String(m.settledEpoch).padStart(7)} ${String(counts?.connections ?? "-").padEnd(6)} ${counts?.actors ?? "-"}`,
    );
  }
}

/**
 * The membership and handoff rules of the product, as small pure functions for the simulation.
 * They mirror code that mixes these decisions with I/O (PostgreSQL, peer links, worker threads);
 * each rule cites the lines it copies, so a change there must be mirrored here. The assignment
 * itself and the owner table are the real functions (assignPartitions, clusterTable).
 */
import { type Assignment, assignPartitions } from "../../src/cluster/membership/assignment.ts";
import { clusterTable, type OwnerTable } from "../../src/cluster/ring.ts";

export type MemberStatus = "up" | "down";

/** One row of the `members` table. */
export interface SimMember {
  name: string;
  nodeNo: number;
  workers: number;
  status: MemberStatus;
  leaseUntil: number;
  settledEpoch: number;
}

/** What PostgreSQL holds: the view every node reads (copied, so a node's view is a snapshot). */
export interface SimView {
  version: number;
  epoch: number;
  partitions: number;
  assignment: Assignment | null;
  members: SimMember[];
}

export function copyView(view: SimView): SimView {
  return { ...view, members: view.members.map((m) => ({ ...m })) };
}

/**
 * The coordinator is the first `up` member by name (cluster-member.ts 523-525, `#coordinate`).
 */
export function coordinatorOf(view: SimView): string | undefined {
  return view.members
    .filter((m) => m.status === "up")
    .map((m) => m.name)
    .sort()[0];
}

/**
 * Whether the coordinator commits the next epoch now, and which assignment
 * (cluster-member.ts 523-544 `#coordinate`, 499-520 `#allSettled`):
 * - nothing when the assignment's nodes are already the `up` set;
 * - at once when an owner is gone (not serving: down), since nobody can hand its partitions off;
 * - otherwise only once every serving member settled the current epoch, or after
 *   `patienceMs` (handoffTimeoutMs + leaseRenewMs) of waiting for them.
 * `unsettledSince` is the coordinator's memory of when it started waiting (per epoch).
 */
export function nextAssignment(
  view: SimView,
  now: number,
  unsettledSince: { epoch: number; at: number } | undefined,
  patienceMs: number,
): { next: Assignment | undefined; unsettledSince: { epoch: number; at: number } | undefined } {
  const up = view.members
    .filter((m) => m.status === "up")
    .map((m) => m.name)
    .sort();
  const current = view.assignment;
  const owners = current === null ? [] : [...current.nodes].sort();
  if (up.length === 0 || (owners.length === up.length && owners.every((n, i) => n === up[i]))) {
    return { next: undefined, unsettledSince };
  }
  const serving = (name: string) => view.members.some((m) => m.name === name && m.status === "up");
  const orphaned = current?.nodes.some((n) => !up.includes(n) && !serving(n)) ?? false;
  if (!orphaned) {
    const lagging = view.members.filter((m) => m.status === "up" && m.settledEpoch < view.epoch);
    if (lagging.length > 0) {
      const since = unsettledSince?.epoch === view.epoch ? unsettledSince : { epoch: view.epoch, at: now };
      if (now - since.at < patienceMs) return { next: undefined, unsettledSince: since };
    }
  }
  return { next: assignPartitions(current, up, view.partitions), unsettledSince: undefined };
}

/**
 * A member whose lease ran out more than `marginMs` ago is marked down
 * (membership-store.ts `expireLeases`, called from cluster-member.ts 552-557). The caller spares
 * members whose peer link answers (cluster-member.ts 555): here, nodes not paused.
 */
export function expiredMembers(
  view: SimView,
  now: number,
  marginMs: number,
  spare: (name: string) => boolean,
) {
  return view.members.filter((m) => m.status === "up" && m.leaseUntil + marginMs < now && !spare(m.name));
}

/** The owner table of a view (cluster-member.ts 710-723 `#tableOf`), with the real clusterTable. */
export function tableOf(view: SimView): OwnerTable {
  const assignment = view.assignment!;
  const byName = new Map(view.members.map((m) => [m.name, m]));
  return clusterTable({
    epoch: view.epoch,
    partitions: view.partitions,
    nodes: assignment.nodes.map((name) => ({
      name,
      nodeNo: byName.get(name)?.nodeNo ?? 0,
      workers: byName.get(name)?.workers ?? 1,
    })),
    ownerNodes: assignment.owners,
  });
}

/** The nodes alive when a table is applied: members not down (cluster-member.ts 736-740). */
export function liveNodesOf(view: SimView): { nodeNo: number; workers: number }[] {
  return view.members
    .filter((m) => m.status !== "down")
    .map((m) => ({ nodeNo: m.nodeNo, workers: m.workers }));
}

/** What a shard does on a new table is the product's own pure planTableChange (handoff.ts). */
export { planTableChange } from "../../src/cluster/handoff.ts";

/**
 * A handoff (planned or recovery) reached a shard at `epoch` (handoff.ts 136-187 `receive`):
 * early ones wait for their table; otherwise the sender is crossed off each listed partition's
 * wait, whatever epoch the message was for. Returns the partitions that completed, or "early".
 */
export function receiveHandoff(
  waiting: Map<number, Set<number>>,
  tableEpoch: number,
  msg: { epoch: number; from: number; partitions: readonly number[] },
): number[] | "early" {
  if (msg.epoch > tableEpoch) return "early";
  const done: number[] = [];
  for (const p of msg.partitions) {
    const from = waiting.get(p);
    if (from === undefined) continue;
    from.delete(msg.from);
    if (from.size === 0) {
      waiting.delete(p);
      done.push(p);
    }
  }
  return done;
}

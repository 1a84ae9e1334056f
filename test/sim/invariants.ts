/**
 * The guarantees the simulation checks after every step (CLUSTER.md guarantees 1-3). Checks
 * that need the moment they happen (what a client receives, what a replica applies, what a
 * resumption finds) are made where they happen, in world.ts, through `World.violate`.
 */
import { ownerShard } from "../../src/cluster/ring.ts";
import type { OwnerSession } from "./owner-session.ts";
import { supersedes, type World } from "./world.ts";

/** Checks the state-wide invariants; returns at most one new violation per rule per call. */
export function checkInvariants(world: World): void {
  // 1. At most one live owner (attached or detached) of a session among non-zombie nodes.
  for (const client of world.clients) {
    if (client.token === "") continue;
    const all = world.liveOwners(client.token);
    // A copy another live owner supersedes is a ghost its UserActor ends on registration
    // (user-actor.ts `supersedes`, modelled by World.register): not a second owner.
    // Two promoted copies of one stream at the same lsn (a replaced replica that never heard its
    // rep-end, and its successor) are the same state: the first to register wins and the other
    // is told it is stale (user-actor.ts `supersedes`); until then they count as one owner.
    // A lender restored after its taker never confirmed, which the UserActor keeps as the
    // registration's standby (user-actor.ts), serves nobody: it answers a resumption "pending"
    // and takes over only if the registered session dies. One with a client attached serves.
    const kept = world.standby.get(client.token)?.[0];
    const standby = kept?.link === undefined ? kept : undefined;
    const owners = all.filter(
      ([s], i) =>
        s !== standby &&
        !all.some(([other], j) => other !== s && (supersedes(other, s) || (j < i && sameCopy(other, s)))),
    );
    if (owners.length > 1) {
      world.violate(
        "one-owner",
        `${client.token} is owned by ${owners.map(([, s]) => s.self).join(" and ")}`,
      );
    }
    for (const [session, shard] of owners) {
      // The unacknowledged log holds exactly the stanzas numbered above the client's h.
      const log = session.state.unacked;
      for (let i = 0; i < log.length; i++) {
        if (log[i]![0] !== session.state.sentOut - log.length + 1 + i) {
          world.violate(
            "unacked-log",
            `${shard.self}'s log of ${client.token} is not contiguous up to ${session.state.sentOut}`,
          );
          break;
        }
      }
    }
  }
  // 3. Partitions: one owner per epoch everywhere, and never served by two shards at once.
  const serving = new Map<number, number>();
  for (const node of world.nodes.values()) {
    if (!node.serving || world.isDeclaredDown(node.nodeNo)) continue;
    const committed = world.epochOwners.get(node.table.epoch);
    for (let p = 0; p < world.partitions; p++) {
      if (committed !== undefined && ownerShard(committed, p) !== ownerShard(node.table, p)) {
        world.violate(
          "epoch-owner",
          `${node.name} has another owner of partition ${p} at epoch ${node.table.epoch}`,
        );
      }
      for (const shard of node.shards) {
        if (!shard.serves(p)) continue;
        const other = serving.get(p);
        if (other !== undefined)
          world.violate("one-partition-owner", `partition ${p} served by ${other} and ${shard.self}`);
        serving.set(p, shard.self);
      }
    }
  }
}

/** Promoted copies of the same stream holding the same changes. */
function sameCopy(a: OwnerSession, b: OwnerSession): boolean {
  return (
    a.promotedAt !== undefined &&
    b.promotedAt !== undefined &&
    a.state.moves === b.state.moves &&
    a.copyOf !== undefined &&
    a.copyOf.stream === b.copyOf?.stream &&
    a.copyOf.lsn === b.copyOf.lsn
  );
}

/** After the calm phase: every client is back, and nothing waits for a replica forever. */
export function checkQuiescent(world: World): void {
  for (const client of world.clients) {
    if (!client.online) {
      world.violate(
        "session-lost",
        `c${client.id} (${client.token}) could not resume after ${world.nodeFailures} node failure(s), factor ${world.factor}`,
      );
      continue;
    }
    for (const [session, shard] of world.liveOwners(client.token)) {
      // A standby lender (restored, not active) serves nobody: its replicas may refuse it for
      // holding the taker's newer copy, and it needs none unless the taker's node dies.
      if (session.unreplicated.length > 0 && !session.restored) {
        world.violate("replication-stalled", `${shard.self} still waits for replicas of ${client.token}`);
      }
    }
  }
}

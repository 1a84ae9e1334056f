/**
 * What the simulation found in the product and is not fixed yet, kept apart from the test so
 * that replaying tools can use it too.
 */
import type { SeedResult } from "./simulation.ts";

/**
 * Product gaps the simulation found and that are not fixed yet. A seed that ran into one of them
 * may lose a session or stall a replication stream; that is reported here (and as a todo test),
 * not hidden, and any other violation still fails. Remove an entry once its gap is fixed.
 */
export const KNOWN_GAPS: Record<string, string> = {
  "epoch-skipped":
    "a dead owner's partitions move without waiting for every member to settle, so a lagging member skips an epoch (cluster-member.ts #coordinate); no safety violation seen from it so far",
};

/**
 * Violations no known gap explains. Every one, at the moment: the one gap left ("epoch-skipped")
 * has not been seen to break a guarantee, so a gap that should excuse a violation is added here
 * with its entry above.
 */
export function unexplained(result: SeedResult) {
  return result.violations;
}

/**
 * Seeds of 1-10,000 that break a guarantee no known gap above explains, not triaged yet: each
 * may be a product bug or a modelling error of the sim. Listed so that `npm test` stays green
 * while any *new* failing seed still fails it; each is reported as a todo on every run. Replay
 * one with `SIM_SEED=<n> node --test test/sim/simulation.test.ts`. The list is tied to the exact
 * code: a change in how the product or the sim consumes random numbers reshuffles it.
 *
 * Model errors fixed: inbound-count (2430 and three more) was the scheduler letting input that
 * arrived after a paused node resumed overtake what was queued while it was paused.
 *
 * Fixed: the late or lost take reply (the take is two-phase now: SessionActor.lendForResume,
 * confirmMoved, restore) and the move before any replica holds the session (the taker confirms
 * only once its replicas hold it) — 658 seeds of 10,000 before; a lent session's re-init of a
 * silent replica replaced the taker's copy (seed 93; lent streams are quiet, and a replica
 * refuses an init with fewer moves than the copy it holds).
 *
 * Fixed: 1009 (one-owner) was a rep-end queued on a cut link and lost when its node died; the
 * copy it should have dropped was promoted beside the session resumed from it (a ghost). The
 * UserActor now keeps one registration per full JID (user-actor.ts `supersedes`) and tells the
 * other it is stale; the sim models that (World.register) and its one-owner check ignores a copy
 * that another live owner supersedes.
 *
 * Fixed (11 of the 13 seeds left before, and the 6 of dropped-replica-promotes):
 * - a registration on a dead node gives way to whatever registers from a live shard, whatever
 *   the move counts (1028, 1909: a session resumed while its replicas were cut off, then its node
 *   died; the older copy, all there was, was refused for its lower count);
 * - a lender whose taker never confirmed waits as the registration's standby instead of ending
 *   when the taker's registration lives, and takes over if the taker's node dies (4494); until
 *   its actor says it is registered, a resumption is told "pending" (40: a client took the
 *   lender's copy while the taker still held the session);
 * - a re-seat keeps the replaced replica until the new one holds the session (make before
 *   break; 7603, 8526: the only copy was dropped while the new replica sat behind a cut link);
 *   if the owner dies first both copies are promoted, and of two promoted copies of one stream
 *   the one with the higher lsn wins (user-actor.ts supersedes), and a replica holding more of
 *   a stream refuses the init of a copy promoted from less of it (338).
 *
 * Fixed (the last 2): a session lent to a resumption claimed its local inbound count, more than
 * its replicas held when one was paused, so `<resumed h>` could go back at the next failover
 * (3231; 7170 lost the session over it); it now claims what its replicas hold, and the client
 * re-sends the rest under the same numbers. And a resumed session's count went back to 0 at its
 * replicas' first acknowledgement until the client's next stanza (3231).
 *
 * Fixed: 3705 (session-lost, factor 3), found when worker crashes changed the seeds' random
 * sequences. A join re-seated a session's replicas to [n5, n1]; the re-seat's init reached n1 but
 * not n5, because the owner's node died a moment later. At the table that dropped the owner, n1
 * waited for n5, its new list's heir, and n5 held nothing: nobody promoted. A re-seat's lists now
 * name the added replicas last until they hold the state (ReplicaStream `#adding`, `#relist`).
 * Letting a replica skip a heir that answered "nothing" was tried first and broke four other
 * seeds (a heir says "nothing" too when its copy is behind the client's h, or was just taken).
 *
 * Fixed: crash-during-resume (a known gap until then) and 3941 (session-lost, reported under the
 * overflow gap): a copy promoted to a worker, or taken by a resumption, left its replica for good,
 * and died with that worker if it crashed before the session's own replicas held it. A copy is
 * now kept until the session made of it is replicated (ReplicaHost `#handedOut`, `copy-held`)
 * and comes back when its taker dies first. Over seeds 10,001-40,000 (not run by `npm test`)
 * this took the unexplained failures from 4 to 2.
 *
 * Fixed: overflow-drops-replication (a known gap until then; 3941, 8470 and five seeds beyond
 * 10,000 broke a guarantee with it): a peer link that overflows drops its queue. Replication
 * changes and acks were recovered only after REPLICA_STALL_MS, and a lost rep-end left a copy
 * that a later death promoted beside the live session. When the link is back the owner's
 * workers now re-send the whole state to the replicas it left behind and list the streams that
 * still replicate there (`rep-live`, ReplicaHost.audit drops the copies of the others).
 *
 * Fixed (beyond 10,000, run as regression seeds by simulation.test.ts): 30007 and 36521, a lender
 * restored after its taker went quiet and activated when its taker's latest holder died, behind
 * what the client received: the sim's copy-behind-client check now counts the heir's copy as the
 * twin (the lender refuses the client's h), and the product adopts a promoted copy that is ahead
 * of the session on its worker instead of dropping it as a ghost (client-stream-host.ts
 * adoptCopy); 51267 and 91141, resumptions a client left behind on a paused node, run side by side
 * or after the client had left (client-stream-host.ts oneAtATime, and `resume` stops once its
 * connection is closed). Seeds 10,001-100,000 went from 9 unexplained failures to 5.
 *
 * Fixed, the last 5 of 10,001-100,000: 63292, 86123, 93094 (session-lost, factor 3), a promoted
 * copy's init replaced, at an equal move count, the copy of the session a client had resumed,
 * then ended as stale, leaving the replica with nothing (ReplicaHost.receive refuses it now);
 * 77167, a worker that died before its restart was announced was never announced (worker-pool.ts
 * names every incarnation that died since the last notice; crashWorker models it); 98258, a model
 * flaw: what a process had written before it was paused stayed with it (Network #pump delivers
 * it now, and the zombie-acked check ignores a replica on a node declared down, fenced as soon as
 * it runs: 4096, 9601). Seeds 1-100,000 break no guarantee.
 */
export const UNTRIAGED_SEEDS = new Set<number>([]);

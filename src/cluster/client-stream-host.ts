/**
 * What a worker gives its client streams (src/xmpp/stream-host.ts): accounts, the node-wide
 * throttles, and sessions. Binding creates a SessionActor here and registers it with its user's
 * actor wherever that lives; resumption finds a session anywhere in the cluster: the shard its
 * id names, this node's workers, then every live shard, and a replica of a dead node's session.
 */

import { loginAccountKey, loginAddressKey } from "../../actors/login-actor.ts";
import type { LoginVerdict } from "../../actors/login-state.ts";
import type { LoginMessage } from "../../actors/messages.ts";
import { SessionActor } from "../../actors/session-actor.ts";
import type { SessionSnapshot } from "../../actors/session-state.ts";
import type { BindReply } from "../../actors/user-actor.ts";
import { addressPrefix } from "../auth/address-prefix.ts";
import { isLoginTokenShaped } from "../auth/login-tokens.ts";
import type { BareJid, FullJid } from "../xmpp/jid.ts";
import { LoginSteps } from "../xmpp/login-steps.ts";
import type {
  ClientLink,
  LoginAdmission,
  LoginGuard,
  LoginTicket,
  ResumeOutcome,
  StreamHost,
} from "../xmpp/stream-host.ts";
import { mainShardOf, nodeNoOf, withMainShards } from "./ring.ts";
import { type CopyReference, HANDED_OUT_KEEP_MS, type PromotedCopy } from "./session-replicas.ts";
import type { ShardContext } from "./shard-context.ts";

/** How long a `<resume/>` waits for the shard that holds the session. */
const RESUME_TAKE_TIMEOUT_MS = 3_000;

/**
 * What a shard answers a resumption: the session (lent by `lender`, which waits for a
 * `resume-done`; a replica taken over has none), only its handled count when it expired, or
 * "pending" while the death of the node that held it is not known yet.
 */
export type ResumeTake =
  /**
   * A session lent by the shard that held it (`lender`, two-phase: see SessionActor.lendForResume),
   * or a replica's copy taken out for good (`copyOf`: the owner's stream and the lsn it held).
   */
  | {
      snapshot: SessionSnapshot;
      lender?: { shard: number; sid: string };
      copyOf?: CopyReference;
    }
  | { expired: number }
  | { pending: true }
  /**
   * The client's `h` does not fit the log of the session `holder` holds (SessionActor
   * lendForResume); it is left as it was until the search finds no other holder.
   */
  | { refused: "too-high" | "stale"; sent: number; handled: number; holder: { shard: number; sid: string } }
  | undefined;

/**
 * What a `resume-take` reply that came after its request gave up asks of the asker: a lent
 * session is given back to its `lender`; a replica's copy, taken out of the replica for good,
 * is kept (`adopt`) rather than lost. Any other late reply (nothing held, "pending", a number
 * or a string answering another kind of request) asks nothing.
 */
export function lateTakeOf(
  value: unknown,
): { lender: { shard: number; sid: string } } | { adopt: PromotedCopy } | undefined {
  if (typeof value !== "object" || value === null || !("snapshot" in value)) return undefined;
  const take = value as Extract<ResumeTake, { snapshot: SessionSnapshot }>;
  if (take.lender !== undefined) return { lender: take.lender };
  if (take.copyOf !== undefined) return { adopt: { state: take.snapshot, ...take.copyOf } };
  return undefined;
}

/** The stream host of one worker. */
export function clientStreamHost(ctx: ShardContext): StreamHost {
  return {
    config: ctx.config,
    log: ctx.log,
    counters: ctx.counters,
    // Read at each login: a reload may replace the provider.
    get auth() {
      return ctx.auth;
    },
    loginGuard: loginGuard(ctx),
    loginSteps: new LoginSteps(ctx.config.limits.loginStepsPerTurn),
    registrationThrottle: ctx.registrationThrottle,
    register: (jid, password) => ctx.accounts.create(jid, password),
    bind: (full, link) => bind(ctx, full, link),
    resume: oneAtATime((user, previd, h, link) => resume(ctx, user, previd, h, link)),
  };
}

/**
 * Runs one worker's resumptions of one session id one after another. A client that gave up on a
 * node that did not answer (paused, or slow to learn of a death) tries again, and the attempts it
 * left behind still run when the node wakes: run side by side, two searches each took a copy of
 * the session (the node's own, promoted, and another node's, lent), each made a session of it,
 * and the UserActor kept the one that held less and ended the other, which this worker's map of
 * resumable sessions then pointed to, so the client's next attempt found nothing (sim seed
 * 51267). In turn, the later attempt finds what the earlier one left: the session, resumable
 * here (its connection closed), or its failure.
 */
export function oneAtATime(resume: StreamHost["resume"]): StreamHost["resume"] {
  const running = new Map<string, Promise<unknown>>();
  return (user, previd, h, link) => {
    const before = running.get(previd) ?? Promise.resolve();
    const outcome = before.then(() => resume(user, previd, h, link));
    const settled = outcome.catch(() => undefined);
    running.set(previd, settled);
    void settled.then(() => {
      if (running.get(previd) === settled) running.delete(previd);
    });
    return outcome;
  };
}

/** What a login guard of this worker hands out with an admission. */
interface GuardTicket extends LoginTicket {
  readonly prefix: string;
  readonly token: boolean;
  /** The attempt was charged to the account-wide count (it came from an unknown address). */
  readonly accountCharged: boolean;
}

/** The longest a login waits for a throttle actor before its count is skipped. */
const THROTTLE_ASK_MAX_MS = 2_000;
/** How long an admitted attempt holds its place in a worker's in-flight count at most. */
const IN_FLIGHT_MS = 30_000;
/** Address prefixes with attempts in progress a worker tracks before sweeping abandoned ones. */
const MAX_TRACKED_PREFIXES = 10_000;

/**
 * The login throttle of docs/auth.md, "Throttling": an attempt is checked against its
 * address's actor and (unless it is a token) charged to its account's, wherever in the cluster
 * they live; both are asked at once, so an admission costs one round trip. Settling is sent
 * without waiting.
 *
 * The account's counts are charged when an attempt starts, so parallel guesses at one account
 * get no more than its budget. The address's count over all accounts, which exists to stop one
 * address spraying many accounts, counts failures when they happen: charged at the start, it
 * capped how many logins one address (an office behind a NAT, a proxy, a load test) may have in
 * progress at once. What parallel spraying could gain instead is capped by each worker's
 * in-flight attempts per address (`limits.loginAttemptsInFlightPerAddress`).
 *
 * An address the account knows is refused only by its own count for the account: neither the
 * account-wide count (the account actor sees to that) nor the address's count, or a busy shared
 * address whose failures reach its budget would lock out every owner behind it.
 */
function loginGuard(ctx: ShardContext): LoginGuard {
  // A throttle actor on a node that just died answers only once the cluster has moved its
  // partition; a resuming client must not wait the whole request timeout (5 s) for that.
  const timeoutMs = Math.min(ctx.config.cluster.requestTimeoutMs, THROTTLE_ASK_MAX_MS);
  const ask = (key: `${string}:${string}`, build: (reqId: number) => LoginRequest) =>
    ctx.router.requestActor<LoginVerdict>(key, build, timeoutMs);
  /** Admitted attempts not yet settled, per address prefix: their start times, oldest first. */
  const inFlight = new Map<string, number[]>();
  let sweptAt = 0;
  /**
   * The prefix's attempts in progress, without those abandoned past IN_FLIGHT_MS (a client that
   * went away mid-exchange settles nothing). Past MAX_TRACKED_PREFIXES prefixes, every prefix's
   * abandoned attempts are dropped, so the map cannot grow with clients that never come back; at
   * most once a second, or a storm from that many addresses would walk the whole map per login.
   */
  const inProgress = (prefix: string, now: number): number[] => {
    if (inFlight.size > MAX_TRACKED_PREFIXES && now - sweptAt >= 1_000) {
      sweptAt = now;
      for (const [other, starts] of inFlight) {
        if (starts.every((at) => now - at >= IN_FLIGHT_MS)) inFlight.delete(other);
      }
    }
    const starts = (inFlight.get(prefix) ?? []).filter((at) => now - at < IN_FLIGHT_MS);
    if (starts.length === 0) inFlight.delete(prefix);
    else inFlight.set(prefix, starts);
    return starts;
  };
  const release = (prefix: string) => {
    const starts = inFlight.get(prefix);
    starts?.shift();
    if (starts?.length === 0) inFlight.delete(prefix);
  };
  const settle = (ticket: GuardTicket, succeeded: boolean) => {
    release(ticket.prefix);
    ctx.router.toActor(loginAccountKey(ticket.account), {
      kind: "login-account-settle",
      prefix: ticket.prefix,
      succeeded,
      pair: !ticket.token,
      account: ticket.accountCharged,
    });
  };
  return {
    isToken: isLoginTokenShaped,
    async admit(address, account, token): Promise<LoginAdmission> {
      const prefix = addressPrefix(address);
      // Attempts abandoned mid-exchange (the client went away) leave after IN_FLIGHT_MS.
      const now = Date.now();
      const starts = inProgress(prefix, now);
      if (starts.length >= ctx.config.limits.loginAttemptsInFlightPerAddress) {
        return { allowed: false, retryAfterMs: 1_000 };
      }
      // The place is taken now, before the asks: attempts that start while they are on their way
      // must see it (counted only once admitted, 18 of 20 simultaneous attempts got past a cap of 2).
      starts.push(now);
      inFlight.set(prefix, starts);
      const [byAddress, byAccount] = await Promise.allSettled([
        ask(loginAddressKey(prefix), (reqId) => ({ kind: "login-address-check", shard: ctx.index, reqId })),
        // A token cannot be guessed: the account's counts neither refuse nor count it; the
        // account only says whether the address is one of its owner's.
        token
          ? ask(loginAccountKey(account), (reqId) => ({
              kind: "login-account-known",
              prefix,
              shard: ctx.index,
              reqId,
            }))
          : ask(loginAccountKey(account), (reqId) => ({
              kind: "login-account-charge",
              prefix,
              shard: ctx.index,
              reqId,
            })),
      ]);
      // A throttle actor that does not answer in time (its node paused or dying before the
      // cluster notices) does not hold logins up for everyone whose actors it hosts: that count
      // is skipped for this attempt, and the password is still checked.
      const addressVerdict = byAddress.status === "fulfilled" ? byAddress.value : undefined;
      const accountVerdict = byAccount.status === "fulfilled" ? byAccount.value : undefined;
      for (const result of [byAddress, byAccount]) {
        if (result.status === "rejected") {
          ctx.log.warn(
            { err: result.reason, address },
            "the login throttle did not answer; its count is skipped",
          );
        }
      }
      const known = accountVerdict?.allowed === true && accountVerdict.known === true;
      const ticket: GuardTicket = {
        address,
        account,
        prefix,
        token,
        accountCharged: !token && accountVerdict?.allowed === true && accountVerdict.known === false,
      };
      const accountAllows = accountVerdict === undefined || accountVerdict.allowed;
      // A known address passes over the address's count (see above).
      const addressAllows = addressVerdict === undefined || addressVerdict.allowed || known;
      if (accountAllows && addressAllows) return { allowed: true, ticket };
      release(prefix);
      // Refused by the address: the account's charge is taken back.
      if (ticket.accountCharged) {
        ctx.router.toActor(loginAccountKey(account), {
          kind: "login-account-settle",
          prefix,
          succeeded: false,
          pair: true,
          account: true,
        });
      }
      const waits = [addressVerdict, accountVerdict].map((v) =>
        v !== undefined && !v.allowed ? v.retryAfterMs : 0,
      );
      return { allowed: false, retryAfterMs: Math.max(...waits) };
    },
    settle: (ticket, succeeded) => settle(ticket as GuardTicket, succeeded),
    failed(ticket) {
      const { prefix } = ticket as GuardTicket;
      release(prefix);
      ctx.router.toActor(loginAddressKey(prefix), { kind: "login-address-failed" });
    },
    failedWithoutAccount(address) {
      ctx.router.toActor(loginAddressKey(addressPrefix(address)), { kind: "login-address-failed" });
    },
  };
}

type LoginRequest = Extract<LoginMessage, { reqId: number }>;

async function bind(ctx: ShardContext, full: FullJid, link: ClientLink): Promise<SessionActor | undefined> {
  // Registered before the UserActor hears of it, so nothing it sends right after binding is
  // lost; held until the bind result has gone out, so nothing precedes it.
  const session = new SessionActor(full, ctx, link, undefined, { hold: true });
  ctx.sessions.set(session.sid, session);
  const user = session.bare;
  try {
    const reply = await ctx.router.requestUser<BindReply>(
      (reqId) => ({ kind: "bind", user, session: session.location(), reqId }),
      ctx.config.cluster.requestTimeoutMs,
    );
    session.setBlocklist(reply.blocklist);
    return session;
  } catch (error) {
    ctx.log.warn({ err: error, user }, "bind not answered; the client may retry");
    ctx.sessions.delete(session.sid);
    // The actor may still register the bind later: tell it this session never came to be.
    ctx.router.toUser({ kind: "unbind", user, session: session.location(), directed: [] });
    return undefined;
  }
}

async function resume(
  ctx: ShardContext,
  user: BareJid,
  previd: string,
  h: number,
  link: ClientLink,
): Promise<ResumeOutcome> {
  const home = Number.parseInt(previd.split(".")[0] ?? "", 10);
  if (!Number.isInteger(home) || home < 0) return { failed: "unknown" };
  let snapshot: SessionSnapshot | undefined;
  let lender: { shard: number; sid: string } | undefined;
  let copyOf: CopyReference | undefined;
  let expired: number | undefined;
  let refused: Extract<ResumeTake, { refused: string }> | undefined;
  // The id names the shard (of any node) that issued it; a session resumed before may live
  // elsewhere now (the id survives resumptions), so this node's workers are asked next and
  // then, at once, every other shard of the cluster (a rare path: after a drain, say).
  const take = (shard: number) =>
    takeFrom(ctx, shard, user, previd, h).catch((error: unknown) => {
      // A shard of a node that died is expected after a crash (its replica answers instead).
      if (ctx.router.isOnGoneNode(shard))
        ctx.log.debug({ err: error, shard }, "resumption request to a dead node failed");
      else ctx.log.warn({ err: error, shard }, "resumption request failed");
      return undefined;
    });
  let pending = false;
  const giveBack = (take: {
    lender?: { shard: number; sid: string } | undefined;
    copyOf?: CopyReference | undefined;
  }) => {
    if (take.lender !== undefined) answerLender(ctx, take.lender, false);
    else {
      ctx.log.warn({ user }, "a second replica's copy answered a resumption; the older one is dropped");
      if (take.copyOf !== undefined) releaseCopy(ctx, previd, take.copyOf);
    }
  };
  const note = (found: ResumeTake) => {
    if (found !== undefined && "snapshot" in found) {
      if (snapshot === undefined) {
        snapshot = found.snapshot;
        lender = found.lender;
        copyOf = found.copyOf;
      } else if (isAhead(found.snapshot, snapshot)) {
        // Two holders answered the search at once: a lender whose worker crashed before this
        // taker could confirm, and the copy promoted meanwhile, which went on (sim seed 6122).
        // The one ahead is the session; the other goes back to its lender.
        giveBack({ lender, copyOf });
        snapshot = found.snapshot;
        lender = found.lender;
        copyOf = found.copyOf;
      } else giveBack(found);
    } else if (found !== undefined && "expired" in found) expired = found.expired;
    else if (found !== undefined && "refused" in found) refused = found;
    else if (found !== undefined) pending = true;
  };
  const search = async () => {
    const asked = new Set<number>();
    // This node's main thread too: it holds the copies of other nodes' sessions (main-replicas.ts).
    for (const shard of [home, ...ctx.localShards, mainShardOf(nodeNoOf(ctx.index))]) {
      if (asked.has(shard)) continue;
      // The client left (it gave up on a node that did not answer, and the node woke up to its
      // request): nothing more is taken, so no copy becomes a session nobody asked for beside the
      // one the client resumed elsewhere meanwhile (sim seed 91141).
      if (link.closed) return;
      asked.add(shard);
      note(await take(shard));
      if (snapshot !== undefined) return;
    }
    if (link.closed) return;
    // A holder refused the client's h: another (a copy ahead of it) may still take it.
    const others = withMainShards(ctx.router.liveShards()).filter((shard) => !asked.has(shard));
    // At most one holder has the session, and taking it is what the request does.
    for (const found of await Promise.all(others.map(take))) note(found);
  };
  await search();
  // A replica holds the session but its owner's death is not known yet (the client came back
  // faster than the cluster decided, or than a crashed worker was restarted): ask again at the
  // next owner table, or soon, until `requestTimeoutMs` has passed.
  const deadline = Date.now() + ctx.config.cluster.requestTimeoutMs;
  for (
    let stepMs = 200;
    snapshot === undefined && refused === undefined && pending && !link.closed && Date.now() < deadline;
    stepMs *= 2
  ) {
    pending = false;
    await ctx.router.nextTable(Math.min(stepMs, deadline - Date.now()));
    await search();
  }
  if (snapshot === undefined && refused !== undefined) {
    // Nobody else holds it: the refusing holder ends (its stanzas to offline storage) before the
    // client hears, so a bind that follows finds the resource free and the stanzas stored.
    const { shard, sid } = refused.holder;
    await ctx.router
      .requestShard<boolean>(
        shard,
        (reqId) => ({ t: "worker", msg: { kind: "resume-refused", sid, toShard: ctx.index, reqId } }),
        RESUME_TAKE_TIMEOUT_MS,
      )
      .catch((error: unknown) => ctx.log.warn({ err: error, shard }, "could not end a refused session"));
    return { failed: refused.refused, h, sent: refused.sent, handled: refused.handled };
  }
  if (snapshot === undefined) {
    return expired === undefined ? { failed: "unknown" } : { failed: "expired", handled: expired };
  }
  // A replica's copy is kept by the shard that gave it until our replicas hold the session.
  const copy = copyOf;
  const session = new SessionActor(snapshot.full, ctx, link, snapshot, {
    ...(copy === undefined ? {} : { releaseCopy: () => releaseCopy(ctx, previd, copy) }),
    ...(copy?.replaces === undefined ? {} : { replaces: copy.replaces }),
  });
  ctx.sessions.set(session.sid, session);
  ctx.router.toUser({
    kind: "relocate",
    user: session.bare,
    session: session.location(),
    state: session.registration(),
  });
  // The lender keeps its copy (and its replicas) until ours hold the session.
  const from = lender;
  if (from !== undefined) session.whenReplicated(() => answerLender(ctx, from, true));
  return { session };
}

/** Whether session snapshot `a` is further along than `b`: moved more often, or, as often, wrote more. */
function isAhead(a: SessionSnapshot, b: SessionSnapshot): boolean {
  return a.moves !== b.moves ? a.moves > b.moves : a.sentOut > b.sentOut;
}

/**
 * Tells the shard that handed out a replica's copy of session `token` (promoted, or taken by a
 * resumption) that it may drop it: the session made of it is replicated here, or ended.
 */
export function releaseCopy(
  ctx: ShardContext,
  token: string,
  copy: Pick<CopyReference, "stream" | "holder">,
): void {
  if (copy.holder === undefined) return;
  ctx.router.send(copy.holder, { t: "worker", msg: { kind: "copy-held", token, stream: copy.stream } });
  // Remembered as long as a holder keeps an unconfirmed copy: a peer link that drops its queue
  // may lose this, and the copy would come back if our worker died (resendCopiesHeld).
  const now = Date.now();
  const released = ctx.releasedCopies;
  for (const [key, old] of released) {
    if (now - old.at < HANDED_OUT_KEEP_MS && released.size < MAX_RELEASED_COPIES) break;
    released.delete(key);
  }
  const key = `${token} ${copy.stream}`;
  released.delete(key);
  released.set(key, { holder: copy.holder, token, stream: copy.stream, at: now });
}

/** Released copies a shard remembers at most (see ShardContext.releasedCopies). */
const MAX_RELEASED_COPIES = 100_000;

/**
 * The peer link to node `nodeNo` dropped its queue (overflow) and is back: the `copy-held`
 * confirmations sent to holders there within HANDED_OUT_KEEP_MS go again, or an ended
 * session's copy would stay with its holder, and come back as a session if this worker died.
 * A holder that heard one before ignores it. Returns how many were sent.
 */
export function resendCopiesHeld(ctx: ShardContext, nodeNo: number): number {
  const now = Date.now();
  let sent = 0;
  for (const { holder, token, stream, at } of ctx.releasedCopies.values()) {
    if (nodeNoOf(holder) !== nodeNo || now - at >= HANDED_OUT_KEEP_MS) continue;
    ctx.router.send(holder, { t: "worker", msg: { kind: "copy-held", token, stream } });
    sent++;
  }
  return sent;
}

/**
 * A copy promoted after its owner died becomes a detached session here, awaiting `<resume/>`,
 * and registers with its UserActor; returns it, or undefined when the copy is a ghost.
 */
export function adoptCopy(
  ctx: ShardContext,
  copy: PromotedCopy,
  deadNodes: readonly number[],
): SessionActor | undefined {
  const { state, stream, lsn, replaces } = copy;
  const release = () => releaseCopy(ctx, state.token, copy);
  // A live session of this token here was resumed from the same owner: the copy is a ghost,
  // not needed once that session's replicas hold it. Unless the copy moved more often than the
  // session here, which the UserActor then ends (user-actor.ts supersedes): a lender restored
  // after its taker went quiet, whose taker went on elsewhere and died there (sim seed 36521:
  // the heir's copy was dropped as a ghost, and the client, at h 7, found only the lender, at 3).
  const live = ctx.resumable.get(state.token);
  if (live !== undefined && !live.isBehind(state)) {
    live.whenReplicated(release);
    return undefined;
  }
  const session = new SessionActor(state.full, ctx, undefined, state, {
    promoted: true,
    copyOf: { stream, lsn },
    releaseCopy: release,
    ...(replaces === undefined ? {} : { replaces }),
  });
  ctx.sessions.set(session.sid, session);
  // A resumption here takes this one; the UserActor tells the one behind it that it is stale.
  if (live !== undefined) ctx.resumable.set(state.token, session);
  session.detach();
  ctx.router.toUser({
    kind: "relocate",
    user: session.bare,
    session: session.location(),
    state: { ...session.registration(), deadNodes: [...deadNodes] },
  });
  return session;
}

/** Tells the shard that lent a session whether this resumption holds it (`ok`) or gave it back. */
function answerLender(ctx: ShardContext, lender: { shard: number; sid: string }, ok: boolean): void {
  ctx.router.send(lender.shard, { t: "worker", msg: { kind: "resume-done", sid: lender.sid, ok } });
}

function takeFrom(
  ctx: ShardContext,
  shard: number,
  user: BareJid,
  token: string,
  h: number,
): Promise<ResumeTake> {
  // This shard too answers through its router, so a replica held here is considered as well.
  return ctx.router.requestShard<ResumeTake>(
    shard,
    (reqId) => ({
      t: "worker",
      msg: {
        kind: "resume-take",
        token,
        h,
        toShard: ctx.index,
        reqId,
        user,
        gone: ctx.router.goneNodes(),
        taker: ctx.sidPrefix,
      },
    }),
    // The holder may be a node that just died: answer the client soon, it will log in again.
    RESUME_TAKE_TIMEOUT_MS,
  );
}

/** Takes a resumable session held by this shard, for a `<resume/>` that arrived anywhere. */
export function takeResumable(ctx: ShardContext, token: string, h: number, user: BareJid): ResumeTake {
  const session = ctx.resumable.get(token);
  if (session === undefined) {
    // Lent to another resumption that has not confirmed yet: ask again shortly.
    for (const lent of ctx.lent.values())
      if (lent.token === token && lent.bare === user) return { pending: true };
    const expired = ctx.expiredResumable.get(token);
    // Only the session's own user learns anything of it.
    return expired !== undefined && expired.user === user ? { expired: expired.handledIn } : undefined;
  }
  // The session must belong to the user who authenticated the new stream.
  if (session.bare !== user) return undefined;
  // A lender's copy waiting to learn whether its taker lives: ask again shortly.
  if (session.standby) return { pending: true };
  const lent = session.lendForResume(h);
  if (lent === undefined) return undefined;
  const here = { shard: ctx.index, sid: session.sid };
  return "refused" in lent ? { ...lent, holder: here } : { snapshot: lent, lender: here };
}

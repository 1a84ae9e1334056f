/**
 * What a reload (SIGHUP, `starling reload`, `POST /api/reload`) may change while the node runs,
 * and how. The sections below are read where they are used (a limit when a stream opens or a
 * stanza arrives, the auth settings when a provider is made), so changing them in place is
 * enough; everything else (ports, domain, store, cluster, workers) is bound at start and needs a
 * restart, which the reload reports instead of half-applying.
 */
import type { Config } from "./defaults.ts";

/** Keys (or key prefixes, ending in a dot) a reload applies. */
export const RELOADABLE = [
  "tls.",
  "limits.",
  "registration.",
  "auth.",
  "log.level",
  "web.origins",
  "web.trustedProxies",
] as const;

/**
 * Keys under a reloadable prefix that are bound at start all the same: the login throttle's
 * memory bound sizes its tables when the worker starts.
 */
const BOUND_AT_START = ["limits.loginThrottleMaxEntries"];

/** The leaf keys whose values differ between two configurations, by reloadability. */
export function configChanges(
  before: Readonly<Config>,
  after: Readonly<Config>,
): { changed: string[]; needRestart: string[] } {
  const changed: string[] = [];
  const needRestart: string[] = [];
  for (const key of differingKeys(before, after, "")) {
    const reloadable =
      !BOUND_AT_START.includes(key) &&
      RELOADABLE.some((r) => (r.endsWith(".") ? key.startsWith(r) : key === r));
    (reloadable ? changed : needRestart).push(key);
  }
  return { changed, needRestart };
}

/**
 * Copies the reloadable sections of `next` into `target`, in place, so that every holder of
 * `target` (or of one of its sections) sees them. `target` must not be frozen: a worker's copy,
 * which it received by structured clone.
 */
export function applyReloadable(target: Config, next: Readonly<Config>): void {
  Object.assign(target.tls, next.tls);
  Object.assign(target.limits, {
    ...next.limits,
    loginThrottleMaxEntries: target.limits.loginThrottleMaxEntries,
  });
  Object.assign(target.registration, structuredClone(next.registration));
  Object.assign(target.auth, structuredClone(next.auth));
  target.log.level = next.log.level;
  target.web.origins = [...next.web.origins];
  target.web.trustedProxies = [...next.web.trustedProxies];
}

/** The reloaded configuration as the node runs it: `next`'s reloadable parts, `current`'s others. */
export function effectiveConfig(current: Readonly<Config>, next: Readonly<Config>): Config {
  const merged = structuredClone(current) as Config;
  applyReloadable(merged, next);
  return merged;
}

function differingKeys(a: unknown, b: unknown, path: string): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  if (isObject(a) && isObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((key) => differingKeys(a[key], b[key], path === "" ? key : `${path}.${key}`));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [path];
}

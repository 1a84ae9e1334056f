/**
 * Loads the node configuration: defaults, then `cluster.config.json` (or `--config FILE`), then
 * `STARLING_*` environment variables, then command-line overrides. Every problem is collected
 * and reported at once with the key that holds it; the result is deep-frozen.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { isAbsolute, resolve } from "node:path";
import { queryProblem } from "../auth/sql-query.ts";
import { XmppServerError } from "../errors.ts";
import { isLoopbackHost } from "../loopback.ts";
import { type ClusterConfig, type Config, DEFAULT_CONFIG } from "./defaults.ts";

type Check = (value: unknown) => string | undefined;

const positiveInt: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) > 0 ? undefined : "must be a positive integer";
const nonNegativeInt: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) >= 0 ? undefined : "must be an integer >= 0";
const port: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 65535
    ? undefined
    : "must be a port number (0-65535)";
const nonEmptyString: Check = (v) =>
  typeof v === "string" && v.length > 0 ? undefined : "must be a non-empty string";
const boolean: Check = (v) => (typeof v === "boolean" ? undefined : "must be true or false");
const pathOrNull: Check = (v) =>
  v === null || (typeof v === "string" && v.length > 0) ? undefined : "must be a path or null";
const stringList: Check = (v) =>
  Array.isArray(v) && v.every((x) => typeof x === "string") ? undefined : "must be a list of strings";
const originList: Check = (v) =>
  Array.isArray(v) && v.every((x) => typeof x === "string" && /^https?:\/\/[^/\s]+$/.test(x))
    ? undefined
    : 'must be a list of origins such as "https://example.org" (scheme and host, no path)';
const oneOf =
  (...values: string[]): Check =>
  (v) =>
    typeof v === "string" && values.includes(v) ? undefined : `must be one of ${values.join(", ")}`;
const domainName: Check = (v) =>
  typeof v === "string" && /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/i.test(v) ? undefined : "must be a domain name";

const sqlQuery: Check = (v) =>
  typeof v === "string" && v.trim().length > 0 ? queryProblem(v) : "must be a non-empty SQL query";

const nullOr =
  (check: Check): Check =>
  (v) =>
    v === null ? undefined : check(v);
const nodeName: Check = (v) =>
  typeof v === "string" && /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(v)
    ? undefined
    : "must be 1-63 letters, digits, '.', '_' or '-'";
const hostPort: Check = (v) =>
  typeof v === "string" && /^[^\s:]+:\d{1,5}$/.test(v) && Number(v.split(":").at(-1)) <= 65535
    ? undefined
    : "must be host:port";

/** How each leaf key is checked; a key not listed here is unknown and rejected. */
const SCHEMA: Record<string, Check> = {
  domain: domainName,
  host: nonEmptyString,
  "ports.c2s": port,
  "ports.tls": port,
  "ports.http": port,
  "ports.web": port,
  "ports.webPlain": nullOr(port),
  "web.trustedProxies": (v) =>
    Array.isArray(v) && v.every((x) => typeof x === "string" && isIP(x) !== 0)
      ? undefined
      : 'must be a list of IP addresses such as ["127.0.0.1", "::1"]',
  "admin.host": nonEmptyString,
  "admin.key": nullOr((v) =>
    typeof v === "string" && v.length >= 32 && !/\s/.test(v)
      ? undefined
      : "must be a string of at least 32 characters without spaces (openssl rand -hex 32 makes one)",
  ),
  "web.origins": originList,
  "web.behindProxy": nullOr(boolean),
  dataDir: nonEmptyString,
  "store.url": (v) =>
    v === null || (typeof v === "string" && /^postgres(ql)?:\/\/./.test(v))
      ? undefined
      : "must be a postgres:// URL or null",
  // Shard numbers give each node 1,024 slots, the last of them its main thread (ring.ts).
  workers: (v) =>
    Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 1023
      ? undefined
      : "must be an integer from 0 (one per core) to 1023",
  partitions: positiveInt,
  "tls.certFile": pathOrNull,
  "tls.keyFile": pathOrNull,
  "tls.requireBeforeAuth": boolean,
  "limits.maxStanzaBytes": positiveInt,
  "limits.maxStanzaDepth": positiveInt,
  "limits.maxStanzaElements": positiveInt,
  "limits.maxOutboundBufferBytes": positiveInt,
  "limits.inputBytesPerSecond": positiveInt,
  "limits.inputBurstBytes": positiveInt,
  "limits.maxOfflineMessagesPerUser": nonNegativeInt,
  "limits.maxRosterItems": positiveInt,
  "limits.maxBlocklistItems": positiveInt,
  "limits.authTimeoutMs": positiveInt,
  "limits.loginFailuresPerAddress": positiveInt,
  "limits.loginFailuresPerAccount": positiveInt,
  "limits.loginFailuresPerAccountAddress": positiveInt,
  "limits.loginAttemptsInFlightPerAddress": positiveInt,
  "limits.loginStepsPerTurn": positiveInt,
  "limits.loginFailureWindowMs": positiveInt,
  "limits.loginKnownAddresses": positiveInt,
  "limits.loginKnownAddressTtlMs": positiveInt,
  "limits.loginThrottleMaxEntries": positiveInt,
  "limits.smResumeTimeoutSeconds": nonNegativeInt,
  "limits.smMaxUnackedStanzas": positiveInt,
  "limits.smMaxUnackedBytes": positiveInt,
  "limits.maxMailboxSize": positiveInt,
  "limits.clientPingIntervalMs": positiveInt,
  "limits.clientPingTimeoutMs": positiveInt,
  "auth.provider": oneOf("internal", "http", "sql"),
  "auth.http.url": nullOr((v) =>
    typeof v === "string" && /^https?:\/\/\S+$/.test(v) ? undefined : "must be an http:// or https:// URL",
  ),
  "auth.http.token": nullOr(nonEmptyString),
  "auth.http.timeoutMs": positiveInt,
  "auth.http.cacheTtlMs": nonNegativeInt,
  "auth.sql.url": nullOr((v) =>
    typeof v === "string" && /^(postgres(ql)?|mysql|mariadb):\/\/\S+$/.test(v)
      ? undefined
      : "must be a postgres://, mysql:// or mariadb:// URL",
  ),
  "auth.sql.passwordQuery": nullOr(sqlQuery),
  "auth.sql.existsQuery": nullOr(sqlQuery),
  "auth.sql.timeoutMs": positiveInt,
  "auth.sql.poolSize": (v) =>
    Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 100
      ? undefined
      : "must be an integer from 1 to 100",
  "auth.sql.cacheTtlMs": nonNegativeInt,
  "registration.allow": boolean,
  "registration.perAddressPerWindow": nonNegativeInt,
  "registration.windowMs": positiveInt,
  "registration.allowList": stringList,
  "log.level": oneOf("trace", "debug", "info", "warn", "error", "fatal", "silent"),
  "runtime.semiSpaceMiB": nonNegativeInt,
  "runtime.heapGrowingPercent": nonNegativeInt,
  "runtime.optimizeForSize": boolean,
  "cluster.node": nullOr(nodeName),
  "cluster.peerHost": nullOr(nonEmptyString),
  "cluster.peerPort": port,
  "cluster.clientHost": nullOr(nonEmptyString),
  "cluster.secret": nullOr((v) =>
    typeof v === "string" && v.length >= 16 ? undefined : "must be a string of at least 16 characters",
  ),
  "cluster.plainLinks": boolean,
  "cluster.tls.caFile": pathOrNull,
  "cluster.tls.certFile": pathOrNull,
  "cluster.tls.keyFile": pathOrNull,
  "cluster.join": nullOr(hostPort),
  "cluster.leaseMs": positiveInt,
  "cluster.leaseRenewMs": positiveInt,
  "cluster.takeoverMarginMs": nonNegativeInt,
  "cluster.pingIntervalMs": positiveInt,
  "cluster.pingTimeoutMs": positiveInt,
  "cluster.handoffTimeoutMs": positiveInt,
  "cluster.requestTimeoutMs": positiveInt,
  "cluster.replicationFactor": positiveInt,
  "cluster.replicationBatchMs": nonNegativeInt,
  "cluster.chainWrites": boolean,
  "cluster.drainTimeoutMs": nonNegativeInt,
  "cluster.maxPeerBufferBytes": positiveInt,
};

/** Keys whose values may hold a password: a problem with one never quotes the value. */
const SECRET_KEYS = new Set(["auth.sql.url", "auth.http.token", "cluster.secret", "store.url", "admin.key"]);

/** Environment variables that override keys, e.g. `STARLING_DOMAIN=chat.example.org`. */
export const ENV_KEYS: Record<string, string> = {
  STARLING_DOMAIN: "domain",
  STARLING_HOST: "host",
  STARLING_C2S_PORT: "ports.c2s",
  STARLING_TLS_PORT: "ports.tls",
  STARLING_HTTP_PORT: "ports.http",
  STARLING_ADMIN_HOST: "admin.host",
  STARLING_ADMIN_KEY: "admin.key",
  STARLING_WEB_PORT: "ports.web",
  STARLING_DATA: "dataDir",
  STARLING_STORE: "store.url",
  STARLING_WORKERS: "workers",
  STARLING_ALLOW_REGISTRATION: "registration.allow",
  STARLING_AUTH_PROVIDER: "auth.provider",
  STARLING_LOG_LEVEL: "log.level",
  STARLING_OPTIMIZE_FOR_SIZE: "runtime.optimizeForSize",
  STARLING_NODE: "cluster.node",
  STARLING_PEER_HOST: "cluster.peerHost",
  STARLING_PEER_PORT: "cluster.peerPort",
  STARLING_SECRET: "cluster.secret",
  STARLING_PLAIN_PEER_LINKS: "cluster.plainLinks",
  STARLING_JOIN: "cluster.join",
  STARLING_REPLICATION_FACTOR: "cluster.replicationFactor",
};

/** Options for {@link loadConfig}. */
export interface LoadConfigOptions {
  /** Explicit config file; it must exist. Without it, `./cluster.config.json` is read if present. */
  configFile?: string;
  /** Key-path overrides, e.g. from command-line flags: `{ "ports.c2s": 5222 }`. */
  overrides?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    if (!isPlainObject(node[part])) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts.at(-1)!] = value;
}

/** Merges `source` into `target`, reporting keys that are not in the schema. */
function mergeInto(
  target: Record<string, unknown>,
  source: Record<string, unknown>,
  prefix: string,
  errors: string[],
) {
  for (const [key, value] of Object.entries(source)) {
    const path = prefix === "" ? key : `${prefix}.${key}`;
    if (SCHEMA[path] !== undefined) {
      target[key] = value;
    } else if (isPlainObject(value) && Object.keys(SCHEMA).some((k) => k.startsWith(`${path}.`))) {
      if (!isPlainObject(target[key])) target[key] = {};
      mergeInto(target[key] as Record<string, unknown>, value, path, errors);
    } else {
      errors.push(`${path}: unknown key`);
    }
  }
}

function getPath(source: Record<string, unknown>, path: string): unknown {
  let node: unknown = source;
  for (const part of path.split(".")) node = isPlainObject(node) ? node[part] : undefined;
  return node;
}

function parseEnvValue(path: string, raw: string): unknown {
  const current = getPath(DEFAULT_CONFIG as unknown as Record<string, unknown>, path);
  if (typeof current === "number") return raw.trim() === "" ? Number.NaN : Number(raw);
  if (typeof current === "boolean")
    return raw === "true" || raw === "1" ? true : raw === "false" || raw === "0" ? false : raw;
  return raw;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Loads, validates and freezes the configuration; throws `XSRV_CONFIG_INVALID` naming every bad key. */
export function loadConfig(options: LoadConfigOptions = {}): Readonly<Config> {
  const cwd = options.cwd ?? process.cwd();
  const env = options.env ?? process.env;
  const errors: string[] = [];
  const merged = structuredClone(DEFAULT_CONFIG) as unknown as Record<string, unknown>;

  // Whether the operator set the XEP-0198 byte limit, or it follows the peer links' budget.
  let logLimitSet = options.overrides?.["limits.smMaxUnackedBytes"] !== undefined;
  const file = options.configFile ?? env.STARLING_CONFIG;
  const path = resolve(cwd, file ?? "cluster.config.json");
  let text: string | undefined;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    if (file !== undefined || (error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new XmppServerError(
        "XSRV_CONFIG_INVALID",
        `cannot read config file ${path}: ${(error as Error).message}`,
      );
    }
  }
  if (text !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new XmppServerError(
        "XSRV_CONFIG_INVALID",
        `config file ${path} is not valid JSON: ${(error as Error).message}`,
      );
    }
    if (!isPlainObject(parsed)) {
      throw new XmppServerError("XSRV_CONFIG_INVALID", `config file ${path} must hold a JSON object`);
    }
    const { $comment: _comment, ...rest } = parsed;
    mergeInto(merged, rest, "", errors);
    if (getPath(rest, "limits.smMaxUnackedBytes") !== undefined) logLimitSet = true;
  }

  for (const [name, key] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw !== undefined) setPath(merged, key, parseEnvValue(key, raw));
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (SCHEMA[key] === undefined) errors.push(`${key}: unknown key`);
    else setPath(merged, key, value);
  }

  for (const [key, check] of Object.entries(SCHEMA)) {
    const value = getPath(merged, key);
    const problem = check(value);
    if (problem === undefined) continue;
    const got = SECRET_KEYS.has(key) ? `a ${typeof value}, not shown` : JSON.stringify(value);
    errors.push(`${key} ${problem} (got ${got})`);
  }
  const cluster = merged.cluster as ClusterConfig;
  for (const [prefix, files] of [
    ["tls", merged.tls as Config["tls"]],
    ["cluster.tls", cluster.tls],
  ] as const) {
    if ((files.certFile === null) !== (files.keyFile === null)) {
      errors.push(`${prefix}.certFile and ${prefix}.keyFile must be given together`);
    }
  }
  const storeUrl = (merged.store as Config["store"]).url;
  if (cluster.secret !== null && storeUrl === null) {
    errors.push("cluster.secret is set but store.url is not: a cluster needs a shared PostgreSQL store");
  }
  if (cluster.plainLinks === true && Object.values(cluster.tls).some((file) => file !== null)) {
    errors.push("cluster.tls.* is set but cluster.plainLinks is true: plain links use no certificate");
  }
  const auth = merged.auth as Config["auth"];
  if (auth.provider === "http" && auth.http.url === null) {
    errors.push(
      "auth.provider is http but auth.http.url is not set (the site's endpoint that checks passwords)",
    );
  }
  if (auth.provider === "sql" && (auth.sql.url === null || auth.sql.passwordQuery === null)) {
    errors.push(
      "auth.provider is sql but auth.sql.url or auth.sql.passwordQuery is not set (the site's database and the query that reads a user's password hash)",
    );
  }
  const admin = merged.admin as Config["admin"];
  if (admin.key === null && typeof admin.host === "string" && !isLoopbackHost(admin.host)) {
    errors.push(
      `admin.host is ${admin.host}, beyond loopback, but admin.key is not set: the admin API answers other machines only with a key`,
    );
  }
  const limits = merged.limits as Config["limits"];
  const linkQuarter = Math.floor(cluster.maxPeerBufferBytes / 4);
  if (!logLimitSet && Number.isSafeInteger(linkQuarter) && linkQuarter >= 1) {
    // Unset, it follows a smaller link budget, so a deployment that lowered the budget still starts.
    limits.smMaxUnackedBytes = Math.min(limits.smMaxUnackedBytes, linkQuarter);
  } else if (limits.smMaxUnackedBytes > cluster.maxPeerBufferBytes / 4) {
    errors.push(
      `limits.smMaxUnackedBytes (${limits.smMaxUnackedBytes}) must be at most a quarter of cluster.maxPeerBufferBytes (${cluster.maxPeerBufferBytes}): a resumed session sends its whole state to its replicas at once`,
    );
  }
  if (cluster.join !== null && cluster.secret === null) {
    errors.push("cluster.join needs cluster.secret (the secret every member shares)");
  }
  if (errors.length > 0) {
    throw new XmppServerError("XSRV_CONFIG_INVALID", `invalid configuration: ${errors.join("; ")}`);
  }

  const config = merged as unknown as Config;
  if (!isAbsolute(config.dataDir)) config.dataDir = resolve(cwd, config.dataDir);
  return deepFreeze(config);
}

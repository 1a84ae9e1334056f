/**
 * `starling check config`: settings that load (load-config.ts already refused the invalid ones)
 * but that an operator should know about, each with its reason and its fix.
 */
import type { Config } from "../config/defaults.ts";
import { isLoopbackHost } from "../loopback.ts";
import { type Finding, finding } from "./check-finding.ts";

/** The findings of the config section for a configuration that loaded. */
export function configFindings(config: Readonly<Config>): Finding[] {
  const found: Finding[] = [];
  const warn = (message: string, fix: string) => found.push(finding("warn", "config", message, fix));

  if (config.domain === "localhost") {
    warn(
      "domain is localhost: accounts are user@localhost, and clients on other machines cannot find the server",
      "set domain to the DNS name users will have in their addresses (example.org)",
    );
  } else if (isLoopbackHost(config.host)) {
    warn(
      `host is ${config.host}: every client listener binds to loopback, so clients of ${config.domain} on other machines cannot connect`,
      "set host to 0.0.0.0 (every address) or this machine's public address",
    );
  }
  if (!isLoopbackHost(config.admin.host)) {
    // load-config.ts refuses this without admin.key, so a key is set here.
    warn(
      `admin.host is ${config.admin.host}: the admin API (port ${config.ports.http}) answers other machines, guarded by admin.key alone`,
      "let a firewall admit only the machines that administer the server, or bind admin.host to 127.0.0.1 and reach it over SSH",
    );
  }
  if (config.registration.allow) {
    warn(
      `registration.allow is true: anyone who can reach the server can create accounts (XEP-0077), spammers included, at ${Math.max(1, config.registration.perAddressPerWindow)} per address per ${formatWindow(config.registration.windowMs)}`,
      "set registration.allow to false and create accounts with starling user add, unless open sign-up is the point",
    );
  }
  const unlimited = config.registration.allowList.filter((address) => !isLoopbackHost(address));
  if (config.registration.allow && unlimited.length > 0) {
    warn(
      `registration.allowList holds ${unlimited.join(", ")}: registrations from there are never rate-limited`,
      "keep only addresses you control (a web sign-up page's server) in registration.allowList",
    );
  }
  if (!config.tls.requireBeforeAuth) {
    // RFC 7590 §3.1 and RFC 6120 §5.3.1: a server may make TLS mandatory-to-negotiate; without
    // it, a client (or an attacker stripping STARTTLS from the features) may log in in clear.
    warn(
      "tls.requireBeforeAuth is false: a client that skips STARTTLS, or whose STARTTLS offer an attacker strips, logs in and registers over plain TCP",
      "set tls.requireBeforeAuth to true",
    );
  }
  if (config.cluster.plainLinks && config.cluster.secret !== null) {
    warn(
      "cluster.plainLinks is true: every stanza between cluster nodes crosses the network in clear",
      "set cluster.plainLinks to false on every node, unless the nodes share a network you trust",
    );
  }
  if (config.auth.provider === "http" && config.auth.http.url !== null) {
    const host = remoteHostOf(config.auth.http.url);
    if (host !== undefined && config.auth.http.url.startsWith("http:")) {
      warn(
        `auth.http.url is http:// to ${host}: every user's password crosses the network to it in clear`,
        "use an https:// URL",
      );
    }
  }
  if (config.auth.provider === "sql" && config.auth.sql.url !== null) {
    const problem = clearDatabase(config.auth.sql.url);
    if (problem !== undefined) {
      warn(
        `auth.sql.url ${problem}: password hashes cross the network to it in clear`,
        "turn on the driver's TLS in the URL (?sslmode=verify-full for PostgreSQL, ?ssl=... for MySQL and MariaDB)",
      );
    }
  }
  if (config.store.url !== null) {
    const problem = clearDatabase(config.store.url);
    if (problem !== undefined) {
      warn(
        `store.url ${problem}: messages, rosters and password hashes cross the network to it in clear`,
        "turn on TLS in the URL (?sslmode=verify-full)",
      );
    }
  }
  if (found.length === 0) found.push(finding("ok", "config", "no risky settings found"));
  return found;
}

/**
 * Why a database URL to another machine travels in clear (names the host, never the password),
 * or undefined. `pg` and `mysql2` use TLS only when the URL asks for it.
 */
function clearDatabase(url: string): string | undefined {
  const host = remoteHostOf(url);
  if (host === undefined) return undefined;
  const params = new URL(url).searchParams;
  const mode = params.get("sslmode") ?? params.get("ssl");
  if (mode !== null && mode !== "disable" && mode !== "false") return undefined;
  return `reaches ${host} without TLS`;
}

/** The host of a URL when it is another machine; undefined for loopback, sockets or a bad URL. */
function remoteHostOf(url: string): string | undefined {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[(.*)\]$/, "$1");
  } catch {
    return undefined;
  }
  return host === "" || isLoopbackHost(host) ? undefined : host;
}

/** `1 hour`, `10 minutes`, `90 seconds`. */
function formatWindow(ms: number): string {
  if (ms % 3_600_000 === 0) return ms === 3_600_000 ? "hour" : `${ms / 3_600_000} hours`;
  if (ms % 60_000 === 0) return `${ms / 60_000} minutes`;
  return `${Math.round(ms / 1000)} seconds`;
}

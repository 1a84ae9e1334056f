/** Picks the AuthProvider the configuration names (`auth.provider`); one file per provider. */
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../storage/store.ts";
import type { AuthProvider } from "./auth-provider.ts";
import { HttpAuthProvider } from "./http-auth.ts";
import { InternalAuthProvider } from "./internal-auth.ts";
import { TokenAuthProvider } from "./login-tokens.ts";
import { SqlAuthProvider } from "./sql-auth.ts";

/** The provider of `config.auth`, which also takes one-time login tokens (login-tokens.ts). */
export function createAuthProvider(
  config: Readonly<Config>,
  store: Pick<Store, "getAccount" | "takeLoginToken">,
  log: Logger,
): AuthProvider {
  return new TokenAuthProvider(configuredProvider(config, store, log), store);
}

function configuredProvider(
  config: Readonly<Config>,
  store: Pick<Store, "getAccount">,
  log: Logger,
): AuthProvider {
  switch (config.auth.provider) {
    case "http": {
      const { url, token, timeoutMs, cacheTtlMs } = config.auth.http;
      return new HttpAuthProvider({
        url: url!,
        token,
        timeoutMs,
        cacheTtlMs,
        log: log.child({ component: "auth-http" }),
      });
    }
    case "sql": {
      const { url, passwordQuery, existsQuery, timeoutMs, poolSize, cacheTtlMs } = config.auth.sql;
      // loadConfig refuses provider sql without the URL and the query.
      return new SqlAuthProvider({
        url: url!,
        passwordQuery: passwordQuery!,
        existsQuery,
        timeoutMs,
        poolSize,
        cacheTtlMs,
        log: log.child({ component: "auth-sql" }),
      });
    }
    case "internal":
      return new InternalAuthProvider(store);
    default: {
      const unreachable: never = config.auth.provider;
      throw new TypeError(`Unknown auth.provider ${String(unreachable)}`);
    }
  }
}

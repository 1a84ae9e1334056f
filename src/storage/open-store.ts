/**
 * The store a configuration asks for: PostgreSQL when `store.url` is set (what a cluster
 * shares), otherwise the embedded LevelDB store in the data directory.
 */
import { join } from "node:path";
import type { Config } from "../config/defaults.ts";
import type { Logger } from "../log.ts";
import { LevelStore } from "./level-store.ts";
import { PostgresStore } from "./postgres/postgres-store.ts";
import type { Store } from "./store.ts";

/** Creates (does not open) the configured store. */
export function createStore(config: Readonly<Config>, log?: Logger): Store & { readonly location: string } {
  const options = log === undefined ? {} : { log };
  return config.store.url !== null
    ? new PostgresStore(config.store.url, options)
    : new LevelStore(join(config.dataDir, "store"), options);
}

/**
 * Structured logging: one JSON line per event on stderr, with a level. The method set matches
 * pino's (and what fastify validates), so pino can replace this without touching callers.
 * Every connection and session gets a child logger, so a child is one small object: the
 * methods live on the prototype.
 */

/** Log levels, lowest first. */
export const LOG_LEVELS = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: 100,
} as const;

/** A level name. */
export type LogLevel = keyof typeof LOG_LEVELS;

type LogFn = (fields: Record<string, unknown> | string, msg?: string) => void;

/** The logger every module receives; `child` adds bindings such as `{ worker, conn, jid }`. */
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  child(bindings: Record<string, unknown>): Logger;
  isLevelEnabled(level: LogLevel): boolean;
  /** Changes the level of this logger, its parent and every child of either (a reload). */
  setLevel(level: LogLevel): void;
}

/** Keys whose values never reach a log line. */
const REDACTED_KEYS = new Set(["password", "secret", "token", "authorization", "sasl"]);

function serializeValue(key: string, value: unknown): unknown {
  if (REDACTED_KEYS.has(key.toLowerCase())) return "[redacted]";
  if (!(value instanceof Error)) return value;
  const code = (value as { code?: unknown }).code;
  return { name: value.name, message: value.message, code, stack: value.stack };
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  level?: LogLevel;
  bindings?: Record<string, unknown>;
  write?: (line: string) => void;
}

class JsonLogger implements Logger {
  /** Shared by a logger and all its children, so that one setLevel changes them all. */
  readonly #threshold: { value: number };
  readonly #bindings: Record<string, unknown>;
  readonly #write: (line: string) => void;

  constructor(
    threshold: { value: number },
    bindings: Record<string, unknown>,
    write: (line: string) => void,
  ) {
    this.#threshold = threshold;
    this.#bindings = bindings;
    this.#write = write;
  }

  #emit(level: Exclude<LogLevel, "silent">, fields: Record<string, unknown> | string, msg?: string): void {
    if (LOG_LEVELS[level] < this.#threshold.value) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level, ...this.#bindings };
    if (typeof fields === "string") {
      record.msg = fields;
    } else {
      for (const [key, value] of Object.entries(fields)) record[key] = serializeValue(key, value);
      if (msg !== undefined) record.msg = msg;
    }
    this.#write(`${JSON.stringify(record)}\n`);
  }

  trace(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("trace", fields, msg);
  }
  debug(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("debug", fields, msg);
  }
  info(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("info", fields, msg);
  }
  warn(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("warn", fields, msg);
  }
  error(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("error", fields, msg);
  }
  fatal(fields: Record<string, unknown> | string, msg?: string): void {
    this.#emit("fatal", fields, msg);
  }
  child(bindings: Record<string, unknown>): Logger {
    return new JsonLogger(this.#threshold, { ...this.#bindings, ...bindings }, this.#write);
  }
  isLevelEnabled(level: LogLevel): boolean {
    return LOG_LEVELS[level] >= this.#threshold.value;
  }
  setLevel(level: LogLevel): void {
    this.#threshold.value = LOG_LEVELS[level];
  }
}

/** Creates a JSON-lines logger writing to stderr (or `write`). */
export function createLogger(options: LoggerOptions = {}): Logger {
  return new JsonLogger(
    { value: LOG_LEVELS[options.level ?? "info"] },
    options.bindings ?? {},
    options.write ?? ((line: string) => process.stderr.write(line)),
  );
}

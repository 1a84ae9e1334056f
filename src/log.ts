/**
 * Structured logging: one JSON line per event on stderr, with a level. The method set matches
 * pino's (and what fastify validates), so pino can replace this without touching callers.
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
}

/** Keys whose values never reach a log line. */
const REDACTED_KEYS = new Set(["password", "secret", "token", "authorization", "sasl"]);

function redact(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const key of Object.keys(fields)) {
    if (REDACTED_KEYS.has(key.toLowerCase())) {
      out ??= { ...fields };
      out[key] = "[redacted]";
    }
  }
  return out ?? fields;
}

function serializeError(value: unknown): unknown {
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

/** Creates a JSON-lines logger writing to stderr (or `write`). */
export function createLogger(options: LoggerOptions = {}): Logger {
  const threshold = LOG_LEVELS[options.level ?? "info"];
  const bindings = options.bindings ?? {};
  const write = options.write ?? ((line: string) => process.stderr.write(line));

  const emit = (
    level: Exclude<LogLevel, "silent">,
    fields: Record<string, unknown> | string,
    msg?: string,
  ) => {
    if (LOG_LEVELS[level] < threshold) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level, ...bindings };
    if (typeof fields === "string") {
      record.msg = fields;
    } else {
      const clean = redact(fields);
      for (const [key, value] of Object.entries(clean)) record[key] = serializeError(value);
      if (msg !== undefined) record.msg = msg;
    }
    write(`${JSON.stringify(record)}\n`);
  };

  return {
    trace: (f, m) => emit("trace", f, m),
    debug: (f, m) => emit("debug", f, m),
    info: (f, m) => emit("info", f, m),
    warn: (f, m) => emit("warn", f, m),
    error: (f, m) => emit("error", f, m),
    fatal: (f, m) => emit("fatal", f, m),
    child: (more) => createLogger({ ...options, bindings: { ...bindings, ...more } }),
    isLevelEnabled: (level) => LOG_LEVELS[level] >= threshold,
  };
}

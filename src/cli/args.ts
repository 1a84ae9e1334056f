/**
 * Command-line parsing shared by every `starling` command: `node:util` `parseArgs` in strict
 * mode, with its errors turned into one-line `XSRV_CLI_USAGE` messages that name the flag.
 */
import { type ParseArgsOptionsConfig, parseArgs } from "node:util";
import { XmppServerError } from "../errors.ts";
import { LOG_LEVELS, type LogLevel } from "../log.ts";

/** What every command module exports; `main.ts` dispatches to it. */
export interface Command {
  /** The text `--help` prints. */
  readonly help: string;
  /** Runs the command; resolves when it is done, throws on failure. */
  run(args: readonly string[], context: CommandContext): Promise<void>;
}

/** What `main.ts` hands a command. */
export interface CommandContext {
  /** Aborted on the first SIGTERM or SIGINT, for commands that keep running (`start`). */
  readonly signal: AbortSignal;
  /** Writes one line of command output to stdout. */
  out(line: string): void;
}

/** Builds an `XSRV_CLI_USAGE` error; `main.ts` prints it as one line and exits 2. */
export function usageError(message: string, hint?: string): XmppServerError {
  return new XmppServerError("XSRV_CLI_USAGE", hint === undefined ? message : `${message} (see ${hint})`);
}

/** The parsed flags and positionals of one command. */
export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/**
 * Parses `args` strictly against `options`; every parse error becomes `XSRV_CLI_USAGE` naming
 * the flag, with `helpHint` (e.g. `"starling start --help"`) appended.
 */
export function parseCommandArgs(
  args: readonly string[],
  options: ParseArgsOptionsConfig,
  helpHint: string,
  allowPositionals = false,
): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options,
      strict: true,
      allowPositionals,
    });
    return { values: values as ParsedArgs["values"], positionals };
  } catch (error) {
    throw usageError(describeParseError(error), helpHint);
  }
}

/** Rewrites Node's multi-sentence parseArgs messages into a short one naming the flag. */
function describeParseError(error: unknown): string {
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  // Node quotes the offending token first, e.g. "Unknown option '--foo'" or
  // "Option '--c2s-port <value>' argument missing".
  const quoted = /'([^']*)'/.exec(message)?.[1] ?? "";
  const flag = /--[\w-]+/.exec(quoted)?.[0] ?? quoted;
  switch (code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION":
      return `unknown option ${flag}`;
    case "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL":
      return `unexpected argument "${quoted}"`;
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE":
      return message.includes("does not take an argument")
        ? `option ${flag} does not take a value`
        : `option ${flag} needs a value`;
    default:
      return message;
  }
}

/** Parses a port flag value (0-65535; 0 lets the OS choose). */
export function parsePortFlag(flag: string, value: string | boolean | undefined): number | undefined {
  if (value === undefined) return undefined;
  const port = typeof value === "string" && /^\d{1,5}$/.test(value) ? Number(value) : Number.NaN;
  if (!(port >= 0 && port <= 65535)) {
    throw usageError(`option --${flag} must be a port number (0-65535), got ${JSON.stringify(value)}`);
  }
  return port;
}

/** Parses a non-negative integer flag value. */
export function parseCountFlag(flag: string, value: string | boolean | undefined): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !/^\d{1,6}$/.test(value)) {
    throw usageError(`option --${flag} must be an integer >= 0, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

/** Parses a `--log-level` value. */
export function parseLogLevelFlag(flag: string, value: string | boolean | undefined): LogLevel | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !Object.hasOwn(LOG_LEVELS, value)) {
    throw usageError(
      `option --${flag} must be one of ${Object.keys(LOG_LEVELS).join(", ")}, got ${JSON.stringify(value)}`,
    );
  }
  return value as LogLevel;
}

/** A string flag value, or undefined when absent. */
export function stringFlag(value: string | boolean | undefined): string | undefined {
  return typeof value === "string" ? value : undefined;
}

/**
 * One finding of `starling check`: what a section found, how bad it is, and what to do about it.
 * Shared by the command and its sections (`check-config.ts`, `check-certs.ts`, `check-dns.ts`).
 */

/**
 * How bad a finding is: `ok` and `info` say what was checked, `warn` is risky but works,
 * `error` will fail for clients (and makes `starling check` exit 1).
 */
export type FindingLevel = "ok" | "info" | "warn" | "error";

/** The sections `starling check` runs, in the order it runs them. */
export const CHECK_SECTIONS = ["config", "certs", "dns"] as const;

/** A section of `starling check`. */
export type CheckSection = (typeof CHECK_SECTIONS)[number];

/** One line of `starling check` output. */
export interface Finding {
  readonly level: FindingLevel;
  readonly section: CheckSection;
  /** What was found, naming the key, file or record. */
  readonly message: string;
  /** What to change, for `warn` and `error`. */
  readonly fix?: string;
}

/** Builds a finding; `fix` is left out when undefined (exactOptionalPropertyTypes). */
export function finding(level: FindingLevel, section: CheckSection, message: string, fix?: string): Finding {
  return fix === undefined ? { level, section, message } : { level, section, message, fix };
}

/** `warn  certs: message (fix: ...)`: the level padded so messages line up. */
export function formatFinding(f: Finding): string {
  const fix = f.fix === undefined ? "" : ` (fix: ${f.fix})`;
  return `${f.level.padEnd(5)} ${f.section}: ${f.message}${fix}`;
}

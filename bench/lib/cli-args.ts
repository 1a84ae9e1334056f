/** Option values of the bench scripts: one message each for a bad one (exit code 2 follows). */

/** A positive number from `--name` (an integer unless `integer` is false), or `fallback`. */
export function positiveNumber(
  name: string,
  value: string | undefined,
  fallback: number,
  integer = true,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
    throw new RangeError(`--${name} must be a positive ${integer ? "integer" : "number"}, got "${value}"`);
  return n;
}

/** `host:port` from `--name`. */
export function hostPort(name: string, value: string): { host: string; port: number } {
  const colon = value.lastIndexOf(":");
  const port = Number(value.slice(colon + 1));
  if (colon < 1 || !Number.isInteger(port) || port < 1 || port > 65535)
    throw new RangeError(`--${name} must be host:port, got "${value}"`);
  return { host: value.slice(0, colon), port };
}

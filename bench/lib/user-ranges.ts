/** Splits users 1..total into `parts` consecutive ranges whose sizes differ by at most one. */
export function userRanges(total: number, parts: number): { first: number; count: number }[] {
  const k = Math.max(1, Math.min(parts, total));
  const ranges: { first: number; count: number }[] = [];
  let first = 1;
  for (let i = 0; i < k; i++) {
    const count = Math.floor(total / k) + (i < total % k ? 1 : 0);
    ranges.push({ first, count });
    first += count;
  }
  return ranges;
}

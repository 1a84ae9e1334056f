/**
 * Server-side resource figures read from Linux procfs, so they work for any server process
 * (Starling, Prosody, ejabberd) given its pid.
 */
import { readFileSync } from "node:fs";

let clockTicks: number | undefined;

/** USER_HZ, the unit of utime/stime in /proc/<pid>/stat; 100 on every mainstream Linux build. */
function ticksPerSecond(): number {
  clockTicks ??= Number(process.env.CLK_TCK ?? 100);
  return clockTicks;
}

/** Resident set size of a process in KiB (VmRSS in /proc/<pid>/status), or undefined if unreadable. */
export function readRssKib(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    for (const line of status.split("\n")) {
      if (line.startsWith("VmRSS:")) return Number.parseInt(line.slice(6).trim(), 10);
    }
  } catch {
    // The process is gone or not ours to read.
  }
  return undefined;
}

/**
 * CPU seconds (user + system) a process has used, all its threads included, from fields 14 and
 * 15 of /proc/<pid>/stat (proc(5)). Undefined if the process cannot be read.
 */
export function readCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) is parenthesised and may contain spaces: split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // fields[0] is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** CPU seconds this Node.js process has used so far (user + system). */
export function ownCpuSeconds(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

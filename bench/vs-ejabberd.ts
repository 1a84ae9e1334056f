/**
 * Starling and ejabberd side by side, one after the other in one run on the same machine with
 * the same load generator (bench/c2s-throughput.ts) and the same arguments: ejabberd first
 * (a throwaway instance of the Debian package on loopback, users made by in-band registration),
 * then a fresh Starling node. Prints each server's JSON line on stderr and one table on stdout:
 * every figure of both, and Starling's as a ratio of ejabberd's.
 *
 *   npx node bench/vs-ejabberd.ts [--port 25222] [--] [c2s-throughput options...]
 *   npx node bench/vs-ejabberd.ts -- --users 10000 --tls --rate 2000 --login-concurrency 50
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startEjabberd } from "./lib/ejabberd-server.ts";

const FIGURES: [string, string][] = [
  ["logins_per_s", "logins/s, plain TCP"],
  ["logins_per_s_starttls", "logins/s, STARTTLS"],
  ["logins_per_s_cold_client", "logins/s, first run"],
  ["server_cpu_ms_per_login", "server CPU per plain login (ms)"],
  ["server_cpu_ms_per_starttls_login", "server CPU per STARTTLS login (ms)"],
  ["server_cpu_ms_per_cold_login", "server CPU per first-run login (ms)"],
  ["rss_per_session_kib", "RSS per session (KiB)"],
  ["rss_sessions", "sessions measured for RSS"],
  ["rate_msgs_per_s", "fixed rate (msgs/s)"],
  ["latency_p50_ms", "latency p50 at the fixed rate (ms)"],
  ["latency_p99_ms", "latency p99 at the fixed rate (ms)"],
  ["latency_max_ms", "latency max at the fixed rate (ms)"],
  ["cpu_phase_latency_p99_ms", "latency p99 at 1,000/s (ms)"],
  ["cpu_phase_latency_max_ms", "latency max at 1,000/s (ms)"],
  ["cpu_s_per_1000_msgs", "CPU-s per 1,000 msgs at 1,000/s"],
  ["cpu_s_per_1000_msgs_at_rate", "CPU-s per 1,000 msgs at the fixed rate"],
  ["undelivered", "undelivered"],
  ["duplicates", "duplicates"],
  ["sessions_dropped", "sessions dropped"],
  ["login_failures", "login failures"],
];

const benchScript = fileURLToPath(new URL("./c2s-throughput.ts", import.meta.url));

/** Runs c2s-throughput with `args` and returns its one JSON line. */
function throughput(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      process.execPath,
      [benchScript, ...args],
      { maxBuffer: 16 * 1024 * 1024 },
      (error, stdout) => {
        if (error) return reject(error);
        const line = stdout.trim().split("\n").at(-1) ?? "";
        try {
          resolve(JSON.parse(line) as Record<string, unknown>);
        } catch {
          reject(new Error(`c2s-throughput printed no JSON line: ${line.slice(0, 200)}`));
        }
      },
    );
    child.stderr?.pipe(process.stderr);
  });
}

function cell(value: unknown): string {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(2);
  return value === null || value === undefined ? "–" : String(value);
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    allowPositionals: true,
    options: { port: { type: "string" }, domain: { type: "string" }, help: { type: "boolean" } },
  });
  if (values.help) {
    process.stdout.write(
      "Usage: npx node bench/vs-ejabberd.ts [--port P] [--domain D] [--] [c2s-throughput options]\n",
    );
    return;
  }
  const port = Number(values.port ?? 25222);
  const domain = values.domain ?? "localhost";
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    process.stderr.write(`--port must be a port number, got "${values.port}"\n`);
    process.exit(2);
  }
  const ejabberd = await startEjabberd({ port, domain });
  let theirs: Record<string, unknown>;
  try {
    const target = ["--target", `127.0.0.1:${port}`, "--domain", domain];
    // The users are registered in a short first run; the measured run starts from a fresh VM
    // on the same data, so its memory per session is not offset by what registering left.
    await throughput([...target, "--register", ...positionals, "--duration", "1", "--cpu-duration", "1"]);
    await ejabberd.restart();
    theirs = await throughput([...target, "--pid", String(ejabberd.pid), ...positionals]);
  } finally {
    await ejabberd.stop();
  }
  process.stderr.write(`ejabberd: ${JSON.stringify(theirs)}\n`);
  const ours = await throughput(["--domain", domain, ...positionals]);
  process.stderr.write(`starling: ${JSON.stringify(ours)}\n`);
  const rows = FIGURES.map(([key, label]) => {
    const a = ours[key];
    const b = theirs[key];
    const ratio = typeof a === "number" && typeof b === "number" && b !== 0 ? (a / b).toFixed(2) : "–";
    return `| ${label} | ${cell(a)} | ${cell(b)} | ${ratio} |`;
  });
  process.stdout.write(
    [
      `${ours.users} users, arguments: ${positionals.join(" ") || "(defaults)"}`,
      "",
      "| figure | Starling | ejabberd | Starling / ejabberd |",
      "|---|---|---|---|",
      ...rows,
      "",
    ].join("\n"),
  );
}

await main();

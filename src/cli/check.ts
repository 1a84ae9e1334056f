/**
 * `starling check`: what `prosodyctl check` does for Prosody. It loads the configuration as
 * `starling start` would, then checks the settings, the certificate clients will be served,
 * and the DNS records clients use to find the server, printing one line per finding.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Config } from "../config/defaults.ts";
import { loadConfig } from "../config/load-config.ts";
import { XmppServerError } from "../errors.ts";
import { type CommandContext, parseCommandArgs, stringFlag, usageError } from "./args.ts";
import { certificateFindings } from "./check-certs.ts";
import { configFindings } from "./check-config.ts";
import { createResolver, dnsFindings } from "./check-dns.ts";
import { CHECK_SECTIONS, type CheckSection, type Finding, finding, formatFinding } from "./check-finding.ts";

const HINT = "starling check --help";

/** `--help` text. */
export const help = `Usage: starling check [config|certs|dns]... [--config FILE] [--dns-server HOST:PORT]

Checks a deployment, as prosodyctl check does, and prints one line per finding: ok, info, warn
(risky, but works) or error (will fail for clients), with a fix. Runs every section unless some
are named:
  config    loads the configuration as starling start does, then warns about risky settings
            (open registration, TLS not required, plain peer links, passwords or database
            traffic in clear, the admin API beyond loopback, a loopback-only listener)
  certs     the certificate clients are served (tls.certFile, or the one generated in
            DATA/tls): names the domain (RFC 6125), expiry, key, issuer, chain order
  dns       the SRV records _xmpp-client._tcp (RFC 6120) and _xmpps-client._tcp (XEP-0368)
            of the domain: present, targets with addresses and no CNAME, ports as configured

Exits 0 when nothing is an error (warnings do not fail), 1 when something is, and 2 for a bad
argument or an invalid configuration (as starling start does, naming the bad keys).

Options:
  --config FILE           configuration file (default: ./cluster.config.json if present)
  --dns-server HOST:PORT  ask this DNS server instead of the system's (an air-gapped or
                          split-horizon network; tests); e.g. 127.0.0.1:5353
  -h, --help              show this help
`;

const OPTIONS = {
  config: { type: "string" },
  "dns-server": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Runs `starling check`. */
export async function run(args: readonly string[], context: CommandContext): Promise<void> {
  const { values, positionals } = parseCommandArgs(args, OPTIONS, HINT, true);
  if (values.help === true) return context.out(help.trimEnd());
  for (const name of positionals) {
    if (!(CHECK_SECTIONS as readonly string[]).includes(name)) {
      throw usageError(`unknown check "${name}" (expected config, certs or dns)`, HINT);
    }
  }
  const sections = CHECK_SECTIONS.filter((s) => positionals.length === 0 || positionals.includes(s));
  const dnsServer = stringFlag(values["dns-server"]);
  let resolver: ReturnType<typeof createResolver> | undefined;
  if (sections.includes("dns")) {
    try {
      resolver = createResolver(dnsServer);
    } catch {
      throw usageError(
        `option --dns-server must be an address with an optional port (127.0.0.1:5353, [::1]:53), got ${JSON.stringify(dnsServer)}`,
      );
    }
  }

  const configFile = stringFlag(values.config);
  let config: Readonly<Config>;
  try {
    config = loadConfig(configFile === undefined ? {} : { configFile });
  } catch (error) {
    if (!(error instanceof XmppServerError) || error.code !== "XSRV_CONFIG_INVALID") throw error;
    context.out(
      formatFinding(
        finding(
          "error",
          "config",
          error.message,
          "correct the keys named; starling start refuses this configuration too",
        ),
      ),
    );
    // Exit 2 with the loader's line, as starling start does: nothing else can be checked.
    throw error;
  }

  const findings: Finding[] = [];
  const report = (more: readonly Finding[]) => {
    for (const f of more) context.out(formatFinding(f));
    findings.push(...more);
  };
  const source = configFile ?? process.env.STARLING_CONFIG;
  const path = resolve(source ?? "cluster.config.json");
  report([
    finding(
      "ok",
      "config",
      `${source !== undefined || existsSync(path) ? path : "the configuration (no file: defaults and STARLING_* variables)"} is valid; domain ${config.domain}`,
    ),
  ]);
  for (const section of sections satisfies CheckSection[]) {
    switch (section) {
      case "config":
        report(configFindings(config));
        break;
      case "certs":
        report(await certificateFindings(config));
        break;
      case "dns":
        report(await dnsFindings(config, resolver!));
        break;
      default:
        section satisfies never;
    }
  }
  const errors = findings.filter((f) => f.level === "error").length;
  const warnings = findings.filter((f) => f.level === "warn").length;
  const summary = `${plural(errors, "error")}, ${plural(warnings, "warning")}`;
  if (errors > 0) throw new XmppServerError("XSRV_CHECK_FAILED", `check found ${summary}`);
  context.out(`check passed: ${summary}`);
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

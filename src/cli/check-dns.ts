/**
 * `starling check dns`: the SRV records clients use to find the server, RFC 6120 §3.2.1
 * `_xmpp-client._tcp.<domain>` (STARTTLS) and XEP-0368 `_xmpps-client._tcp.<domain>` (direct
 * TLS), their targets' addresses, and their ports against the configured ones.
 */
import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";
import type { Config } from "../config/defaults.ts";
import { type Finding, finding } from "./check-finding.ts";

/** How long one DNS query waits for an answer, per try. */
export const DNS_TIMEOUT_MS = 3000;

/**
 * A resolver asking `server` ("127.0.0.1:5353", "[::1]:53", "192.0.2.53"), or the system's
 * servers when undefined. Throws `ERR_INVALID_IP_ADDRESS` (from `setServers`) for a bad server.
 */
export function createResolver(server?: string, timeoutMs = DNS_TIMEOUT_MS): Resolver {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 2 });
  if (server !== undefined) resolver.setServers([server]);
  return resolver;
}

/** One of the two client services. */
interface Service {
  name: string;
  port: number;
  portKey: string;
  spec: string;
}

/** Answers that mean "no such record", as opposed to a lookup that failed. */
const ABSENT = new Set(["ENOTFOUND", "ENODATA"]);

/** The findings of the dns section. */
export async function dnsFindings(config: Readonly<Config>, resolver: Resolver): Promise<Finding[]> {
  const domain = config.domain.toLowerCase();
  if (isIP(domain) !== 0 || domain === "localhost" || domain.endsWith(".localhost")) {
    return [finding("info", "dns", `skipped: clients do not look ${domain} up in DNS`)];
  }
  const found: Finding[] = [];
  const add = (level: Finding["level"], message: string, fix?: string) =>
    found.push(finding(level, "dns", message, fix));
  const targets = new Map<string, Promise<TargetAnswer>>();
  const lookUpTarget = (target: string) => {
    let answer = targets.get(target);
    if (answer === undefined) {
      answer = lookUp(resolver, target);
      targets.set(target, answer);
    }
    return answer;
  };

  const services: Service[] = [
    {
      name: `_xmpp-client._tcp.${domain}`,
      port: config.ports.c2s,
      portKey: "ports.c2s",
      spec: "RFC 6120 §3.2.1",
    },
    { name: `_xmpps-client._tcp.${domain}`, port: config.ports.tls, portKey: "ports.tls", spec: "XEP-0368" },
  ];
  for (const service of services) {
    const starttls = service.portKey === "ports.c2s";
    let records: { name: string; port: number; priority: number; weight: number }[];
    try {
      records = await resolver.resolveSrv(service.name);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (!ABSENT.has(code)) {
        add("error", `cannot look up ${service.name} SRV: ${code || (error as Error).message}`, lookupFix());
        continue;
      }
      records = [];
    }
    if (records.length === 0) {
      const record = `${service.name}. SRV 0 5 ${service.port || "PORT"} <this server's host name>.`;
      if (starttls) {
        // RFC 6120 §3.2.2: without SRV records, clients resolve the domain itself and connect
        // to 5222.
        const mismatch =
          service.port === 5222 ? "" : `, but ${service.portKey} is ${service.port} so they will not find it`;
        add(
          "warn",
          `no ${service.name} SRV record (${service.spec}): clients fall back to ${domain} port 5222${mismatch}`,
          `add "${record}"`,
        );
        found.push(...fallbackFindings(domain, await lookUpTarget(domain)));
      } else {
        add(
          "warn",
          `no ${service.name} SRV record (${service.spec}): clients cannot find direct TLS, and use STARTTLS`,
          `add "${record}"`,
        );
      }
      continue;
    }
    // RFC 2782: 'A Target of "." means that the service is decidedly not available at this domain.'
    if (records.every((r) => r.name === "" || r.name === ".")) {
      add(
        starttls ? "error" : "warn",
        `${service.name} SRV says the service is not available here (target ".")`,
        `point it at this server's host name, port ${service.port}`,
      );
      continue;
    }
    records.sort((a, b) => a.priority - b.priority || b.weight - a.weight);
    for (const record of records) {
      const where = `${service.name} -> ${record.name}:${record.port}`;
      const target = await lookUpTarget(record.name);
      // RFC 2782: "There MUST be one or more address records for this name, the name MUST NOT
      // be an alias (in the sense of RFC 1034 or RFC 2181)."
      if (target.kind === "alias") {
        add(
          "error",
          `${where}: the target is an alias (CNAME to ${target.canonical}), which RFC 2782 forbids; some clients will not connect`,
          `point the SRV record at ${target.canonical} itself`,
        );
      } else if (target.kind === "failed") {
        add("error", `${where}: cannot look up the target: ${target.reason}`, lookupFix());
      } else if (target.addresses.length === 0) {
        add(
          "error",
          `${where}: the target has no A or AAAA record, so clients cannot connect`,
          `add an A (and AAAA) record for ${record.name}`,
        );
      } else {
        add(
          "ok",
          `${where} (priority ${record.priority}, weight ${record.weight}) resolves to ${target.addresses.join(", ")}`,
        );
      }
      if (service.port !== 0 && record.port !== service.port) {
        add(
          "warn",
          `${where}: the port is not ${service.portKey} (${service.port}); fine only if a port forward or proxy maps ${record.port} to it`,
          `set the SRV port to ${service.port}, or ${service.portKey} to ${record.port}`,
        );
      }
    }
  }
  return found;
}

/** What a host name resolves to. */
type TargetAnswer =
  | { kind: "addresses"; addresses: string[] }
  | { kind: "alias"; canonical: string }
  | { kind: "failed"; reason: string };

async function lookUp(resolver: Resolver, host: string): Promise<TargetAnswer> {
  const absentAsEmpty = (error: unknown): string[] => {
    if (ABSENT.has((error as NodeJS.ErrnoException).code ?? "")) return [];
    throw error;
  };
  try {
    const [canonical] = await resolver.resolveCname(host).catch(absentAsEmpty);
    if (canonical !== undefined) return { kind: "alias", canonical };
    const [v4, v6] = await Promise.all([
      resolver.resolve4(host).catch(absentAsEmpty),
      resolver.resolve6(host).catch(absentAsEmpty),
    ]);
    return { kind: "addresses", addresses: [...v4, ...v6] };
  } catch (error) {
    return { kind: "failed", reason: (error as NodeJS.ErrnoException).code ?? (error as Error).message };
  }
}

/** Whether the domain itself, where clients go without SRV records, has an address. */
function fallbackFindings(domain: string, answer: TargetAnswer): Finding[] {
  switch (answer.kind) {
    case "failed":
      return [finding("error", "dns", `cannot look up ${domain}: ${answer.reason}`, lookupFix())];
    case "alias":
      return [
        finding(
          "ok",
          "dns",
          `${domain} is an alias of ${answer.canonical}, which clients without SRV records use`,
        ),
      ];
    case "addresses":
      return answer.addresses.length === 0
        ? [
            finding(
              "error",
              "dns",
              `${domain} has no A or AAAA record either: clients cannot find the server`,
              `add an _xmpp-client._tcp SRV record, or an A record for ${domain}`,
            ),
          ]
        : [
            finding(
              "ok",
              "dns",
              `${domain} resolves to ${answer.addresses.join(", ")} (where clients without SRV records go)`,
            ),
          ];
    default:
      return answer satisfies never;
  }
}

function lookupFix(): string {
  return "check the DNS server (--dns-server HOST:PORT asks another), or leave DNS out: starling check config certs";
}

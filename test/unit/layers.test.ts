/**
 * The layers hold (docs/architecture.md, "Layers"): every import of every source file is read
 * and checked against the imports that must never exist. Type-only imports count too: a type
 * from a layer it must not know is the first step to a call into it.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/** A folder (relative to the repository) and the folders it must never import from. */
interface Rule {
  from: string;
  never: string[];
  why: string;
}

export const RULES: readonly Rule[] = [
  {
    from: "src/xmpp/",
    never: ["actors/", "src/cluster/", "src/storage/", "src/transport/"],
    why: "the protocol is pure: transports, actors and the cluster build on it, not the reverse",
  },
  {
    from: "actors/",
    never: ["src/transport/", "src/cluster/"],
    why: "actors reach sockets and other actors only through envelopes and their context",
  },
  {
    from: "src/storage/",
    never: ["src/cluster/"],
    why: "fencing is a parameter of writes, not a dependency on the cluster",
  },
  {
    from: "src/transport/",
    never: ["actors/", "src/cluster/", "src/storage/"],
    why: "a transport moves bytes and elements; what a stream means is the protocol's, what it does the actors'",
  },
  {
    from: "src/auth/",
    never: ["actors/", "src/cluster/", "src/transport/", "src/http/"],
    why: "providers, tokens and the accounts layer serve the stream and the admin API; they know neither",
  },
];

/** Every import specifier of a TypeScript source: static, re-exports, dynamic. */
export function importsOf(source: string): string[] {
  const found: string[] = [];
  const patterns = [
    /\bimport\s+(?:type\s+)?[^'";]*?\bfrom\s*["']([^"']+)["']/gs,
    /\bexport\s+(?:type\s+)?[^'";]*?\bfrom\s*["']([^"']+)["']/gs,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const pattern of patterns) for (const match of source.matchAll(pattern)) found.push(match[1]!);
  return found;
}

/** The broken rules of one file: `file` and resolved targets are relative to the repository. */
export function violations(file: string, imports: readonly string[]): string[] {
  const broken: string[] = [];
  for (const specifier of imports) {
    if (!specifier.startsWith(".")) continue;
    const target = relative(ROOT, resolve(ROOT, dirname(file), specifier)).replaceAll("\\", "/");
    for (const rule of RULES) {
      if (!file.startsWith(rule.from)) continue;
      for (const forbidden of rule.never) {
        if (target.startsWith(forbidden))
          broken.push(`${file} imports ${target} (${rule.from} → ${forbidden}: ${rule.why})`);
      }
    }
  }
  return broken;
}

function sourceFiles(folder: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(join(ROOT, folder), { withFileTypes: true })) {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory()) files.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts")) files.push(path);
  }
  return files;
}

test("no source file imports what its layer must never import", () => {
  const files = [...sourceFiles("src"), ...sourceFiles("actors")];
  assert.ok(files.length > 50, `found only ${files.length} source files`);
  const broken = files.flatMap((file) => violations(file, importsOf(readFileSync(join(ROOT, file), "utf8"))));
  assert.deepEqual(broken, []);
});

test("the check catches each kind of forbidden import", () => {
  // Each line would break one rule; the checker must name every one of them.
  const planted: [string, string][] = [
    ["src/xmpp/x.ts", `import type { SessionActor } from "../../actors/session-actor.ts";`],
    ["src/xmpp/sasl/x.ts", `import { Store } from "../../storage/store.ts";`],
    ["src/xmpp/x.ts", `export { ShardRouter } from "../cluster/shard-router.ts";`],
    ["actors/x.ts", `import { listen } from "../src/transport/tcp-listener.ts";`],
    ["actors/x.ts", `const m = await import("../src/cluster/ring.ts");`],
    ["src/storage/x.ts", `import {\n  wrap,\n} from "../cluster/comlink-setup.ts";`],
    ["src/transport/x.ts", `import type { ShardContext } from "../cluster/shard-context.ts";`],
    ["src/auth/x.ts", `import { loginAccountKey } from "../../actors/login-actor.ts";`],
  ];
  for (const [file, source] of planted) {
    assert.equal(violations(file, importsOf(source)).length, 1, `${file}: ${source}`);
  }
  // And lets through what is allowed.
  assert.deepEqual(
    violations("src/transport/x.ts", importsOf(`import { StreamParser } from "../xmpp/stream-parser.ts";`)),
    [],
  );
  assert.deepEqual(violations("actors/x.ts", importsOf(`import type { Actor } from "./actor.ts";`)), []);
});

/**
 * The `sql` provider's placeholder convention (`:user`, `:domain`, `:jid` → `$n` or `?`) and the
 * validation of its `auth.sql.*` settings in loadConfig: one line per problem, no secret quoted.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { compileQuery, queryProblem } from "../../src/auth/sql-query.ts";
import { loadConfig } from "../../src/config/load-config.ts";

describe("sql-query", () => {
  it("compileQuery numbers the placeholders for PostgreSQL and uses ? for MySQL, in order", () => {
    const sql = "SELECT password FROM users WHERE name = :user AND (site = :domain OR :domain = '') LIMIT 1";
    assert.deepEqual(compileQuery(sql, "postgres"), {
      text: "SELECT password FROM users WHERE name = $1 AND (site = $2 OR $3 = '') LIMIT 1",
      parameters: ["user", "domain", "domain"],
    });
    assert.deepEqual(compileQuery(sql, "mysql"), {
      text: "SELECT password FROM users WHERE name = ? AND (site = ? OR ? = '') LIMIT 1",
      parameters: ["user", "domain", "domain"],
    });
  });

  it("compileQuery leaves strings, quoted names, comments and ::casts alone", () => {
    const sql = `SELECT pass::text, ':user', "a:user", \`b:jid\` FROM t -- :domain\nWHERE x = :jid /* :user */ AND y = 'it''s :user'`;
    const { text, parameters } = compileQuery(sql, "postgres");
    assert.deepEqual(parameters, ["jid"]);
    assert.equal(
      text,
      `SELECT pass::text, ':user', "a:user", \`b:jid\` FROM t -- :domain\nWHERE x = $1 /* :user */ AND y = 'it''s :user'`,
    );
    // MySQL's backslash escape does not end the string.
    assert.deepEqual(compileQuery("SELECT 'a\\' :user' FROM t WHERE u = :user", "mysql").parameters, [
      "user",
    ]);
  });

  it("compileQuery and queryProblem refuse an unknown placeholder and a query that ignores the user", () => {
    assert.throws(() => compileQuery("SELECT p FROM t WHERE u = :username", "mysql"), {
      name: "TypeError",
      message: /":username"/,
    });
    assert.match(queryProblem("SELECT p FROM t WHERE u = :login") ?? "", /Unknown placeholder ":login"/);
    assert.match(queryProblem("SELECT p FROM t WHERE d = :domain") ?? "", /:user or :jid/);
    assert.equal(queryProblem("SELECT p FROM t WHERE u = :user"), undefined);
  });
});

describe("loadConfig auth.sql", () => {
  let cwd: string;
  before(async () => {
    cwd = await mkdtemp(join(tmpdir(), "starling-sql-config-"));
  });
  after(() => rm(cwd, { recursive: true, force: true }));
  const load = (overrides: Record<string, unknown>) => loadConfig({ cwd, env: {}, overrides });

  it("takes a MariaDB URL and a query, with the documented defaults", () => {
    const config = load({
      "auth.provider": "sql",
      "auth.sql.url": "mariadb://wp:secret@127.0.0.1:3306/wordpress",
      "auth.sql.passwordQuery": "SELECT user_pass FROM wp_users WHERE user_login = :user",
    });
    assert.equal(config.auth.provider, "sql");
    assert.deepEqual(
      { ...config.auth.sql, url: undefined, passwordQuery: undefined },
      {
        url: undefined,
        passwordQuery: undefined,
        existsQuery: null,
        timeoutMs: 3_000,
        poolSize: 4,
        cacheTtlMs: 60_000,
      },
    );
  });

  it("refuses provider sql without its URL or query, in one line", () => {
    assert.throws(
      () => load({ "auth.provider": "sql" }),
      (error: Error) => {
        assert.equal((error as { code?: string }).code, "XSRV_CONFIG_INVALID");
        assert.match(
          error.message,
          /auth\.provider is sql but auth\.sql\.url or auth\.sql\.passwordQuery is not set/,
        );
        assert.doesNotMatch(error.message, /\n/);
        return true;
      },
    );
  });

  it("refuses bad values with the key, and never quotes the URL (it holds a password)", () => {
    assert.throws(
      () =>
        load({
          "auth.provider": "sql",
          "auth.sql.url": "mssql://sa:hunter2@db/site",
          "auth.sql.passwordQuery": "SELECT p FROM t WHERE u = :login",
          "auth.sql.existsQuery": "",
          "auth.sql.timeoutMs": 0,
          "auth.sql.poolSize": 1000,
          "auth.sql.cacheTtlMs": -1,
        }),
      (error: Error) => {
        assert.equal((error as { code?: string }).code, "XSRV_CONFIG_INVALID");
        for (const key of ["url", "passwordQuery", "existsQuery", "timeoutMs", "poolSize", "cacheTtlMs"]) {
          assert.match(error.message, new RegExp(`auth\\.sql\\.${key} `), key);
        }
        assert.match(error.message, /Unknown placeholder ":login"/);
        assert.doesNotMatch(error.message, /hunter2/);
        assert.doesNotMatch(error.message, /\n/);
        return true;
      },
    );
    assert.throws(() => load({ "auth.sql.pasword": "x" }), /auth\.sql\.pasword: unknown key/);
  });
});

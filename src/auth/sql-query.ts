/**
 * The placeholder convention of the `sql` provider's queries (docs/auth.md): the operator writes
 * `:user`, `:domain` and `:jid` where the login's local part, domain and bare JID go, and this
 * turns the text into the driver's own positional form, `$1, $2 …` for PostgreSQL or `?` for
 * MySQL/MariaDB, with the values in order. The values always travel as bound parameters (a
 * prepared statement), never spliced into the SQL, so no username can change the query.
 *
 * A `:name` inside a quoted string, a quoted identifier or a comment is left alone, and so is
 * PostgreSQL's `::type` cast.
 */

/** The values a query may name. */
export type SqlParameter = "user" | "domain" | "jid";

const PARAMETERS: readonly SqlParameter[] = ["user", "domain", "jid"];

/** Which placeholder syntax the driver takes. */
export type SqlDialect = "postgres" | "mysql";

/** A query ready for the driver. */
export interface CompiledQuery {
  /** The SQL with `$n` or `?` in place of each `:name`. */
  text: string;
  /** The value each positional parameter takes, in order. */
  parameters: SqlParameter[];
}

/**
 * Translates the placeholders of `sql` for `dialect`. Throws a `TypeError` naming the first
 * `:name` that is not one of `:user`, `:domain`, `:jid`.
 */
export function compileQuery(sql: string, dialect: SqlDialect): CompiledQuery {
  const parameters: SqlParameter[] = [];
  let text = "";
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    const next = sql[i + 1];
    if (c === "'" || c === '"' || c === "`") {
      const end = quoteEnd(sql, i, dialect);
      text += sql.slice(i, end);
      i = end;
    } else if (c === "-" && next === "-") {
      const end = sql.indexOf("\n", i);
      const stop = end === -1 ? sql.length : end;
      text += sql.slice(i, stop);
      i = stop;
    } else if (c === "/" && next === "*") {
      const end = sql.indexOf("*/", i + 2);
      const stop = end === -1 ? sql.length : end + 2;
      text += sql.slice(i, stop);
      i = stop;
    } else if (c === ":" && next === ":") {
      text += "::";
      i += 2;
    } else if (c === ":" && next !== undefined && /[A-Za-z_]/.test(next) && !/[\w]/.test(sql[i - 1] ?? "")) {
      const name = /^[A-Za-z_]\w*/.exec(sql.slice(i + 1))![0];
      if (!(PARAMETERS as readonly string[]).includes(name)) {
        throw new TypeError(`Unknown placeholder ":${name}" (the query may use :user, :domain and :jid)`);
      }
      parameters.push(name as SqlParameter);
      text += dialect === "postgres" ? `$${parameters.length}` : "?";
      i += 1 + name.length;
    } else {
      text += c;
      i++;
    }
  }
  return { text, parameters };
}

/** Where the quoted string or identifier opened at `start` ends (just past its closing quote). */
function quoteEnd(sql: string, start: number, dialect: SqlDialect): number {
  const quote = sql[start]!;
  let i = start + 1;
  while (i < sql.length) {
    const c = sql[i]!;
    // MySQL strings take backslash escapes (unless NO_BACKSLASH_ESCAPES); PostgreSQL's standard
    // strings do not.
    if (c === "\\" && dialect === "mysql" && quote !== "`") i += 2;
    else if (c === quote && sql[i + 1] === quote) i += 2;
    else if (c === quote) return i + 1;
    else i++;
  }
  return sql.length;
}

/**
 * Why `sql` cannot be the `sql` provider's query, or undefined when it can: an unknown
 * placeholder, or no `:user` or `:jid` at all (the query would not depend on who logs in).
 * The dialects differ only in backslash escapes; a query one of them reads is accepted.
 */
export function queryProblem(sql: string): string | undefined {
  let problem: string | undefined;
  for (const dialect of ["postgres", "mysql"] as const) {
    let compiled: CompiledQuery;
    try {
      compiled = compileQuery(sql, dialect);
    } catch (error) {
      problem ??= (error as TypeError).message;
      continue;
    }
    if (compiled.parameters.includes("user") || compiled.parameters.includes("jid")) return undefined;
    problem ??= "must name the user with :user or :jid";
  }
  return problem;
}

/**
 * How every store adapter reports failures: programmer errors keep their class
 * (abstract-level's rule), everything else becomes an `XSRV_STORE` error with the cause.
 */
import { XmppServerError } from "../errors.ts";

/** Wraps an adapter failure while doing `what` (e.g. "read the roster of alice@localhost"). */
export function wrapStoreError(error: unknown, what: string): Error {
  if (error instanceof XmppServerError || error instanceof TypeError || error instanceof RangeError) {
    return error;
  }
  const reason = error instanceof Error ? error.message : String(error);
  return new XmppServerError("XSRV_STORE", `Cannot ${what}: ${reason}`, { cause: error });
}

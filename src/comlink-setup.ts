/**
 * The one place that loads comlink. It registers the "throw" transfer handler that makes errors
 * keep their `code` (and `condition`) across a thread boundary, and re-exports the comlink
 * functions every other module must use.
 *
 * Import comlink only from here: comlink keeps its transfer handlers in a module-level Map, so a
 * second copy of comlink (say `comlink/dist/esm/comlink.mjs` next to the package's main entry)
 * would have the default handler, which keeps only `message`, `name` and `stack`, and callers
 * could no longer branch on `code` (STYLE.md §4, Errors). Both ends of a link must import this
 * module, since the handler serialises on one side and rebuilds on the other.
 */
import { type TransferHandler, transferHandlers } from "comlink";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { type ErrorRecord, fromErrorRecord, toErrorRecord } from "./errors.ts";

export type { Endpoint, Remote } from "comlink";
export { expose, proxy, releaseProxy, transfer, wrap } from "comlink";
export { nodeEndpoint };

/** What comlink hands the "throw" handler: the thrown value, wrapped with a private marker. */
interface Thrown {
  value: unknown;
}

const builtinThrow = transferHandlers.get("throw");
if (builtinThrow === undefined) {
  throw new Error('comlink has no "throw" transfer handler to replace; was its API changed?');
}
const isThrown = builtinThrow.canHandle;

/**
 * Sends a thrown value as an {@link ErrorRecord} and rethrows it as the error class its `code`
 * names. Anything that is not an `XmppServerError` arrives as `XSRV_WORKER` with its message.
 */
const errorRecordThrowHandler: TransferHandler<Thrown, ErrorRecord> = {
  // comlink marks thrown values with a symbol it does not export; its own handler knows it.
  canHandle: (value: unknown): value is Thrown => isThrown(value),
  serialize: (thrown) => [toErrorRecord(thrown.value), []],
  deserialize: (record) => {
    throw fromErrorRecord(record);
  },
};

transferHandlers.set("throw", errorRecordThrowHandler as TransferHandler<unknown, unknown>);

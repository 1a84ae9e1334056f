/**
 * comlink ships its Node adapter as `dist/esm/node-adapter.mjs` with a `.d.ts` (not `.d.mts`)
 * beside it, which `moduleResolution: nodenext` does not pick up for an `.mjs` import.
 */
declare module "comlink/dist/esm/node-adapter.mjs" {
  import type { Endpoint } from "comlink";

  /** What the adapter needs: a `worker_threads` Worker, MessagePort or parentPort. */
  export interface NodeEndpoint {
    // biome-ignore lint/suspicious/noExplicitAny: library boundary, structured-clone payloads
    postMessage(message: any, transfer?: readonly any[]): void;
    // biome-ignore lint/suspicious/noExplicitAny: library boundary, Node event listeners
    on(type: string, listener: (...args: any[]) => void): unknown;
    // biome-ignore lint/suspicious/noExplicitAny: library boundary, Node event listeners
    off(type: string, listener: (...args: any[]) => void): unknown;
    start?: () => void;
  }

  /** Adapts a Node endpoint to the DOM-style endpoint comlink's `wrap`/`expose` expect. */
  export default function nodeEndpoint(endpoint: NodeEndpoint): Endpoint;
}

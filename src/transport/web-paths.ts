/**
 * Where the client web listener serves XMPP, and the endpoint URLs of a listener at a base
 * address (`https://host:port`): for XEP-0156 discovery and for sending a web client to another
 * node (RFC 7395 §3.6.1, XEP-0124 §17).
 */

/** Where XMPP over WebSocket is served (RFC 7395). */
export const WEBSOCKET_PATH = "/xmpp-websocket";

/** Where BOSH is served (XEP-0206). */
export const BOSH_PATH = "/http-bind";

/** The WebSocket endpoint of the web listener at `webBase` (`https://` gives `wss://`). */
export function webSocketUrlOf(webBase: string): string {
  return `${webBase.replace(/^http/, "ws")}${WEBSOCKET_PATH}`;
}

/** The BOSH endpoint of the web listener at `webBase`. */
export function boshUrlOf(webBase: string): string {
  return `${webBase}${BOSH_PATH}`;
}

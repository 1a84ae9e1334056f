/** XML namespaces, one constant each, named after the protocol that defines them. */

export const NS_STREAM = "http://etherx.jabber.org/streams";
export const NS_CLIENT = "jabber:client";
export const NS_STREAMS_ERROR = "urn:ietf:params:xml:ns:xmpp-streams";
export const NS_STANZAS_ERROR = "urn:ietf:params:xml:ns:xmpp-stanzas";
export const NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls";
export const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
export const NS_SASL2 = "urn:xmpp:sasl:2";
export const NS_BIND2 = "urn:xmpp:bind:0";
export const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";
export const NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session";
export const NS_ROSTER = "jabber:iq:roster";
export const NS_ROSTER_VER = "urn:xmpp:features:rosterver";
export const NS_PRE_APPROVAL = "urn:xmpp:features:pre-approval";
export const NS_DISCO_INFO = "http://jabber.org/protocol/disco#info";
export const NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items";
export const NS_PING = "urn:xmpp:ping";
export const NS_VERSION = "jabber:iq:version";
export const NS_VCARD = "vcard-temp";
export const NS_PRIVATE = "jabber:iq:private";
export const NS_BLOCKING = "urn:xmpp:blocking";
export const NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors";
export const NS_CARBONS = "urn:xmpp:carbons:2";
export const NS_FORWARD = "urn:xmpp:forward:0";
export const NS_HINTS = "urn:xmpp:hints";
/** XEP-0085 chat states, XEP-0184 receipts, XEP-0333 chat markers: IM payloads (XEP-0280 §6). */
export const NS_CHATSTATES = "http://jabber.org/protocol/chatstates";
export const NS_RECEIPTS = "urn:xmpp:receipts";
export const NS_CHAT_MARKERS = "urn:xmpp:chat-markers:0";
export const NS_SM = "urn:xmpp:sm:3";
export const NS_DELAY = "urn:xmpp:delay";
export const NS_REGISTER = "jabber:iq:register";
export const NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register";
export const NS_XDATA = "jabber:x:data";
export const NS_CAPS = "http://jabber.org/protocol/caps";
export const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";

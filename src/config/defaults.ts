/**
 * Every configuration default in one table. Units are in the names. `cluster.config.json`,
 * environment variables and `starling start` flags are merged over this, validated once,
 * frozen, and passed down explicitly.
 */

/** The node's configuration. */
export interface Config {
  /** The XMPP domain this server serves. */
  domain: string;
  /** The address every listener binds to. */
  host: string;
  ports: {
    /** Client connections with STARTTLS (RFC 6120). */
    c2s: number;
    /** Client connections with direct TLS (XEP-0368). */
    tls: number;
    /** Admin HTTP API (`/api`, `/metrics`, `/health`); see `admin`. */
    http: number;
    /**
     * Client web listener with TLS (the node's certificate): XMPP over WebSocket (RFC 7395) at
     * `/xmpp-websocket` and XEP-0156 host-meta.
     */
    web: number;
    /**
     * The same without TLS, for a reverse proxy in front that terminates TLS; null: off. Streams
     * on it count as encrypted only when `host` is a loopback address (the proxy's side).
     */
    webPlain: number | null;
  };
  /** The client web listener. */
  web: {
    /**
     * Origins (`https://example.org`) whose pages may open WebSocket streams here; empty: any.
     * XMPP authenticates with SASL, not cookies, so a foreign page gains nothing it could not
     * get by connecting directly; set this to keep other sites' pages off your server.
     */
    origins: string[];
    /**
     * Reverse proxies whose `X-Forwarded-For` names the client (docs/web-chat.md): the login
     * throttle, registration limits and log lines then see each browser's address, not the
     * proxy's. Loopback by default, as Prosody's `trusted_proxies`; empty: believe no header.
     */
    trustedProxies: string[];
    /**
     * Web clients reach this node through a reverse proxy (docs/web-chat.md), so a node that
     * leaves the cluster must not send them to this node's own web listener (`see-other-uri`):
     * they reconnect through the proxy, which knows the live nodes. Null: true when
     * `ports.webPlain` is set (a proxy on this machine), false otherwise.
     */
    behindProxy: boolean | null;
  };
  /** The admin HTTP API on `ports.http` (docs/admin-api.md). */
  admin: {
    /**
     * Address the API binds to. Beyond loopback it needs `key`, and serves HTTPS with the
     * node's certificate, so the key never crosses the network in clear.
     */
    host: string;
    /**
     * Bearer key every request must carry (`Authorization: Bearer <key>`, at least 32
     * characters), `/health` excepted; null: no key, and only loopback clients are answered.
     */
    key: string | null;
  };
  /** Where the LevelDB store, the generated certificate and other state live. */
  dataDir: string;
  store: {
    /**
     * A PostgreSQL URL (`postgres://user:pass@host:port/db`) for a store every node of a cluster
     * shares; null keeps the embedded LevelDB store in dataDir (one node).
     */
    url: string | null;
  };
  /** Worker threads; 0 means one per core. */
  workers: number;
  /** Fixed ring partitions; every node of a cluster must agree on it. */
  partitions: number;
  tls: {
    /** PEM certificate chain; when absent, a self-signed one is made in dataDir on first start. */
    certFile: string | null;
    keyFile: string | null;
    /** Refuse SASL before TLS on the STARTTLS port. */
    requireBeforeAuth: boolean;
  };
  limits: {
    maxStanzaBytes: number;
    maxStanzaDepth: number;
    /**
     * Most elements in one stanza (the stanza itself counts): parsed, a tiny element costs far
     * more than its bytes (`<x/>`: 155 bytes of heap), and the input shaper holds such a stanza
     * half-built for seconds.
     */
    maxStanzaElements: number;
    /** A client that does not read is disconnected when its pending output passes this. */
    maxOutboundBufferBytes: number;
    /**
     * What one client connection may send per second once its burst is spent: beyond it the
     * server reads from it more slowly (nothing is lost; TCP pushes back on the client).
     */
    inputBytesPerSecond: number;
    /** What one client connection may send at once before `inputBytesPerSecond` applies. */
    inputBurstBytes: number;
    maxOfflineMessagesPerUser: number;
    maxRosterItems: number;
    /** XEP-0191: JIDs on one user's blocklist. */
    maxBlocklistItems: number;
    /** Time to finish SASL after connecting. */
    authTimeoutMs: number;
    /**
     * Failed logins per client address (IPv4 address, IPv6 /64) per window, whatever accounts
     * they try, before the address is refused (docs/auth.md, "Throttling").
     */
    loginFailuresPerAddress: number;
    /**
     * Failed logins per account per window, from anywhere, before the account refuses addresses
     * it was never logged in from; its known addresses and one-time tokens are never refused by it.
     */
    loginFailuresPerAccount: number;
    /** Failed logins per account from one address per window: every address's budget, known ones too. */
    /**
     * Logins from one address being checked at once on one worker; beyond it the client is told
     * to try again shortly. Caps what parallel guessing gains before its failures are counted.
     */
    loginAttemptsInFlightPerAddress: number;
    /**
     * Login steps (a SASL element, a bind, a resumption) one worker starts per event-loop turn;
     * the rest wait for later turns in arrival order (src/xmpp/login-steps.ts). Read at start.
     */
    loginStepsPerTurn: number;
    loginFailuresPerAccountAddress: number;
    loginFailureWindowMs: number;
    /** Addresses an account remembers it was logged in from (the least recent is forgotten first). */
    loginKnownAddresses: number;
    /** How long an address stays known to an account after its last login there. */
    loginKnownAddressTtlMs: number;
    /** Addresses, and accounts, each worker keeps throttle state for (least recent forgotten first). */
    loginThrottleMaxEntries: number;
    /** XEP-0198: how long a broken stream waits for `<resume/>`. */
    smResumeTimeoutSeconds: number;
    /** XEP-0198: unacked stanzas kept per session; beyond it the stream is closed. */
    smMaxUnackedStanzas: number;
    /**
     * XEP-0198: bytes of unacked stanzas kept per session; beyond it the stream is closed (a
     * detached session ends, its stanzas stored offline). At most a quarter of
     * `cluster.maxPeerBufferBytes`: a resumption sends the whole state to the replicas at once.
     */
    smMaxUnackedBytes: number;
    /** Stanzas queued in an actor's mailbox before the sender is told to wait. */
    maxMailboxSize: number;
    /** XEP-0199: a client silent this long gets a ping from the server. */
    clientPingIntervalMs: number;
    /** ...and is disconnected if it stays silent this long after the ping. */
    clientPingTimeoutMs: number;
  };
  /** Where users and passwords come from (docs/auth.md). */
  auth: {
    /**
     * `internal`: Starling's own store (SCRAM); `http`: the web site checks passwords; `sql`: a
     * query reads the password hash from the site's database (both PLAIN over TLS only).
     */
    provider: "internal" | "http" | "sql";
    http: {
      /** The site's endpoint that answers `{"action": "auth" | "exists", …}` with `{"ok": …}`. */
      url: string | null;
      /** Sent as a Bearer token so the site knows the caller; null: none. */
      token: string | null;
      /** No answer by then: the login fails with temporary-auth-failure. */
      timeoutMs: number;
      /** How long a confirmed password is remembered (0: ask every time). */
      cacheTtlMs: number;
    };
    sql: {
      /**
       * The site's database: `postgres://user:pass@host:port/db`, or `mysql://…` / `mariadb://…`
       * for MySQL and MariaDB. Required when `provider` is `sql`.
       */
      url: string | null;
      /**
       * Returns one row whose first column is the stored password hash; `:user` (the JID's local
       * part), `:domain` and `:jid` are bound as parameters. Required when `provider` is `sql`.
       */
      passwordQuery: string | null;
      /** Returns a row when the user exists; null: a hash from `passwordQuery` means it does. */
      existsQuery: string | null;
      /** Connecting plus querying past this: the login fails with temporary-auth-failure. */
      timeoutMs: number;
      /** Database connections each worker thread keeps at most. */
      poolSize: number;
      /** How long a confirmed password or user is remembered (0: ask every time). */
      cacheTtlMs: number;
    };
  };
  registration: {
    /** XEP-0077 in-band registration. */
    allow: boolean;
    /** Registrations per address per window, for addresses not on the allow-list. */
    perAddressPerWindow: number;
    windowMs: number;
    /** Addresses never rate-limited (loopback by default, as Prosody does). */
    allowList: string[];
  };
  log: {
    level: "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";
  };
  runtime: {
    /**
     * V8's semi-space (half the young generation) of every worker, in MiB: V8's own default
     * grows it to 16 MiB per isolate, which is most of an idle node's memory. At 1 MiB a worker
     * under 1,000 msgs/s scavenged every 50 ms, and what a message left for longer than that was
     * promoted, so full collections ran twice as often (docs/benchmarks.md).
     */
    semiSpaceMiB: number;
    /**
     * After a full garbage collection V8 lets the old generation grow by this much of what
     * survived before the next one: it bounds the heap to about (1 + p/100) times live data.
     */
    heapGrowingPercent: number;
    /**
     * Run V8 with --optimize-for-size: the smallest heap, for much more CPU. Every full
     * collection then reduces memory, and one runs about twice a second during a login storm,
     * each marking every session (docs/benchmarks.md, "Where the login time went").
     */
    optimizeForSize: boolean;
  };
  /** Cluster membership (docs/cluster.md). A node is clustered when `cluster.secret` is set. */
  cluster: ClusterConfig;
}

/** The `cluster` section: who this node is among its peers, and the failure-detection timing. */
export interface ClusterConfig {
  /** Unique name of this node in the cluster; null uses the host name. */
  node: string | null;
  /** Address peers dial to reach this node; null uses `host`. */
  peerHost: string | null;
  /** Port of the peer-link server (WebSocket, msgpackr frames). */
  peerPort: number;
  /**
   * Host name or address clients use to reach this node (with its client port), told to the
   * clients of a node that leaves (`<see-other-host/>`). null: `host`, or `peerHost` when
   * `host` is a wildcard address (nothing is told when both are).
   */
  clientHost: string | null;
  /** Shared by every node; authenticates the peer links. null = not clustered (one node). */
  secret: string | null;
  /**
   * Peer links without TLS: every stanza between nodes crosses the network in clear. Only for
   * a network the operator trusts, and then on every node (a TLS node and a plain node never
   * link). false: TLS, each dialler checking the certificate its peer's member row pins.
   */
  plainLinks: boolean;
  /** TLS of the peer links (ignored, and refused when set, with `plainLinks`). */
  tls: {
    /**
     * PEM CA certificate(s) every peer's certificate must chain to, besides the pinned
     * fingerprint. null: the pin alone (each node's own, possibly self-signed, certificate).
     */
    caFile: string | null;
    /** PEM certificate chain for the peer server; null: the node's client certificate (`tls.certFile` or the generated one). */
    certFile: string | null;
    /** PEM private key of `certFile`; given together with it. */
    keyFile: string | null;
  };
  /** A member's peer address ("host:port") to join at start; null forms or rejoins the cluster from PostgreSQL. */
  join: string | null;
  /** A node that cannot renew its lease in PostgreSQL within this long fences itself. */
  leaseMs: number;
  leaseRenewMs: number;
  /** A lease expired this long ago lets the others take a silent node's partitions. */
  takeoverMarginMs: number;
  /** Peer-link heartbeat; a link with no answer for pingTimeoutMs is considered dead. */
  pingIntervalMs: number;
  pingTimeoutMs: number;
  /** How long a partition's new owner buffers envelopes while waiting for the old owner's handoff. */
  handoffTimeoutMs: number;
  /**
   * How long a session waits for its UserActor (on any node) to answer a bind or another
   * request before the client gets a retryable error (`resource-constraint`, type wait).
   */
  requestTimeoutMs: number;
  /**
   * Copies of every resumable session's state (XEP-0198 log, counters, presence), the session
   * itself included: 2 keeps one replica on the next node (on a single node, the next worker),
   * 3 survives two nodes dying at once, 1 turns replication off.
   */
  replicationFactor: number;
  /**
   * How long a replicated change that nothing waits on at once (an XEP-0198 inbound count, a
   * client's acknowledgement) may wait to share a batch with other sessions'; 0 sends each at once.
   */
  replicationBatchMs: number;
  /**
   * With replication factor 2, a write to a session on another node goes through that session's
   * replica, which keeps it, so the session writes it to its client at once instead of waiting
   * for the replica's answer (chain replication: fewer frames between nodes, less CPU). False
   * sends writes straight to the session (for comparisons, and a cluster with nodes of a release
   * before it).
   */
  chainWrites: boolean;
  /** How long `leave` waits for the node's clients to resume elsewhere before closing the rest. */
  drainTimeoutMs: number;
  /** A peer link holding more unacknowledged bytes than this is cut (a slow peer cannot exhaust memory). */
  maxPeerBufferBytes: number;
}

/** The defaults every other source is merged over. */
export const DEFAULT_CONFIG: Config = {
  domain: "localhost",
  host: "127.0.0.1",
  ports: { c2s: 5222, tls: 5223, http: 5280, web: 5443, webPlain: null },
  web: { origins: [], trustedProxies: ["127.0.0.1", "::1"], behindProxy: null },
  admin: { host: "127.0.0.1", key: null },
  dataDir: "./data",
  store: { url: null },
  workers: 0,
  partitions: 4096,
  tls: { certFile: null, keyFile: null, requireBeforeAuth: true },
  limits: {
    maxStanzaBytes: 262_144,
    maxStanzaDepth: 32,
    maxStanzaElements: 10_000,
    maxOutboundBufferBytes: 1_048_576,
    // Prosody's mod_limits defaults to 3,000 B/s with 2 s of burst, ejabberd's packaged config
    // to 3,000 B/s with a 20,000 B burst. A larger burst lets 20 flooding clients queue thousands of stanzas at once
    // ahead of everyone else (bench/abuse.ts: 128 KiB gave canaries a p99 of 569 ms).
    inputBytesPerSecond: 16_384,
    inputBurstBytes: 32_768,
    maxOfflineMessagesPerUser: 1000,
    maxRosterItems: 1000,
    maxBlocklistItems: 1000,
    authTimeoutMs: 30_000,
    loginFailuresPerAddress: 20,
    loginFailuresPerAccount: 10,
    loginFailuresPerAccountAddress: 5,
    loginAttemptsInFlightPerAddress: 50,
    loginStepsPerTurn: 4,
    loginFailureWindowMs: 60_000,
    loginKnownAddresses: 16,
    loginKnownAddressTtlMs: 30 * 24 * 3_600_000,
    loginThrottleMaxEntries: 100_000,
    smResumeTimeoutSeconds: 600,
    smMaxUnackedStanzas: 5000,
    smMaxUnackedBytes: 8 * 1024 * 1024,
    maxMailboxSize: 10_000,
    clientPingIntervalMs: 60_000,
    clientPingTimeoutMs: 30_000,
  },
  auth: {
    provider: "internal",
    http: { url: null, token: null, timeoutMs: 3_000, cacheTtlMs: 60_000 },
    sql: {
      url: null,
      passwordQuery: null,
      existsQuery: null,
      timeoutMs: 3_000,
      poolSize: 4,
      cacheTtlMs: 60_000,
    },
  },
  registration: {
    allow: false,
    perAddressPerWindow: 5,
    windowMs: 3_600_000,
    allowList: ["127.0.0.1", "::1", "::ffff:127.0.0.1"],
  },
  log: { level: "info" },
  runtime: { semiSpaceMiB: 4, heapGrowingPercent: 100, optimizeForSize: false },
  cluster: {
    node: null,
    peerHost: null,
    peerPort: 5290,
    clientHost: null,
    secret: null,
    plainLinks: false,
    tls: { caFile: null, certFile: null, keyFile: null },
    join: null,
    leaseMs: 10_000,
    leaseRenewMs: 2_000,
    takeoverMarginMs: 2_000,
    pingIntervalMs: 1_000,
    pingTimeoutMs: 1_000,
    handoffTimeoutMs: 30_000,
    requestTimeoutMs: 5_000,
    replicationFactor: 2,
    replicationBatchMs: 10,
    chainWrites: true,
    drainTimeoutMs: 10_000,
    maxPeerBufferBytes: 64 * 1024 * 1024,
  },
};

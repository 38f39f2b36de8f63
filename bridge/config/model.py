"""Configuration tree of the bridge: msgspec Structs that mirror the YAML file.

Every Struct forbids unknown keys; ranges live in the types (``Meta``).
Cross-field rules live in ``bridge.config.load.cross_checks``. The annotated
example is ``ops/config/busbridge.example.yaml``; a test loads it.

Units are in the names: ``*_secs`` seconds, ``*_bytes`` bytes.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from bridge.phase import Phase

__all__ = [
    "AdminConfig",
    "BridgeConfig",
    "DedupConfig",
    "EmbeddedNatsConfig",
    "FloodConfig",
    "FloodRuleConfig",
    "HealthConfig",
    "IdentityConfig",
    "LegacyConfig",
    "NatsConfig",
    "NatsTlsConfig",
    "ParityConfig",
    "PhaseConfig",
    "PhaseGuardsConfig",
    "PhaseSource",
    "ProbeMethod",
    "PublishConfig",
    "RepublishConfig",
    "SpoolConfig",
    "SpoolSync",
    "StorageKind",
    "StreamConfig",
    "ZmqConfig",
    "ZmqCurveConfig",
    "ZmqMode",
]

PositiveSecs = Annotated[float, Meta(gt=0)]
PositiveInt = Annotated[int, Meta(ge=1)]
Port = Annotated[int, Meta(ge=0, le=65535)]
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base: unknown keys fail, values are immutable once loaded."""


class ZmqMode(str, enum.Enum):
    BIND = "bind"  # the bridge binds the SUB (the legacy agents connect): default
    CONNECT = "connect"  # the bridge connects to publishers that bind (pooled sockets)


class ZmqCurveConfig(_Strict):
    """CURVE encryption and client allowlist on the ingest socket (bind mode only).

    Key files are zmq.auth certificates (``busbridge keys generate``). A client is
    accepted when its public key is in ``allowed_clients_dir`` (``*.key`` files)
    or in ``allowed_client_keys``; ZAP refuses every other one, and a client
    without CURVE fails its handshake.
    """

    enabled: bool = False
    #: the server's secret certificate (``<name>.key_secret``); its public key goes to the clients.
    server_secret_key_file: str | None = None
    #: directory of allowed clients' public certificates (``*.key``).
    allowed_clients_dir: str | None = None
    #: allowed clients' public keys, Z85 text (40 characters); public keys are not secrets.
    allowed_client_keys: list[
        Annotated[str, Meta(pattern=r"^[0-9A-Za-z.:+=^!/*?&<>()\[\]{}@%$#-]{40}$")]
    ] = []
    #: warn when no publisher completed a handshake for this long (seconds), e.g. keys not rolled out.
    handshake_warn_secs: PositiveSecs = 300.0


class ZmqConfig(_Strict):
    """Legacy ingest socket (ZMQ SUB subscribed to everything)."""

    mode: ZmqMode = ZmqMode.BIND
    #: bind mode: where the SUB binds. ``tcp://127.0.0.1:*`` picks a free port.
    bind_endpoint: str = "tcp://*:7150"
    #: connect mode: the publishers' endpoints the SUB connects to.
    connect_endpoints: list[str] = []
    #: receive high-water mark in messages (libzmq default 1000 loses bursts).
    rcvhwm: Annotated[int, Meta(ge=0)] = 1_000_000
    #: kernel receive buffer in bytes; 0 keeps the OS default.
    rcvbuf_bytes: Annotated[int, Meta(ge=0)] = 4 * 1024 * 1024
    #: a message with a frame larger than this is dead-lettered (reason ``oversized``, the first
    #: ``oversized_keep_bytes`` of each frame kept, sizes recorded); -1 = no cap.
    max_frame_bytes: Annotated[int, Meta(ge=-1)] = 16 * 1024 * 1024
    #: messages handled per event-loop turn before yielding, at most...
    batch_max: PositiveInt = 2048
    #: ...and for at most this long (seconds), so acks and publishing keep flowing under a burst.
    batch_max_secs: PositiveSecs = 0.01
    #: pause (seconds) after a read turn that took messages and emptied the socket, so the next
    #: turn takes what arrived meanwhile at once: fewer passes of the pipeline, less CPU per
    #: message under steady traffic; adds up to this much latency; 0 = read as soon as signalled.
    gather_secs: Annotated[float, Meta(ge=0, le=1)] = 0.002
    #: bytes kept of each frame of an oversized message.
    oversized_keep_bytes: Annotated[int, Meta(ge=0)] = 64 * 1024
    #: hard backstop (ZMQ_MAXMSGSIZE): libzmq disconnects a peer sending a bigger frame before it is
    #: read, so nothing is dead-lettered; -1 = none. Must be -1 or >= max_frame_bytes.
    hard_max_frame_bytes: Annotated[int, Meta(ge=-1)] = 64 * 1024 * 1024
    #: decode in a child process beside the event loop (``bridge.adapters.decode_worker``):
    #: ``true``: every ZMQ message (the event loop does ~9% less work, the machine ~16% more at
    #: 10k msg/s D1); ``auto``: only what a reader turn brings beyond the first 128 messages
    #: while the child is not busy, i.e. bursts and backlogs, steady traffic is decoded in the
    #: bridge's process (loadtest/README.md); ``false``: never (saves the child's ~100-130 MiB
    #: of RSS: its own Python and a copy of the identity table). Takes effect at start.
    decode_worker: bool | Literal["auto"] = "auto"
    curve: ZmqCurveConfig = msgspec.field(default_factory=ZmqCurveConfig)


class EmbeddedNatsConfig(_Strict):
    """The nats-server started when ``nats.servers`` is empty (DESIGN §6)."""

    #: explicit binary; else env BUSBRIDGE_NATS_SERVER, the venv scripts folder, then PATH.
    binary: str | None = None
    host: str = "127.0.0.1"
    #: client port; 0 picks a free one.
    port: Port = 4222
    #: JetStream store dir; default ``<data_dir>/nats``.
    store_dir: str | None = None
    startup_timeout_secs: PositiveSecs = 15.0
    #: server max_payload in bytes (NATS default 1 MiB).
    max_payload_bytes: Annotated[int, Meta(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    #: JetStream file store fsync interval: ``always`` (every message) or a duration (``1s``,
    #: ``2m``; nats-server's own default is 2 minutes): at most what a power cut of this
    #: machine loses of what the server acknowledged (ops/README.md, "Durability").
    sync_interval: Annotated[str, Meta(pattern=r"^(always|[0-9]+(ms|s|m|h))$")] = "1s"


class NatsTlsConfig(_Strict):
    """TLS to NATS. On when ``enabled`` or any file is set (a ``tls://`` URL also uses TLS)."""

    enabled: bool = False
    #: CA bundle (PEM) that signed the server certificate; default: the system CAs.
    ca_file: str | None = None
    #: client certificate and key (PEM) for servers that verify clients.
    cert_file: str | None = None
    key_file: str | None = None
    #: name checked against the server certificate; default: the host of the URL.
    server_hostname: str | None = None
    #: TLS before the NATS INFO line (server ``tls { handshake_first: true }``, nats-server 2.10.4+).
    handshake_first: bool = False


class NatsConfig(_Strict):
    """How to reach NATS. No servers: start the embedded one.

    Secrets come from files or environment variables (``*_file``, ``*_env``);
    ``password``, ``token`` and ``nkey_seed`` as plain values are refused unless
    the top-level ``allow_plaintext_secrets`` is true.
    """

    servers: list[str] = []
    name: str | None = None
    #: NATS creds file (JWT + nkey seed); secrets never go in this file itself.
    creds_file: str | None = None
    #: user name (not a secret) with the password read from a file or an env variable.
    user: str | None = None
    password_file: str | None = None
    password_env: str | None = None
    token_file: str | None = None
    token_env: str | None = None
    connect_timeout_secs: PositiveSecs = 5.0
    #: nats-py waits this long before trying the same server again, so a server that comes back
    #: is found this long later at most (half of it on average). Measured (nats-py 2.x, a
    #: nats-server stopped and restarted on one port, 6 trials each): reconnected 0.54 s (median,
    #: max 0.94) after it listened again at 1.0, 0.12 s (max 0.24) at 0.25; until then every
    #: message waits (in the spool, when it is on). A refused attempt costs a connect() and one
    #: rate-limited log line.
    reconnect_wait_secs: PositiveSecs = 0.25
    #: a PING to the server this often; after ``max_outstanding_pings`` unanswered the connection
    #: is declared stale and reconnected, so a server that vanished without a TCP reset (host
    #: powered off, cable pulled, a partition) is noticed in about ping_interval_secs x
    #: (max_outstanding_pings + 1). nats-py's defaults (120 s, 2) take up to 6 minutes. It also
    #: revives a connection whose nats-py read loop stopped on an unexpected error while the
    #: socket stayed open (nats.py PR #914).
    ping_interval_secs: PositiveSecs = 10.0
    max_outstanding_pings: PositiveInt = 3
    #: publishes the client buffers while reconnecting, in bytes. 0 (the default) keeps
    #: per-publisher order across a reconnect: the client would flush newer buffered messages
    #: before older ones are retried. The spool holds the backlog on disk instead.
    reconnect_buffer_bytes: Annotated[int, Meta(ge=0)] = 0
    embedded: EmbeddedNatsConfig = msgspec.field(default_factory=EmbeddedNatsConfig)
    #: nkey seed (``SU...``) for servers with ``authorization { users = [{nkey: U...}] }``.
    nkey_seed_file: str | None = None
    nkey_seed_env: str | None = None
    tls: NatsTlsConfig = msgspec.field(default_factory=NatsTlsConfig)
    #: plain secret values: refused unless allow_plaintext_secrets (prefer *_file / *_env).
    password: str | None = None
    token: str | None = None
    nkey_seed: str | None = None


class StorageKind(str, enum.Enum):
    FILE = "file"
    MEMORY = "memory"


class StreamConfig(_Strict):
    """The JetStream stream provisioned for bridged messages."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "ERRBUS"
    #: every subject is ``<subject_prefix>.…``; must not be ``errors`` (legacy streams).
    subject_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")] = "errbus"
    storage: StorageKind = StorageKind.FILE
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    #: window in which JetStream collapses equal Nats-Msg-Id values.
    duplicate_window_secs: PositiveSecs = 600.0
    max_age_secs: PositiveSecs = 7 * 24 * 3600.0
    #: -1 = unlimited
    max_bytes: Annotated[int, Meta(ge=-1)] = 10 * 1024**3
    max_msgs: Annotated[int, Meta(ge=-1)] = -1
    #: update an existing stream whose config differs (else refuse to start).
    update_existing: bool = True


class PublishMode(str, enum.Enum):
    """How messages are published to JetStream (``bridge.pipeline.assemble``)."""

    AUTO = (
        "auto"  # batch when the connected server supports it (nats-server >= 2.14), else pipelined
    )
    BATCH = "batch"  # JetStream fast-ingest batches (ADR-50); refused at connect on older servers
    PIPELINED = "pipelined"  # one PubAck per message, a window of max_in_flight


class PublishConfig(_Strict):
    """The JetStream publisher."""

    #: ``auto`` picks at connect: fast-ingest batches (the stream gets ``allow_batched``) when
    #: the server supports them, else the pipelined per-message publisher
    mode: PublishMode = PublishMode.AUTO
    #: batch mode: messages per fast-ingest batch at most
    batch_max_msgs: PositiveInt = 50_000
    #: batch mode: an open batch waits this long for more messages before it ends, in seconds
    #: (0: it ends whenever nothing is pending; below 5 s, half the server's idle abandon, and
    #: below ack_timeout_secs: an idle batch's last messages are acknowledged when it ends)
    batch_idle_secs: Annotated[float, Meta(ge=0, lt=5)] = 0.05
    #: batch mode: flow acks the publisher may run ahead of; the open batch then has at most
    #: min(max_in_flight, flow x this) messages unacknowledged (the server acks every ``flow``,
    #: at most 500). ADR-50 suggests 2; 8 keeps a burst or a backlog drain from waiting on
    #: the acks' way through a busy event loop (loadtest/README.md, 2026-12-05 noon)
    batch_outstanding_acks: PositiveInt = 8

    #: published but not yet acknowledged messages, at most.
    max_in_flight: PositiveInt = 4096
    #: a PubAck not received within this is a failure and the message is retried.
    ack_timeout_secs: PositiveSecs = 5.0
    #: messages queued in memory for a publish slot. With the spool on, more wait on disk;
    #: with it off, messages beyond this are dropped and counted.
    max_pending: PositiveInt = 10_000
    retry_initial_secs: PositiveSecs = 0.05
    retry_max_secs: PositiveSecs = 5.0
    #: on shutdown, how long to wait for pending and in-flight messages to be acked.
    drain_timeout_secs: PositiveSecs = 10.0


class SpoolSync(str, enum.Enum):
    NORMAL = "NORMAL"  # survives a process kill (kill -9), not a power cut (WAL not fsynced)
    FULL = "FULL"  # also a power cut (WAL fsynced after commits, at most every 10 ms); default


class SpoolConfig(_Strict):
    """Durable spool (SQLite WAL): every message is on disk before it is published."""

    enabled: bool = True
    #: default ``<data_dir>/spool.db``
    path: str | None = None
    synchronous: SpoolSync = SpoolSync.FULL
    #: on-disk cap; beyond it the lowest severities are evicted first (counted and reported).
    max_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 2 * 1024**3
    #: messages older than this are evicted (counted and reported).
    max_age_secs: PositiveSecs = 3 * 86400.0
    #: backlog drain rate after an outage or restart, messages per second; 0 = unlimited.
    max_replay_rate_per_sec: Annotated[float, Meta(ge=0)] = 0.0
    #: rows per SQLite transaction.
    batch_max: PositiveInt = 2000
    #: messages staged in memory before the disk writer takes them; beyond: dropped and counted.
    staging_max: PositiveInt = 200_000
    #: how often a summary of evictions is appended (when there were any).
    eviction_summary_interval_secs: PositiveSecs = 10.0
    #: keep messages JetStream acknowledged this long, in seconds, and publish them again if
    #: the stream turns out to have lost them (a power cut of the NATS host before its file
    #: store synced: nats-server's ``sync_interval``, 2 min by default); 0 = off. Cover the
    #: server's sync_interval plus a margin, and stay within the stream's duplicate window.
    retain_acked_secs: Annotated[float, Meta(ge=0)] = 150.0
    #: cap of the retained messages in bytes (oldest dropped first beyond it).
    retain_max_bytes: Annotated[int, Meta(ge=0)] = 256 * 1024**2


class DedupConfig(_Strict):
    """In-process dedup of event copies (same id) before NATS; JetStream's window is the second line."""

    enabled: bool = True
    window_secs: PositiveSecs = 600.0
    max_ids: PositiveInt = 200_000


class FloodRuleConfig(_Strict):
    """One flood rule: the first ``threshold`` events per ``window_secs`` of a fingerprint pass."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    #: regex searched in error_type and in message; omitted: matches everything
    match: str | None = None
    threshold: Annotated[int, Meta(ge=0)] = 10
    window_secs: PositiveSecs = 60.0
    #: severity of this rule's flood events (e.g. critical for memory errors)
    escalate_to: str | None = None


def _default_rules() -> list[FloodRuleConfig]:
    """The legacy ErrorFloodDetector thresholds (legacy-bus.md §3), as rules."""
    return [
        FloodRuleConfig(
            name="connection_error",
            match=r"(?i)connection[ _]?(error|refused|reset)",
            threshold=10,
            window_secs=60.0,
        ),
        FloodRuleConfig(
            name="timeout_error", match=r"(?i)time[ _]?out|timed out", threshold=5, window_secs=30.0
        ),
        FloodRuleConfig(
            name="memory_error",
            match=r"(?i)memory[ _]?error|out of memory",
            threshold=3,
            window_secs=300.0,
            escalate_to="critical",
        ),
    ]


class FloodConfig(_Strict):
    """Flood control per fingerprint (source, error_type, masked message)."""

    enabled: bool = True
    rules: list[FloodRuleConfig] = msgspec.field(default_factory=_default_rules)
    #: applies when no rule matches
    default_threshold: Annotated[int, Meta(ge=0)] = 20
    default_window_secs: PositiveSecs = 60.0
    summary_interval_secs: PositiveSecs = 10.0
    max_fingerprints: PositiveInt = 10_000
    #: critical events are never suppressed unless this is true
    suppress_critical: bool = False
    #: events per second passed to NATS in total; beyond, lowest severities are shed first. 0 = off.
    global_max_per_sec: Annotated[float, Meta(ge=0)] = 0.0


class DeadLetterFloodConfig(_Strict):
    """Dead-letter flood control (``bridge.pipeline.dead_letters``): per key (reason, dialect
    guess, leading bytes of the first frame) and window, the first ``threshold`` dead letters
    are stored with their bytes, the rest counted in ``DeadLetterSummary`` messages."""

    enabled: bool = True
    threshold: Annotated[int, Meta(ge=0)] = 20
    window_secs: PositiveSecs = 60.0
    summary_interval_secs: PositiveSecs = 10.0
    #: keys tracked at most (least recently used dropped first, after a summary of its counts)
    max_keys: PositiveInt = 1000
    #: bytes of the first frame that make up the key
    leading_bytes: PositiveInt = 8
    #: per reason and dialect guess, whatever the leading bytes: dead letters stored per window
    #: at most (garbage whose leading bytes vary makes a new key per frame)
    aggregate_threshold: Annotated[int, Meta(ge=0)] = 100


class IdentityConfig(_Strict):
    """Event identity for frames without a legacy ``error_id`` (DESIGN §3)."""

    #: the n-th identical frame within this window gets suffix ``-n``.
    occurrence_window_secs: PositiveSecs = 600.0
    #: distinct frame hashes tracked at most (oldest forgotten first).
    max_tracked: PositiveInt = 200_000


class LegacyConfig(_Strict):
    """How to read the legacy dialects."""

    #: IANA zone of naive host-local timestamps (D3 flat_iso_enum, D5). Dev hosts were UTC+8.
    local_timezone: str = "UTC"


class IntakeConfig(_Strict):
    """Inputs that come over NATS and join the ZMQ traffic in the pipeline (same identity,
    dedup and flood control): native agents (``busclient``) and the legacy ``errors.>`` half.

    Both are read through durable pull consumers and acknowledged only after ERRBUS PubAcked
    the event (or it was a duplicate, or suppressed and counted in a flood summary).
    """

    #: consume native events from ``<prefix>_intake.<machine>.>`` in stream ``<stream>_INTAKE``
    #: (provisioned by the bridge; work-queue retention: an acknowledged message is removed)
    native: bool = True
    #: consume the legacy libraries' stream covering ``errors.>`` (``ERRORS`` or
    #: ``ERROR_STREAM``, whichever exists) when one exists; checked every ``legacy_poll_secs``
    legacy_nats: bool = True
    #: servers of the legacy NATS; [] = the same servers (and credentials) as ERRBUS
    legacy_servers: list[str] = []
    #: durable consumer on the legacy stream, shared by every bridge of the fleet (each legacy
    #: message is processed by one of them)
    legacy_durable: Token = "busbridge_legacy"
    legacy_poll_secs: PositiveSecs = 30.0
    #: messages fetched per pull
    batch_max: PositiveInt = 256
    #: unacknowledged messages a consumer may hold (JetStream ``max_ack_pending``)
    max_ack_pending: PositiveInt = 4096
    #: a delivery not acknowledged within this long is redelivered by JetStream
    ack_wait_secs: PositiveSecs = 60.0
    #: a message delivered this many times without an outcome becomes a dead letter (reason
    #: ``redelivered``, its bytes kept) and is acknowledged: no redelivery loop
    max_deliveries: PositiveInt = 5
    #: intake stream limits
    intake_max_age_secs: PositiveSecs = 7 * 86400.0
    intake_max_bytes: Annotated[int, Meta(ge=-1)] = 1024**3


class MigrationConfig(_Strict):
    """The migration view: every source this bridge saw, by transport (``bridge.migration``)."""

    #: KV bucket of the fleet's reports (key ``<machine>.<bridge_id>``)
    kv_bucket: Token = "busbridge_migration"
    #: a report that is not written again is kept this long (the guard's memory of a publisher)
    kv_ttl_secs: PositiveSecs = 30 * 86400.0
    report_interval_secs: PositiveSecs = 30.0
    #: rows kept per bridge (least recently seen dropped first, counted)
    max_sources: PositiveInt = 2000


class AdminConfig(_Strict):
    """Admin HTTP: /metrics /healthz /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: Port = 9150
    #: ready only if a PubAck or a probe succeeded within this many seconds.
    ready_max_age_secs: PositiveSecs = 15.0
    #: idle bridges probe JetStream this often to stay ready.
    probe_interval_secs: PositiveSecs = 5.0


class PhaseSource(str, enum.Enum):
    FILE = "file"  # phase.current in this file (hot reloaded)
    KV = "kv"  # a NATS KV key written by `busbridge phase set [--fleet]`


class PhaseGuardsConfig(_Strict):
    """Guards of forward transitions (``bridge.phase``); ``--force`` overrides them."""

    #: dual -> nats_primary needs this parity ratio (0..1) over parity.window_secs...
    min_parity_ratio: Annotated[float, Meta(ge=0, le=1)] = 0.999
    #: ...with at least this many events compared (0: parity not required)
    min_parity_events: Annotated[int, Meta(ge=0)] = 100
    #: -> nats_primary and -> nats_only need an empty spool (every message acknowledged)
    require_spool_empty: bool = True
    #: -> nats_only needs no ZMQ frame and no ZMQ publisher connected for this long
    quiet_period_secs: Annotated[float, Meta(ge=0)] = 600.0


class PhaseConfig(_Strict):
    """Cutover phase (DESIGN §4): zmq_only -> dual -> nats_primary -> nats_only."""

    #: the phase this machine should be in (source: file)
    current: Phase = Phase.DUAL
    #: apply a forward transition even when its guards fail (recorded in PhaseChanged)
    force: bool = False
    source: PhaseSource = PhaseSource.FILE
    #: KV bucket of the phase keys: `fleet`, `machine.<machine>`, `status.<machine>` (source: kv)
    kv_bucket: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "busbridge_phase"
    #: last phase taken from KV, kept across restarts while NATS is unreachable
    state_file: str | None = None
    guards: PhaseGuardsConfig = msgspec.field(default_factory=PhaseGuardsConfig)


class RepublishConfig(_Strict):
    """Legacy republish: a ZMQ PUB for legacy subscribers (7150 is the bridge's SUB)."""

    enabled: bool = True
    #: not 7151: PC2's legacy ErrorBusService binds its health REP there, and 7100-7299 are agent ports
    bind_endpoint: str = "tcp://*:17150"
    #: messages queued per subscriber before the PUB drops (counted)
    sndhwm: Annotated[int, Meta(ge=0)] = 100_000
    #: NATS-native events re-emitted in nats_primary; "" = <prefix>.error.<machine>.>
    native_subject: str = ""


class ParityNatsSide(str, enum.Enum):
    """How the parity checker learns what JetStream stored (``bridge.parity``)."""

    PUBACKS = "pubacks"  # the publisher's PubAcks, plus a sampled read-back by stream sequence
    CONSUMER = "consumer"  # an ordered JetStream consumer on the machine's subjects


class ParityConfig(_Strict):
    """Parity checker: ZMQ frames vs JetStream messages, matched by msg id."""

    enabled: bool = True
    #: ``pubacks``: the JetStream side is this bridge's own PubAcks (no consumer: costs nothing
    #: on the hot path) plus a read-back of every ``readback_every``-th stored message by its
    #: stream sequence; ``consumer``: an ordered JetStream consumer on this machine's subjects,
    #: which also sees messages stored under this bridge's id that it never published
    nats_side: ParityNatsSide = ParityNatsSide.PUBACKS
    #: pubacks: read one stored message back of this many (its Nats-Msg-Id must be at the
    #: sequence the PubAck gave); 0: no read-back
    readback_every: Annotated[int, Meta(ge=0)] = 1000
    #: ZMQ endpoints to tap and decode (legacy publishers, or the republish socket);
    #: [] = the frames this bridge's ingest decoded, handed over in-process (cheapest)
    zmq_endpoints: list[str] = []
    #: an id seen on one side waits this long for the other before it counts as missing
    match_window_secs: PositiveSecs = 30.0
    #: matched ids are remembered (a later copy is ignored) for match_window_secs and at most this
    #: many, oldest forgotten first (without a cap: message rate x match_window_secs ids)
    max_matched_ids: PositiveInt = 100_000
    #: the ratio is computed over the results of this many seconds
    window_secs: PositiveSecs = 300.0


class ProbeMethod(str, enum.Enum):
    """How a legacy agent is asked for its health (legacy-bus.md §4)."""

    ZMQ_REQ = "zmq_req"  # ZMQ REQ {"action": "health_check"} to health_check_port (BaseAgent's REP)
    HTTP_NEXT_PORT = "http_next_port"  # GET /health on health_check_port + 1 (BaseAgent's HTTP)
    HTTP = "http"  # GET /health on health_check_port itself (FastAPI services)


def _default_probe_methods() -> list[ProbeMethod]:
    return [ProbeMethod.ZMQ_REQ, ProbeMethod.HTTP_NEXT_PORT]


class HealthConfig(_Strict):
    """Fleet health: this bridge's heartbeat and probes of the local legacy agents, published as
    ``BridgeHeartbeat``/``HealthReport`` and kept, latest per key, in a NATS KV bucket."""

    #: off: no heartbeat, no KV bucket, no probes
    enabled: bool = True
    heartbeat_interval_secs: PositiveSecs = 10.0
    kv_bucket: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "busbridge_health"
    #: a key not written for this long disappears from the bucket (the server's max_age)
    kv_ttl_secs: PositiveSecs = 300.0
    kv_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    kv_storage: StorageKind = StorageKind.FILE
    #: an entry older than this many of its own intervals is shown as stale
    stale_after_intervals: Annotated[float, Meta(ge=1)] = 3.0
    #: the machine's legacy startup_config.yaml (MainPC or PC2 schema); null: no agent probes
    startup_config: str | None = None
    #: value of ${PORT_OFFSET} in its port expressions; null: env PORT_OFFSET, else 0 (as the legacy launcher)
    port_offset: Annotated[int, Meta(ge=0, le=65535)] | None = None
    probe_host: str = "127.0.0.1"
    probe_interval_secs: PositiveSecs = 30.0
    #: per request; an agent without an answer is tried with the next method
    probe_timeout_secs: PositiveSecs = 5.0
    #: tried in order until one gets an answer
    probe_methods: Annotated[list[ProbeMethod], Meta(min_length=1)] = msgspec.field(
        default_factory=_default_probe_methods
    )
    #: per service name: other methods than probe_methods
    service_methods: dict[str, Annotated[list[ProbeMethod], Meta(min_length=1)]] = {}
    #: services of the startup config not probed (the bridge replaces CentralErrorBus on 7150)
    exclude_services: list[str] = msgspec.field(default_factory=lambda: ["CentralErrorBus"])
    max_concurrent_probes: PositiveInt = 16
    #: a report whose status did not change still goes into the stream this often (the KV gets every one)
    report_refresh_secs: PositiveSecs = 300.0
    #: replies are kept in HealthReport.details up to this size
    max_reply_bytes: Annotated[int, Meta(ge=256, le=256 * 1024)] = 16384


class BridgeConfig(_Strict):
    """Root of the configuration file."""

    #: machine name used in subjects (MainPC, PC2, ...). Default: env BUSBRIDGE_MACHINE or the host name.
    machine: Token | None = None
    #: identifies this bridge in headers (loop prevention) and heartbeats; default ``<machine>``.
    bridge_id: Token | None = None
    #: local state (embedded NATS store, spool).
    data_dir: str = "./busbridge-data"
    log_level: Annotated[str, Meta(pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")] = "INFO"
    #: how often the config file is checked for changes (hot reload; SIGHUP reloads at once)
    config_watch_secs: PositiveSecs = 2.0
    #: `busbridge run` gives freed heap memory back to the OS this often (glibc ``malloc_trim``;
    #: without it RSS keeps the peak of every backlog, e.g. libzmq's receive queue); 0 = never
    malloc_trim_interval_secs: Annotated[float, Meta(ge=0)] = 10.0
    #: accept plain secret values (nats.password, nats.token, nats.nkey_seed, credentials in URLs);
    #: off: they are refused naming the *_file / *_env key to use. Values are redacted either way.
    allow_plaintext_secrets: bool = False
    zmq: ZmqConfig = msgspec.field(default_factory=ZmqConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    stream: StreamConfig = msgspec.field(default_factory=StreamConfig)
    publish: PublishConfig = msgspec.field(default_factory=PublishConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    dedup: DedupConfig = msgspec.field(default_factory=DedupConfig)
    flood: FloodConfig = msgspec.field(default_factory=FloodConfig)
    dead_letters: DeadLetterFloodConfig = msgspec.field(default_factory=DeadLetterFloodConfig)
    identity: IdentityConfig = msgspec.field(default_factory=IdentityConfig)
    legacy: LegacyConfig = msgspec.field(default_factory=LegacyConfig)
    intake: IntakeConfig = msgspec.field(default_factory=IntakeConfig)
    migration: MigrationConfig = msgspec.field(default_factory=MigrationConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    phase: PhaseConfig = msgspec.field(default_factory=PhaseConfig)
    republish: RepublishConfig = msgspec.field(default_factory=RepublishConfig)
    parity: ParityConfig = msgspec.field(default_factory=ParityConfig)
    health: HealthConfig = msgspec.field(default_factory=HealthConfig)

"""Configuration tree of the bridge: msgspec Structs that mirror the YAML file.

Every Struct forbids unknown keys; ranges live in the types (``Meta``).
Cross-field rules live in ``bridge.config.load.cross_checks``. The annotated
example is ``ops/config/busbridge.example.yaml``; a test loads it.

Units are in the names: ``*_secs`` seconds, ``*_bytes`` bytes.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = [
    "AdminConfig",
    "BridgeConfig",
    "DedupConfig",
    "EmbeddedNatsConfig",
    "FloodConfig",
    "FloodRuleConfig",
    "IdentityConfig",
    "LegacyConfig",
    "NatsConfig",
    "PublishConfig",
    "SpoolConfig",
    "SpoolSync",
    "StorageKind",
    "StreamConfig",
    "ZmqConfig",
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
    #: frames larger than this are refused by libzmq (ZMQ_MAXMSGSIZE); -1 = no cap.
    max_frame_bytes: Annotated[int, Meta(ge=-1)] = 16 * 1024 * 1024
    #: messages handled per event-loop turn before yielding, at most...
    batch_max: PositiveInt = 2048
    #: ...and for at most this long (seconds), so acks and publishing keep flowing under a burst.
    batch_max_secs: PositiveSecs = 0.01


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


class NatsConfig(_Strict):
    """How to reach NATS. No servers: start the embedded one."""

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
    reconnect_wait_secs: PositiveSecs = 1.0
    #: publishes the client buffers while reconnecting, in bytes. 0 (the default) keeps
    #: per-publisher order across a reconnect: the client would flush newer buffered messages
    #: before older ones are retried. The spool holds the backlog on disk instead.
    reconnect_buffer_bytes: Annotated[int, Meta(ge=0)] = 0
    embedded: EmbeddedNatsConfig = msgspec.field(default_factory=EmbeddedNatsConfig)


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


class PublishConfig(_Strict):
    """The pipelined JetStream publisher."""

    #: published but not yet acknowledged messages, at most.
    max_in_flight: PositiveInt = 1024
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
    NORMAL = "NORMAL"  # survives a process kill (kill -9); the default
    FULL = "FULL"  # also survives power loss; slower (fsync per commit)


class SpoolConfig(_Strict):
    """Durable spool (SQLite WAL): every message is on disk before it is published."""

    enabled: bool = True
    #: default ``<data_dir>/spool.db``
    path: str | None = None
    synchronous: SpoolSync = SpoolSync.NORMAL
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
        FloodRuleConfig(name="connection_error", match=r"(?i)connection[ _]?(error|refused|reset)", threshold=10, window_secs=60.0),
        FloodRuleConfig(name="timeout_error", match=r"(?i)time[ _]?out|timed out", threshold=5, window_secs=30.0),
        FloodRuleConfig(
            name="memory_error", match=r"(?i)memory[ _]?error|out of memory", threshold=3, window_secs=300.0, escalate_to="critical"
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
    zmq: ZmqConfig = msgspec.field(default_factory=ZmqConfig)
    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    stream: StreamConfig = msgspec.field(default_factory=StreamConfig)
    publish: PublishConfig = msgspec.field(default_factory=PublishConfig)
    spool: SpoolConfig = msgspec.field(default_factory=SpoolConfig)
    dedup: DedupConfig = msgspec.field(default_factory=DedupConfig)
    flood: FloodConfig = msgspec.field(default_factory=FloodConfig)
    identity: IdentityConfig = msgspec.field(default_factory=IdentityConfig)
    legacy: LegacyConfig = msgspec.field(default_factory=LegacyConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)

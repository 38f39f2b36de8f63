"""Wire contracts of busbridge: every message the bridge stores in JetStream.

Design note
-----------
Each message is a frozen msgspec Struct in one tagged union; the tag field is
``type`` and its value is the snake_case name of the contract (``error_event``,
``dead_letter``). Schema evolution follows msgspec's rules: new fields are only
appended, always with a default, so an older reader decodes a newer message
(unknown fields are ignored) and a newer reader decodes an older one (missing
fields take their default). ``schema_version`` is bumped only for a change an
older reader must not silently accept.

Times are UTC ``datetime`` values (JSON: RFC 3339 with ``Z``). Bytes are
carried base64 encoded in JSON (msgspec's standard encoding of ``bytes``).

Sources: DESIGN §5 (contract list), legacy-bus.md §1 (the dialects that the
``LegacyOrigin`` fields describe).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "CONTRACT_VERSION",
    "BridgeHeartbeat",
    "ConsumerDeadLetter",
    "ConsumerDeadLetterCause",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetterSummary",
    "Dialect",
    "ErrorEvent",
    "FloodEnded",
    "FloodEvent",
    "FloodStarted",
    "FloodSummary",
    "GuardResult",
    "HealthReport",
    "HealthStatus",
    "LegacyOrigin",
    "Message",
    "PhaseChanged",
    "Severity",
    "SpoolEvicted",
    "TimestampKind",
    "Truncation",
]

CONTRACT_VERSION = 1


class Severity(str, enum.Enum):
    """Normalised severity, ordered from least to most severe.

    Legacy values (``ERROR``, ``high``, ``ErrorSeverity.WARNING``, ...) map onto
    these through ``contracts.severity.normalise_severity``.
    """

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (debug) .. 4 (critical): eviction and shedding order."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}


class Dialect(str, enum.Enum):
    """The seven legacy wire dialects of the :7150 bus (legacy-bus.md §1), and the payloads of
    the two legacy NATS error libraries on ``errors.>`` (legacy-bus.md §3)."""

    ERRPUB_ENVELOPE = "errpub_envelope"  # D1: b"ERROR:" + envelope JSON, 1 frame
    PC2_TOPIC = "pc2_topic"  # D2: b"PC2_ERROR:<CAT>:" / b"CROSS_MACHINE_ERROR:PC2:" + JSON
    PREFIX_FLAT = "prefix_flat"  # D3: b"ERROR:" + flat JSON, 1 frame
    MULTIPART_COLON = "multipart_colon"  # D4: [b"ERROR:", JSON]
    MULTIPART_BARE = "multipart_bare"  # D5: [b"ERROR", JSON]
    BARE_JSON = "bare_json"  # D6: JSON object, no topic (MMS, CentralErrorBus relay)
    PREFIX_TEXT = "prefix_text"  # D7: b"ERROR:<Agent>:<context>:" + free text
    NATS_LIBRARY_A = "nats_library_a"  # nats_error_bus.py ErrorEvent JSON on errors.events, ...
    NATS_LIBRARY_B = "nats_library_b"  # nats_client.py ErrorMessage JSON on errors.<sev>.<agent>


class TimestampKind(str, enum.Enum):
    """How the legacy sender stamped the event (legacy-bus.md §1, 'Timestamps')."""

    NAIVE_UTC_ISO = "naive_utc_iso"  # datetime.utcnow().isoformat()
    NAIVE_LOCAL_ISO = "naive_local_iso"  # datetime.now().isoformat(), host-local
    EPOCH_SECONDS = "epoch_seconds"  # time.time() as a JSON float
    MISSING = "missing"  # D7, flat_nots, most relayed frames
    UNPARSEABLE = "unparseable"  # present but not a time: kept raw only


class DeadLetterReason(str, enum.Enum):
    """Why a frame could not be decoded. A bounded set: it is a metric label."""

    EMPTY_FRAME = "empty_frame"
    EMPTY_PAYLOAD = "empty_payload"
    TOO_MANY_FRAMES = "too_many_frames"
    UNKNOWN_TOPIC = "unknown_topic"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    OVERSIZED = "oversized"
    UNKNOWN_SCHEMA = "unknown_schema"  # a legacy NATS payload of neither library's shape
    REDELIVERED = "redelivered"  # a legacy NATS message delivered too often without an outcome


class LegacyOrigin(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Where an ``ErrorEvent`` came from on the legacy bus, with the raw values kept.

    ``topic`` is the topic prefix as text (raw UTF-8 decoded; D2 categories may be
    non-ASCII). ``raw_severity`` and ``raw_timestamp`` are the values as sent,
    before normalisation. ``sanitized`` is true when the payload needed the
    lenient JSON path (``NaN``/``Infinity`` became strings, lone surrogates became
    ``\\uXXXX`` text).
    """

    dialect: Dialect
    variant: str = ""
    topic: str = ""
    raw_severity: Any = None
    raw_timestamp: Any = None
    timestamp_kind: TimestampKind = TimestampKind.MISSING
    message_type: str | None = None
    source_machine: str | None = None
    cross_machine_copy: bool = False
    sanitized: bool = False


class Truncation(msgspec.Struct, frozen=True, kw_only=True):
    """Marker on a message cut down to fit the server's ``max_payload``.

    ``original_bytes``: size of the encoded message before truncation, in bytes.
    ``kept_bytes``: size after. ``fields``: which fields were cut.
    """

    original_bytes: int
    kept_bytes: int
    fields: list[str]


class ErrorEvent(msgspec.Struct, frozen=True, kw_only=True, tag="error_event", tag_field="type"):
    """One error reported on the bus, normalised.

    ``event_id``: the ``Nats-Msg-Id`` (legacy ``error_id`` when present, else a
    hash of the raw frames plus an occurrence counter). ``occurred_at``: when the
    sender says it happened (UTC; ``None`` when the dialect carries no time).
    ``received_at``: when the bridge read the frame (UTC). ``machine``: the
    machine whose bridge received it. ``details``: dict, string, list or null,
    as sent. ``fingerprint``: stable hash of (source, error_type, masked
    message) used by flood control.
    """

    event_id: str
    occurred_at: datetime | None
    received_at: datetime
    machine: str
    source: str
    severity: Severity
    error_type: str
    message: str
    details: Any = None
    fingerprint: str = ""
    legacy: LegacyOrigin | None = None
    truncated: Truncation | None = None
    schema_version: int = CONTRACT_VERSION


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True, tag="dead_letter", tag_field="type"):
    """A frame set the decoder could not turn into an ``ErrorEvent``.

    ``frames``: the exact ZMQ frames as received (base64 in JSON), unless
    ``truncated`` says they were cut to fit ``max_payload``; ``frame_sizes`` are
    always the original sizes in bytes. ``detail`` says what went wrong in words.
    """

    event_id: str
    received_at: datetime
    machine: str
    reason: DeadLetterReason
    frames: list[bytes]
    frame_sizes: list[int]
    dialect_guess: Dialect | None = None
    detail: str = ""
    truncated: Truncation | None = None
    schema_version: int = CONTRACT_VERSION


class SpoolEvicted(
    msgspec.Struct, frozen=True, kw_only=True, tag="spool_evicted", tag_field="type"
):
    """A bridge's spool was full or too old and it evicted messages (DESIGN §2).

    ``by_severity``: evicted count per severity value; ``by_reason``: per reason
    (``max_bytes``, ``max_age``); ``evicted_bytes`` in bytes; the time range is UTC.
    Published on ``<prefix>.bridge.<machine>.spool_evicted`` once NATS is reachable.
    """

    event_id: str
    bridge_id: str
    machine: str
    first_evicted_at: datetime
    last_evicted_at: datetime
    by_severity: dict[str, int]
    by_reason: dict[str, int]
    evicted_bytes: int
    schema_version: int = CONTRACT_VERSION


class _FloodFields(msgspec.Struct, frozen=True, kw_only=True):
    """Fields every flood event carries: which fingerprint, under which rule, at what severity
    (the rule's escalation, else the sample's)."""

    event_id: str
    machine: str
    fingerprint: str
    source: str
    error_type: str
    rule: str
    severity: Severity


class FloodStarted(_FloodFields, frozen=True, kw_only=True, tag="flood_started", tag_field="type"):
    """A fingerprint went over its flood rule: from now on its events are suppressed.

    ``threshold`` events per ``window_secs`` pass; ``sample`` is the first suppressed event.
    """

    threshold: int
    window_secs: float
    started_at: datetime
    sample: ErrorEvent
    schema_version: int = CONTRACT_VERSION


class FloodSummary(_FloodFields, frozen=True, kw_only=True, tag="flood_summary", tag_field="type"):
    """Events suppressed for one fingerprint since the previous summary.

    ``suppressed``: count in this summary; summing ``suppressed`` over every
    summary of a flood gives ``suppressed_total`` of its ``FloodEnded``.
    ``first_seen``/``last_seen``: UTC receive times of the suppressed events.
    ``sample``: one suppressed event of this interval.
    """

    suppressed: int
    suppressed_total: int
    first_seen: datetime
    last_seen: datetime
    sample: ErrorEvent
    schema_version: int = CONTRACT_VERSION


class FloodEnded(_FloodFields, frozen=True, kw_only=True, tag="flood_ended", tag_field="type"):
    """A flood is over: no event of the fingerprint was suppressed for a whole window."""

    started_at: datetime
    ended_at: datetime
    suppressed_total: int
    schema_version: int = CONTRACT_VERSION


class GuardResult(msgspec.Struct, frozen=True, kw_only=True):
    """One cutover guard as evaluated for a transition (``bridge.phase``).

    ``name``: ``parity``, ``spool_empty`` or ``quiet_period``. ``observed`` and
    ``required`` are in the guard's unit (ratio 0..1, messages, seconds);
    ``detail`` says it in words, e.g. ``parity 0.9820 < 0.9990 over 300 s (1234 events)``.
    """

    name: str
    passed: bool
    observed: float | None
    required: float
    detail: str


class PhaseChanged(
    msgspec.Struct, frozen=True, kw_only=True, tag="phase_changed", tag_field="type"
):
    """A bridge moved from one cutover phase to another (DESIGN §4).

    ``from_phase``/``to_phase``: ``zmq_only``, ``dual``, ``nats_primary``, ``nats_only``.
    ``by``: who or what asked (``config:<path>``, ``kv:<key>@<revision>``,
    ``startup``). ``forced``: guards were overridden (``--force``);
    ``guards``: every guard evaluated, passed or not. ``changed_at``: UTC.
    Published on ``<prefix>.bridge.<machine>.phase_changed``.
    """

    event_id: str
    bridge_id: str
    machine: str
    from_phase: str
    to_phase: str
    by: str
    forced: bool
    guards: list[GuardResult]
    changed_at: datetime
    schema_version: int = CONTRACT_VERSION


class HealthStatus(str, enum.Enum):
    """Normalised health of an agent or a bridge (legacy-bus.md §4 lists the raw values).

    ``unknown``: an answer came that says nothing recognisable about health.
    An agent that does not answer at all is ``unhealthy`` (the reason says why).
    """

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class HealthReport(
    msgspec.Struct, frozen=True, kw_only=True, tag="health_report", tag_field="type"
):
    """One health check of one legacy agent (service), made by the bridge of its machine.

    ``status``: normalised; ``raw_status``: the legacy value it came from, as sent
    (``"ok"``, ``"online"``, ``"success"``, ...; ``None`` when there was no answer).
    ``reply_shape``: which legacy reply shape was recognised (``base_agent``,
    ``error_bus_service``, ``wp07_unified``, ``gui_aggregate``, ``status_field``,
    ``plain_text``, ``unrecognised``, or ``none`` without an answer; legacy-bus.md §4).
    ``reason``: why the status is not simply the reply's: ``timeout``,
    ``connection_refused``, ``protocol_mismatch``, ``http_failure`` (no answer),
    ``http_error`` (a non-2xx status, in ``http_status``), ``unrecognised_reply``,
    ``probe_error``; ``""`` otherwise.
    ``checked_at``: when the check started (UTC). ``latency_secs``: request to
    reply in seconds (``None`` without a reply). ``method``: ``zmq_req``,
    ``http_next_port`` or ``http``; ``endpoint``: what was asked (``tcp://host:port``
    or ``http://host:port/health``). ``details``: the decoded reply (JSON value, or
    its text), cut to the bridge's ``health.max_reply_bytes``. ``interval_secs``:
    how often this service is checked, so a reader can tell a stale report.
    ``reported_by``: the bridge id. ``group``: the MainPC agent group, if any.
    Published on ``<prefix>.health.<machine>.<service>``.
    """

    event_id: str
    machine: str
    service: str
    status: HealthStatus
    checked_at: datetime
    raw_status: Any = None
    reply_shape: str = ""
    reason: str = ""
    latency_secs: float | None = None
    http_status: int | None = None
    method: str = ""
    endpoint: str = ""
    details: Any = None
    interval_secs: float = 0.0
    reported_by: str = ""
    group: str | None = None
    schema_version: int = CONTRACT_VERSION


class BridgeHeartbeat(
    msgspec.Struct, frozen=True, kw_only=True, tag="bridge_heartbeat", tag_field="type"
):
    """A bridge says it is alive, with its state (sent every ``interval_secs``).

    ``status``: the bridge's own health (``healthy`` when ready, ``degraded``
    while only buffering to the spool, else ``unhealthy``), ``not_ready_reasons``
    as ``/readyz`` lists them. ``version``: the busbridge package version;
    ``phase``: the cutover phase in force (``zmq_only`` .. ``nats_only``).
    Rates are per second over the last interval: ZMQ messages read
    (``received_per_sec``), PubAcks (``stored_per_sec``), dead letters and drops.
    ``spool_messages``/``spool_bytes``: backlog on disk. ``nats_connected``,
    ``nats_reconnects`` (since start): NATS state. ``zmq_publishers_connected``:
    open legacy publisher connections. ``agents_probed``: local agents in the
    last probe round. ``stopping``: the farewell of a clean shutdown (the bridge sends one
    last heartbeat after draining), so a stopped bridge is told apart from a silent one.
    Times are UTC. Published on ``<prefix>.bridge.<machine>.heartbeat``.
    """

    event_id: str
    bridge_id: str
    machine: str
    sent_at: datetime
    status: HealthStatus
    version: str = ""
    phase: str = ""
    started_at: datetime | None = None
    interval_secs: float = 0.0
    not_ready_reasons: list[str] = []
    received_per_sec: float = 0.0
    stored_per_sec: float = 0.0
    dead_lettered_per_sec: float = 0.0
    dropped_per_sec: float = 0.0
    spool_messages: int = 0
    spool_bytes: int = 0
    nats_connected: bool = False
    nats_reconnects: int = 0
    zmq_publishers_connected: int = 0
    agents_probed: int = 0
    schema_version: int = CONTRACT_VERSION
    #: true on the last heartbeat of a clean shutdown: no more will come (a crash sends none)
    stopping: bool = False


class DeadLetterSummary(
    msgspec.Struct, frozen=True, kw_only=True, tag="dead_letter_summary", tag_field="type"
):
    """Dead letters of one ``key`` suppressed by dead-letter flood control since the previous
    summary (a broken agent spraying undecodable bytes must not fill the stream).

    ``key``: what a storm shares, ``<reason>|<dialect guess or ->|<leading bytes as hex>``
    (``leading_bytes``: the first bytes of the first frame), or ``<reason>|<guess>|*`` for
    the per-reason cap whatever the leading bytes (``leading_bytes`` empty). Per key and ``window_secs``, the
    first ``threshold`` dead letters are stored with their bytes; the rest are counted here:
    ``suppressed`` in this summary, ``suppressed_total`` since the storm began (summing
    ``suppressed`` over a storm's summaries gives it). ``first_seen``/``last_seen``: UTC
    receive times of the suppressed ones. ``sample``: the last suppressed dead letter, each
    frame cut to 256 bytes (``truncated`` says so). ``ended``: the key was quiet for a whole
    window (or the bridge stopped): the storm's last summary. Published on the dead-letter
    subject ``<prefix>.dlq.<machine>``.
    """

    event_id: str
    machine: str
    key: str
    reason: DeadLetterReason
    dialect_guess: Dialect | None
    leading_bytes: bytes
    threshold: int
    window_secs: float
    suppressed: int
    suppressed_total: int
    first_seen: datetime
    last_seen: datetime
    sample: DeadLetter
    ended: bool = False
    schema_version: int = CONTRACT_VERSION


class ConsumerDeadLetterCause(str, enum.Enum):
    """Why a consumer gave up on a message (a bounded set: a metric label)."""

    #: the handler raised on the last allowed attempt (``max_deliver``)
    HANDLER_FAILED = "handler_failed"
    #: delivered more than ``max_deliver`` times without an ack (ack_wait passed while a
    #: consumer crashed or hung, or storing the dead letter failed before): not handled again
    NOT_ACKNOWLEDGED = "not_acknowledged"
    #: the server stopped delivering it (JetStream max-deliveries advisory)
    MAX_DELIVERIES = "max_deliveries"


class ConsumerDeadLetter(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="consumer_dead_letter",
    tag_field="type",
):
    """A message a durable consumer gave up on, with the reason and the original bytes.

    ``event_id``: ``<durable>:<stream_seq>``, also the record's ``Nats-Msg-Id``, so writing
    it twice (a lost ack, several instances seeing one advisory) stores it once within the
    stream's duplicate window. ``stream``/``stream_seq``/``subject``: the original message.
    ``deliveries``: times the server delivered it (the advisory's count for
    ``max_deliveries``). ``cause``: ``ConsumerDeadLetterCause``. Written by ``consumers.bus`` on
    ``<prefix>.consumer_dlq.<durable>``. ``error_type``: the exception's
    qualified class name (``""`` when no handler failure is known); ``error_message``: its
    text, cut to ``consumers.bus.consumer.MAX_ERROR_CHARS``; ``error_traceback``: the formatted traceback, cut
    likewise. ``contract``: the original's ``Busbridge-Contract`` header, else the ``type``
    read from its body, else ``""``. ``headers``: the original headers. ``payload``: the
    original bytes (base64 in JSON), cut to fit the server's ``max_payload`` when
    ``payload_truncated``; ``payload_bytes``: the original size in bytes.
    ``dead_lettered_at``: UTC. ``instance``: ``<host>:<pid>`` of the consumer that wrote it.
    """

    event_id: str
    durable: str
    stream: str
    stream_seq: int
    subject: str
    deliveries: int
    cause: ConsumerDeadLetterCause
    dead_lettered_at: datetime
    error_type: str = ""
    error_message: str = ""
    error_traceback: str = ""
    contract: str = ""
    headers: dict[str, str] = {}
    payload: bytes = b""
    payload_bytes: int = 0
    payload_truncated: bool = False
    instance: str = ""
    schema_version: int = CONTRACT_VERSION


FloodEvent = FloodStarted | FloodSummary | FloodEnded

Message = (
    ErrorEvent
    | DeadLetter
    | SpoolEvicted
    | FloodStarted
    | FloodSummary
    | FloodEnded
    | PhaseChanged
    | HealthReport
    | BridgeHeartbeat
    | DeadLetterSummary
    | ConsumerDeadLetter
)

ContractName = Literal[
    "error_event",
    "dead_letter",
    "spool_evicted",
    "flood_started",
    "flood_summary",
    "flood_ended",
    "phase_changed",
    "health_report",
    "bridge_heartbeat",
    "dead_letter_summary",
    "consumer_dead_letter",
]

"""Every Prometheus series of the bridge, declared once (registry injected).

Names follow ``busbridge_<name>_<unit>[_total]``. Label values are bounded
sets (dialects, dead-letter reasons, message kinds, fixed reason words); never
a machine or subject, and a legacy source only in the inventory counter, capped at
``INVENTORY_MAX_SOURCES`` sources (the rest count as ``_other``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.phase import Phase
from contracts.messages import DeadLetterReason, Dialect, HealthStatus, Severity

__all__ = ["HEALTH_REASONS", "INVENTORY_MAX_SOURCES", "Metrics"]

#: every ``HealthReport.reason`` other than "" (a bounded label set)
HEALTH_REASONS = (
    "timeout",
    "connection_refused",
    "protocol_mismatch",
    "http_failure",
    "http_error",
    "unrecognised_reply",
    "probe_error",
    "no_method",
)

INVENTORY_MAX_SOURCES = 1000

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    """Holds the series; ``registry`` defaults to a fresh private one (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.frames_received = Counter(
            "busbridge_frames_received_total",
            "Legacy ZMQ messages read (one multipart message each)",
            registry=r,
        )
        self.frames_received_bytes = Counter(
            "busbridge_frames_received_bytes_total", "Bytes of legacy ZMQ messages read", registry=r
        )
        self.decoded = Counter(
            "busbridge_decoded_total",
            "Messages decoded into ErrorEvent, by legacy dialect",
            ["dialect"],
            registry=r,
        )
        self.dead_letters = Counter(
            "busbridge_dead_letters_total",
            "Messages turned into DeadLetter, by reason",
            ["reason"],
            registry=r,
        )
        self.dead_letters_suppressed = Counter(
            "busbridge_dead_letters_suppressed_total",
            "Dead letters not stored by dead-letter flood control (counted in DeadLetterSummary"
            " messages), by reason",
            ["reason"],
            registry=r,
        )
        self.unknown_severity = Counter(
            "busbridge_unknown_severity_total",
            "ErrorEvents whose legacy severity was not in the mapping",
            registry=r,
        )
        self.published = Counter(
            "busbridge_published_total",
            "Publish attempts sent to JetStream (retries included)",
            ["kind"],
            registry=r,
        )
        self.acked = Counter(
            "busbridge_acked_total", "PubAcks received, by message kind", ["kind"], registry=r
        )
        self.duplicates = Counter(
            "busbridge_duplicates_total",
            "Duplicates dropped, by where they were caught",
            ["by"],
            registry=r,
        )
        self.publish_failures = Counter(
            "busbridge_publish_failures_total",
            "Failed publish attempts (retried), by reason",
            ["reason"],
            registry=r,
        )
        self.dropped = Counter(
            "busbridge_dropped_total",
            "Accepted messages not delivered, by reason",
            ["reason"],
            registry=r,
        )
        self.truncated = Counter(
            "busbridge_truncated_total",
            "Messages cut to fit the server max_payload",
            ["kind"],
            registry=r,
        )
        self.publish_latency = Histogram(
            "busbridge_publish_latency_seconds",
            "Time from publish to PubAck, per attempt",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "busbridge_in_flight", "Published messages awaiting their PubAck", registry=r
        )
        self.pending = Gauge(
            "busbridge_pending", "Decoded messages waiting for a publish slot", registry=r
        )
        self.nats_connected = Gauge(
            "busbridge_nats_connected", "1 while connected to NATS", registry=r
        )
        self.nats_reconnects = Counter(
            "busbridge_nats_reconnects_total", "Reconnections to NATS", registry=r
        )
        self.zmq_publishers = Gauge(
            "busbridge_zmq_publishers_connected",
            "Open ZMQ connections from legacy publishers (socket monitor)",
            registry=r,
        )
        self.zmq_connection_events = Counter(
            "busbridge_zmq_connection_events_total",
            "ZMQ socket monitor events",
            ["event"],
            registry=r,
        )
        self.spool_rows = Gauge(
            "busbridge_spool_messages", "Messages in the spool (not yet acknowledged)", registry=r
        )
        self.spool_bytes = Gauge(
            "busbridge_spool_bytes", "Bytes accounted in the spool", registry=r
        )
        self.spool_oldest_age = Gauge(
            "busbridge_spool_oldest_age_seconds",
            "Age of the oldest message in the spool",
            registry=r,
        )
        self.spool_appends = Counter(
            "busbridge_spool_appends_total", "Messages written to the spool", registry=r
        )
        self.spool_acks = Counter(
            "busbridge_spool_acks_total",
            "Messages deleted from the spool after their PubAck",
            registry=r,
        )
        self.spool_replayed = Counter(
            "busbridge_spool_replayed_total",
            "Messages read back from the spool (backlog replay)",
            registry=r,
        )
        self.spool_evictions = Counter(
            "busbridge_spool_evictions_total",
            "Messages evicted from a full spool",
            ["reason", "severity"],
            registry=r,
        )
        self.spool_duplicate_risk = Counter(
            "busbridge_spool_duplicate_risk_total",
            "Replayed messages older than the stream duplicate window (may be stored twice)",
            registry=r,
        )
        self.spool_retained_rows = Gauge(
            "busbridge_spool_retained_messages",
            "Acknowledged messages the spool keeps for spool.retain_acked_secs, in case the "
            "NATS server loses them (power cut before its sync_interval)",
            registry=r,
        )
        self.spool_retained_bytes = Gauge(
            "busbridge_spool_retained_bytes",
            "Bytes of the retained acknowledged messages",
            registry=r,
        )
        self.spool_restored = Counter(
            "busbridge_spool_restored_total",
            "Acknowledged messages the stream lost (found after a reconnect) and the spool "
            "published again",
            registry=r,
        )
        self.spool_recovered = Counter(
            "busbridge_spool_recovered_total",
            "Unreadable spool files moved aside at start",
            registry=r,
        )
        self.flood_suppressed = Counter(
            "busbridge_flood_suppressed_total",
            "Events suppressed by flood control, by rule",
            ["rule"],
            registry=r,
        )
        self.floods_active = Gauge(
            "busbridge_floods_active", "Fingerprints currently in a flood", registry=r
        )
        self.flood_events = Counter(
            "busbridge_flood_events_total",
            "Flood events emitted (started, summary, ended)",
            ["kind"],
            registry=r,
        )
        self.identity_evicted_in_window = Gauge(
            "busbridge_identity_evicted_in_window",
            "Frame hashes forgotten while still inside the occurrence window (a later repeat may be "
            "taken for a duplicate): raise identity.max_tracked if this grows",
            registry=r,
        )
        self.decode_worker_up = Gauge(
            "busbridge_decode_worker_up",
            "1 while the decode worker process answers (zmq.decode_worker); 0 while it starts or "
            "restarts, and for good once the bridge decodes in its own process",
            registry=r,
        )
        self.decode_worker_restarts = Counter(
            "busbridge_decode_worker_restarts_total",
            "Decode worker processes started again after the last one died",
            registry=r,
        )
        self.decode_worker_messages = Counter(
            "busbridge_decode_worker_messages_total",
            "ZMQ messages decoded by the decode worker process (zmq.decode_worker); the rest "
            "are decoded in the bridge's own process (auto: small turns while it is idle)",
            registry=r,
        )
        self.config_reloads = Counter(
            "busbridge_config_reloads_total", "Config reloads, by result", ["result"], registry=r
        )
        self.ready = Gauge("busbridge_ready", "1 when /readyz answers ready", registry=r)
        self.phase = Gauge(
            "busbridge_phase",
            "1 for the cutover phase in force, 0 for the others",
            ["phase"],
            registry=r,
        )
        self.phase_transitions = Counter(
            "busbridge_phase_transitions_total",
            "Phase transition requests, by result (applied, forced, refused, unchanged)",
            ["result"],
            registry=r,
        )
        self.phase_desired_mismatch = Gauge(
            "busbridge_phase_desired_mismatch",
            "1 while the requested phase was refused and another is in force",
            registry=r,
        )
        self.inventory = Counter(
            "busbridge_inventory_events_total",
            "Decoded ZMQ events by legacy source and dialect, in every phase (source '_other' past 1000 sources)",
            ["source", "dialect"],
            registry=r,
        )
        self.republished = Counter(
            "busbridge_republished_total",
            "Messages sent on the legacy republish socket, by kind",
            ["kind"],
            registry=r,
        )
        self.loops_dropped = Counter(
            "busbridge_loop_dropped_total",
            "ZMQ frames re-emitted by a bridge that came back into ingest and were dropped (loop prevention)",
            registry=r,
        )
        self.native_skipped = Counter(
            "busbridge_native_reemit_skipped_total",
            "Messages on the native subject not re-emitted to ZMQ, by reason",
            ["reason"],
            registry=r,
        )
        self.parity_matched = Counter(
            "busbridge_parity_matched_total", "Msg ids seen on both ZMQ and JetStream", registry=r
        )
        self.parity_missing = Counter(
            "busbridge_parity_missing_total",
            "Msg ids seen on one side only after parity.match_window_secs, by the side they are missing on",
            ["side"],
            registry=r,
        )
        self.intake_messages = Counter(
            "busbridge_intake_messages_total",
            "Messages of the NATS inputs (native intake, legacy errors.>) by input and outcome:"
            " stored, duplicate, suppressed, rejected (acked), retry, abandoned (nak'ed),"
            " redelivered (dead-lettered after intake.max_deliveries)",
            ["input", "outcome"],
            registry=r,
        )
        self.parity_readback = Counter(
            "busbridge_parity_readback_total",
            "Stored messages read back by the sequence their PubAck gave (parity.nats_side pubacks),"
            " by result: ok, mismatch (another message there) or missing",
            ["result"],
            registry=r,
        )
        self.parity_ratio = Gauge(
            "busbridge_parity_ratio",
            "matched / compared over parity.window_secs (-1 while nothing was compared)",
            registry=r,
        )
        self.zmq_idle_secs = Gauge(
            "busbridge_zmq_idle_seconds",
            "Seconds since the last ZMQ frame or connected publisher",
            registry=r,
        )
        self._init_health(r)
        self._init_label_sets()

    def _init_health(self, r: CollectorRegistry) -> None:
        """Fleet health (``bridge.health``): agent probes, heartbeats, KV/stream writes."""
        self.health_probes = Counter(
            "busbridge_health_probes_total",
            "Legacy agent health probes, by normalised status",
            ["status"],
            registry=r,
        )
        self.health_probe_failures = Counter(
            "busbridge_health_probe_failures_total",
            "Probes whose status is not simply the agent's answer, by reason (timeout, connection_refused, ...)",
            ["reason"],
            registry=r,
        )
        self.health_probe_latency = Histogram(
            "busbridge_health_probe_latency_seconds",
            "Request to reply of answered agent health probes, by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.health_agents = Gauge(
            "busbridge_health_agents",
            "Local legacy agents by the status of their latest probe",
            ["status"],
            registry=r,
        )
        self.health_written = Counter(
            "busbridge_health_written_total",
            "Health messages written, by contract (bridge_heartbeat, health_report) and destination (kv, stream)",
            ["contract", "to"],
            registry=r,
        )
        self.health_write_failures = Counter(
            "busbridge_health_write_failures_total",
            "Health writes deferred because NATS or the KV bucket was unavailable (the latest value is retried)",
            registry=r,
        )
        self.health_startup_config_errors = Counter(
            "busbridge_health_startup_config_errors_total",
            "Failed reads of the legacy startup config (the agents known before are kept)",
            registry=r,
        )

    def _init_label_sets(self) -> None:
        """Create every bounded label child so series exist at 0 from the start."""
        for dialect in Dialect:
            self.decoded.labels(dialect.value)
        for reason in DeadLetterReason:
            self.dead_letters.labels(reason.value)
            self.dead_letters_suppressed.labels(reason.value)
        for kind in ("error_event", "dead_letter"):
            self.published.labels(kind)
            self.acked.labels(kind)
        self.duplicates.labels("jetstream")
        self.duplicates.labels("bridge")
        for result in ("applied", "partial", "refused", "unchanged", "invalid"):
            self.config_reloads.labels(result)
        for kind in ("flood_started", "flood_summary", "flood_ended"):
            self.flood_events.labels(kind)
        for reason in ("timeout", "no_responders", "jetstream_error", "not_connected"):
            self.publish_failures.labels(reason)
        for reason in ("pending_full", "spool_staging_full", "shutdown", "rejected"):
            self.dropped.labels(reason)
        for phase in Phase:
            self.phase.labels(phase.value)
        for result in ("applied", "forced", "refused", "unchanged"):
            self.phase_transitions.labels(result)
        for kind in ("frames", "native"):
            self.republished.labels(kind)
        for side in ("nats", "zmq"):
            self.parity_missing.labels(side)
        for result in ("ok", "mismatch", "missing"):
            self.parity_readback.labels(result)
        self.parity_ratio.set(-1)
        for reason in ("max_bytes", "max_age"):
            for severity in Severity:
                self.spool_evictions.labels(reason, severity.value)
        for status in HealthStatus:
            self.health_probes.labels(status.value)
            self.health_agents.labels(status.value)
        for reason in HEALTH_REASONS:
            self.health_probe_failures.labels(reason)
        for method in ("zmq_req", "http_next_port", "http"):
            self.health_probe_latency.labels(method)
        for contract in ("bridge_heartbeat", "health_report"):
            for to in ("kv", "stream"):
                self.health_written.labels(contract, to)

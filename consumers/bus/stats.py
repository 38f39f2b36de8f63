"""Counts of what a consumer did with every delivery, and the optional Prometheus series.

Every delivery ends in exactly one of: ``processed`` (handler returned, acked),
``redelivered`` (handler raised, nak'd with a delay), ``dead_lettered`` (given up, recorded
on the dead-letter subject, acked), ``skipped`` (acked without the handler, by reason), or
unsettled (an ack, nak or dead-letter write failed: counted under ``errors``; the server
redelivers after ``ack_wait_secs``). ``failed`` counts handler exceptions (each attempt);
``raw`` counts deliveries handed over as ``RawMessage``; ``released``: pulled but not handed
out when an ``async for`` over the consumer was left (nak'd with the first backoff delay);
``advisories``: max-deliveries advisories received.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from consumers.bus.records import SKIP_REASONS

__all__ = ["ERROR_STAGES", "OUTCOMES", "ConsumerMetrics", "ConsumerStats"]

OUTCOMES = (
    "delivered",
    "processed",
    "failed",
    "redelivered",
    "dead_lettered",
    "skipped",
    "raw",
    "released",
    "advisories",
)
#: where a consumer's own NATS operation failed (a bounded set: a metric label)
ERROR_STAGES = ("fetch", "ack", "nak", "dead_letter", "advisory", "in_progress")


class ConsumerMetrics:
    """The Prometheus series of every consumer of one process; build once per registry and
    pass to each ``ErrorBusConsumer`` (label ``durable``; bounded by the durables a process
    runs). Names: ``busbridge_consumer_messages_total{durable,outcome}``,
    ``busbridge_consumer_skipped_total{durable,reason}``,
    ``busbridge_consumer_errors_total{durable,stage}``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "busbridge_consumer_messages_total",
            "ERRBUS consumer deliveries by outcome",
            ["durable", "outcome"],
            registry=r,
        )
        self.skipped = Counter(
            "busbridge_consumer_skipped_total",
            "ERRBUS consumer deliveries acked without the handler, by reason",
            ["durable", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "busbridge_consumer_errors_total",
            "ERRBUS consumer NATS operations that failed, by stage",
            ["durable", "stage"],
            registry=r,
        )


class ConsumerStats:
    """Counters of one consumer instance since it was built.

    Written only on the consumer's event loop thread; any thread may read them (plain
    ints). ``snapshot()`` gives a copy: ``{outcome: int, "skipped_by": {reason: int},
    "errors": {stage: int}}``. Mirrored into ``metrics`` when given.
    """

    def __init__(self, durable: str, metrics: ConsumerMetrics | None = None) -> None:
        self.durable = durable
        self._metrics = metrics
        self.delivered = self.processed = self.failed = self.redelivered = 0
        self.dead_lettered = self.skipped = self.raw = self.released = self.advisories = 0
        self.skipped_by: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self.errors: dict[str, int] = dict.fromkeys(ERROR_STAGES, 0)

    def count(self, outcome: str) -> None:
        """One more of ``outcome`` (one of ``OUTCOMES`` but ``skipped``: see ``skip``)."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        if self._metrics is not None:
            self._metrics.messages.labels(self.durable, outcome).inc()

    def skip(self, reason: str) -> None:
        """One more delivery acked without the handler, for ``reason`` (``SKIP_REASONS``)."""
        self.count("skipped")
        self.skipped_by[reason] += 1
        if self._metrics is not None:
            self._metrics.skipped.labels(self.durable, reason).inc()

    def error(self, stage: str) -> None:
        """One more failed NATS operation at ``stage`` (``ERROR_STAGES``)."""
        self.errors[stage] += 1
        if self._metrics is not None:
            self._metrics.errors.labels(self.durable, stage).inc()

    def snapshot(self) -> dict[str, object]:
        counts: dict[str, object] = {o: getattr(self, o) for o in OUTCOMES}
        counts["skipped_by"] = dict(self.skipped_by)
        counts["errors"] = dict(self.errors)
        return counts

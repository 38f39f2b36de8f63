"""The bridge's own heartbeat: a ``BridgeHeartbeat`` from its metrics and readiness.

``collect_stats(metrics, readiness)`` reads a ``BridgeStats`` snapshot: counter
totals (ZMQ messages read, PubAcks, dead letters, drops, all labels summed),
spool and connection gauges, and ``/readyz``'s verdict. ``HeartbeatBuilder``
turns successive snapshots into heartbeats whose rates are per second over
the time since the previous one (the first: since the builder was made).
Status: ``healthy`` when ready, ``degraded`` when ``/readyz`` says only
buffering is going on (NATS down or a backlog, the spool holds everything),
``unhealthy`` otherwise.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, NamedTuple

from prometheus_client.metrics import MetricWrapperBase

from bridge.metrics import Metrics
from contracts.messages import BridgeHeartbeat, HealthStatus

__all__ = ["BridgeStats", "HeartbeatBuilder", "collect_stats", "package_version"]

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class BridgeStats(NamedTuple):
    """One snapshot of a bridge's state; ``*_total`` are counters since start."""

    received_total: float = 0.0
    stored_total: float = 0.0
    dead_lettered_total: float = 0.0
    dropped_total: float = 0.0
    spool_messages: int = 0
    spool_bytes: int = 0
    nats_connected: bool = False
    nats_reconnects: int = 0
    zmq_publishers_connected: int = 0
    ready: bool = False
    degraded: bool = False
    not_ready_reasons: tuple[str, ...] = ()


def collect_stats(metrics: Metrics, readiness: Readiness) -> BridgeStats:
    """Snapshot of ``metrics`` and ``readiness()`` (never raises for missing series)."""
    ready, details = readiness()
    return BridgeStats(
        received_total=_sum(metrics.frames_received),
        stored_total=_sum(metrics.acked),
        dead_lettered_total=_sum(metrics.dead_letters),
        dropped_total=_sum(metrics.dropped),
        spool_messages=int(_sum(metrics.spool_rows)),
        spool_bytes=int(_sum(metrics.spool_bytes)),
        nats_connected=_sum(metrics.nats_connected) > 0,
        nats_reconnects=int(_sum(metrics.nats_reconnects)),
        zmq_publishers_connected=int(_sum(metrics.zmq_publishers)),
        ready=ready,
        degraded=bool(details.get("degraded")),
        not_ready_reasons=tuple(details.get("reasons", ())),
    )


def _sum(metric: MetricWrapperBase) -> float:
    """Sum of a series' values over all its labels (counters: the ``_total`` samples)."""
    total = 0.0
    for family in metric.collect():
        for sample in family.samples:
            if family.type != "counter" or sample.name.endswith("_total"):
                total += sample.value
    return total


def package_version() -> str:
    try:
        return metadata.version("busbridge")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class HeartbeatBuilder:
    """Builds the heartbeats of one bridge; ``phase()`` names the cutover phase in force."""

    def __init__(
        self,
        *,
        bridge_id: str,
        machine: str,
        interval_secs: float,
        phase: Callable[[], str],
        version: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bridge_id, self.machine, self.interval_secs = bridge_id, machine, interval_secs
        self._phase, self._clock, self._now = phase, clock, now
        self.version = version if version is not None else package_version()
        self.started_at = now()
        self._boot = uuid.uuid4().hex[:12]
        self._count = 0
        self._prev = (clock(), BridgeStats())

    def build(
        self, stats: BridgeStats, *, agents_probed: int = 0, stopping: bool = False
    ) -> BridgeHeartbeat:
        """The next heartbeat; rates cover the time since the previous call. ``stopping``: the
        last one of a clean shutdown."""
        at = self._clock()
        since, prev = self._prev
        elapsed = max(at - since, 1e-9)
        self._prev = (at, stats)
        self._count += 1
        rate = lambda now, before: round(max(0.0, now - before) / elapsed, 3)  # noqa: E731
        return BridgeHeartbeat(
            event_id=f"hb-{self.bridge_id}-{self._boot}-{self._count}",
            bridge_id=self.bridge_id,
            machine=self.machine,
            sent_at=self._now(),
            status=_status(stats),
            version=self.version,
            phase=self._phase(),
            started_at=self.started_at,
            interval_secs=self.interval_secs,
            not_ready_reasons=list(stats.not_ready_reasons),
            received_per_sec=rate(stats.received_total, prev.received_total),
            stored_per_sec=rate(stats.stored_total, prev.stored_total),
            dead_lettered_per_sec=rate(stats.dead_lettered_total, prev.dead_lettered_total),
            dropped_per_sec=rate(stats.dropped_total, prev.dropped_total),
            spool_messages=stats.spool_messages,
            spool_bytes=stats.spool_bytes,
            nats_connected=stats.nats_connected,
            nats_reconnects=stats.nats_reconnects,
            zmq_publishers_connected=stats.zmq_publishers_connected,
            agents_probed=agents_probed,
            stopping=stopping,
        )


def _status(stats: BridgeStats) -> HealthStatus:
    if stats.ready:
        return HealthStatus.HEALTHY
    return HealthStatus.DEGRADED if stats.degraded else HealthStatus.UNHEALTHY

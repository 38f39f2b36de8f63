"""The per-message path, called synchronously by the ingest loop for each message:
frames -> decode -> outbound -> publisher queue. The decisions are made by the
stages; this module acts on them and counts every outcome (DESIGN §1).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from contracts.messages import DeadLetter, ErrorEvent
from contracts.severity import normalise_severity
from bridge.metrics import Metrics
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import Outbound

__all__ = ["IngestRunner", "Sink"]


class _Decoder(Protocol):  # bridge.pipeline.decode.LegacyDecoder
    def decode(self, frames: list[bytes], received_at: datetime) -> ErrorEvent | DeadLetter: ...


class Sink(Protocol):
    """Where outbound messages go: the spooled queue, or the publisher without a spool."""

    def submit(self, item: Outbound) -> bool: ...


class IngestRunner:
    """``runner(frames)``: handle one legacy ZMQ message. Never raises, never blocks.

    Outcomes, each a metric: decoded (by dialect) or dead-lettered (by reason);
    then accepted by the sink, or dropped with ``drop_reason`` when it is full.
    """

    def __init__(
        self,
        decoder: _Decoder,
        builder: OutboundBuilder,
        sink: Sink,
        metrics: Metrics,
        *,
        drop_reason: str = "pending_full",
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._decoder = decoder
        self._builder = builder
        self._sink = sink
        self._dropped = metrics.dropped.labels(drop_reason)
        self._m = metrics
        self._now = wall_clock
        self._decoded: dict[str, Any] = {}  # dialect -> counter child, filled lazily
        self._dead: dict[str, Any] = {}
        self.received = 0

    def __call__(self, frames: list[bytes]) -> None:
        self.received += 1
        self._m.frames_received.inc()
        self._m.frames_received_bytes.inc(sum(map(len, frames)))
        msg = self._decoder.decode(frames, self._now())
        self._count(msg)
        if not self._sink.submit(self._builder.build(msg)):
            self._dropped.inc()

    def _count(self, msg: ErrorEvent | DeadLetter) -> None:
        if isinstance(msg, ErrorEvent):
            dialect = msg.legacy.dialect.value if msg.legacy else "native"
            child = self._decoded.get(dialect) or self._decoded.setdefault(dialect, self._m.decoded.labels(dialect))
            child.inc()
            if msg.legacy is not None and msg.legacy.raw_severity is not None and not _known(msg):
                self._m.unknown_severity.inc()
        else:
            reason = msg.reason.value
            child = self._dead.get(reason) or self._dead.setdefault(reason, self._m.dead_letters.labels(reason))
            child.inc()


def _known(ev: ErrorEvent) -> bool:
    return normalise_severity(ev.legacy.raw_severity)[1] if ev.legacy else True

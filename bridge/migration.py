"""Who is left: the sources this bridge saw, by transport, and the fleet view (DESIGN §8).

Design note
-----------
``SourceInventory`` is fed by the ingest runner once per batch (``add(counts, now)`` with the
batch's ``{(source, transport): n}``; one dict operation per message before that) and by the
NATS inputs. It keeps ``first_seen``/``last_seen`` (UTC) and a count per ``(source,
transport)``, at most ``max_sources`` entries: the least recently seen is dropped first and
counted. ``report()`` is the ``contracts.migration.MigrationReport`` the bridge writes to the
``busbridge_migration`` KV bucket; ``fleet_rows(reports)`` merges every bridge's report into one
row per ``(machine, source, transport)`` for ``busbridge migration``.

``legacy_nats_idle_secs(reports, now)`` feeds the ``nats_only`` guard: seconds since any bridge
of the fleet last saw an event of a legacy NATS library, ``inf`` when none was ever seen (ZMQ
publishers have their own ``quiet_period`` guard on each machine's :7150). Legacy NATS messages are read by one fleet-shared consumer, so the bridge that
processes them may not be the one asked to go ``nats_only``: the fleet view covers that.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from contracts.messages import DeadLetter, Dialect, ErrorEvent
from contracts.migration import MigrationReport, SourceSeen, is_legacy

__all__ = ["TRANSPORTS", "SourceInventory", "fleet_rows", "legacy_nats_idle_secs", "transport_of"]

_NATS_DIALECTS = {
    Dialect.NATS_LIBRARY_A: "nats:library_a",
    Dialect.NATS_LIBRARY_B: "nats:library_b",
}
#: dialect value -> transport label, for the runner's hot path
TRANSPORTS = {d.value: _NATS_DIALECTS.get(d) or f"zmq:{d.value}" for d in Dialect}


def transport_of(msg: ErrorEvent | DeadLetter, client_api: str | None = None) -> str | None:
    """The transport label of an event (None for a dead letter: it has no source)."""
    if not isinstance(msg, ErrorEvent):
        return None
    if msg.legacy is None:
        return f"native:{client_api or 'native'}"
    dialect = msg.legacy.dialect
    return _NATS_DIALECTS.get(dialect) or f"zmq:{dialect.value}"


class SourceInventory:
    """See the module note. ``clock``: UTC wall clock."""

    def __init__(
        self,
        max_sources: int = 2000,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if max_sources < 1:
            raise ValueError("max_sources must be positive")
        self.max_sources = max_sources
        self._clock = clock
        self.started_at = clock()
        #: (source, transport) -> [first_seen, last_seen, count]
        self._seen: OrderedDict[tuple[str, str], list] = OrderedDict()
        self.dropped = 0

    def add(self, counts: dict[tuple[str, str], int], now: datetime | None = None) -> None:
        """Record ``counts`` (``{(source, transport): events}``) seen at ``now``."""
        if not counts:
            return
        now = now or self._clock()
        seen = self._seen
        for key, n in counts.items():
            entry = seen.get(key)
            if entry is None:
                seen[key] = [now, now, n]
            else:
                entry[1] = now
                entry[2] += n
                seen.move_to_end(key)
        while len(seen) > self.max_sources:
            seen.popitem(last=False)
            self.dropped += 1

    def report(self, machine: str, bridge_id: str) -> MigrationReport:
        sources = [
            SourceSeen(source=s, transport=t, first_seen=e[0], last_seen=e[1], count=e[2])
            for (s, t), e in self._seen.items()
        ]
        return MigrationReport(
            machine=machine,
            bridge_id=bridge_id,
            written_at=self._clock(),
            started_at=self.started_at,
            sources=sources,
            dropped_sources=self.dropped,
        )


def fleet_rows(reports: Iterable[MigrationReport]) -> list[dict]:
    """One row per ``(machine, source, transport)`` over every report (several bridges of one
    machine are merged: earliest first seen, latest last seen, counts added), sorted legacy
    first, then by machine, source and transport."""
    rows: dict[tuple[str, str, str], dict] = {}
    for report in reports:
        for s in report.sources:
            key = (report.machine, s.source, s.transport)
            row = rows.get(key)
            if row is None:
                rows[key] = {
                    "machine": report.machine,
                    "source": s.source,
                    "transport": s.transport,
                    "legacy": is_legacy(s.transport),
                    "first_seen": s.first_seen,
                    "last_seen": s.last_seen,
                    "count": s.count,
                }
            else:
                row["first_seen"] = min(row["first_seen"], s.first_seen)
                row["last_seen"] = max(row["last_seen"], s.last_seen)
                row["count"] += s.count
    return sorted(
        rows.values(),
        key=lambda r: (not r["legacy"], r["machine"], r["source"], r["transport"]),
    )


def legacy_nats_idle_secs(reports: Iterable[MigrationReport], now: datetime | None = None) -> float:
    """Seconds since any report last saw a legacy NATS library (``nats:*``); ``inf`` if none
    ever did. (ZMQ publishers have their own guard: each bridge sees its own :7150.)"""
    now = now or datetime.now(UTC)
    last = max(
        (s.last_seen for r in reports for s in r.sources if s.transport.startswith("nats:")),
        default=None,
    )
    return math.inf if last is None else max(0.0, (now - last).total_seconds())

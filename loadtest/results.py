"""What a load-test run found: probe report, checks and the scenario result (JSON-able msgspec Structs).

Shapes (spec of issue 7): ``ProbeReport`` is computed by ``loadtest.probe.StreamProbe.report``
against the producer's ``SentLog``; ``ScenarioResult`` is what every scenario returns and what
``loadtest.report`` prints, dumps as JSON and plots. Times in milliseconds carry ``_ms``,
seconds ``_secs``. ``correctness_checks`` judges loss, duplicates, order, unexpected
messages, dead letters and flood balance: never speed (DESIGN §7: speed is measured, not tested).
"""

from __future__ import annotations

from typing import Any

import msgspec

from loadtest.workload import Workload

__all__ = [
    "Check",
    "FloodReconciliation",
    "LatencyStats",
    "ProbeReport",
    "ScenarioResult",
    "correctness_checks",
    "latency_stats",
]


class LatencyStats(msgspec.Struct, frozen=True, kw_only=True):
    """Latency over ``count`` events, in ms: end to end (ZMQ send -> JetStream consumer
    receipt, ``ProbeReport.latency``) or to the stream (``ProbeReport.latency_to_stored``).

    ``histogram_ms``: ``(bucket upper bound in ms, events in the bucket)``, log-spaced buckets,
    empty buckets left out; the last bound is ``max_ms``.
    """

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    histogram_ms: list[tuple[float, int]] = []


class FloodReconciliation(msgspec.Struct, frozen=True, kw_only=True):
    """Flood messages sent vs what the stream accounts for (DESIGN §2: suppressed is counted).

    ``sent``: flood messages the producer sent; ``stored_events``: of those, stored as
    ``ErrorEvent``; ``suppressed_in_summaries``: sum of ``FloodSummary.suppressed`` over the
    run; ``summaries``: number of ``FloodSummary`` messages; ``started``/``ended``:
    ``FloodStarted``/``FloodEnded`` counts. ``balanced``: stored + suppressed == sent.
    ``other_suppressed``: events that were not flood messages but were suppressed anyway
    (background traffic caught by flood control: they also show up as lost).
    """

    sent: int
    stored_events: int
    suppressed_in_summaries: int
    summaries: int
    balanced: bool
    started: int = 0
    ended: int = 0
    other_suppressed: int = 0


class ProbeReport(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the probe saw, reconciled by token against what the producer sent.

    Counts are messages. ``expected``: tokens that must be stored exactly once as events
    (``SentLog.expected_events``); ``received_unique``: of those, how many were stored;
    ``lost`` = expected - received_unique; ``duplicated``: extra stored copies of a token;
    ``out_of_order``: events whose first receipt came after a later-sent event of the same
    publisher (per publisher, ordered by send order); ``unexpected``: stored events with no
    token or a token never sent. ``timeline``: ``(second since the first send, sent that
    second, events received that second)``. ``per_publisher``: ``{publisher: {"lost": ..,
    "duplicated": .., "out_of_order": ..}}`` (publishers with all three zero left out).
    ``other_messages``: stored messages of other types (heartbeats, phase changes ...).
    """

    sent: int
    expected: int
    received_unique: int
    lost: int
    duplicated: int
    out_of_order: int
    unexpected: int
    dead_letters_expected: int
    dead_letters_received: int
    latency: LatencyStats | None = None
    flood: FloodReconciliation | None = None
    timeline: list[tuple[float, int, int]] = []
    per_publisher: dict[int, dict[str, int]] = {}
    lost_samples: list[tuple[int, int]] = []
    other_messages: int = 0
    stream_messages: int = 0
    #: dead letters not stored but counted in DeadLetterSummary messages (dead-letter flood
    #: control); ``dead_letters_received`` includes them
    dead_letters_summarised: int = 0
    #: ZMQ send -> the stream's stored time of the event (the nats-server's wall clock, from
    #: the delivery's metadata, set against the probe's monotonic clock once): the bridge's
    #: part of ``latency``, the rest being the delivery to the consumer. Only meaningful with
    #: the server on the producer's host (every scenario here); None when no delivery carried
    #: the time
    latency_to_stored: LatencyStats | None = None


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One pass/fail verdict of a scenario; ``detail`` gives the observed numbers in words."""

    name: str
    ok: bool
    detail: str


class ScenarioResult(msgspec.Struct, kw_only=True):
    """One scenario run: workload, machine facts, probe report, scenario numbers, checks.

    ``machine``: cpu count, platform, python, nats-server version ...; ``started_at``: UTC
    ISO 8601; ``duration_secs``: wall time of the run; ``extra``: scenario-specific numbers
    (outage secs, peak spool, ...); ``passed``: every check ok (a run with no check fails).
    """

    scenario: str
    workload: Workload
    machine: dict[str, Any]
    started_at: str
    duration_secs: float
    probe: ProbeReport | None
    extra: dict[str, Any] = {}
    checks: list[Check] = []

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted non-empty list."""
    rank = max(1, min(len(sorted_values), int(q * len(sorted_values) + 0.999999)))
    return sorted_values[rank - 1]


def _histogram(sorted_ns: list[int], buckets_per_decade: int = 10) -> list[tuple[float, int]]:
    """Log-spaced histogram in ms from 0.01 ms up; the last bucket's bound is the max."""
    bounds, out, i = [], [], 0
    bound = 0.01
    while bound < sorted_ns[-1] / 1e6:
        bounds.append(bound)
        bound *= 10 ** (1 / buckets_per_decade)
    bounds.append(sorted_ns[-1] / 1e6)
    for b in bounds:
        start = i
        while i < len(sorted_ns) and sorted_ns[i] / 1e6 <= b:
            i += 1
        if i > start:
            out.append((round(b, 4), i - start))
    return out


def latency_stats(latencies_ns: list[int]) -> LatencyStats | None:
    """Percentiles (nearest rank) and histogram of latencies given in ns; ``None`` when empty."""
    if not latencies_ns:
        return None
    xs = sorted(max(0, x) for x in latencies_ns)
    return LatencyStats(
        count=len(xs),
        p50_ms=round(_percentile(xs, 0.50) / 1e6, 3),
        p90_ms=round(_percentile(xs, 0.90) / 1e6, 3),
        p99_ms=round(_percentile(xs, 0.99) / 1e6, 3),
        max_ms=round(xs[-1] / 1e6, 3),
        histogram_ms=_histogram(xs),
    )


def correctness_checks(report: ProbeReport, *, allow_lost: int = 0) -> list[Check]:
    """The checks every scenario makes: lost (<= ``allow_lost``), duplicated, out of order,
    unexpected, dead letters expected == received, flood balance (when flood was sent)."""
    r = report
    checks = [
        Check(
            name="lost",
            ok=r.lost <= allow_lost,
            detail=f"{r.lost} of {r.expected} expected events lost (allowed {allow_lost})"
            + (f"; e.g. {r.lost_samples[:5]}" if r.lost_samples else ""),
        ),
        Check(
            name="duplicated", ok=r.duplicated == 0, detail=f"{r.duplicated} extra stored copies"
        ),
        Check(
            name="out_of_order",
            ok=r.out_of_order == 0,
            detail=f"{r.out_of_order} events out of publisher order",
        ),
        Check(
            name="unexpected",
            ok=r.unexpected == 0,
            detail=f"{r.unexpected} stored events with no sent token",
        ),
        Check(
            name="dead_letters",
            ok=r.dead_letters_received == r.dead_letters_expected,
            detail=f"{r.dead_letters_received} dead letters stored or summarised"
            f" ({r.dead_letters_summarised} summarised), {r.dead_letters_expected} expected",
        ),
    ]
    if r.flood is not None and r.flood.sent:
        f = r.flood
        checks.append(
            Check(
                name="flood_balanced",
                ok=f.balanced,
                detail=f"{f.stored_events} stored + {f.suppressed_in_summaries} suppressed in {f.summaries} summaries"
                f" = {f.stored_events + f.suppressed_in_summaries} of {f.sent} flood messages sent",
            )
        )
    return checks

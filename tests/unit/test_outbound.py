"""OutboundBuilder: subjects, headers, ranks and truncation to max_payload."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.pipeline.outbound import OutboundBuilder
from contracts import Subjects, decode
from contracts.messages import ErrorEvent, FloodStarted, Severity

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def _big_event() -> ErrorEvent:
    return ErrorEvent(
        event_id="e1",
        occurred_at=None,
        received_at=NOW,
        machine="M",
        source="A",
        severity=Severity.ERROR,
        error_type="context_overflow",
        message="m",
        details={"blob": "x" * 1_100_000},
    )


def test_flood_event_with_a_huge_sample_fits_max_payload() -> None:
    ev = _big_event()
    started = FloodStarted(
        event_id="f1",
        machine="M",
        fingerprint="fp",
        source="A",
        error_type="t",
        rule="default",
        severity=Severity.ERROR,
        threshold=5,
        window_secs=60.0,
        started_at=NOW,
        sample=ev,
    )
    out = OutboundBuilder(Subjects(), "M", 1024 * 1024).build(started)
    assert len(out.payload) < 1024 * 1024 - 512
    back = decode(out.payload)
    assert back.sample.truncated is not None and back.sample.event_id == "e1"
    assert out.subject == "errbus.flood.M.A"


def test_event_rank_follows_severity() -> None:
    b = OutboundBuilder(Subjects(), "M", 1024 * 1024)
    ev = ErrorEvent(
        event_id="e",
        occurred_at=None,
        received_at=NOW,
        machine="M",
        source="A",
        severity=Severity.INFO,
        error_type="t",
        message="m",
    )
    assert b.build(ev).rank == Severity.INFO.rank

"""Contracts: schemas up to date, tagged union round trip, evolution, subjects."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from contracts import (
    DeadLetter,
    DeadLetterReason,
    ErrorEvent,
    Severity,
    Subjects,
    decode,
    encode,
    sanitise_token,
)
from contracts.schema import SCHEMA_DIR, render_schemas

NOW = datetime(2026, 11, 21, 8, 2, 16, 503872, tzinfo=UTC)


def _event(**kw) -> ErrorEvent:
    base = {
        "event_id": "e1",
        "occurred_at": NOW,
        "received_at": NOW,
        "machine": "MainPC",
        "source": "SystemDigitalTwin",
        "severity": Severity.ERROR,
        "error_type": "vram_exhausted",
        "message": "boom",
    }
    return ErrorEvent(**{**base, **kw})


def test_schemas_are_up_to_date() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.schema.json")}
    assert on_disk == rendered, "run: python -m contracts.schema"


def test_tagged_union_round_trip() -> None:
    ev = _event(details={"k": [1, "x"]})
    dl = DeadLetter(
        event_id="d1",
        received_at=NOW,
        machine="PC2",
        reason=DeadLetterReason.INVALID_UTF8,
        frames=[b"ERROR:\xff"],
        frame_sizes=[7],
    )
    assert decode(encode(ev)) == ev and decode(encode(dl)) == dl
    assert msgspec.json.decode(encode(ev))["type"] == "error_event"
    assert msgspec.json.decode(encode(dl))["frames"] == ["RVJST1I6/w=="]


def test_older_reader_ignores_appended_fields_and_newer_reader_fills_defaults() -> None:
    wire = msgspec.json.decode(encode(_event()))
    wire["field_from_the_future"] = {"x": 1}
    assert decode(msgspec.json.encode(wire)) == _event()
    del wire["details"], wire["fingerprint"], wire["schema_version"]
    assert decode(msgspec.json.encode(wire)).details is None


def test_contracts_are_frozen() -> None:
    with pytest.raises(AttributeError):
        _event().message = "changed"  # type: ignore[misc]


def test_severity_rank_orders_levels() -> None:
    assert [s.rank for s in Severity] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("raw", "token"),
    [
        ("MainPC.service_registry", "MainPC_service_registry"),
        ("", "_"),
        ("a*b>c d", "a_b_c_d"),
        ("x" * 100, "x" * 64),
    ],
)
def test_tokens_are_sanitised(raw: str, token: str) -> None:
    assert sanitise_token(raw) == token


def test_subject_builders() -> None:
    s = Subjects()
    assert (
        s.error("MainPC", Severity.CRITICAL, "Face Agent")
        == "errbus.error.MainPC.critical.Face_Agent"
    )
    assert s.dead_letter("PC2") == "errbus.dlq.PC2"
    assert s.errors(severity="error") == "errbus.error.*.error.*"
    assert s.all == "errbus.>"


def test_legacy_prefix_is_refused() -> None:
    with pytest.raises(ValueError):
        Subjects("errors")

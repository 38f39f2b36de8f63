"""The explicit legacy severity table (legacy-bus.md trap 13) and how the decoder applies it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.pipeline.decode import LegacyDecoder
from contracts.messages import ErrorEvent, Severity
from contracts.severity import LEGACY_SEVERITY, UNKNOWN_SEVERITY_DEFAULT, normalise_severity


@pytest.mark.parametrize(("raw", "expected"), sorted(LEGACY_SEVERITY.items()))
def test_every_table_key(raw: str, expected: Severity) -> None:
    assert normalise_severity(raw) == (expected, True)
    assert normalise_severity(raw.upper()) == (expected, True)
    assert normalise_severity(f"ErrorSeverity.{raw.upper()}") == (expected, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ErrorSeverity.CRITICAL", Severity.CRITICAL),
        ("ErrorSeverity.WARNING", Severity.WARNING),
        ("ERROR", Severity.ERROR),
        ("High", Severity.ERROR),
        ("medium", Severity.WARNING),
        ("low", Severity.INFO),
        ("CRITICAL", Severity.CRITICAL),
        (" warning\n", Severity.WARNING),
        ("fatal", Severity.CRITICAL),
    ],
)
def test_known_spellings(raw: str, expected: Severity) -> None:
    assert normalise_severity(raw) == (expected, True)


@pytest.mark.parametrize(
    "raw",
    [None, 5, 3.5, True, {}, [], "", "bogus", "ErrorSeverity.", "severe", "errorseverity.nope"],
)
def test_unknown_values_default_to_error(raw: Any) -> None:
    assert UNKNOWN_SEVERITY_DEFAULT is Severity.ERROR
    assert normalise_severity(raw) == (Severity.ERROR, False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ErrorSeverity.CRITICAL", Severity.CRITICAL),
        ("High", Severity.ERROR),
        (5, Severity.ERROR),
        (None, Severity.ERROR),
        ("nonsense", Severity.ERROR),
        ("info", Severity.INFO),
    ],
)
def test_decoder_normalises_and_keeps_raw(raw: Any, expected: Severity) -> None:
    decoder = LegacyDecoder(machine="m", identity=lambda frames, error_id: "id")
    payload = json.dumps({"type": "t", "message": "m", "severity": raw}).encode()
    ev = decoder.decode([b"ERROR", payload], datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(ev, ErrorEvent) and ev.legacy is not None
    assert ev.severity is expected
    assert ev.legacy.raw_severity == raw


def test_d1_severity_comes_from_error_data() -> None:
    decoder = LegacyDecoder(machine="m", identity=lambda frames, error_id: "id")
    doc = {
        "message_type": "error_report",
        "source": "S",
        "severity": "info",
        "error_data": {"error_id": "x", "error_type": "t", "severity": "critical"},
    }
    ev = decoder.decode([b"ERROR:" + json.dumps(doc).encode()], datetime(2026, 1, 1, tzinfo=UTC))
    assert isinstance(ev, ErrorEvent) and ev.legacy is not None
    assert (ev.severity, ev.legacy.raw_severity) == (Severity.CRITICAL, "critical")

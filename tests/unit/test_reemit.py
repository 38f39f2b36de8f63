"""NATS-native event -> D1 frame: legacy decoders read it back; the loop mark is found."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bridge.legacy.reemit import encode_d1, is_reemitted
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.identity import EventIdentity
from contracts.messages import Dialect, ErrorEvent, Severity
from loadtest.producer import envelope


def _event(**kw) -> ErrorEvent:
    base = {
        "event_id": "native-1",
        "occurred_at": datetime(2026, 11, 21, 8, 0, 1, tzinfo=UTC),
        "received_at": datetime(2026, 11, 21, 8, 0, 2, tzinfo=UTC),
        "machine": "PC2",
        "source": "TranslationProxy",
        "severity": Severity.CRITICAL,
        "error_type": "gpu_oom",
        "message": "CUDA out of memory",
        "details": {"gpu": 0},
    }
    return ErrorEvent(**{**base, **kw})


def test_d1_round_trip_keeps_id_source_type_severity_message_details() -> None:
    frames = encode_d1(_event(), "mainpc-bridge")
    assert frames[0].startswith(b"ERROR:{")
    decoded = LegacyDecoder(
        machine="MainPC",
        identity=EventIdentity(600, 1000, time.monotonic),
        local_tz=ZoneInfo("UTC"),
    ).decode(frames, datetime.now(UTC))
    assert isinstance(decoded, ErrorEvent)
    assert decoded.legacy is not None and decoded.legacy.dialect is Dialect.ERRPUB_ENVELOPE
    assert decoded.legacy.message_type == "critical_alert"
    assert (decoded.event_id, decoded.source, decoded.error_type) == (
        "native-1",
        "TranslationProxy",
        "gpu_oom",
    )
    assert (decoded.severity, decoded.message, decoded.details) == (
        Severity.CRITICAL,
        "CUDA out of memory",
        {"gpu": 0},
    )
    assert decoded.occurred_at == datetime(2026, 11, 21, 8, 0, 1, tzinfo=UTC)


def test_mark_is_found_only_on_reemitted_frames() -> None:
    assert is_reemitted(encode_d1(_event(), "b"))
    assert not is_reemitted([envelope(0, 1)])
    quoted = b'ERROR:{"message": "the key \\"busbridge_origin\\": was mentioned"}'
    assert not is_reemitted([quoted])
    spoof = encode_d1(
        _event(message='"busbridge_origin": "x"', details='"busbridge_origin": "y"'), "b"
    )
    assert is_reemitted(spoof)


@given(st.text(), st.text())
def test_text_inside_strings_never_looks_like_the_mark(message: str, details: str) -> None:
    import json

    frame = b"ERROR:" + json.dumps({"message": message, "details": details}).encode()
    assert not is_reemitted([frame])

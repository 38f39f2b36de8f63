"""Every captured corpus row through ``LegacyDecoder`` (legacy-bus.md §7).

Legacy rows must become ``ErrorEvent``s of their dialect; synthetic rows must
become ``DeadLetter``s carrying the exact frames; every result must survive
``contracts.codec`` unchanged.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.pipeline.decode import LegacyDecoder
from contracts.codec import decode as codec_decode
from contracts.codec import encode
from contracts.messages import (
    DeadLetter,
    DeadLetterReason,
    Dialect,
    ErrorEvent,
    Severity,
    TimestampKind,
)
from tests.support.corpus import CorpusRow, corpus_path, load_corpus

if not corpus_path().is_file():
    # .ci/run sets BUSBRIDGE_REQUIRE_CORPUS=1: there a missing corpus fails instead of skipping
    if os.environ.get("BUSBRIDGE_REQUIRE_CORPUS") == "1":
        raise RuntimeError(f"BUSBRIDGE_REQUIRE_CORPUS=1 but no legacy corpus at {corpus_path()}")
    pytest.skip(f"legacy corpus not found at {corpus_path()}", allow_module_level=True)

ROWS = load_corpus()
BY_I = {row.i: row for row in ROWS}
RECEIVED = datetime(2026, 11, 21, 8, 30, tzinfo=UTC)
UTC8 = timezone(timedelta(hours=8))


def ids(row: CorpusRow) -> str:
    return f"{row.i}-{row.dialect}-{row.case}"


@pytest.fixture(scope="module")
def decoder() -> LegacyDecoder:
    return LegacyDecoder(
        machine="pc2", identity=lambda frames, error_id: error_id or "frames-hash", local_tz=UTC8
    )


def decode_row(decoder: LegacyDecoder, i: int) -> Any:
    return decoder.decode(BY_I[i].frames, RECEIVED)


def test_corpus_has_both_origins() -> None:
    assert {row.origin for row in ROWS} == {"legacy", "synthetic"}
    zmq_dialects = {d.value for d in Dialect if not d.value.startswith("nats_")}
    assert {row.dialect for row in ROWS if row.is_legacy} == zmq_dialects


@pytest.mark.parametrize("row", ROWS, ids=ids)
def test_row_decodes_and_round_trips(decoder: LegacyDecoder, row: CorpusRow) -> None:
    result = decoder.decode(row.frames, RECEIVED)
    assert codec_decode(encode(result)) == result
    if row.is_legacy:
        assert isinstance(result, ErrorEvent), result
        assert result.legacy is not None
        assert result.legacy.dialect.value == row["dialect"]
        assert result.legacy.variant in ("", row.variant.split(":")[0])
        assert result.received_at == RECEIVED and result.machine == "pc2"
    else:
        assert isinstance(result, DeadLetter), result
        assert result.frames == row.frames
        assert result.frame_sizes == row["sizes"]


def test_row_1_errpub_string_details(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 1)
    assert ev.event_id == "fb685d84-d253-40a5-bf94-f8fd71b35dfe"
    assert (ev.source, ev.error_type, ev.severity) == (
        "SystemDigitalTwin",
        "vram_exhausted",
        Severity.ERROR,
    )
    text = "Failed to connect to MemoryOrchestratorService: Resource temporarily unavailable (#0)"
    assert ev.message == ev.details == text
    assert ev.occurred_at == datetime(2026, 11, 21, 8, 2, 16, 503872, tzinfo=UTC)


def test_rows_43_44_are_one_event(decoder: LegacyDecoder) -> None:
    local, cross = decode_row(decoder, 43), decode_row(decoder, 44)
    assert local.event_id == cross.event_id == "587d0e44-cb4e-40f8-8166-b1283e08c3b7"
    assert local.legacy.topic == "PC2_ERROR:PC2_MEMORY_ORCHESTRATOR:"
    assert cross.legacy.topic == "CROSS_MACHINE_ERROR:PC2:"
    assert (local.legacy.cross_machine_copy, cross.legacy.cross_machine_copy) == (False, True)
    assert local.details == cross.details
    assert local.details["original_details"]["attempt"] == 3


def test_row_47_nan_inf(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 47)
    assert ev.details == {"latency_ms": "NaN", "vram_ratio": "Infinity", "neg": "-Infinity"}
    assert ev.legacy.sanitized
    assert ev.severity is Severity.WARNING


def test_row_18_lone_surrogates(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 18)
    assert ev.details == {"path": "/data/\\udce9t\\udce9.wav"}
    assert ev.legacy.message_type == "critical_alert"


def test_row_109_whole_second_local_time(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 109)
    assert ev.occurred_at == datetime(2026, 11, 21, 0, 2, 22, tzinfo=UTC)
    assert (ev.legacy.variant, ev.legacy.timestamp_kind) == (
        "flat_iso_enum",
        TimestampKind.NAIVE_LOCAL_ISO,
    )


def test_row_138_enum_severity(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 138)
    assert ev.severity is Severity.WARNING
    assert ev.legacy.raw_severity == "ErrorSeverity.WARNING"
    assert ev.source == "unknown"


def test_row_190_multipart_bare_surrogate_message(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 190)
    assert ev.message == "cannot open clip_\\udcff\\udcfe.wav"
    assert ev.error_type == "audio_file_error"


def test_row_212_mms(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 212)
    assert (ev.source, ev.severity, ev.details) == ("ModelManagerSuite", Severity.INFO, None)
    assert ev.legacy.variant == "mms_topic_field"
    assert ev.legacy.timestamp_kind is TimestampKind.EPOCH_SECONDS


def test_row_248_relay_raw(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 248)
    assert ev.message == 'ERROR:{"message_type": "error_report", "source": "X"}'
    assert ev.source == "unknown"


def test_row_260_prefix_text_looks_like_json(decoder: LegacyDecoder) -> None:
    ev = decode_row(decoder, 260)
    assert ev.message == "{'latency_ms': nan, 'vram_ratio': inf, 'neg': -inf}"
    assert (ev.source, ev.error_type) == ("LocalFineTunerAgent", "model_loading")


@pytest.mark.parametrize(
    ("i", "reason"),
    [
        (294, DeadLetterReason.INVALID_UTF8),
        (295, DeadLetterReason.INVALID_UTF8),
        (296, DeadLetterReason.EMPTY_FRAME),
        (297, DeadLetterReason.EMPTY_PAYLOAD),
        (298, DeadLetterReason.TOO_MANY_FRAMES),
        (299, DeadLetterReason.EMPTY_PAYLOAD),
        (300, DeadLetterReason.INVALID_UTF8),
        (301, DeadLetterReason.INVALID_JSON),
        (302, DeadLetterReason.INVALID_UTF8),
        (303, DeadLetterReason.INVALID_JSON),
    ],
)
def test_synthetic_reasons(decoder: LegacyDecoder, i: int, reason: DeadLetterReason) -> None:
    assert decode_row(decoder, i).reason is reason

"""Per-dialect decoding of hand-written legacy frames (legacy-bus.md §1, §9 traps 2-6).

Frames are built the way the legacy senders build them: ``json.dumps`` with
its default separators and ``ensure_ascii``/``allow_nan`` on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.legacy.lenient_json import MAX_DEPTH, loads_lenient
from bridge.legacy.timestamps import parse_timestamp
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.fingerprint import fingerprint
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

R = DeadLetterReason
UTC8 = timezone(timedelta(hours=8))
RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ERROR_ID = "e8c231a2-97f3-4c43-9c4e-0c7c3b0a1d11"


class RecordingIdentity:
    """Identity fake: records every call, returns the error id or ``id-<n>``."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], str | None]] = []

    def __call__(self, frames: Any, error_id: str | None) -> str:
        self.calls.append((list(frames), error_id))
        return error_id or f"id-{len(self.calls)}"


@pytest.fixture
def identity() -> RecordingIdentity:
    return RecordingIdentity()


@pytest.fixture
def decoder(identity: RecordingIdentity) -> LegacyDecoder:
    return LegacyDecoder(machine="pc2", identity=identity, local_tz=UTC8)


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def event(decoder: LegacyDecoder, *frames: bytes) -> ErrorEvent:
    result = decoder.decode(list(frames), RECEIVED)
    assert isinstance(result, ErrorEvent), result
    assert codec_decode(encode(result)) == result
    return result


def dead(decoder: LegacyDecoder, *frames: bytes) -> DeadLetter:
    result = decoder.decode(list(frames), RECEIVED)
    assert isinstance(result, DeadLetter), result
    assert result.frames == list(frames)
    assert result.frame_sizes == [len(f) for f in frames]
    assert codec_decode(encode(result)) == result
    return result


def envelope(**error_data: Any) -> dict[str, Any]:
    data = {
        "error_id": ERROR_ID,
        "error_type": "memory_scheduler_timeout",
        "severity": "low",
        "details": None,
    }
    data.update(error_data)
    return {
        "message_type": "error_report",
        "source": "MainPC.service_registry",
        "timestamp": "2025-07-12T08:02:16.506052",
        "error_data": data,
    }


# --------------------------------------------------------------------------- D1


def test_d1_envelope_dict_details(decoder: LegacyDecoder, identity: RecordingIdentity) -> None:
    details = {"endpoint": "tcp://192.168.100.17:7140", "attempt": 5, "timeout_ms": 5000}
    frame = b"ERROR:" + js(envelope(details=details))
    ev = event(decoder, frame)
    assert ev.legacy is not None
    assert ev.legacy.dialect is Dialect.ERRPUB_ENVELOPE
    assert ev.legacy.topic == "ERROR:"
    assert ev.legacy.message_type == "error_report"
    assert ev.source == "MainPC.service_registry"
    assert (ev.error_type, ev.severity) == ("memory_scheduler_timeout", Severity.INFO)
    assert ev.legacy.raw_severity == "low"
    assert ev.message == "memory_scheduler_timeout"  # no message field, details not a string
    assert ev.details == details
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 2, 16, 506052, tzinfo=UTC)
    assert ev.legacy.timestamp_kind is TimestampKind.NAIVE_UTC_ISO
    assert ev.legacy.raw_timestamp == "2025-07-12T08:02:16.506052"
    assert (ev.machine, ev.received_at, ev.event_id) == ("pc2", RECEIVED, ERROR_ID)
    assert identity.calls == [([frame], ERROR_ID)]
    assert ev.fingerprint == fingerprint(ev.source, ev.error_type, ev.message)
    assert not ev.legacy.sanitized


def test_d1_string_details_is_the_message(decoder: LegacyDecoder) -> None:
    text = "ZMQError: Address already in use (addr='tcp://*:7220')"
    ev = event(decoder, b"ERROR:" + js(envelope(details=text, severity="error")))
    assert ev.message == text
    assert ev.details == text
    assert ev.severity is Severity.ERROR


def test_d1_null_details(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b"ERROR:" + js(envelope(details=None, severity="critical")))
    assert ev.details is None
    assert ev.message == "memory_scheduler_timeout"
    assert ev.severity is Severity.CRITICAL


def test_d1_whole_second_timestamp_and_critical_alert(decoder: LegacyDecoder) -> None:
    doc = envelope(severity="high") | {
        "message_type": "critical_alert",
        "timestamp": "2025-07-12T10:00:00",
    }
    ev = event(decoder, b"ERROR:" + js(doc))
    assert ev.occurred_at == datetime(2025, 7, 12, 10, 0, 0, tzinfo=UTC)
    assert ev.legacy is not None and ev.legacy.message_type == "critical_alert"
    assert ev.severity is Severity.ERROR  # "high" -> error (contracts.severity)


def test_d1_missing_or_empty_error_id_gives_none(
    decoder: LegacyDecoder, identity: RecordingIdentity
) -> None:
    event(decoder, b"ERROR:" + js(envelope(error_id="")))
    event(decoder, b"ERROR:" + js(envelope(error_id=5)))
    assert [call[1] for call in identity.calls] == [None, None]


def test_d1_message_type_without_error_data(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'ERROR:{"message_type": "error_report", "source": "X"}')
    assert ev.legacy is not None and ev.legacy.dialect is Dialect.ERRPUB_ENVELOPE
    assert (ev.source, ev.error_type, ev.message, ev.details) == ("X", "", "", None)


# --------------------------------------------------------------------------- D2


def pc2_doc(**extra: Any) -> dict[str, Any]:
    doc = {
        "message_type": "error_report",
        "source": "advanced_router",
        "source_machine": "PC2",
        "timestamp": "2025-07-31T08:02:19.319939",
        "error_data": {
            "error_id": ERROR_ID,
            "error_type": "vram_exhausted",
            "severity": "critical",
            "category": "pc2_service",
            "details": {"attempt": 1},
            "machine_context": {"host": "192.168.100.17", "current_machine": "mainpc"},
        },
    }
    return doc | extra


def test_d2_pc2_topic(decoder: LegacyDecoder, identity: RecordingIdentity) -> None:
    ev = event(decoder, b"PC2_ERROR:PC2_SERVICE:" + js(pc2_doc()))
    assert ev.legacy is not None
    assert ev.legacy.dialect is Dialect.PC2_TOPIC
    assert ev.legacy.topic == "PC2_ERROR:PC2_SERVICE:"
    assert ev.legacy.source_machine == "PC2"
    assert not ev.legacy.cross_machine_copy
    assert (ev.source, ev.error_type, ev.severity) == (
        "advanced_router",
        "vram_exhausted",
        Severity.CRITICAL,
    )
    assert ev.details == {"attempt": 1}
    assert ev.occurred_at == datetime(2025, 7, 31, 8, 2, 19, 319939, tzinfo=UTC)
    assert identity.calls[0][1] == ERROR_ID


def test_d2_cross_machine_copy_shares_the_id(decoder: LegacyDecoder) -> None:
    first = event(decoder, b"PC2_ERROR:PC2_SERVICE:" + js(pc2_doc()))
    copy_doc = pc2_doc(cross_machine_alert=True, originating_machine="PC2")
    copy = event(decoder, b"CROSS_MACHINE_ERROR:PC2:" + js(copy_doc))
    assert copy.legacy is not None
    assert copy.legacy.cross_machine_copy
    assert copy.legacy.topic == "CROSS_MACHINE_ERROR:PC2:"
    assert copy.event_id == first.event_id == ERROR_ID
    assert copy.fingerprint == first.fingerprint


def test_d2_raw_utf8_category(decoder: LegacyDecoder) -> None:
    ev = event(decoder, "PC2_ERROR:ÑINO:".encode() + js(pc2_doc()))
    assert ev.legacy is not None
    assert ev.legacy.topic == "PC2_ERROR:ÑINO:"
    assert ev.legacy.dialect is Dialect.PC2_TOPIC


def test_d2_bad_topics(decoder: LegacyDecoder) -> None:
    assert dead(decoder, b"PC2_ERROR:\xd1INO:" + js(pc2_doc())).reason is R.INVALID_UTF8
    no_cat = dead(decoder, b"PC2_ERROR:no colon")
    assert (no_cat.reason, no_cat.dialect_guess) == (R.UNKNOWN_TOPIC, Dialect.PC2_TOPIC)
    other = dead(decoder, b"CROSS_MACHINE_ERROR:PC3:" + js(pc2_doc()))
    assert (other.reason, other.dialect_guess) == (R.UNKNOWN_TOPIC, Dialect.PC2_TOPIC)
    empty = dead(decoder, b"PC2_ERROR:PC2_SERVICE:")
    assert (empty.reason, empty.dialect_guess) == (R.EMPTY_PAYLOAD, Dialect.PC2_TOPIC)


# --------------------------------------------------------------------------- D3


def test_d3_flat_epoch(decoder: LegacyDecoder) -> None:
    doc = {
        "timestamp": 1752307200.25,
        "agent": "MemoryClient",
        "error_type": "vram_exhausted",
        "message": "Failed (#0)",
        "severity": "ERROR",
    }
    ev = event(decoder, b"ERROR:" + js(doc))
    assert ev.legacy is not None
    assert (ev.legacy.dialect, ev.legacy.variant) == (Dialect.PREFIX_FLAT, "flat_epoch")
    assert (ev.source, ev.error_type, ev.message) == (
        "MemoryClient",
        "vram_exhausted",
        "Failed (#0)",
    )
    assert ev.severity is Severity.ERROR
    assert ev.details is None
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 0, 0, 250000, tzinfo=UTC)
    assert ev.legacy.timestamp_kind is TimestampKind.EPOCH_SECONDS


def test_d3_flat_src_iso(decoder: LegacyDecoder) -> None:
    doc = {
        "source": "ChainOfThoughtAgent",
        "timestamp": "2025-07-12T08:00:00.5",
        "severity": "WARNING",
        "message": "slow",
        "context": {"k": 1},
    }
    ev = event(decoder, b"ERROR:" + js(doc))
    assert ev.legacy is not None and ev.legacy.variant == "flat_src_iso"
    assert (ev.source, ev.error_type, ev.severity) == ("ChainOfThoughtAgent", "", Severity.WARNING)
    assert ev.details == {"k": 1}
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 0, 0, 500000, tzinfo=UTC)
    assert ev.legacy.timestamp_kind is TimestampKind.NAIVE_UTC_ISO


def test_d3_flat_nots(decoder: LegacyDecoder) -> None:
    doc = {
        "agent": "STTService",
        "error_type": "x",
        "severity": "WARNING",
        "message": "m",
        "context": "ctx text",
    }
    ev = event(decoder, b"ERROR:" + js(doc))
    assert ev.legacy is not None and ev.legacy.variant == "flat_nots"
    assert ev.occurred_at is None
    assert ev.legacy.timestamp_kind is TimestampKind.MISSING
    assert ev.details == "ctx text"


def test_d3_flat_iso_enum_is_host_local(decoder: LegacyDecoder) -> None:
    doc = {
        "timestamp": "2025-07-12T08:02:22",
        "agent": "ModelEvaluationFramework",
        "error_type": "metrics_error",
        "message": "m",
        "severity": "critical",
    }
    ev = event(decoder, b"ERROR:" + js(doc))
    assert ev.legacy is not None and ev.legacy.variant == "flat_iso_enum"
    assert ev.occurred_at == datetime(2025, 7, 12, 0, 2, 22, tzinfo=UTC)  # UTC+8 host
    assert ev.legacy.timestamp_kind is TimestampKind.NAIVE_LOCAL_ISO
    assert ev.severity is Severity.CRITICAL


def test_d3_nan_infinity_are_sanitised(decoder: LegacyDecoder) -> None:
    context = b'{"a": NaN, "b": Infinity, "c": -Infinity}'
    frame = (
        b'ERROR:{"source": "A", "severity": "ERROR", "message": "m", "context": ' + context + b"}"
    )
    ev = event(decoder, frame)
    assert ev.details == {"a": "NaN", "b": "Infinity", "c": "-Infinity"}
    assert ev.legacy is not None and ev.legacy.sanitized


def test_lone_surrogates_become_text(decoder: LegacyDecoder) -> None:
    frame = b'ERROR:{"agent": "A", "message": "clip_\\udcff\\udcfe.wav", "context": {"k\\ud800": "\\ud83d\\udd25"}}'
    ev = event(decoder, frame)
    assert ev.message == "clip_\\udcff\\udcfe.wav"
    assert ev.details == {"k\\ud800": "\U0001f525"}  # a valid pair stays one character
    assert ev.legacy is not None and ev.legacy.sanitized


def test_surrogate_pair_alone_is_not_sanitised(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'ERROR:{"agent": "A", "message": "\\ud83d\\udd25"}')
    assert ev.message == "\U0001f525"
    assert ev.legacy is not None and not ev.legacy.sanitized


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        (1.5, "1.5"),
        ({"a": 1}, '{"a":1}'),
        ([1, "x"], '[1,"x"]'),
        (None, ""),
        (True, "true"),
    ],
)
def test_non_string_message_is_json_text(decoder: LegacyDecoder, value: Any, text: str) -> None:
    ev = event(decoder, b"ERROR:" + js({"agent": "A", "message": value}))
    assert ev.message == text


def test_source_aliases_and_non_strings(decoder: LegacyDecoder) -> None:
    assert event(decoder, b'ERROR:{"agent_name": "N", "message": ""}').source == "N"
    assert event(decoder, b'ERROR:{"source": "", "source_agent": "S"}').source == "S"
    assert event(decoder, b'ERROR:{"agent": 7}').source == "7"
    assert event(decoder, b'ERROR:{"message": "m"}').source == "unknown"
    assert event(decoder, b'ERROR:{"agent": "A", "type": 3}').error_type == "3"


# --------------------------------------------------------------------------- D4 / D5


def test_d4_mp_ctx(decoder: LegacyDecoder, identity: RecordingIdentity) -> None:
    payload = js(
        {
            "error_type": "vram_exhausted",
            "message": "m (#3)",
            "severity": "error",
            "context": {"a": 1},
        }
    )
    ev = event(decoder, b"ERROR:", payload)
    assert ev.legacy is not None
    assert (ev.legacy.dialect, ev.legacy.variant, ev.legacy.topic) == (
        Dialect.MULTIPART_COLON,
        "mp_ctx",
        "ERROR:",
    )
    assert (ev.source, ev.error_type, ev.message) == ("unknown", "vram_exhausted", "m (#3)")
    assert ev.severity is Severity.ERROR
    assert ev.details == {"a": 1}
    assert ev.occurred_at is None
    assert identity.calls == [([b"ERROR:", payload], None)]


def test_d4_error_severity_enum_string(decoder: LegacyDecoder) -> None:
    payload = js(
        {"error_type": "tts_request_error", "message": "m", "severity": "ErrorSeverity.WARNING"}
    )
    ev = event(decoder, b"ERROR:", payload)
    assert ev.severity is Severity.WARNING
    assert ev.legacy is not None
    assert ev.legacy.raw_severity == "ErrorSeverity.WARNING"
    assert ev.legacy.variant == "mp_rc_enum_str"


def test_d4_sndmore_test_with_epoch(decoder: LegacyDecoder) -> None:
    payload = js(
        {"type": "test_error", "message": "t", "severity": "ERROR", "timestamp": 1752307200.0}
    )
    ev = event(decoder, b"ERROR:", payload)
    assert ev.legacy is not None and ev.legacy.variant == "mp_sndmore_test"
    assert ev.error_type == "test_error"
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 0, tzinfo=UTC)


def test_d4_iso_with_offset(decoder: LegacyDecoder) -> None:
    payload = js({"type": "t", "message": "m", "timestamp": "2025-07-12T10:00:00+02:00"})
    ev = event(decoder, b"ERROR:", payload)
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 0, tzinfo=UTC)


def test_d5_multipart_bare(decoder: LegacyDecoder) -> None:
    payload = js(
        {
            "timestamp": "2025-07-12T08:02:27.893119",
            "agent": "AdvancedRouterAgent",
            "type": "vram_exhausted",
            "message": "Failed (#3)",
            "severity": "CRITICAL",
        }
    )
    ev = event(decoder, b"ERROR", payload)
    assert ev.legacy is not None
    assert (ev.legacy.dialect, ev.legacy.topic) == (Dialect.MULTIPART_BARE, "ERROR")
    assert (ev.source, ev.error_type, ev.severity) == (
        "AdvancedRouterAgent",
        "vram_exhausted",
        Severity.CRITICAL,
    )
    assert ev.details is None
    assert ev.occurred_at == datetime(2025, 7, 12, 0, 2, 27, 893119, tzinfo=UTC)
    assert ev.legacy.timestamp_kind is TimestampKind.NAIVE_LOCAL_ISO


# --------------------------------------------------------------------------- D6


def test_d6_mms_topic_field(decoder: LegacyDecoder) -> None:
    frame = js(
        {
            "topic": "ERROR",
            "error_type": "vram_exhausted",
            "message": "m",
            "severity": "info",
            "timestamp": 1752307200.5,
            "agent": "ModelManagerSuite",
        }
    )
    ev = event(decoder, frame)
    assert ev.legacy is not None
    assert (ev.legacy.dialect, ev.legacy.variant, ev.legacy.topic) == (
        Dialect.BARE_JSON,
        "mms_topic_field",
        "",
    )
    assert (ev.source, ev.error_type, ev.message) == ("ModelManagerSuite", "vram_exhausted", "m")
    assert ev.severity is Severity.INFO
    assert ev.details is None
    assert ev.occurred_at == datetime(2025, 7, 12, 8, 0, 0, 500000, tzinfo=UTC)


def test_d6_relay_keeps_unmapped_fields(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'{"agent": "Z", "v": NaN, "source_agent": "other"}')
    assert ev.legacy is not None and ev.legacy.variant == "central_relay"
    assert ev.source == "Z"
    assert ev.details == {"v": "NaN", "source_agent": "other"}
    assert ev.legacy.sanitized


def test_d6_relay_raw(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'{"raw": "ERROR: broken 27"}')
    assert (ev.source, ev.error_type, ev.message, ev.details) == (
        "unknown",
        "",
        "ERROR: broken 27",
        None,
    )
    assert ev.severity is Severity.ERROR


# --------------------------------------------------------------------------- D7


def test_d7_text_with_braces_and_colons(
    decoder: LegacyDecoder, identity: RecordingIdentity
) -> None:
    text = "{'latency_ms': nan, 'x': 1}: still text\nline2\x00 \u00f1 \U0001f525"
    frame = b"ERROR:LocalFineTunerAgent:model_loading:" + text.encode()
    ev = event(decoder, frame)
    assert ev.legacy is not None
    assert ev.legacy.dialect is Dialect.PREFIX_TEXT
    assert ev.legacy.topic == "ERROR:LocalFineTunerAgent:model_loading:"
    assert (ev.source, ev.error_type, ev.message) == ("LocalFineTunerAgent", "model_loading", text)
    assert (ev.severity, ev.legacy.raw_severity, ev.details, ev.occurred_at) == (
        Severity.ERROR,
        None,
        None,
        None,
    )
    assert ev.legacy.timestamp_kind is TimestampKind.MISSING
    assert identity.calls == [([frame], None)]


def test_d7_empty_text_and_dotted_tokens(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b"ERROR:Agent.v2-x:ctx_1:")
    assert (ev.source, ev.error_type, ev.message) == ("Agent.v2-x", "ctx_1", "")


def test_d7_invalid_utf8(decoder: LegacyDecoder) -> None:
    letter = dead(decoder, b"ERROR:LocalFineTunerAgent:model_loading:caf\xe9")
    assert (letter.reason, letter.dialect_guess) == (R.INVALID_UTF8, Dialect.PREFIX_TEXT)


# --------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize(
    ("frames", "reason", "guess"),
    [
        ([], R.EMPTY_FRAME, None),
        ([b""], R.EMPTY_FRAME, None),
        ([b"ERROR:", b"{}", b"trailing"], R.TOO_MANY_FRAMES, Dialect.MULTIPART_COLON),
        ([b"ERROR", b"{}", b""], R.TOO_MANY_FRAMES, Dialect.MULTIPART_BARE),
        ([b"x", b"y", b"z", b"w"], R.TOO_MANY_FRAMES, None),
        ([b"ERROR:", b""], R.EMPTY_PAYLOAD, Dialect.MULTIPART_COLON),
        ([b"ERROR", b""], R.EMPTY_PAYLOAD, Dialect.MULTIPART_BARE),
        ([b"WARNING:", b"{}"], R.UNKNOWN_TOPIC, None),
        ([b"", b""], R.UNKNOWN_TOPIC, None),
        ([b"ERROR:", b"[1, 2]"], R.NOT_AN_OBJECT, Dialect.MULTIPART_COLON),
        ([b"ERROR", b" {}"], R.INVALID_JSON, Dialect.MULTIPART_BARE),
        ([b"ERROR", b'{"a": "caf\xe9"}'], R.INVALID_UTF8, Dialect.MULTIPART_BARE),
        ([b"ERROR:"], R.EMPTY_PAYLOAD, None),
        ([b'ERROR:   \n {"agent":"ws"}  \n'], R.INVALID_JSON, None),
        ([b'ERROR:\xef\xbb\xbf{"agent": "bom"}'], R.INVALID_JSON, None),
        ([b'ERROR:\xff\xfe\xfd{"agent": "x"}'], R.INVALID_UTF8, None),
        ([b'ERROR:{"agent": "caf\xe9"}'], R.INVALID_UTF8, Dialect.PREFIX_FLAT),
        ([b'ERROR:{"agent": "x"'], R.INVALID_JSON, Dialect.PREFIX_FLAT),
        ([b'ERROR:{"message_type": "error_report", '], R.INVALID_JSON, Dialect.ERRPUB_ENVELOPE),
        ([b"ERROR:[1, 2, 3]"], R.NOT_AN_OBJECT, None),
        ([b"ERROR:42"], R.NOT_AN_OBJECT, None),
        ([b"ERROR:hello world"], R.UNKNOWN_TOPIC, None),
        ([b"ERROR:Agent only:"], R.UNKNOWN_TOPIC, None),
        ([b"{broken"], R.INVALID_JSON, Dialect.BARE_JSON),
        ([b'{"a": 1} {"b": 2}'], R.INVALID_JSON, Dialect.BARE_JSON),
        ([b"[1, 2, 3]"], R.UNKNOWN_TOPIC, None),
        ([b"hello"], R.UNKNOWN_TOPIC, None),
        ([b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94."], R.INVALID_UTF8, None),
        (['{"agent": "u16"}'.encode("utf-16")], R.INVALID_UTF8, None),
    ],
)
def test_dead_letters(
    decoder: LegacyDecoder,
    identity: RecordingIdentity,
    frames: list[bytes],
    reason: R,
    guess: Dialect | None,
) -> None:
    letter = dead(decoder, *frames)
    assert (letter.reason, letter.dialect_guess) == (reason, guess)
    assert letter.detail
    assert (letter.machine, letter.received_at, letter.event_id) == ("pc2", RECEIVED, "id-1")
    assert identity.calls == [(frames, None)]


def test_bytes_like_frames_are_accepted(decoder: LegacyDecoder) -> None:
    ev = decoder.decode([bytearray(b"ERROR:"), memoryview(b'{"type": "t"}')], RECEIVED)
    assert isinstance(ev, ErrorEvent) and ev.error_type == "t"
    letter = decoder.decode([bytearray(b"nope")], RECEIVED)
    assert isinstance(letter, DeadLetter) and letter.frames == [b"nope"]


@pytest.mark.parametrize("frames", [[None], [5], None, 42, ["ERROR:{}"]])
def test_garbage_input_never_raises(decoder: LegacyDecoder, frames: Any) -> None:
    result = decoder.decode(frames, RECEIVED)
    assert isinstance(result, DeadLetter)
    assert result.reason is R.INVALID_JSON
    assert "frames are not bytes" in result.detail
    encode(result)


def test_identity_failure_falls_back(identity: RecordingIdentity) -> None:
    def broken(frames: Any, error_id: str | None) -> str:
        raise RuntimeError("boom")

    dec = LegacyDecoder(machine="m", identity=broken)
    ev = dec.decode([b"ERROR:" + js(envelope())], RECEIVED)
    assert isinstance(ev, ErrorEvent) and ev.event_id.startswith("fallback-")
    letter = dec.decode([b""], RECEIVED)
    assert isinstance(letter, DeadLetter) and letter.event_id.startswith("fallback-")


def test_identity_called_once_per_decode(
    decoder: LegacyDecoder, identity: RecordingIdentity
) -> None:
    decoder.decode([b"ERROR:" + js(envelope())], RECEIVED)
    decoder.decode([b"PC2_ERROR:X:" + js(pc2_doc())], RECEIVED)
    decoder.decode([b"ERROR:", b'{"type": "t"}'], RECEIVED)
    decoder.decode([b"garbage"], RECEIVED)
    assert [call[1] for call in identity.calls] == [ERROR_ID, ERROR_ID, None, None]


# --------------------------------------------------------------------------- depth, timestamps, lenient JSON


def nested(depth: int, leaf: bytes = b"1") -> bytes:
    return b'{"a": ' * depth + leaf + b"}" * depth


def test_deep_nesting_is_capped_not_fatal(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'ERROR:{"agent": "A", "context": ' + nested(MAX_DEPTH + 40) + b"}")
    assert ev.legacy is not None and ev.legacy.sanitized
    node = ev.details  # level 2 (the top object is level 1)
    for _ in range(MAX_DEPTH - 2):
        node = node["a"]
    assert isinstance(node, dict)  # level MAX_DEPTH: still a container
    assert isinstance(node["a"], str) and node["a"].startswith('{"a": {"a":')


def test_deep_nesting_on_the_lenient_path(decoder: LegacyDecoder) -> None:
    ev = event(
        decoder,
        b'ERROR:{"agent": "A", "v": NaN, "context": ' + nested(MAX_DEPTH + 5, b"NaN") + b"}",
    )
    assert ev.legacy is not None and ev.legacy.sanitized
    assert ev.details is not None


def test_60_levels_are_kept(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'ERROR:{"agent": "A", "context": ' + nested(60) + b"}")
    assert ev.legacy is not None and not ev.legacy.sanitized


def test_too_deep_for_any_parser_is_a_dead_letter(decoder: LegacyDecoder) -> None:
    assert dead(decoder, b"ERROR:" + nested(20000)).reason is R.INVALID_JSON


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        ("2025-07-12T10:00:00", TimestampKind.NAIVE_UTC_ISO, datetime(2025, 7, 12, 10, tzinfo=UTC)),
        (
            "2025-07-12T10:00:00.000001",
            TimestampKind.NAIVE_UTC_ISO,
            datetime(2025, 7, 12, 10, 0, 0, 1, tzinfo=UTC),
        ),
        (
            "2025-07-12T10:00:00Z",
            TimestampKind.NAIVE_UTC_ISO,
            datetime(2025, 7, 12, 10, tzinfo=UTC),
        ),
        (
            "2025-07-12T10:00:00",
            TimestampKind.NAIVE_LOCAL_ISO,
            datetime(2025, 7, 12, 2, tzinfo=UTC),
        ),
        (0, TimestampKind.EPOCH_SECONDS, datetime(1970, 1, 1, tzinfo=UTC)),
        (1752314400, TimestampKind.EPOCH_SECONDS, datetime(2025, 7, 12, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_parse(raw: Any, kind: TimestampKind, expected: datetime) -> None:
    iso_kind = (
        TimestampKind.NAIVE_LOCAL_ISO
        if kind is TimestampKind.NAIVE_LOCAL_ISO
        else TimestampKind.NAIVE_UTC_ISO
    )
    occurred_at, got_kind = parse_timestamp(raw, iso_kind, UTC8)
    assert (occurred_at, got_kind) == (expected, kind)
    assert occurred_at is not None and occurred_at.tzinfo is UTC


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "",
        "NaN",
        "Infinity",
        "2025-13-40T00:00:00",
        "x" * 1000,
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -0.5,
        253402300800,
        10**30,
        True,
        [],
        {},
        "0001-01-01T00:00:00",
    ],
)
def test_timestamps_unparseable(raw: Any) -> None:
    # "0001-01-01T00:00:00" in UTC+8 falls before year 1 in UTC
    assert parse_timestamp(raw, TimestampKind.NAIVE_LOCAL_ISO, UTC8) == (
        None,
        TimestampKind.UNPARSEABLE,
    )


def test_an_iso_string_reads_the_same_in_every_zone_and_kind_and_the_memo_stays_bounded() -> None:
    """The memo of parsed ISO strings is keyed by string, kind and zone (one string read as
    UTC and as UTC+8 differs by 8 h), and bounded."""
    from bridge.legacy import timestamps

    raw = "2026-12-04T10:00:00"
    as_utc = parse_timestamp(raw, TimestampKind.NAIVE_UTC_ISO, UTC8)
    as_local = parse_timestamp(raw, TimestampKind.NAIVE_LOCAL_ISO, UTC8)
    assert as_utc == (datetime(2026, 12, 4, 10, tzinfo=UTC), TimestampKind.NAIVE_UTC_ISO)
    assert as_local == (datetime(2026, 12, 4, 2, tzinfo=UTC), TimestampKind.NAIVE_LOCAL_ISO)
    assert parse_timestamp(raw, TimestampKind.NAIVE_UTC_ISO, UTC8) == as_utc  # from the memo
    memo = timestamps._from_iso
    for n in range(memo.cache_info().maxsize + 10):
        parse_timestamp(f"2026-12-04T10:00:00.{n:06d}")
    assert memo.cache_info().currsize == memo.cache_info().maxsize


def test_timestamp_missing() -> None:
    assert parse_timestamp(None) == (None, TimestampKind.MISSING)


def test_nan_epoch_in_a_frame_is_unparseable(decoder: LegacyDecoder) -> None:
    ev = event(decoder, b'ERROR:{"agent": "A", "timestamp": NaN, "message": "m"}')
    assert ev.occurred_at is None
    assert ev.legacy is not None
    assert (ev.legacy.timestamp_kind, ev.legacy.raw_timestamp) == (TimestampKind.UNPARSEABLE, "NaN")


def test_lenient_json_paths() -> None:
    assert loads_lenient(b'{"a": [1, 2.5, "x"]}') == ({"a": [1, 2.5, "x"]}, False)
    assert loads_lenient(b'{"a": 1e400}') == ({"a": "Infinity"}, True)
    assert loads_lenient(b'["\\udcff", {"\\udc80k": -Infinity}]') == (
        ["\\udcff", {"\\udc80k": "-Infinity"}],
        True,
    )

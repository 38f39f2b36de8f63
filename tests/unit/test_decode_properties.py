"""Properties of ``LegacyDecoder.decode`` over arbitrary and near-valid frame sets.

For every input: the result is an ``ErrorEvent`` or a ``DeadLetter``, nothing
is raised, the result encodes with ``contracts.codec.encode`` and decodes back
equal, a ``DeadLetter`` carries the exact input frames, and the identity
function is called exactly once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.pipeline.decode import LegacyDecoder
from contracts.codec import decode as codec_decode
from contracts.codec import encode
from contracts.messages import DeadLetter, Dialect, ErrorEvent

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PREFIXES = [
    b"ERROR:",
    b"ERROR",
    b"PC2_ERROR:",
    b"PC2_ERROR:PC2_SERVICE:",
    "PC2_ERROR:ÑINO:".encode(),
    b"PC2_ERROR:\xd1:",
    b"CROSS_MACHINE_ERROR:PC2:",
    b"CROSS_MACHINE_ERROR:",
    b"ERROR:LocalFineTunerAgent:model_loading:",
    b"ERROR:A:",
    b"",
    b"\xef\xbb\xbf",
    b"ERROR: ",
]
TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b" ",
    b"\n",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e400",
    b"-0.0",
    b'"\\udcff"',
    b'"\\ud800x"',
    b'"\\ud83d\\udd25"',
    b'"\\u0000"',
    b'"agent"',
    b'"source"',
    b'"error_data"',
    b'"message_type"',
    b'"timestamp"',
    b'"2025-07-12T10:00:00"',
    b'"topic"',
    b'"raw"',
    b"null",
    b"true",
    b"12",
    b"\xff",
    b"\xe9",
    b"\xef\xbb\xbf",
    "ñ".encode(),
    b"99999999999999999999999999",
]
SURROGATES = st.sampled_from(["\udcff", "\ud800", "\udfff", "\ud83d"])
TEXT = st.text(alphabet=st.one_of(st.characters(), SURROGATES), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT
KEYS = (
    st.sampled_from(
        [
            "agent",
            "source",
            "agent_name",
            "source_agent",
            "error_type",
            "type",
            "message",
            "severity",
            "timestamp",
            "context",
            "details",
            "topic",
            "raw",
            "error_id",
            "message_type",
            "source_machine",
        ]
    )
    | TEXT
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=15,
)
OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=7)
ENVELOPES = st.fixed_dictionaries(
    {
        "message_type": st.sampled_from(["error_report", "critical_alert"]),
        "source": JSON_VALUES,
        "timestamp": st.one_of(TEXT, st.floats(), st.just("2025-07-12T10:00:00")),
        "error_data": st.dictionaries(KEYS, JSON_VALUES, max_size=6),
    },
)


def legacy_json(obj: Any) -> bytes:
    """What ``json.dumps`` (ensure_ascii, allow_nan) puts on the wire."""
    return json.dumps(obj).encode()


PAYLOADS = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(TOKENS), max_size=25).map(b"".join),
    OBJECTS.map(legacy_json),
    ENVELOPES.map(legacy_json),
    JSON_VALUES.map(legacy_json),
)
ONE_FRAME = st.builds(
    lambda prefix, payload: [prefix + payload], st.sampled_from(PREFIXES), PAYLOADS
)
TWO_FRAMES = st.builds(
    lambda topic, payload: [topic, payload],
    st.sampled_from([b"ERROR:", b"ERROR", b"X", b""]),
    PAYLOADS,
)
ANY_FRAMES = st.lists(st.binary(max_size=120), max_size=4)
FRAME_SETS = st.one_of(
    ANY_FRAMES, ONE_FRAME, TWO_FRAMES, st.lists(PAYLOADS, min_size=3, max_size=4)
)


def check(frames: list[bytes]) -> ErrorEvent | DeadLetter:
    calls: list[tuple[list[bytes], str | None]] = []

    def identity(got: Any, error_id: str | None) -> str:
        calls.append((list(got), error_id))
        return error_id or "h"

    result = LegacyDecoder(machine="m", identity=identity).decode(frames, RECEIVED)
    assert isinstance(result, ErrorEvent | DeadLetter)
    assert codec_decode(encode(result)) == result
    assert len(calls) == 1 and calls[0][0] == frames
    if isinstance(result, DeadLetter):
        assert result.frames == frames
        assert result.frame_sizes == [len(f) for f in frames]
        assert calls[0][1] is None
    return result


@SETTINGS
@given(FRAME_SETS)
def test_any_frames_decode_without_raising(frames: list[bytes]) -> None:
    check(frames)


@SETTINGS
@given(OBJECTS)
def test_legacy_encoded_objects_always_decode(obj: dict[str, Any]) -> None:
    payload = legacy_json(obj)
    single = check([b"ERROR:" + payload])
    assert isinstance(single, ErrorEvent)
    assert single.legacy is not None
    assert single.legacy.dialect in (Dialect.ERRPUB_ENVELOPE, Dialect.PREFIX_FLAT)
    for topic, dialect in (
        (b"ERROR:", Dialect.MULTIPART_COLON),
        (b"ERROR", Dialect.MULTIPART_BARE),
    ):
        multipart = check([topic, payload])
        assert isinstance(multipart, ErrorEvent) and multipart.legacy is not None
        assert multipart.legacy.dialect is dialect
    bare = check([payload])
    assert (
        isinstance(bare, ErrorEvent)
        and bare.legacy is not None
        and bare.legacy.dialect is Dialect.BARE_JSON
    )


@SETTINGS
@given(
    ENVELOPES, st.sampled_from([b"PC2_ERROR:PC2_SERVICE:", b"CROSS_MACHINE_ERROR:PC2:", b"ERROR:"])
)
def test_envelopes_always_decode(doc: dict[str, Any], topic: bytes) -> None:
    result = check([topic + legacy_json(doc)])
    assert isinstance(result, ErrorEvent) and result.legacy is not None
    assert result.legacy.dialect in (Dialect.PC2_TOPIC, Dialect.ERRPUB_ENVELOPE)


@SETTINGS
@given(st.text(alphabet=st.one_of(st.characters(), SURROGATES), max_size=60))
def test_prefix_text_keeps_any_text(text: str) -> None:
    result = check([b"ERROR:Agent:ctx:" + text.encode("utf-8", "surrogatepass")])
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        assert isinstance(result, DeadLetter)
    else:
        assert isinstance(result, ErrorEvent) and result.message == text

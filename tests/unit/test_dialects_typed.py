"""The D1/D2 typed decode gives what the lenient, dict-based mapping gives, for any envelope.

``read_frames`` decodes D1/D2 payloads strictly into typed structs first and falls back to
the lenient path (``loads_lenient`` + a dict) for anything the strict pass refuses. The
reference below is the dict-based D1/D2 mapping as it was before the typed path existed,
written out plainly; every generated envelope, valid for the strict pass or not, must map to
the same ``Decoded`` through ``read_frames``.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.legacy.dialects import Decoded, read_frames
from bridge.legacy.lenient_json import MAX_DEPTH, loads_lenient
from bridge.legacy.timestamps import parse_timestamp
from contracts.messages import Dialect, LegacyOrigin, TimestampKind
from contracts.severity import normalise_severity

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", "error", "CRITICAL", "ErrorSeverity.HIGH", "2026-12-03T10:00:00"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
_TOP_KEYS = (
    "source",
    "agent",
    "agent_name",
    "source_agent",
    "error_type",
    "type",
    "severity",
    "message",
    "timestamp",
    "message_type",
    "source_machine",
    "other",
)
_INNER_KEYS = ("error_id", "error_type", "type", "severity", "message", "details", "more")


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    top = draw(st.dictionaries(st.sampled_from(_TOP_KEYS), _JSON, max_size=len(_TOP_KEYS)))
    kind = draw(st.sampled_from(["object", "object", "object", "other", "absent"]))
    if kind == "object":
        top["error_data"] = draw(
            st.dictionaries(st.sampled_from(_INNER_KEYS), _JSON, max_size=len(_INNER_KEYS))
        )
    elif kind == "other":
        top["error_data"] = draw(_JSON)
    return top


def _get_first(obj: dict[str, Any], keys: tuple[str, ...], skip_empty: bool) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value is not None and not (skip_empty and value == ""):
            return value if type(value) is str else str(value)
    return None


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    return "" if value is None else msgspec.json.encode(value).decode()


def _opt_str(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def reference(obj: dict[str, Any], sanitized: bool, dialect: Dialect, topic: str, cross: bool):
    """The D1/D2 mapping on a dict (module docstring of ``bridge.legacy.dialects``)."""
    data = obj.get("error_data")
    inner = data if type(data) is dict else {}
    details = inner.get("details") if type(data) is dict else data
    error_type = _get_first(inner, ("error_type", "type"), False)
    if error_type is None:
        error_type = _get_first(obj, ("error_type", "type"), False) or ""
    severity = inner.get("severity")
    severity = obj.get("severity") if severity is None else severity
    message = inner.get("message")
    message = obj.get("message") if message is None else message
    raw_ts = obj.get("timestamp")
    occurred_at, ts_kind = parse_timestamp(raw_ts, TimestampKind.NAIVE_UTC_ISO)
    error_id = inner.get("error_id")
    return Decoded(
        source=_get_first(obj, ("source", "agent", "agent_name", "source_agent"), True)
        or "unknown",
        error_type=error_type,
        severity=normalise_severity(severity)[0],
        message=_text(message)
        if message is not None
        else (details if type(details) is str else error_type),
        details=details,
        occurred_at=occurred_at,
        legacy=LegacyOrigin(
            dialect=dialect,
            topic=topic,
            raw_severity=severity,
            raw_timestamp=raw_ts,
            timestamp_kind=ts_kind,
            message_type=_opt_str(obj.get("message_type")),
            source_machine=_opt_str(obj.get("source_machine")),
            cross_machine_copy=cross,
            sanitized=sanitized,
        ),
        error_id=error_id if type(error_id) is str and error_id else None,
    )


def _payload(env: dict[str, Any], duplicate: str | None) -> bytes:
    text = json.dumps(env, allow_nan=True)  # NaN/Infinity tokens: strict JSON refuses them
    if duplicate is not None and len(text) > 2:  # a repeated key: the last value counts
        text = '{"' + duplicate + '": "first", ' + text[1:]
    return text.encode("utf-8", "surrogatepass")


@SETTINGS
@given(envelopes(), st.sampled_from([None, "source", "timestamp", "error_data"]))
def test_d1_typed_path_maps_like_the_dict_reference(env: dict[str, Any], dup: str | None) -> None:
    payload = _payload(env, dup)
    got = read_frames([b"ERROR:" + payload], UTC)
    try:
        obj, sanitized = loads_lenient(payload)
    except ValueError:
        assert type(got) is not Decoded
        return
    if type(obj.get("error_data")) is not dict and "message_type" not in obj:
        assert type(got) is not Decoded or got.legacy.dialect is Dialect.PREFIX_FLAT
        return
    assert got == reference(obj, sanitized, Dialect.ERRPUB_ENVELOPE, "ERROR:", False)


@SETTINGS
@given(envelopes(), st.booleans())
def test_d2_typed_path_maps_like_the_dict_reference(env: dict[str, Any], cross: bool) -> None:
    payload = _payload(env, None)
    prefix = b"CROSS_MACHINE_ERROR:PC2:" if cross else b"PC2_ERROR:PC2_SERVICE:"
    got = read_frames([prefix + payload], UTC)
    try:
        obj, sanitized = loads_lenient(payload)
    except ValueError:
        assert type(got) is not Decoded
        return
    assert got == reference(obj, sanitized, Dialect.PC2_TOPIC, prefix.decode(), cross)


def test_non_finite_numbers_and_deep_nesting_take_the_lenient_path() -> None:
    """What the strict pass refuses still decodes, marked sanitized as before."""
    nan = read_frames([b'ERROR:{"source": "A", "error_data": {"details": NaN}}'], UTC)
    assert type(nan) is Decoded and nan.details == "NaN" and nan.legacy.sanitized
    deep = b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5)
    nested = read_frames([b'ERROR:{"source": "A", "error_data": {"details": ' + deep + b"}}"], UTC)
    assert type(nested) is Decoded and nested.legacy.sanitized
    assert type(nested.details) is list  # the part beyond the cap became text

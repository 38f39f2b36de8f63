"""Classification of legacy :7150 frame sets and one decoder per wire dialect.

Source: legacy-bus.md §1 (dialects D1-D7) and §9 traps 2-6. Input is the
frame list of one ``recv_multipart`` (``bytes`` each); ``read_frames`` returns
either a ``Decoded`` (the normalised fields of an ``ErrorEvent`` plus the
legacy ``error_id``) or a ``Rejected`` (the dead-letter reason, the dialect
the prefix suggested, and a detail in words). Pure functions: no I/O, no
logging, no clock. Unexpected exceptions are the caller's to catch
(``bridge.pipeline.decode.LegacyDecoder`` does).

Classification, by frame count and prefix (never "JSON starts at the first {"):

==============================  =========================================
frames                          result
==============================  =========================================
0                               EMPTY_FRAME
3+                              TOO_MANY_FRAMES
[b"ERROR:", json]               D4 multipart_colon
[b"ERROR", json]                D5 multipart_bare
[b"ERROR:" or b"ERROR", b""]    EMPTY_PAYLOAD
[other, any]                    UNKNOWN_TOPIC
b""                             EMPTY_FRAME
b"ERROR:"                       EMPTY_PAYLOAD
b"ERROR:{" ...                  D1 if the object has ``error_data`` (an
                                object) or ``message_type``, else D3
b"ERROR:<Agent>:<ctx>:" text    D7 (tokens ``[A-Za-z0-9_.-]+``; text is
                                strict UTF-8, may hold ``:``, ``{``, NUL)
b"ERROR:" other                 INVALID_UTF8 / NOT_AN_OBJECT / INVALID_JSON
                                (JSON-like start: whitespace, BOM, ``[``,
                                digit...) / UNKNOWN_TOPIC (anything else)
b"PC2_ERROR:<CAT>:{" ...        D2 (CAT up to the next ``:``, strict UTF-8)
b"CROSS_MACHINE_ERROR:PC2:{"    D2 with ``cross_machine_copy``
b"{" ...                        D6 (``mms_topic_field`` if key ``topic``,
                                else ``central_relay``)
anything else                   UNKNOWN_TOPIC (INVALID_UTF8 if not UTF-8)
==============================  =========================================

JSON payloads go through ``bridge.legacy.lenient_json`` and must be an object
starting at the payload's first byte: no BOM or whitespace stripping (a JSON
array/scalar is NOT_AN_OBJECT; whitespace before ``{`` is INVALID_JSON).
D1/D2 envelopes (most of the bus's traffic) are first decoded strictly into
typed structs (``_Envelope``): one msgspec pass, no intermediate dict. Any
payload that pass refuses (not strict JSON, ``error_data`` not an object, a D1
candidate without ``error_data``, nesting that could reach the depth cap) takes
the lenient path above; both paths end in the same field mapping, so the result
is the same whichever one decoded it (``tests/unit/test_dialects_typed.py``).

Field mapping (trap 6; raw values kept in ``LegacyOrigin``):

* source: first non-empty of ``source``, ``agent``, ``agent_name``,
  ``source_agent`` (non-strings ``str()``-ed), D7 the Agent token, else ``"unknown"``;
* error_type: ``error_type``, else ``type`` (D1/D2: in ``error_data`` first,
  then the top level), D7 the context token, else ``""``;
* severity: ``error_data.severity`` (D1/D2) or ``severity`` through
  ``normalise_severity``; D7 has none: ``ERROR``;
* message: D3-D6 ``message`` (non-strings as JSON text, null -> ``""``);
  D6 relay objects without ``message`` use ``raw``; D1/D2 have no message
  field: a ``message`` key if one is present anyway, else ``details`` when it
  is a string, else ``error_type``; D7 the text after the prefix;
* details: D1/D2 ``error_data.details`` as sent (or ``error_data`` itself when
  that is not an object); D3/D4 ``context``; D5/D7 None; D6 the object minus
  the keys mapped above (None when nothing is left);
* timestamps: see ``bridge.legacy.timestamps``; naive ISO is UTC except D3
  ``flat_iso_enum`` and D5 (host-local, ``local_tz``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from bridge.legacy.lenient_json import MAX_DEPTH, LenientJSONError, loads_lenient
from bridge.legacy.timestamps import parse_timestamp
from contracts.messages import DeadLetterReason, Dialect, LegacyOrigin, Severity, TimestampKind
from contracts.severity import normalise_severity

__all__ = [
    "Decoded",
    "Rejected",
    "decode_bare_json",
    "decode_errpub_envelope",
    "decode_multipart_bare",
    "decode_multipart_colon",
    "decode_pc2_topic",
    "decode_prefix_flat",
    "decode_prefix_text",
    "parse_object",
    "read_frames",
]

TOPIC_COLON = b"ERROR:"
TOPIC_BARE = b"ERROR"
PC2_PREFIX = b"PC2_ERROR:"
CROSS_PREFIX = b"CROSS_MACHINE_ERROR:PC2:"
CROSS_FAMILY = b"CROSS_MACHINE_ERROR:"

_R = DeadLetterReason
_UTC_ISO = TimestampKind.NAIVE_UTC_ISO
_LOCAL_ISO = TimestampKind.NAIVE_LOCAL_ISO
_MULTIPART = {TOPIC_COLON: Dialect.MULTIPART_COLON, TOPIC_BARE: Dialect.MULTIPART_BARE}
_PREFIX_TEXT = re.compile(rb"([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+):")
_JSONISH_START = frozenset(b' \t\r\n[{"-0123456789')
_BOM = b"\xef\xbb\xbf"
_SOURCE_KEYS = ("source", "agent", "agent_name", "source_agent")
_TYPE_KEYS = ("error_type", "type")
_encode = msgspec.json.Encoder().encode


class Decoded(msgspec.Struct, frozen=True, kw_only=True):
    """The normalised fields of one legacy event; ``error_id`` is D1/D2's uuid or None."""

    source: str
    error_type: str
    severity: Severity
    message: str
    details: Any
    occurred_at: datetime | None
    legacy: LegacyOrigin
    error_id: str | None = None


class Rejected(msgspec.Struct, frozen=True):
    """Why a frame set is a dead letter."""

    reason: DeadLetterReason
    dialect_guess: Dialect | None = None
    detail: str = ""


# --------------------------------------------------------------------------- classification


def read_frames(frames: Sequence[bytes], local_tz: tzinfo = UTC) -> Decoded | Rejected:
    """Classify one frame set and decode it with its dialect's decoder."""
    count = len(frames)
    if count == 1:
        return _one_frame(frames[0], local_tz)
    if count == 2:
        return _two_frames(frames[0], frames[1], local_tz)
    if count == 0:
        return Rejected(_R.EMPTY_FRAME, None, "no frames")
    guess = _MULTIPART.get(frames[0])
    return Rejected(_R.TOO_MANY_FRAMES, guess, f"{count} frames; legacy dialects use 1 or 2")


def _two_frames(topic: bytes, payload: bytes, local_tz: tzinfo) -> Decoded | Rejected:
    dialect = _MULTIPART.get(topic)
    if dialect is None:
        return Rejected(_R.UNKNOWN_TOPIC, None, f"2 frames with topic frame {_show(topic)}")
    if not payload:
        return Rejected(_R.EMPTY_PAYLOAD, dialect, "empty second frame")
    parsed = parse_object(payload, dialect)
    if type(parsed) is Rejected:
        return parsed
    if dialect is Dialect.MULTIPART_COLON:
        return decode_multipart_colon(*parsed)
    return decode_multipart_bare(*parsed, local_tz=local_tz)


def _one_frame(frame: bytes, local_tz: tzinfo) -> Decoded | Rejected:
    if frame.startswith(TOPIC_COLON):
        return _error_prefixed(frame, local_tz)
    if not frame:
        return Rejected(_R.EMPTY_FRAME, None, "empty frame")
    if frame[0] == 0x7B:  # "{"
        parsed = parse_object(frame, Dialect.BARE_JSON)
        return parsed if type(parsed) is Rejected else decode_bare_json(*parsed)
    if frame.startswith(PC2_PREFIX):
        return _pc2_prefixed(frame)
    if frame.startswith(CROSS_FAMILY):
        return _cross_prefixed(frame)
    return _unknown(frame)


def _error_prefixed(frame: bytes, local_tz: tzinfo) -> Decoded | Rejected:
    if len(frame) == 6:
        return Rejected(_R.EMPTY_PAYLOAD, None, "'ERROR:' with nothing after it")
    if frame[6] == 0x7B:
        return _error_json(frame[6:], local_tz)
    match = _PREFIX_TEXT.match(frame, 6)
    if match is not None:
        return _prefix_text(frame, match)
    return _error_other(frame[6:])


def _error_json(payload: bytes, local_tz: tzinfo) -> Decoded | Rejected:
    if payload.find(b'"error_data"') >= 0:  # D1 likely; D3 skips the typed pass (find: reemit.py)
        env = _typed_envelope(payload)
        if env is not None and env.error_data is not None:  # else D1 or D3: see below
            return _map_envelope(env, env.error_data, False, Dialect.ERRPUB_ENVELOPE, "ERROR:")
    parsed = parse_object(payload, None)
    if type(parsed) is Rejected:
        return Rejected(parsed.reason, _envelope_guess(payload), parsed.detail)
    obj, sanitized = parsed
    if type(obj.get("error_data")) is dict or "message_type" in obj:
        return decode_errpub_envelope(obj, sanitized)
    return decode_prefix_flat(obj, sanitized, local_tz=local_tz)


def _envelope_guess(payload: bytes) -> Dialect:
    if b'"error_data"' in payload or b'"message_type"' in payload:
        return Dialect.ERRPUB_ENVELOPE
    return Dialect.PREFIX_FLAT


def _prefix_text(frame: bytes, match: re.Match[bytes]) -> Decoded | Rejected:
    try:
        text = frame[match.end() :].decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(_R.INVALID_UTF8, Dialect.PREFIX_TEXT, f"text after the prefix: {exc}")
    agent, context = match.group(1).decode("ascii"), match.group(2).decode("ascii")
    return decode_prefix_text(agent, context, text)


def _error_other(rest: bytes) -> Rejected:
    """``ERROR:`` followed by neither ``{`` nor ``<Agent>:<context>:``."""
    parsed = parse_object(rest, None)
    if type(parsed) is Rejected and parsed.reason is not _R.INVALID_JSON:
        return parsed
    if rest[0] in _JSONISH_START or rest.startswith(_BOM):
        detail = parsed.detail if type(parsed) is Rejected else "no JSON object after 'ERROR:'"
        return Rejected(_R.INVALID_JSON, None, f"after 'ERROR:': {detail}")
    return Rejected(
        _R.UNKNOWN_TOPIC,
        None,
        f"after 'ERROR:' neither JSON nor '<Agent>:<context>:': {_show(rest)}",
    )


def _pc2_prefixed(frame: bytes) -> Decoded | Rejected:
    end = frame.find(b":", len(PC2_PREFIX))
    if end < 0:
        return Rejected(
            _R.UNKNOWN_TOPIC, Dialect.PC2_TOPIC, "'PC2_ERROR:' without ':' after the category"
        )
    try:
        topic = frame[: end + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(_R.INVALID_UTF8, Dialect.PC2_TOPIC, f"category: {exc}")
    return _pc2_payload(frame[end + 1 :], topic, cross=False)


def _cross_prefixed(frame: bytes) -> Decoded | Rejected:
    if not frame.startswith(CROSS_PREFIX):
        return Rejected(
            _R.UNKNOWN_TOPIC, Dialect.PC2_TOPIC, f"unknown cross-machine topic {_show(frame)}"
        )
    return _pc2_payload(frame[len(CROSS_PREFIX) :], CROSS_PREFIX.decode(), cross=True)


def _pc2_payload(payload: bytes, topic: str, *, cross: bool) -> Decoded | Rejected:
    if not payload:
        return Rejected(_R.EMPTY_PAYLOAD, Dialect.PC2_TOPIC, f"{topic!r} with nothing after it")
    if payload[0] == 0x7B:
        env = _typed_envelope(payload)
        if env is not None:
            inner = env.error_data or _NO_DATA
            return _map_envelope(env, inner, False, Dialect.PC2_TOPIC, topic, cross=cross)
    parsed = parse_object(payload, Dialect.PC2_TOPIC)
    if type(parsed) is Rejected:
        return parsed
    return decode_pc2_topic(*parsed, topic=topic, cross_machine_copy=cross)


def _unknown(frame: bytes) -> Rejected:
    try:
        frame.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(_R.INVALID_UTF8, None, f"not UTF-8 and no known topic: {_show(frame)}")
    return Rejected(_R.UNKNOWN_TOPIC, None, f"no known topic prefix: {_show(frame)}")


def parse_object(payload: bytes, guess: Dialect | None) -> tuple[dict[str, Any], bool] | Rejected:
    """``(object, sanitized)`` when ``payload`` is exactly one JSON object, else ``Rejected``."""
    try:
        value, sanitized = loads_lenient(payload)
    except LenientJSONError as exc:
        return Rejected(_R.INVALID_UTF8 if exc.invalid_utf8 else _R.INVALID_JSON, guess, str(exc))
    if type(value) is not dict:
        return Rejected(
            _R.NOT_AN_OBJECT, guess, f"JSON {type(value).__name__} where an object was expected"
        )
    if payload[0] != 0x7B:
        return Rejected(
            _R.INVALID_JSON, guess, "bytes before the JSON object (no whitespace/BOM trimming)"
        )
    return value, sanitized


def _show(data: bytes) -> str:
    return repr(data[:40]) + ("..." if len(data) > 40 else "")


# --------------------------------------------------------------------------- field helpers


def _pick_source(obj: dict[str, Any]) -> tuple[str | None, str]:
    """``(key used, source)``: the first non-empty source-like field."""
    for key in _SOURCE_KEYS:
        value = obj.get(key)
        if value is not None and value != "":
            return key, value if type(value) is str else str(value)
    return None, "unknown"


def _pick_type(obj: dict[str, Any]) -> tuple[str | None, str]:
    """``(key used, error_type)``: ``error_type``, else ``type``, else ``""``."""
    for key in _TYPE_KEYS:
        value = obj.get(key)
        if value is not None:
            return key, value if type(value) is str else str(value)
    return None, ""


def _as_text(value: Any) -> str:
    """A message as text: strings as is, null as "", anything else as JSON."""
    if type(value) is str:
        return value
    return "" if value is None else _encode(value).decode("utf-8")


def _opt_str(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _origin(
    obj: dict[str, Any],
    dialect: Dialect,
    variant: str,
    topic: str,
    sanitized: bool,
    iso_kind: TimestampKind,
    local_tz: tzinfo = UTC,
) -> tuple[LegacyOrigin, datetime | None]:
    """``LegacyOrigin`` of a flat (D3-D6) object, and its ``occurred_at``."""
    raw_ts = obj.get("timestamp")
    occurred_at, ts_kind = parse_timestamp(raw_ts, iso_kind, local_tz)
    origin = LegacyOrigin(
        dialect=dialect,
        variant=variant,
        topic=topic,
        raw_severity=obj.get("severity"),
        raw_timestamp=raw_ts,
        timestamp_kind=ts_kind,
        sanitized=sanitized,
    )
    return origin, occurred_at


def _flat_event(
    obj: dict[str, Any], origin: LegacyOrigin, occurred_at: datetime | None, details: Any
) -> Decoded:
    return Decoded(
        source=_pick_source(obj)[1],
        error_type=_pick_type(obj)[1],
        severity=normalise_severity(origin.raw_severity)[0],
        message=_as_text(obj.get("message")),
        details=details,
        occurred_at=occurred_at,
        legacy=origin,
    )


# --------------------------------------------------------------------------- D1 / D2


def decode_errpub_envelope(obj: dict[str, Any], sanitized: bool = False) -> Decoded:
    """D1 ``errpub_envelope``: ``ERROR:`` + ErrorPublisher envelope (naive-UTC ISO)."""
    return _envelope(obj, sanitized, Dialect.ERRPUB_ENVELOPE, "ERROR:", cross=False)


def decode_pc2_topic(
    obj: dict[str, Any], sanitized: bool = False, *, topic: str, cross_machine_copy: bool = False
) -> Decoded:
    """D2 ``pc2_topic``: the D1 envelope plus PC2 fields, under a ``PC2_ERROR:<CAT>:`` topic."""
    return _envelope(obj, sanitized, Dialect.PC2_TOPIC, topic, cross=cross_machine_copy)


class _ErrorData(msgspec.Struct):
    """D1/D2 ``error_data``: the keys the mapping reads (values as sent, any JSON type)."""

    error_id: Any = None
    error_type: Any = None
    type: Any = None
    severity: Any = None
    message: Any = None
    details: Any = None


class _Envelope(msgspec.Struct):
    """A D1/D2 envelope: the keys the mapping reads. Absent and ``null`` are alike here, as
    for ``dict.get``; unknown keys are ignored; a repeated key keeps its last value (as in a
    dict)."""

    error_data: _ErrorData | None = None
    source: Any = None
    agent: Any = None
    agent_name: Any = None
    source_agent: Any = None
    error_type: Any = None
    type: Any = None
    severity: Any = None
    message: Any = None
    timestamp: Any = None
    message_type: Any = None
    source_machine: Any = None


_NO_DATA = _ErrorData()
_envelope_decoder = msgspec.json.Decoder(_Envelope)
_MIN_DEEP_BYTES = 2 * MAX_DEPTH  # as in lenient_json: shorter payloads cannot be that deep


def _typed_envelope(payload: bytes) -> _Envelope | None:
    """The strict, typed decode of a D1/D2 payload, or None when only the lenient path can
    take it (not strict JSON or not UTF-8, ``error_data`` neither an object nor null, possibly
    nested beyond ``MAX_DEPTH``)."""
    if len(payload) > _MIN_DEEP_BYTES and payload.count(b"{") + payload.count(b"[") > MAX_DEPTH:
        return None
    try:
        return _envelope_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None


def _envelope(
    obj: dict[str, Any], sanitized: bool, dialect: Dialect, topic: str, *, cross: bool
) -> Decoded:
    """The lenient path's D1/D2 mapping: ``obj`` as ``_Envelope``; an ``error_data`` that
    is not an object becomes ``details`` (with no inner fields)."""
    data = obj.get("error_data")
    if type(data) is dict:
        env = msgspec.convert(obj, _Envelope)
        inner = env.error_data or _NO_DATA
        return _map_envelope(env, inner, sanitized, dialect, topic, cross=cross)
    env = msgspec.convert({**obj, "error_data": None}, _Envelope)
    return _map_envelope(env, _NO_DATA, sanitized, dialect, topic, cross=cross, details=data)


def _map_envelope(
    env: _Envelope,
    inner: _ErrorData,
    sanitized: bool,
    dialect: Dialect,
    topic: str,
    *,
    cross: bool = False,
    details: Any = _NO_DATA,
) -> Decoded:
    """The D1/D2 field mapping (module docstring); ``details`` defaults to ``inner.details``."""
    if details is _NO_DATA:
        details = inner.details
    error_type = _first_text(inner.error_type, inner.type)
    if error_type is None:
        error_type = _first_text(env.error_type, env.type) or ""
    raw_severity = inner.severity if inner.severity is not None else env.severity
    raw_ts = env.timestamp
    occurred_at, ts_kind = parse_timestamp(raw_ts, _UTC_ISO)
    origin = LegacyOrigin(
        dialect=dialect,
        topic=topic,
        raw_severity=raw_severity,
        raw_timestamp=raw_ts,
        timestamp_kind=ts_kind,
        message_type=_opt_str(env.message_type),
        source_machine=_opt_str(env.source_machine),
        cross_machine_copy=cross,
        sanitized=sanitized,
    )
    message = inner.message if inner.message is not None else env.message
    if message is not None:
        text = _as_text(message)
    else:
        text = details if type(details) is str else error_type
    error_id = inner.error_id
    return Decoded(
        source=_envelope_source(env),
        error_type=error_type,
        severity=normalise_severity(raw_severity)[0],
        message=text,
        details=details,
        occurred_at=occurred_at,
        legacy=origin,
        error_id=error_id if type(error_id) is str and error_id else None,
    )


def _first_text(*values: Any) -> str | None:
    """The first value that is not None, as text (``str()`` of a non-string), else None."""
    for value in values:
        if value is not None:
            return value if type(value) is str else str(value)
    return None


def _envelope_source(env: _Envelope) -> str:
    """``_pick_source`` over the envelope's fields, in ``_SOURCE_KEYS`` order."""
    for value in (env.source, env.agent, env.agent_name, env.source_agent):
        if value is not None and value != "":
            return value if type(value) is str else str(value)
    return "unknown"


# --------------------------------------------------------------------------- D3 / D4 / D5


def decode_prefix_flat(
    obj: dict[str, Any], sanitized: bool = False, *, local_tz: tzinfo = UTC
) -> Decoded:
    """D3 ``prefix_flat``: ``ERROR:`` + one of four flat schemas; details = ``context``."""
    variant = _flat_variant(obj)
    iso_kind = _LOCAL_ISO if variant == "flat_iso_enum" else _UTC_ISO
    origin, occurred_at = _origin(
        obj, Dialect.PREFIX_FLAT, variant, "ERROR:", sanitized, iso_kind, local_tz
    )
    return _flat_event(obj, origin, occurred_at, obj.get("context"))


def _flat_variant(obj: dict[str, Any]) -> str:
    """flat_nots (no timestamp), flat_epoch (number), flat_src_iso / flat_iso_enum (ISO)."""
    stamp = obj.get("timestamp")
    if stamp is None:
        return "flat_nots"
    if type(stamp) is str:
        return "flat_src_iso" if "source" in obj else "flat_iso_enum"
    return "flat_epoch" if type(stamp) in (int, float) else ""


def decode_multipart_colon(obj: dict[str, Any], sanitized: bool = False) -> Decoded:
    """D4 ``multipart_colon``: ``[b"ERROR:", json]``; details = ``context``."""
    origin, occurred_at = _origin(
        obj, Dialect.MULTIPART_COLON, _colon_variant(obj), "ERROR:", sanitized, _UTC_ISO
    )
    return _flat_event(obj, origin, occurred_at, obj.get("context"))


def _colon_variant(obj: dict[str, Any]) -> str:
    """mp_rc_enum_str (``str(ErrorSeverity.X)``), mp_sndmore_test (timestamp/type), mp_ctx."""
    severity = obj.get("severity")
    if type(severity) is str and severity.startswith("ErrorSeverity."):
        return "mp_rc_enum_str"
    if "timestamp" in obj or "type" in obj:
        return "mp_sndmore_test"
    return "mp_ctx" if "context" in obj else ""


def decode_multipart_bare(
    obj: dict[str, Any], sanitized: bool = False, *, local_tz: tzinfo = UTC
) -> Decoded:
    """D5 ``multipart_bare``: ``[b"ERROR", json]`` with ``type``; naive host-local ISO."""
    variant = "pc2_agent_report_error"
    origin, occurred_at = _origin(
        obj, Dialect.MULTIPART_BARE, variant, "ERROR", sanitized, _LOCAL_ISO, local_tz
    )
    return _flat_event(obj, origin, occurred_at, None)


# --------------------------------------------------------------------------- D6 / D7


def decode_bare_json(obj: dict[str, Any], sanitized: bool = False) -> Decoded:
    """D6 ``bare_json``: MMS dict (``topic`` inside) or a CentralErrorBus relay object."""
    variant = "mms_topic_field" if "topic" in obj else "central_relay"
    origin, occurred_at = _origin(obj, Dialect.BARE_JSON, variant, "", sanitized, _UTC_ISO)
    source_key, source = _pick_source(obj)
    type_key, error_type = _pick_type(obj)
    message_key = "message" if "message" in obj else ("raw" if "raw" in obj else None)
    used = (source_key, type_key, message_key, "severity", "timestamp", "topic")
    rest = {key: value for key, value in obj.items() if key not in used}
    return Decoded(
        source=source,
        error_type=error_type,
        severity=normalise_severity(origin.raw_severity)[0],
        message=_as_text(obj.get(message_key)) if message_key else "",
        details=rest or None,
        occurred_at=occurred_at,
        legacy=origin,
    )


def decode_prefix_text(agent: str, context: str, text: str) -> Decoded:
    """D7 ``prefix_text``: ``ERROR:<Agent>:<context>:`` + free text; no severity, no time."""
    origin = LegacyOrigin(dialect=Dialect.PREFIX_TEXT, topic=f"ERROR:{agent}:{context}:")
    return Decoded(
        source=agent,
        error_type=context,
        severity=Severity.ERROR,
        message=text,
        details=None,
        occurred_at=None,
        legacy=origin,
    )

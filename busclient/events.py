"""Turning what an agent reports into an ``ErrorEvent`` contract and intake message.

Pure functions, no I/O; they never raise on odd input (an error reporter that raises inside
an ``except`` block hides the error it was asked to report):

* ``coerce_severity``: ``Severity``, any enum (its value, e.g. the legacy ``ErrorSeverity``
  enums), strings in any legacy spelling (``contracts.severity.normalise_severity``:
  ``ERROR``, ``high``, ``ErrorSeverity.WARNING``, ``fatal``, ...); unknown or missing -> error.
* ``json_safe``: any value as JSON-ready builtins (objects msgspec cannot encode become their
  ``repr``), so ``details`` can always be encoded.
* ``build_event``: the ``ErrorEvent`` (times in UTC, ``fingerprint`` left empty: the sidecar
  computes it, ``legacy`` None: this is a native event).
* ``intake_headers``: ``Nats-Msg-Id`` (= ``event_id``), ``Busbridge-Contract``,
  ``Busbridge-Contract-Version`` and ``Busbridge-Client-Api``.
* ``fit_payload``: an event cut down to a server's ``max_payload``, marked with ``truncated``
  like the bridge does (``details`` replaced by the leading part of its JSON text, then
  ``message`` cut if that is not enough).
"""

from __future__ import annotations

import enum
import math
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from contracts.codec import encode
from contracts.messages import CONTRACT_VERSION, ErrorEvent, Severity, Truncation
from contracts.severity import normalise_severity
from contracts.subjects import (
    HEADER_CLIENT_API,
    HEADER_CONTRACT,
    HEADER_CONTRACT_VERSION,
    HEADER_MSG_ID,
)

__all__ = [
    "as_text",
    "build_event",
    "coerce_severity",
    "fit_payload",
    "headers_size",
    "intake_headers",
    "is_known_severity",
    "json_safe",
    "new_event_id",
    "utc_time",
]

_CONTRACT = "error_event"


def new_event_id() -> str:
    """A fresh event id: uuid4 hex (32 characters)."""
    return uuid.uuid4().hex


def _severity_text(raw: Any) -> Any:
    if isinstance(raw, enum.Enum):
        return raw.value if isinstance(raw.value, str) else raw.name
    return raw


def coerce_severity(raw: Any) -> Severity:
    """Any legacy severity value as a ``Severity`` (unknown or ``None`` -> ``ERROR``)."""
    if isinstance(raw, Severity):
        return raw
    return normalise_severity(_severity_text(raw))[0]


def is_known_severity(raw: Any) -> bool:
    """True when ``raw`` is a severity spelling the legacy table knows (enums by value)."""
    return isinstance(raw, Severity) or normalise_severity(_severity_text(raw))[1]


def _fallback(obj: Any) -> Any:
    return repr(obj)


def json_safe(value: Any) -> Any:
    """``value`` as JSON-ready builtins: dict keys become strings, enums their values, datetimes
    ISO text, bytes base64; anything msgspec cannot encode becomes its ``repr``."""
    try:
        return msgspec.to_builtins(value, str_keys=True, enc_hook=_fallback)
    except Exception:  # noqa: BLE001 - any failure falls back to text, never raises
        return _safe_repr(value)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break error reporting
        return f"<unrepresentable {type(value).__name__}>"


def as_text(value: Any) -> str:
    """A message as text: strings as is, ``None`` as "", anything else as its JSON text
    (the bridge's rule for legacy messages that are not strings)."""
    if isinstance(value, str):
        return str(value)
    if value is None:
        return ""
    return msgspec.json.encode(json_safe(value)).decode("utf-8")


def utc_time(value: datetime | float | None, default: datetime) -> datetime:
    """``value`` as an aware UTC datetime: aware datetimes converted, naive ones taken as UTC,
    numbers as epoch seconds, ``None`` (or anything else) gives ``default``."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return default
    return default


def build_event(
    *,
    machine: str,
    source: Any,
    error_type: Any,
    message: Any,
    severity: Any = Severity.ERROR,
    details: Any = None,
    occurred_at: datetime | float | None = None,
    event_id: str | None = None,
    received_at: datetime | None = None,
) -> ErrorEvent:
    """One native ``ErrorEvent``. ``received_at``: when the client accepted it (now, UTC, unless
    given); ``occurred_at``: ``utc_time(occurred_at)``, defaulting to ``received_at``;
    ``event_id``: given (a legacy id) or ``new_event_id()``. ``source`` and ``error_type`` are
    made text (``None`` -> ""), ``message`` via ``as_text``, ``details`` via ``json_safe``."""
    now = received_at or datetime.now(UTC)
    return ErrorEvent(
        event_id=event_id or new_event_id(),
        occurred_at=utc_time(occurred_at, now),
        received_at=now,
        machine=machine,
        source=_token_text(source) or "unknown",
        severity=coerce_severity(severity),
        error_type=_token_text(error_type),
        message=as_text(message),
        details=json_safe(details),
    )


def _token_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, enum.Enum):
        value = value.value
    return value if isinstance(value, str) else as_text(value)


def intake_headers(event_id: str, client_api: str) -> dict[str, str]:
    """Headers of one intake message (``contracts.subjects`` names)."""
    return {
        HEADER_MSG_ID: event_id,
        HEADER_CONTRACT: _CONTRACT,
        HEADER_CONTRACT_VERSION: str(CONTRACT_VERSION),
        HEADER_CLIENT_API: _header_value(client_api),
    }


def _header_value(value: str) -> str:
    return "".join(c for c in str(value) if c.isprintable()) or "native"


def headers_size(headers: dict[str, str]) -> int:
    """Bytes the headers take on the wire (``NATS/1.0`` block), in bytes."""
    lines = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(b"NATS/1.0\r\n") + lines + 2


_SLACK_BYTES = 64  # kept_bytes digits and rounding: the marker is written after the cut


def fit_payload(event: ErrorEvent, payload: bytes, limit: int) -> tuple[ErrorEvent, bytes] | None:
    """``(event, payload)`` unchanged when ``len(payload) <= limit`` (bytes); else the event with
    ``details`` (then ``message``) cut to fit and ``truncated`` set; ``None`` when even an empty
    ``details`` and ``message`` do not fit."""
    if len(payload) <= limit:
        return event, payload
    original = len(payload)
    details_text = as_text(event.details)
    cut = _cut(event, "details", details_text, original, limit, ["details"])
    if cut is None:
        bare = msgspec.structs.replace(event, details="")
        cut = _cut(bare, "message", event.message, original, limit, ["details", "message"])
    return cut


def _cut(
    event: ErrorEvent, name: str, text: str, original: int, limit: int, fields: list[str]
) -> tuple[ErrorEvent, bytes] | None:
    """Keep the longest prefix of ``text`` (as field ``name``) that fits: every character takes
    at least one byte, so dropping as many characters as bytes overshoot always fits."""
    keep = len(text)
    while True:
        size = len(encode(_marked(event, name, text[:keep], original, 0, fields)))
        overshoot = size + _SLACK_BYTES - limit
        if overshoot <= 0:
            final = _marked(event, name, text[:keep], original, size, fields)
            data = encode(final)
            if len(data) != size:  # the marker's own digits: record the real size
                final = _marked(event, name, text[:keep], original, len(data), fields)
                data = encode(final)
            return (final, data) if len(data) <= limit else None
        if keep == 0:
            return None
        keep = max(0, keep - overshoot)


def _marked(
    event: ErrorEvent, name: str, text: str, original: int, kept: int, fields: list[str]
) -> ErrorEvent:
    marker = Truncation(original_bytes=original, kept_bytes=kept, fields=list(fields))
    return msgspec.structs.replace(event, **{name: text}, truncated=marker)

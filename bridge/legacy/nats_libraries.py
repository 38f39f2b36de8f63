"""The two legacy NATS error libraries' payloads on ``errors.>`` -> ``Decoded`` (legacy-bus.md §3).

* **Library A** (``common/error_bus/nats_error_bus.py``, what ``BaseAgent`` and
  ``UnifiedErrorHandler`` use): JSON ``{"id": uuid4, "timestamp": naive-local ISO, "agent_name",
  "severity", "category", "message", "details", "stack_trace", "correlation_id", "resolved",
  "resolution_notes"}`` with headers ``{agent, severity}``, published 2 times (``errors.events``,
  ``errors.agents.<agent>``) or 4 times when critical/fatal (+ ``errors.system``,
  ``errors.system.critical``), every copy with the same ``id``: ``error_id`` is that ``id``, so
  the copies get one event id and collapse in dedup (and in JetStream's duplicate window).
  The library has no error type: ``error_type`` is its ``category`` (``system``, ``network``,
  ...). Severities were already collapsed by the library (``ErrorSeverity.CRITICAL`` enums,
  ``fatal``, ``high``, ``None`` arrive as ``error``): kept raw in ``legacy.raw_severity``.
* **Library B** (``common/error_bus/nats_client.py``): JSON ``{"error_id", "timestamp": naive-local
  ISO, "source_agent", "error_type", "severity" (as given: ``CRITICAL``, ``high``, ...),
  "message", "stack_trace", "context", "correlation_id", "retry_count"}`` on
  ``errors.<severity>.<agent>``, no headers.

``details``: library A's ``details`` / library B's ``context`` as sent, unless a stack trace or
a correlation id is set: then ``{"details": <as sent>, "stack_trace": ..., "correlation_id":
...}`` (the shape ``busclient`` writes for the same legacy fields). ``legacy.topic`` is the
NATS subject; ``legacy.variant`` is ``copy`` for library A's ``errors.agents.<agent>`` and
``errors.system*`` copies, ``first`` for ``errors.events``. Payloads go through the same
lenient JSON path as ZMQ frames (``NaN``, lone surrogates). Never raises.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from typing import Any, NamedTuple

from bridge.legacy.dialects import Decoded, Rejected, parse_object
from bridge.legacy.timestamps import parse_timestamp
from contracts.messages import DeadLetterReason, Dialect, LegacyOrigin, TimestampKind
from contracts.severity import normalise_severity

__all__ = ["LEGACY_SUBJECTS", "decode_legacy_nats"]

#: the subject filter both legacy libraries publish under
LEGACY_SUBJECTS = "errors.>"
_LOCAL_ISO = TimestampKind.NAIVE_LOCAL_ISO


def decode_legacy_nats(subject: str, payload: bytes, local_tz: tzinfo = UTC) -> Decoded | Rejected:
    """Decode one message of the legacy ``errors.>`` streams (``subject`` as published)."""
    if not payload:
        return Rejected(DeadLetterReason.EMPTY_PAYLOAD, None, f"empty payload on {subject}")
    guess = _guess(payload)
    parsed = parse_object(payload, guess)
    if type(parsed) is Rejected:
        return parsed
    obj, sanitized = parsed
    if "agent_name" in obj and "id" in obj:
        return _library_a(obj, sanitized, subject, local_tz)
    if "source_agent" in obj and "error_id" in obj:
        return _library_b(obj, sanitized, subject, local_tz)
    keys = ", ".join(sorted(map(str, obj))[:12])
    return Rejected(
        DeadLetterReason.UNKNOWN_SCHEMA,
        guess,
        f"neither library A (id, agent_name) nor B (error_id, source_agent): {keys}",
    )


def _guess(payload: bytes) -> Dialect | None:
    if b'"agent_name"' in payload:
        return Dialect.NATS_LIBRARY_A
    if b'"source_agent"' in payload:
        return Dialect.NATS_LIBRARY_B
    return None


class _Fields(NamedTuple):
    """Where a library keeps each field (legacy-bus.md §3)."""

    dialect: Dialect
    source: str
    error_type: str
    details: str
    error_id: str


_LIBRARY_A = _Fields(Dialect.NATS_LIBRARY_A, "agent_name", "category", "details", "id")
_LIBRARY_B = _Fields(Dialect.NATS_LIBRARY_B, "source_agent", "error_type", "context", "error_id")


def _library_a(obj: dict[str, Any], sanitized: bool, subject: str, local_tz: tzinfo) -> Decoded:
    variant = "first" if subject == "errors.events" else "copy"
    return _decode(_LIBRARY_A, obj, sanitized, subject, variant, local_tz)


def _library_b(obj: dict[str, Any], sanitized: bool, subject: str, local_tz: tzinfo) -> Decoded:
    return _decode(_LIBRARY_B, obj, sanitized, subject, "", local_tz)


def _decode(
    f: _Fields,
    obj: dict[str, Any],
    sanitized: bool,
    subject: str,
    variant: str,
    local_tz: tzinfo,
) -> Decoded:
    raw_ts = obj.get("timestamp")
    occurred_at, ts_kind = parse_timestamp(raw_ts, _LOCAL_ISO, local_tz)
    origin = LegacyOrigin(
        dialect=f.dialect,
        variant=variant,
        topic=subject,
        raw_severity=obj.get("severity"),
        raw_timestamp=raw_ts,
        timestamp_kind=ts_kind,
        sanitized=sanitized,
    )
    return Decoded(
        source=_text(obj.get(f.source)) or "unknown",
        error_type=_text(obj.get(f.error_type)),
        severity=normalise_severity(origin.raw_severity)[0],
        message=_text(obj.get("message")),
        details=_with_extras(obj.get(f.details), obj),
        occurred_at=occurred_at,
        legacy=origin,
        error_id=_id(obj.get(f.error_id)),
    )


def _with_extras(details: Any, obj: dict[str, Any]) -> Any:
    extras = {k: obj[k] for k in ("stack_trace", "correlation_id") if obj.get(k) is not None}
    return {"details": details, **extras} if extras else details


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if type(value) is str else str(value)


def _id(value: Any) -> str | None:
    return value if type(value) is str and value else None

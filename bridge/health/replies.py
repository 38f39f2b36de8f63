"""Legacy health replies -> one normalised status (legacy-bus.md §4). Pure functions.

Reply shapes recognised (``Verdict.shape``), first match wins:

* ``wp07_unified`` - WP-07 ``UnifiedHealthMixin``:
  ``{"agent_name", "health_metrics": {"status": "healthy|degraded|unhealthy", ...},
  "version": "1.0", "schema": "WP-07-unified-health"}``. It answers any request
  but the plain string ``health_check`` with the string ``Unknown health request``
  (``is_request_rejected``; the prober then asks again in that form).
* ``error_bus_service`` - ErrorBusService: ``{"status": "success", "data": {"status": "ok", ...}}``;
  the worse of the outer and inner status counts.
* ``gui_aggregate`` - ``{"overall_status": "healthy|warning|error", "issues": [...], "warnings": [...]}``.
* ``base_agent`` - BaseAgent: ``{"status": "ok|degraded|error", "ready", "initialized", ...,
  "health_status": "healthy|degraded|unhealthy|unknown"}``; the worse of ``status`` and
  ``health_status`` counts (``unknown`` says nothing and is ignored).
* ``status_field`` - any other object with a ``status``: FastAPI ``{"status": "ok"}``,
  MOC ``{"status": "unhealthy", ...}``, RTAP ``{"status": "stopped", ...}``, the many
  agents answering ``"unhealthy"``, ``"online"``, ``"success"``/``"SUCCESS"``.
* ``plain_text`` - a bare word (``ok``, ``pong``, ``healthy``, ...), as a JSON string or raw text.
* ``unrecognised`` - anything else (not JSON, not a known word, no status field):
  status ``unknown``, reason ``unrecognised_reply``.

Status words are matched case-insensitively, after the last ``.`` (so
``HealthStatus.DEGRADED`` is ``degraded``); see ``STATUS_WORDS``. An HTTP status
of 500 or more makes the result at least ``unhealthy`` (MOC answers 503), other
non-2xx statuses make an otherwise healthy answer ``unknown``; both set reason
``http_error``. BaseAgent answers 200 even when degraded, so the body decides then.
JSON is read leniently (``NaN``, lone surrogates: ``bridge.legacy.lenient_json``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from bridge.legacy.lenient_json import LenientJSONError, loads_lenient
from contracts.messages import HealthStatus

__all__ = [
    "JSON_REQUEST",
    "PLAIN_REQUEST",
    "REJECTION",
    "STATUS_WORDS",
    "Verdict",
    "is_request_rejected",
    "normalise_reply",
    "status_word",
]

#: the request sent first (legacy-bus.md §4: ``{"action":"health_check"}`` x38, as json.dumps writes it)
JSON_REQUEST = b'{"action": "health_check"}'
#: the plain-string request WP-07 agents expect
PLAIN_REQUEST = b"health_check"
#: WP-07's answer to any other request
REJECTION = "Unknown health request"

STATUS_WORDS: dict[str, HealthStatus] = {
    **dict.fromkeys(
        (
            "ok",
            "okay",
            "healthy",
            "online",
            "success",
            "up",
            "running",
            "ready",
            "alive",
            "pass",
            "green",
            "pong",
        ),
        HealthStatus.HEALTHY,
    ),
    **dict.fromkeys(
        ("degraded", "warning", "warn", "partial", "starting", "initializing", "yellow"),
        HealthStatus.DEGRADED,
    ),
    **dict.fromkeys(
        (
            "unhealthy",
            "error",
            "failed",
            "failure",
            "fail",
            "stopped",
            "down",
            "offline",
            "dead",
            "critical",
            "red",
            "unavailable",
        ),
        HealthStatus.UNHEALTHY,
    ),
    "unknown": HealthStatus.UNKNOWN,
}
_RANK = {
    HealthStatus.UNKNOWN: -1,
    HealthStatus.HEALTHY: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.UNHEALTHY: 2,
}
_BASE_AGENT_KEYS = (
    "health_status",
    "ready",
    "initialized",
    "uptime",
    "health_checks",
    "health_details",
)


class Verdict(NamedTuple):
    """``status`` normalised; ``raw_status`` the legacy value that decided it (as sent);
    ``shape`` the reply shape; ``reason`` ``""``, ``unrecognised_reply`` or ``http_error``;
    ``details`` the decoded reply (JSON value or text), cut to ``max_reply_bytes``."""

    status: HealthStatus
    raw_status: Any
    shape: str
    reason: str
    details: Any


def status_word(value: Any) -> HealthStatus:
    """One legacy status value -> a status (``UNKNOWN`` when it is not a known word)."""
    if not isinstance(value, str):
        return HealthStatus.UNKNOWN
    word = value.strip().rsplit(".", 1)[-1].strip().lower()
    return STATUS_WORDS.get(word, HealthStatus.UNKNOWN)


def is_request_rejected(payload: bytes) -> bool:
    """True when ``payload`` is WP-07's ``Unknown health request`` (raw or as a JSON string)."""
    value = _decode(payload)
    return isinstance(value, str) and value.strip() == REJECTION


def normalise_reply(
    payload: bytes, *, http_status: int | None = None, max_reply_bytes: int = 16384
) -> Verdict:
    """Classify one reply (see the module note). Never raises."""
    value = _decode(payload)
    status, raw, shape = _classify(value)
    reason = "unrecognised_reply" if shape == "unrecognised" else ""
    if http_status is not None and not 200 <= http_status < 300:
        reason = "http_error"
        if http_status >= 500:
            status = _worse(status, HealthStatus.UNHEALTHY)
        elif status is HealthStatus.HEALTHY:
            status = HealthStatus.UNKNOWN
    return Verdict(status, raw, shape, reason, _cut(value, max_reply_bytes))


def _decode(payload: bytes) -> Any:
    try:
        return loads_lenient(payload)[0]
    except LenientJSONError:
        return payload.decode("utf-8", "replace").strip()


def _classify(value: Any) -> tuple[HealthStatus, Any, str]:
    if isinstance(value, dict):
        return _classify_object(value)
    if isinstance(value, str) and status_word(value) is not HealthStatus.UNKNOWN:
        return status_word(value), value, "plain_text"
    return HealthStatus.UNKNOWN, None, "unrecognised"


def _classify_object(doc: dict[str, Any]) -> tuple[HealthStatus, Any, str]:
    metrics, data = doc.get("health_metrics"), doc.get("data")
    if isinstance(metrics, dict) and "status" in metrics:
        return status_word(metrics["status"]), metrics["status"], "wp07_unified"
    if isinstance(data, dict) and "status" in data and "status" in doc:
        return (*_worst(doc["status"], data["status"]), "error_bus_service")
    if "overall_status" in doc:
        return status_word(doc["overall_status"]), doc["overall_status"], "gui_aggregate"
    if "status" in doc and any(k in doc for k in _BASE_AGENT_KEYS):
        return (*_worst(doc["status"], doc.get("health_status")), "base_agent")
    if "status" in doc:
        status = status_word(doc["status"])
        return (
            status,
            doc["status"],
            "status_field" if status is not HealthStatus.UNKNOWN else "unrecognised",
        )
    return HealthStatus.UNKNOWN, None, "unrecognised"


def _worst(*raw_values: Any) -> tuple[HealthStatus, Any]:
    """The worst known status among ``raw_values`` and the raw value it came from."""
    best: tuple[HealthStatus, Any] = (HealthStatus.UNKNOWN, raw_values[0])
    for raw in raw_values:
        status = status_word(raw)
        if _RANK[status] > _RANK[best[0]]:
            best = (status, raw)
    return best


def _worse(a: HealthStatus, b: HealthStatus) -> HealthStatus:
    return a if _RANK[a] >= _RANK[b] else b


def _cut(value: Any, max_bytes: int) -> Any:
    """``value``, or (longer than ``max_bytes`` as JSON) the leading part of the text or its JSON text."""
    text = (
        value.encode("utf-8", "surrogatepass")
        if isinstance(value, str)
        else msgspec.json.encode(value)
    )
    if len(text) <= max_bytes:
        return value
    return text[:max_bytes].decode("utf-8", "ignore")

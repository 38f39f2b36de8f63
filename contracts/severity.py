"""Explicit mapping of every legacy severity spelling onto ``Severity``.

Legacy senders use free text (legacy-bus.md §1, trap 13): ``ERROR``/``error``
(D3-D5 defaults), ``critical|high|medium|low`` (D1/D2 docstring),
``info|warning|error|critical`` (``ErrorSeverity.value``),
``ErrorSeverity.WARNING`` (``str()`` of the enum, D4 ``mp_rc_enum_str``),
``CRITICAL``/``WARNING`` upper case (D5), ``fatal`` (NATS library A).

The mapping is a table, not a heuristic: an unknown value maps to
``UNKNOWN_SEVERITY_DEFAULT`` (error: this is an error bus) and the caller keeps
the raw value in ``LegacyOrigin.raw_severity``.
"""

from __future__ import annotations

from typing import Any

from contracts.messages import Severity

__all__ = ["LEGACY_SEVERITY", "UNKNOWN_SEVERITY_DEFAULT", "normalise_severity"]

UNKNOWN_SEVERITY_DEFAULT = Severity.ERROR

#: lower-cased legacy spelling -> normalised severity
LEGACY_SEVERITY: dict[str, Severity] = {
    "debug": Severity.DEBUG,
    "trace": Severity.DEBUG,
    "info": Severity.INFO,
    "information": Severity.INFO,
    "notice": Severity.INFO,
    "low": Severity.INFO,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "medium": Severity.WARNING,
    "error": Severity.ERROR,
    "err": Severity.ERROR,
    "high": Severity.ERROR,
    "critical": Severity.CRITICAL,
    "crit": Severity.CRITICAL,
    "fatal": Severity.CRITICAL,
    "emergency": Severity.CRITICAL,
}

_ENUM_PREFIX = "errorseverity."


def normalise_severity(raw: Any) -> tuple[Severity, bool]:
    """Map a legacy severity value to ``(Severity, known)``.

    ``raw`` may be any JSON value; only strings can be known. ``known`` is False
    when the value was missing or not in ``LEGACY_SEVERITY``, in which case the
    severity is ``UNKNOWN_SEVERITY_DEFAULT``. Never raises.
    """
    if not isinstance(raw, str):
        return UNKNOWN_SEVERITY_DEFAULT, False
    found = _memo.get(raw)
    if found is not None:
        return found
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()
    found = _memo[raw] = _normalise(raw)
    return found


#: raw string -> result: a fleet uses a handful of spellings (bounded: emptied when full)
_memo: dict[str, tuple[Severity, bool]] = {}
_MEMO_MAX = 1024


def _normalise(raw: str) -> tuple[Severity, bool]:
    key = raw.strip().lower()
    if key.startswith(_ENUM_PREFIX):
        key = key[len(_ENUM_PREFIX) :]
    found = LEGACY_SEVERITY.get(key)
    if found is None:
        return UNKNOWN_SEVERITY_DEFAULT, False
    return found, True

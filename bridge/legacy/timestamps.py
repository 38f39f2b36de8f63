"""The legacy timestamp kinds, normalised to aware UTC (legacy-bus.md §1 'Timestamps').

Senders stamp events three ways, none with a time zone:

* naive UTC ISO, ``datetime.utcnow().isoformat()`` (D1, D2, D3 ``flat_src_iso``;
  also how ISO strings in D4/D6 are read);
* naive host-local ISO, ``datetime.now().isoformat()`` (D3 ``flat_iso_enum``,
  D5); the caller says which zone the host was in;
* ``time.time()`` as a JSON number (D3 ``flat_epoch``, D4 ``mp_sndmore_test``,
  D6 ``mms_topic_field``).

``isoformat()`` drops the fraction when microsecond == 0, so whole-second
strings are normal. An ISO string that carries its own offset (``Z``,
``+08:00``) is converted with that offset; its kind stays the dialect's ISO
kind. ``parse_timestamp`` returns ``(occurred_at, kind)`` and never raises:
``None`` -> ``MISSING``; a string that is not ISO 8601 (or longer than
``MAX_ISO_CHARS``), an epoch that is not finite or outside
``0 .. MAX_EPOCH_SECS`` (year 9999), a bool or any other JSON type ->
``(None, UNPARSEABLE)``.

ISO strings repeat: every event an agent sends within one second carries the same one. The
results of the 4,096 most recently used ``(string, kind, zone)`` are kept (``lru_cache``;
datetimes are immutable, so sharing one is safe).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, tzinfo
from typing import Any

from contracts.messages import TimestampKind

__all__ = ["MAX_EPOCH_SECS", "MAX_ISO_CHARS", "parse_timestamp"]

MAX_EPOCH_SECS = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_ISO_CHARS = 64

_MISSING = (None, TimestampKind.MISSING)
_UNPARSEABLE = (None, TimestampKind.UNPARSEABLE)


def parse_timestamp(
    raw: Any, iso_kind: TimestampKind = TimestampKind.NAIVE_UTC_ISO, local_tz: tzinfo = UTC
) -> tuple[datetime | None, TimestampKind]:
    """Normalise one raw legacy timestamp.

    ``iso_kind`` is how a naive ISO string is read: ``NAIVE_UTC_ISO`` (as UTC)
    or ``NAIVE_LOCAL_ISO`` (in ``local_tz``). Numbers are always epoch seconds.
    """
    if raw is None:
        return _MISSING
    kind = type(raw)
    if kind is str:
        return _from_iso(raw, iso_kind, local_tz)
    if kind is float or kind is int:
        return _from_epoch(raw)
    return _UNPARSEABLE


@functools.lru_cache(maxsize=4096)
def _from_iso(
    raw: str, iso_kind: TimestampKind, local_tz: tzinfo
) -> tuple[datetime | None, TimestampKind]:
    return _parse_iso(raw, iso_kind, local_tz)


def _parse_iso(
    raw: str, iso_kind: TimestampKind, local_tz: tzinfo
) -> tuple[datetime | None, TimestampKind]:
    if len(raw) > MAX_ISO_CHARS:
        return _UNPARSEABLE
    try:
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            zone = local_tz if iso_kind is TimestampKind.NAIVE_LOCAL_ISO else UTC
            parsed = parsed.replace(tzinfo=zone)
        if parsed.tzinfo is not UTC:
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return _UNPARSEABLE
    return parsed, iso_kind


def _from_epoch(raw: float) -> tuple[datetime | None, TimestampKind]:
    if not 0 <= raw <= MAX_EPOCH_SECS:  # also false for NaN
        return _UNPARSEABLE
    try:
        return datetime.fromtimestamp(raw, UTC), TimestampKind.EPOCH_SECONDS
    except (ValueError, OverflowError, OSError):
        return _UNPARSEABLE

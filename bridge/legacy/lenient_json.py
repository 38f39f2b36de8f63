"""Lenient JSON for the legacy bus (legacy-bus.md §1 'Common encoding rules', trap 4).

Input: the JSON bytes of one legacy payload (``bytes``). Output:
``(value, sanitized)`` where ``value`` holds only ``dict``/``list``/``str``/
``int``/finite ``float``/``bool``/``None`` - so msgspec can always encode it as
UTF-8 JSON - and ``sanitized`` says whether anything had to be rewritten.
Failure raises ``LenientJSONError`` (``invalid_utf8`` tells the two causes
apart); nothing else escapes.

Paths
-----
* Fast path: ``msgspec.json.decode``. It rejects everything the slow path has
  to fix (``NaN``/``Infinity`` tokens, lone surrogate escapes, numbers out of
  float range), so its result needs no walk - except for the depth cap below,
  which is only applied when the payload has more than ``MAX_DEPTH`` ``{``/``[``
  bytes (a cheap upper bound of its nesting depth, counted only for payloads
  longer than ``2 * MAX_DEPTH`` bytes).
* Slow path: stdlib ``json.loads`` on the strictly decoded UTF-8 text, which
  accepts ``NaN``, ``Infinity``, ``-Infinity`` and lone ``\\uD8xx`` escapes;
  the result is then walked once:

  - non-finite floats become the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
  - every lone surrogate in a string or key becomes the 6-character text
    ``\\udcXX`` (lowercase hex); surrogate pairs were already combined by
    ``json.loads`` and are kept as the astral character.

Depth cap: containers nested deeper than ``MAX_DEPTH`` levels (the top-level
value is level 1) are replaced by their JSON text as one string (non-finite
floats appear there as ``NaN`` tokens, lone surrogates as ``\\udcXX``), and
``sanitized`` is set. Payloads too deep for the parsers themselves (about
900+ levels, Python's recursion limit) fail with ``LenientJSONError``.

Whitespace and BOM: no stripping. JSON's own grammar allows whitespace around
the value and both parsers accept it; callers that want the value to start
at the first byte check that themselves. A UTF-8 BOM is invalid JSON here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import msgspec

__all__ = ["MAX_DEPTH", "LenientJSONError", "escape_lone_surrogates", "loads_lenient", "sanitize"]

MAX_DEPTH = 256
_MIN_DEEP_BYTES = 2 * MAX_DEPTH  # each level needs an opening and a closing byte

_fast_decode = msgspec.json.Decoder().decode
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


class LenientJSONError(ValueError):
    """The payload is not JSON even for the lenient parser.

    ``invalid_utf8`` is true when the bytes are not UTF-8 (reason
    ``invalid_utf8``), false for a syntax error (reason ``invalid_json``).
    """

    def __init__(self, detail: str, *, invalid_utf8: bool) -> None:
        super().__init__(detail)
        self.invalid_utf8 = invalid_utf8


def loads_lenient(payload: bytes) -> tuple[Any, bool]:
    """Decode ``payload`` to a msgspec-encodable value; see the module docstring."""
    try:
        value = _fast_decode(payload)
    except UnicodeDecodeError as exc:
        raise LenientJSONError(f"payload is not UTF-8: {exc}", invalid_utf8=True) from None
    except (msgspec.DecodeError, RecursionError):
        return _loads_slow(payload)
    if len(payload) > _MIN_DEEP_BYTES and payload.count(b"{") + payload.count(b"[") > MAX_DEPTH:
        return sanitize(value)
    return value, False


def _loads_slow(payload: bytes) -> tuple[Any, bool]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LenientJSONError(f"payload is not UTF-8: {exc}", invalid_utf8=True) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise LenientJSONError("JSON nested too deeply to parse", invalid_utf8=False) from None
    except ValueError as exc:  # JSONDecodeError, int digit limit
        raise LenientJSONError(f"invalid JSON: {exc}", invalid_utf8=False) from None
    return sanitize(value)


def sanitize(value: Any) -> tuple[Any, bool]:
    """Return ``(clean value, changed)`` for any ``json.loads`` result."""
    walker = _Sanitizer()
    return walker.clean(value, 1), walker.changed


class _Sanitizer:
    """One recursive walk; records whether anything was rewritten."""

    __slots__ = ("changed",)

    def __init__(self) -> None:
        self.changed = False

    def clean(self, value: Any, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is float:
            return value if math.isfinite(value) else self.non_finite(value)
        if kind is dict or kind is list:
            return self.flatten(value) if depth > MAX_DEPTH else self.container(value, depth)
        return value

    def container(self, value: dict | list, depth: int) -> dict | list:
        if type(value) is list:
            return [self.clean(item, depth + 1) for item in value]
        return {self.text(k): self.clean(v, depth + 1) for k, v in value.items()}

    def text(self, value: str) -> str:
        if _LONE_SURROGATE.search(value) is None:
            return value
        self.changed = True
        return escape_lone_surrogates(value)

    def non_finite(self, value: float) -> str:
        self.changed = True
        return _NON_FINITE.get(value, "NaN")

    def flatten(self, value: dict | list) -> str:
        self.changed = True
        return escape_lone_surrogates(json.dumps(value, ensure_ascii=False))


def escape_lone_surrogates(value: str) -> str:
    """Replace each lone surrogate code point by the text ``\\udcXX``."""
    return _LONE_SURROGATE.sub(_surrogate_text, value)


def _surrogate_text(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"

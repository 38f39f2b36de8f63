"""Flood-control fingerprint of an error: (source, error_type, masked message) (DESIGN §3).

``mask_message`` replaces the parts of a message that vary between otherwise
identical errors by fixed tokens. At each position the first rule that
matches wins, in this order:

* file paths -> ``<path>``: POSIX with 2+ segments (``/a/b``, ``./a/b``,
  ``../a/b``, ``~/a/b``; not after ``:``, ``/`` or a word character, so the
  ``//host/x`` of a URL is left alone) or Windows (``C:\\a\\b``);
* UUIDs -> ``<uuid>`` (before hex, so a uuid is not split into hex runs);
* hex -> ``<hex>``: ``0x`` + hex digits, or a run of 8+ hex digits with at
  least one letter (an all-digit run is a number);
* IPv4 with optional ``:port`` -> ``<ip>``;
* numbers -> ``<n>``: ints and decimals not glued to a preceding letter,
  digit or dot (``#12``, ``task_17``, ``5000ms`` are masked; ``pc2``,
  ``level59`` are not).

Speed (this runs once per event on the hot path): every pattern starts with
one character class so ``re`` can skip positions that cannot start a token;
the context checks are lookbehinds placed after that first character. Rules
that need a letter at the start (uuid, hex runs, Windows drives) are only
compiled into the pattern used when a cheap pre-check finds a run of 8 hex
digits or a ``:\\``. The result equals that of the plain, slower regex in
``tests/unit/test_fingerprint.py`` (checked there by hypothesis).

Which spans get masked depends on where the ASCII digits are, never on which
digits they are, with one exception: the ``0x`` hex prefix. So an ASCII text
of at most ``_CACHE_MAX_CHARS`` chars is looked up by its *shape* (every ASCII
digit turned into ``1``), and the spans found for that
shape are applied to the text: errors that differ only in their numbers (the
common case: counts, ids, ports, durations) skip the regex after the first.
Shapes with a digit before ``x``/``X`` are scanned every time. At most
``_CACHE_MAX_ENTRIES`` shapes are kept, the memo emptied when full.

Only the first ``MAX_MASK_CHARS`` characters are masked; the rest is kept as
is (and so still hashed). ``fingerprint`` is 16 hex chars of blake2b-64 over
``<len>:<source><len>:<error_type><masked message>`` as UTF-8 (the length
prefixes keep the parts apart; lone surrogates pass through). Results for
short inputs (at most ``_CACHE_MAX_CHARS`` chars in all) are memoised in a
dict of at most ``_CACHE_MAX_ENTRIES`` entries, emptied when full: a flood
of identical errors skips the regex. The functions are pure; the memo does
not change any result.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Any

__all__ = ["MAX_MASK_CHARS", "fingerprint", "mask_message"]

MAX_MASK_CHARS = 4096

_H = "[0-9a-fA-F]"
_END = "(?![0-9A-Za-z])"
_SEG = r"[^\s/'\"`()\[\]{}<>,;:|*?]+"
_UUID_REST = rf"{_H}{{7}}-{_H}{{4}}-{_H}{{4}}-{_H}{{4}}-{_H}{{12}}{_END}"
_PATH = (
    rf"(?<![\w:./~-].)(?P<path>(?:(?<=/){_SEG}(?:/{_SEG})+"
    rf"|(?<=~)(?:/{_SEG}){{2,}}|(?<=\.)\.?(?:/{_SEG}){{2,}})/?)"
)
_IP_N = (
    r"|(?<![0-9.].)(?P<ip>[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}(?::[0-9]{1,5})?(?!\.?[0-9]))"
    r"|(?<![A-Za-z0-9.].)(?P<n>[0-9]*(?:\.[0-9]+)?)"
)
_DIGIT_SHORT = rf"(?<![0-9A-Za-z].)(?<=0)(?P<hex0>[xX]{_H}+{_END})" + _IP_N
_DIGIT_FULL = (
    rf"(?<![0-9A-Za-z].)(?:(?P<uuid>{_UUID_REST})"
    rf"|(?P<hex>(?:(?<=0)[xX]{_H}+|(?={_H}{{7}})[0-9]*[a-fA-F]{_H}*){_END}))" + _IP_N
)
_LETTER = rf"(?<![0-9A-Za-z].)(?:(?P<uuid_l>{_UUID_REST})|(?P<hex_l>{_H}{{7,}}{_END}))"
_WINDOWS = r"(?P<win>(?<![A-Za-z0-9])[A-Za-z]:\\[^\s'\"`<>|*?]*)|"

_TOKENS = {
    "path": "<path>",
    "win": "<path>",
    "uuid": "<uuid>",
    "uuid_l": "<uuid>",
    "hex": "<hex>",
    "hex0": "<hex>",
    "hex_l": "<hex>",
    "ip": "<ip>",
    "n": "<n>",
}
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_CHARS = 512
_cache: dict[tuple[str, str, str], str] = {}
#: shape of a text (its ASCII bytes, digits as "1") -> the (start, end, token) spans masked
#: in it, or None when texts of that shape must be scanned (``_shape_spans``)
_spans: dict[bytes, tuple[tuple[int, int, str], ...] | None] = {}
_DIGITS_AS_ONE = bytes.maketrans(b"0123456789", b"1" * 10)
_UNKNOWN = object()  # not in the memo yet (None and () are values)
_HEX_RUN = re.compile(f"{_H}{_H}{{7}}")  # leading class: fast scan


def _compile(hex_runs: bool, windows: bool) -> re.Pattern[str]:
    if hex_runs:
        body = rf"[/~.0-9a-fA-F](?:(?<=[a-fA-F]){_LETTER}|(?<=[0-9])(?:{_DIGIT_FULL})|{_PATH})"
    else:
        body = rf"[/~.0-9](?:(?<=[0-9])(?:{_DIGIT_SHORT})|{_PATH})"
    return re.compile((_WINDOWS if windows else "") + body)


_PATTERNS = {(h, w): _compile(h, w) for h in (False, True) for w in (False, True)}


def _token(match: re.Match[str]) -> str:
    return _TOKENS[match.lastgroup]  # type: ignore[index]


def _mask(text: str) -> str:
    if len(text) > _CACHE_MAX_CHARS or not text.isascii():
        return _scan(text)
    shape = text.encode().translate(_DIGITS_AS_ONE)
    spans: Any = _spans.get(shape, _UNKNOWN)
    if spans is _UNKNOWN:
        if len(_spans) >= _CACHE_MAX_ENTRIES:
            _spans.clear()
        spans = _spans[shape] = _shape_spans(shape.decode())
    if spans is None:
        return _scan(text)
    if not spans:
        return text
    parts, pos = [], 0
    for start, end, token in spans:
        parts += (text[pos:start], token)
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def _shape_spans(shape: str) -> tuple[tuple[int, int, str], ...] | None:
    """The masked spans of a shape; None when a digit comes before ``x``/``X``: whether
    that digit is ``0`` (a ``0x`` hex prefix) decides, so texts of it are scanned."""
    if "1x" in shape or "1X" in shape:
        return None
    return tuple((m.start(), m.end(), _token(m)) for m in _pattern(shape).finditer(shape))


def _scan(text: str) -> str:
    return _pattern(text).sub(_token, text)


def _pattern(text: str) -> re.Pattern[str]:
    return _PATTERNS[_HEX_RUN.search(text) is not None, ":\\" in text]


def mask_message(message: str) -> str:
    """Mask paths, uuids, hex, IPs and numbers in the first ``MAX_MASK_CHARS`` chars."""
    if len(message) <= MAX_MASK_CHARS:
        return _mask(message)
    return _mask(message[:MAX_MASK_CHARS]) + message[MAX_MASK_CHARS:]


def fingerprint(source: str, error_type: str, message: str) -> str:
    """16 hex chars identifying 'the same error' for flood control."""
    if len(source) + len(error_type) + len(message) > _CACHE_MAX_CHARS:
        return _fingerprint(source, error_type, message)
    key = (source, error_type, message)
    found = _cache.get(key)
    if found is None:
        if len(_cache) >= _CACHE_MAX_ENTRIES:
            _cache.clear()
        found = _cache[key] = _fingerprint(source, error_type, message)
    return found


def _fingerprint(source: str, error_type: str, message: str) -> str:
    text = f"{len(source)}:{source}{len(error_type)}:{error_type}{mask_message(message)}"
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()

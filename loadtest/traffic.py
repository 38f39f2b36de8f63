"""Frames of the seven legacy :7150 dialects, each carrying a recoverable load-test token.

Source: legacy-bus.md §1 (D1-D7) and the captured frames in
``corpus/legacy_frames.sample.jsonl``. Every JSON payload is what CPython's
``json.dumps`` gives (separators ``", "`` / ``": "``, keys in the legacy
insertion order, ASCII only); D7 is raw UTF-8 text.

The token ``lt-p<publisher:03d>-<n:09d>`` names who sent a message and its
place in that publisher's sequence. It sits in a field the bridge keeps in the
stored ``ErrorEvent`` (bridge/legacy/dialects.py): the ``details`` string for
D1/D2 (where it is also the legacy ``error_id``, so ``Nats-Msg-Id`` == token),
``message`` for D3-D6, the text after the prefix for D7. ``find_token`` gets
it back from any bytes or text.

Fingerprints (bridge/pipeline/fingerprint.py masks numbers): the token's
``-<n>`` part is masked, so event messages also carry ``ref=p<publisher>n<n>``
(digits glued to letters are not masked): every event has its own
fingerprint and flood control never merges load events. ``flood_frames``
does the opposite: one fingerprint for every message of a flood.

Variants rotate with ``n`` (D3: 4 flat schemas, D4: 3, D6: 2), so a run covers
each shape the decoder distinguishes. ``at`` is the sender's wall clock
(epoch seconds; default now), formatted as each dialect does.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

__all__ = [
    "DIALECTS",
    "TOKEN_RE",
    "cross_machine_copy",
    "find_token",
    "flood_frames",
    "frames",
    "malformed",
    "token",
]

DIALECTS: tuple[str, ...] = ("D1", "D2", "D3", "D4", "D5", "D6", "D7")  # legacy-bus.md §1
TOKEN_RE = re.compile(rb"lt-p([0-9]{3})-([0-9]{9})")
_TOKEN_TEXT_RE = re.compile(r"lt-p([0-9]{3})-([0-9]{9})")
_D7_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")  # bridge: ERROR:<Agent>:<context>: tokens
_PC2_CATEGORY = "pc2_service"  # PC2ErrorPublisher default category -> topic PC2_ERROR:PC2_SERVICE:
_MACHINE_CONTEXT = {
    "host": "192.168.100.17",
    "current_machine": "mainpc",
    "runtime_env": "development",
}
_dumps = json.dumps  # CPython defaults: the legacy bytes exactly


def token(publisher: int, n: int) -> str:
    """``lt-p007-000000042`` for ``(7, 42)``; unique per ``(publisher, n)`` (publisher < 1000, n < 10**9)."""
    if not (0 <= publisher < 1000 and 0 <= n < 1_000_000_000):
        raise ValueError(f"token out of range: publisher={publisher} n={n}")
    return f"lt-p{publisher:03d}-{n:09d}"


def find_token(data: bytes | str) -> tuple[int, int] | None:
    """The first token in ``data`` as ``(publisher, n)``, or None."""
    match = (TOKEN_RE if isinstance(data, bytes) else _TOKEN_TEXT_RE).search(data)  # type: ignore[arg-type]
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def event_text(publisher: int, n: int, pad_bytes: int) -> str:
    """The free text of an event: token, a fingerprint-unique ``ref`` and ``pad_bytes`` of filler."""
    return f"{token(publisher, n)} ref=p{publisher}n{n} {'x' * pad_bytes}"


# --------------------------------------------------------------------------- timestamps (legacy-bus.md §1)


def _utc_iso(at: float) -> str:
    """``datetime.utcnow().isoformat()``: naive UTC, no fraction when microsecond == 0."""
    return datetime.fromtimestamp(at, UTC).replace(tzinfo=None).isoformat()


def _local_iso(at: float) -> str:
    """``datetime.now().isoformat()``: naive host-local time."""
    return datetime.fromtimestamp(at).isoformat()


def _now(at: float | None) -> float:
    return time.time() if at is None else at


# --------------------------------------------------------------------------- the seven dialects


class _Msg:
    """The fields one legacy call site has to hand."""

    __slots__ = ("at", "error_type", "n", "publisher", "severity", "source", "text", "tok")

    def __init__(
        self,
        publisher: int,
        n: int,
        source: str,
        error_type: str,
        severity: str,
        pad: int,
        at: float,
    ):
        self.publisher, self.n, self.source, self.error_type = publisher, n, source, error_type
        self.severity, self.at = severity, at
        self.tok = token(publisher, n)
        self.text = event_text(publisher, n, pad)


def _envelope(m: _Msg, details: object) -> dict[str, object]:
    """D1 ``ErrorPublisher.publish_error`` payload (key order as sent)."""
    data = {
        "error_id": m.tok,
        "error_type": m.error_type,
        "severity": m.severity,
        "details": details,
    }
    return {
        "message_type": "error_report",
        "source": m.source,
        "timestamp": _utc_iso(m.at),
        "error_data": data,
    }


def _pc2_envelope(m: _Msg) -> dict[str, object]:
    """D2 ``PC2ErrorPublisher.publish_error`` payload (key order as sent)."""
    data = {
        "error_id": m.tok,
        "error_type": m.error_type,
        "severity": m.severity,
        "category": _PC2_CATEGORY,
        "details": m.text,
        "machine_context": dict(_MACHINE_CONTEXT),
    }
    return {
        "message_type": "error_report",
        "source": m.source,
        "source_machine": "PC2",
        "timestamp": _utc_iso(m.at),
        "error_data": data,
    }


def _d1(m: _Msg) -> list[bytes]:
    """``ERROR:`` + envelope; details is a string (SystemDigitalTwin's ``details=str(e)``)."""
    return [b"ERROR:" + _dumps(_envelope(m, m.text)).encode()]


def _d2(m: _Msg) -> list[bytes]:
    """``PC2_ERROR:PC2_SERVICE:`` + PC2 envelope."""
    return [f"PC2_ERROR:{_PC2_CATEGORY.upper()}:".encode() + _dumps(_pc2_envelope(m)).encode()]


def _d3(m: _Msg) -> list[bytes]:
    """``ERROR:`` + one of the four flat schemas (by ``n % 4``)."""
    variant = m.n % 4
    sev = m.severity.upper()
    if variant == 0:  # flat_epoch
        obj = {
            "timestamp": m.at,
            "agent": m.source,
            "error_type": m.error_type,
            "message": m.text,
            "severity": sev,
        }
    elif variant == 1:  # flat_src_iso (no error_type)
        obj = {
            "source": m.source,
            "timestamp": _utc_iso(m.at),
            "severity": sev,
            "message": m.text,
            "context": {},
        }
    elif variant == 2:  # flat_nots (no timestamp)
        obj = {
            "agent": m.source,
            "error_type": m.error_type,
            "severity": sev,
            "message": m.text,
            "context": {},
        }
    else:  # flat_iso_enum (naive local ISO, ErrorSeverity.value)
        obj = {
            "timestamp": _local_iso(m.at),
            "agent": m.source,
            "error_type": m.error_type,
            "message": m.text,
            "severity": m.severity.lower(),
        }
    return [b"ERROR:" + _dumps(obj).encode()]


def _d4(m: _Msg) -> list[bytes]:
    """``[b"ERROR:", json]``: mp_ctx, mp_rc_enum_str, mp_sndmore_test (by ``n % 3``)."""
    variant = m.n % 3
    if variant == 0:  # mp_ctx
        obj: dict[str, object] = {
            "error_type": m.error_type,
            "message": m.text,
            "severity": m.severity.upper(),
            "context": {},
        }
    elif variant == 1:  # mp_rc_enum_str: str(ErrorSeverity.X)
        obj = {
            "error_type": m.error_type,
            "message": m.text,
            "severity": f"ErrorSeverity.{m.severity.upper()}",
        }
    else:  # mp_sndmore_test: "type", epoch timestamp
        obj = {
            "type": m.error_type,
            "message": m.text,
            "severity": m.severity.upper(),
            "timestamp": m.at,
        }
    return [b"ERROR:", _dumps(obj).encode()]


def _d5(m: _Msg) -> list[bytes]:
    """``[b"ERROR", json]`` with ``type`` (PC2 ``report_error``; naive local ISO)."""
    obj = {
        "timestamp": _local_iso(m.at),
        "agent": m.source,
        "type": m.error_type,
        "message": m.text,
        "severity": m.severity.upper(),
    }
    return [b"ERROR", _dumps(obj).encode()]


def _d6(m: _Msg) -> list[bytes]:
    """One bare JSON frame: mms_topic_field or a central_relay re-send (by ``n % 2``)."""
    if m.n % 2 == 0:  # ModelManagerSuite.report_error send_json
        obj: dict[str, object] = {
            "topic": "ERROR",
            "error_type": m.error_type,
            "message": m.text,
            "severity": m.severity.lower(),
            "timestamp": m.at,
            "agent": m.source,
        }
    else:  # CentralErrorBus relay of an agent's object
        obj = {"agent": m.source, "error_type": m.error_type, "message": m.text}
    return [_dumps(obj).encode()]


def _d7(m: _Msg) -> list[bytes]:
    """``ERROR:<Agent>:<context>:`` + raw exception text (UTF-8, may hold ``:``, ``{``, non-ASCII)."""
    for name in (m.source, m.error_type):
        if not _D7_NAME.match(name):
            raise ValueError(f"D7 prefix tokens must match [A-Za-z0-9_.-]+: {name!r}")
    text = f"CUDA out of memory: {{'latency_ms': nan}} — {m.text}"
    return [f"ERROR:{m.source}:{m.error_type}:{text}".encode()]


_BUILDERS: dict[str, Callable[[_Msg], list[bytes]]] = {
    "D1": _d1,
    "D2": _d2,
    "D3": _d3,
    "D4": _d4,
    "D5": _d5,
    "D6": _d6,
    "D7": _d7,
}


def frames(
    dialect: str,
    publisher: int,
    n: int,
    *,
    source: str,
    error_type: str,
    severity: str = "error",
    pad_bytes: int = 120,
    at: float | None = None,
) -> list[bytes]:
    """The ZMQ frames a legacy agent of ``dialect`` sends (legacy-bus.md §1), carrying ``token(publisher, n)``.

    220-550 B with ``pad_bytes=120`` (D1 ~370 B, D2 ~550 B, D3-D7 ~220-290 B). Raises ``KeyError`` for an unknown dialect,
    ``ValueError`` for a D7 ``source``/``error_type`` that cannot be a prefix token.
    """
    build = _BUILDERS[dialect]
    return build(_Msg(publisher, n, source, error_type, severity, pad_bytes, _now(at)))


def cross_machine_copy(
    publisher: int,
    n: int,
    *,
    source: str,
    error_type: str,
    severity: str = "high",
    pad_bytes: int = 120,
    at: float | None = None,
) -> list[bytes]:
    """D2's second message: ``CROSS_MACHINE_ERROR:PC2:`` + the same envelope (same ``error_id``) plus
    ``"cross_machine_alert": true, "originating_machine": "PC2"``. With the same arguments and ``at``
    it is the copy of ``frames("D2", ...)``."""
    m = _Msg(publisher, n, source, error_type, severity, pad_bytes, _now(at))
    obj = {**_pc2_envelope(m), "cross_machine_alert": True, "originating_machine": "PC2"}
    return [b"CROSS_MACHINE_ERROR:PC2:" + _dumps(obj).encode()]


def flood_frames(
    publisher: int,
    n: int,
    *,
    source: str,
    error_type: str,
    severity: str = "error",
    pad_bytes: int = 120,
    at: float | None = None,
) -> list[bytes]:
    """A D1 flood message: ``details`` is an object holding the token, so the bridge's message is the
    ``error_type`` and all flood messages of one (source, error_type) share one fingerprint."""
    m = _Msg(publisher, n, source, error_type, severity, 0, _now(at))
    details = {
        "endpoint": "tcp://192.168.100.17:7140",
        "timeout_ms": 5000,
        "token": m.tok,
        "pad": "x" * pad_bytes,
    }
    return [b"ERROR:" + _dumps(_envelope(m, details)).encode()]


# --------------------------------------------------------------------------- malformed frame sets

_MALFORMED: tuple[Callable[[bytes], list[bytes]], ...] = (
    lambda t: [b"ERROR:\xff\xfe " + t],  # INVALID_UTF8 after the prefix
    lambda t: [
        b"ERROR:",
        b'{"agent": "LoadAgent", "message": "' + t + b'"}',
        b"trailing",
    ],  # TOO_MANY_FRAMES
    lambda t: [b'ERROR:{"agent": "LoadAgent", "message": "' + t + b'"'],  # INVALID_JSON (cut short)
    lambda t: [b"WARNING:LoadAgent:" + t],  # UNKNOWN_TOPIC
    lambda t: [
        b'ERROR:\xef\xbb\xbf{"agent": "LoadAgent", "message": "' + t + b'"}'
    ],  # INVALID_JSON (BOM)
    lambda t: [b"ERROR:", b'["' + t + b'"]'],  # NOT_AN_OBJECT (D4 with an array)
    lambda t: [b"TOPIC", b'{"message": "' + t + b'"}'],  # UNKNOWN_TOPIC (2 frames)
)
MALFORMED_VARIANTS = len(_MALFORMED)


def malformed(publisher: int, n: int) -> list[bytes]:
    """A frame set the bridge must dead-letter (shapes of the corpus' synthetic rows), token inside.

    The shape rotates with ``n`` over ``MALFORMED_VARIANTS`` kinds of damage.
    """
    return _MALFORMED[n % MALFORMED_VARIANTS](token(publisher, n).encode())

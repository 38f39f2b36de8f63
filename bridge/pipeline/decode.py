"""Decode stage: one legacy ZMQ frame set -> ``ErrorEvent`` or ``DeadLetter``.

Contract of ``LegacyDecoder.decode(frames, received_at)``:

* ``frames``: the frames of one ``recv_multipart`` (``bytes`` or any
  bytes-like object; copied to ``bytes`` only when not already ``bytes``).
  ``received_at``: tz-aware UTC wall-clock time of the read, stored as is.
* Returns a decision and never raises: an ``ErrorEvent`` (classification and
  field mapping in ``bridge.legacy.dialects``; ``fingerprint`` from
  ``bridge.pipeline.fingerprint``) or a ``DeadLetter`` carrying the exact
  input frames, their sizes, the reason, the dialect the prefix suggested and
  a detail in words. Any unexpected exception becomes a ``DeadLetter`` with
  reason ``invalid_json`` and ``detail`` naming the exception.
* ``identity(frames, legacy_error_id)`` is called exactly once per call, for
  events and dead letters alike, with the ``bytes`` frames; ``legacy_error_id``
  is D1/D2's ``error_data.error_id`` when it is a non-empty string, else None
  (always None for a dead letter). Its result is ``event_id``. If ``identity``
  itself raises, the id falls back to ``fallback-<blake2b of frames and
  received_at>`` so the message is still not lost.
* Oversized input (``max_frame_bytes``, the read-side cap of ``zmq.max_frame_bytes``):
  when any frame is longer, the result is a ``DeadLetter`` with reason
  ``oversized``, ``frames`` holding the first ``oversized_keep_bytes`` of each
  frame, ``frame_sizes`` the real sizes and ``truncated`` (original and kept
  byte totals, ``fields=["frames"]``); the frames are not parsed. The only
  dead letter whose ``frames`` are not the exact input.
* The same contract for the inputs that come over NATS:
  ``decode_legacy_nats(subject, payload, received_at)`` for the legacy libraries' ``errors.>``
  messages (``bridge.legacy.nats_libraries``; identity over ``[payload]`` with the library's
  id, so library A's 2-4 copies on different subjects get one event id; a dead letter keeps
  ``[payload]`` and names the subject) and ``decode_native(payload, msg_id, received_at)`` for
  ``busclient``'s ``ErrorEvent`` contracts (``received_at`` set to the bridge's, the fingerprint
  computed here as for every other event, the event id from ``Nats-Msg-Id``).
* No logging, no counting, no clock: the runner acts on the result.
* Every result encodes with ``contracts.codec.encode`` (strings are valid
  Unicode, floats finite; see ``bridge.legacy.lenient_json``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

import msgspec

from bridge.legacy.dialects import Decoded, Rejected, read_frames
from bridge.legacy.nats_libraries import decode_legacy_nats
from bridge.pipeline.fingerprint import fingerprint
from bridge.pipeline.identity import frames_digest
from contracts.codec import decode as decode_contract
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent, Truncation

__all__ = ["IdentityFn", "LegacyDecoder"]

IdentityFn = Callable[[Sequence[bytes], str | None], str]

_MAX_DETAIL_CHARS = 500
_UNKNOWN = DeadLetterReason.UNKNOWN_SCHEMA


class LegacyDecoder:
    """Turns legacy frame sets into contracts for one machine; see the module docstring."""

    __slots__ = ("_identity", "_keep_bytes", "_local_tz", "_machine", "_max_frame_bytes")

    def __init__(
        self,
        *,
        machine: str,
        identity: IdentityFn,
        local_tz: tzinfo = UTC,
        max_frame_bytes: int | None = None,
        oversized_keep_bytes: int = 64 * 1024,
    ) -> None:
        """``max_frame_bytes``: frames longer than this make the message an ``oversized`` dead
        letter (None or negative: no cap); ``oversized_keep_bytes``: bytes kept of each frame."""
        self._machine = machine
        self._identity = identity
        self._local_tz = local_tz
        self._max_frame_bytes = (
            max_frame_bytes if max_frame_bytes is not None and max_frame_bytes >= 0 else None
        )
        self._keep_bytes = max(0, oversized_keep_bytes)

    def decode(self, frames: Sequence[bytes], received_at: datetime) -> ErrorEvent | DeadLetter:
        """Decode one frame set. Never raises."""
        try:
            raw = [
                frame if frame.__class__ is bytes else bytes(memoryview(frame)) for frame in frames
            ]
        except Exception as exc:  # not a sequence of bytes-like objects
            return self._dead_letter(
                _salvage(frames), received_at, _crash(exc, "frames are not bytes")
            )
        cap = self._max_frame_bytes
        if cap is not None and raw and max(map(len, raw)) > cap:
            return self._oversized(raw, received_at, cap)
        try:
            outcome = read_frames(raw, self._local_tz)
        except Exception as exc:
            outcome = _crash(exc, "decoder error")
        if outcome.__class__ is Decoded:
            return self._event(raw, received_at, outcome)  # type: ignore[arg-type]
        return self._dead_letter(raw, received_at, outcome)  # type: ignore[arg-type]

    def reject(self, frames: Sequence[bytes], received_at: datetime, detail: str) -> DeadLetter:
        """A dead letter of ``frames`` (bytes) without parsing them: reason ``invalid_json``,
        ``detail`` in words (cut to 500 characters), the event id from ``identity`` as for any
        dead letter. The decode worker's answer to a message that crashed its process. Never
        raises."""
        raw = _salvage(frames)
        return self._dead_letter(
            raw,
            received_at,
            Rejected(DeadLetterReason.INVALID_JSON, None, detail[:_MAX_DETAIL_CHARS]),
        )

    def decode_legacy_nats(
        self, subject: str, payload: bytes, received_at: datetime
    ) -> ErrorEvent | DeadLetter:
        """One message of the legacy ``errors.>`` streams (see the module note). Never raises."""
        raw = [payload]
        try:
            outcome = decode_legacy_nats(subject, payload, self._local_tz)
        except Exception as exc:
            outcome = _crash(exc, f"legacy NATS decoder error on {subject}")
        if outcome.__class__ is Decoded:
            return self._event(raw, received_at, outcome)  # type: ignore[arg-type]
        rejected: Rejected = outcome  # type: ignore[assignment]
        detail = f"on {subject}: {rejected.detail}"[:_MAX_DETAIL_CHARS]
        return self._dead_letter(
            raw, received_at, Rejected(rejected.reason, rejected.dialect_guess, detail)
        )

    def decode_native(
        self, payload: bytes, msg_id: str | None, received_at: datetime
    ) -> ErrorEvent | DeadLetter:
        """A ``busclient`` intake message: an ``ErrorEvent`` contract. Anything else (another
        contract, bad JSON, a newer schema it cannot read) is a dead letter. Never raises."""
        raw = [payload]
        try:
            msg = decode_contract(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            detail = f"intake payload is not a contract: {exc}"[:_MAX_DETAIL_CHARS]
            return self._dead_letter(raw, received_at, Rejected(_UNKNOWN, None, detail))
        if not isinstance(msg, ErrorEvent):
            kind = type(msg).__name__
            detail = f"intake takes error events, not {kind}"
            return self._dead_letter(raw, received_at, Rejected(_UNKNOWN, None, detail))
        try:
            return msgspec.structs.replace(
                msg,
                event_id=msg_id or msg.event_id,
                received_at=received_at,
                fingerprint=fingerprint(msg.source, msg.error_type, msg.message),
                legacy=None,
            )
        except Exception as exc:
            return self._dead_letter(raw, received_at, _crash(exc, "intake event"))

    def _event(
        self, raw: list[bytes], received_at: datetime, decoded: Decoded
    ) -> ErrorEvent | DeadLetter:
        event_id = self._event_id(raw, decoded.error_id, received_at)
        try:
            return ErrorEvent(
                event_id=event_id,
                occurred_at=decoded.occurred_at,
                received_at=received_at,
                machine=self._machine,
                source=decoded.source,
                severity=decoded.severity,
                error_type=decoded.error_type,
                message=decoded.message,
                details=decoded.details,
                fingerprint=fingerprint(decoded.source, decoded.error_type, decoded.message),
                legacy=decoded.legacy,
            )
        except Exception as exc:
            rejected = _crash(exc, "event construction failed")
            return self._letter(event_id, raw, received_at, rejected)

    def _oversized(self, raw: list[bytes], received_at: datetime, cap: int) -> DeadLetter:
        """Keep the head of each frame and the sizes; the id still covers the whole frames."""
        event_id = self._event_id(raw, None, received_at)
        sizes = [len(frame) for frame in raw]
        kept = [frame[: self._keep_bytes] for frame in raw]
        detail = f"frame of {max(sizes)} bytes exceeds zmq.max_frame_bytes ({cap}); first {self._keep_bytes} bytes of each frame kept"
        return DeadLetter(
            event_id=event_id,
            received_at=received_at,
            machine=self._machine,
            reason=DeadLetterReason.OVERSIZED,
            frames=kept,
            frame_sizes=sizes,
            detail=detail,
            truncated=Truncation(
                original_bytes=sum(sizes), kept_bytes=sum(map(len, kept)), fields=["frames"]
            ),
        )

    def _dead_letter(
        self, raw: list[bytes], received_at: datetime, rejected: Rejected
    ) -> DeadLetter:
        return self._letter(self._event_id(raw, None, received_at), raw, received_at, rejected)

    def _letter(
        self, event_id: str, raw: list[bytes], received_at: datetime, rejected: Rejected
    ) -> DeadLetter:
        return DeadLetter(
            event_id=event_id,
            received_at=received_at,
            machine=self._machine,
            reason=rejected.reason,
            frames=raw,
            frame_sizes=[len(frame) for frame in raw],
            dialect_guess=rejected.dialect_guess,
            detail=rejected.detail,
        )

    def _event_id(self, raw: list[bytes], error_id: str | None, received_at: datetime) -> str:
        try:
            event_id = self._identity(raw, error_id)
            return event_id if event_id.__class__ is str else str(event_id)
        except Exception:
            return _fallback_id(raw, received_at)


def _crash(exc: BaseException, context: str) -> Rejected:
    """A dead-letter decision for an unexpected exception, naming it."""
    try:
        text = f"{context}: {type(exc).__name__}: {exc}"
    except Exception:
        text = f"{context}: {type(exc).__name__}"
    return Rejected(DeadLetterReason.INVALID_JSON, None, text[:_MAX_DETAIL_CHARS])


def _salvage(frames: Any) -> list[bytes]:
    """Best-effort bytes of frames that are not all bytes-like (unreadable ones become b"")."""
    try:
        return [_frame_bytes(frame) for frame in frames]
    except Exception:
        return []


def _frame_bytes(frame: Any) -> bytes:
    try:
        return bytes(memoryview(frame))
    except Exception:
        return b""


def _fallback_id(raw: list[bytes], received_at: datetime) -> str:
    return f"fallback-{frames_digest([*raw, repr(received_at).encode('utf-8', 'replace')])}"

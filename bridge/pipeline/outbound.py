"""Contract message -> ``Outbound`` (subject, headers, payload), within ``max_payload``.

Headers: ``Nats-Msg-Id`` (the event id), ``Busbridge-Contract`` (``type`` tag),
``Busbridge-Contract-Version`` and ``Busbridge-Origin`` (bridge id, for loop
prevention), as ``WireHeaders``: with their header section made here, from a tail per
contract that is the same for every message of it and the message's own id line.

Oversized messages (legacy contexts are unbounded; a 1.1 MB one exceeds NATS'
default 1 MiB ``max_payload``) are **stored truncated with a marker**, never
dropped: an ``ErrorEvent`` keeps every field but has ``details`` replaced by
the leading part of its JSON text and, if still too big, ``message`` cut; a
``DeadLetter`` keeps the leading bytes of its frames; a flood event's
``sample`` is truncated like an ``ErrorEvent``. The ``truncated`` field records
the original and kept sizes and the fields cut.
"""

from __future__ import annotations

import msgspec

from bridge.metrics import Metrics
from bridge.pipeline.publish import MSG_ID_LINE, Outbound, WireHeaders, plain_header_value
from contracts.codec import contract_name, encode
from contracts.messages import (
    CONTRACT_VERSION,
    BridgeHeartbeat,
    DeadLetter,
    DeadLetterSummary,
    ErrorEvent,
    FloodEnded,
    FloodStarted,
    FloodSummary,
    HealthReport,
    Message,
    Severity,
    Truncation,
)
from contracts.subjects import (
    HEADER_CONTRACT,
    HEADER_CONTRACT_VERSION,
    HEADER_MSG_ID,
    HEADER_ORIGIN,
    Subjects,
)

__all__ = ["OutboundBuilder"]

#: spool eviction rank of contracts without a severity field
_RANK = {
    "dead_letter": Severity.ERROR.rank,
    "dead_letter_summary": Severity.ERROR.rank,
    "spool_evicted": Severity.CRITICAL.rank,
    "phase_changed": Severity.CRITICAL.rank,
}
#: room left in max_payload for the protocol line overhead, in bytes
_SAFETY_BYTES = 512
_json = msgspec.json.Encoder()
#: header bytes besides the values: each ``key: value\r\n`` adds the key and 4 bytes
_HEADER_KEY_BYTES = sum(
    len(k) + 4 for k in (HEADER_MSG_ID, HEADER_CONTRACT, HEADER_CONTRACT_VERSION, HEADER_ORIGIN)
)
_VERSION = str(CONTRACT_VERSION)
_FIXED_HEADER_BYTES = _HEADER_KEY_BYTES + len(_VERSION)
_SUBJECT_MEMO_MAX = 4096
_NO_TAIL = b"?"  # not made yet (None: cannot be made)


class OutboundBuilder:
    """Builds ``Outbound`` values for one bridge. ``max_payload_bytes`` is the server's;
    ``bridge_id`` is fixed for the builder's life (the header tails are made once per
    contract)."""

    def __init__(
        self,
        subjects: Subjects,
        bridge_id: str,
        max_payload_bytes: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.subjects = subjects
        self.bridge_id = bridge_id
        self.max_payload_bytes = max_payload_bytes
        self._m = metrics
        self._error_subjects: dict[
            tuple[str, Severity, str], str
        ] = {}  # memo: sanitising costs 2 regex subs
        #: contract name -> the header section after the ``Nats-Msg-Id`` line (None: the bridge
        #: id is not a value nats-py sends unchanged, so no message gets a ``wire``)
        self._wire_tails: dict[str, bytes | None] = {}

    def set_max_payload(self, max_payload_bytes: int) -> None:
        """The connected server's ``max_payload`` in bytes (replaces the configured guess)."""
        self.max_payload_bytes = max_payload_bytes

    def build(self, msg: Message, payload: bytes | None = None) -> Outbound:
        """``msg`` as an ``Outbound`` within ``max_payload_bytes`` (truncated with a marker when
        too big, see the module note). ``payload``: ``contracts.codec.encode(msg)`` when the
        caller has it already (the decode worker made it); it is not checked against ``msg``."""
        name = contract_name(msg)
        event_id = msg.event_id
        bridge_id = self.bridge_id
        tail = self._wire_tails.get(name, _NO_TAIL)
        if tail is _NO_TAIL:
            tail = self._wire_tail(name)
        headers = WireHeaders()
        headers[HEADER_MSG_ID] = event_id
        headers[HEADER_CONTRACT] = name
        headers[HEADER_CONTRACT_VERSION] = _VERSION
        headers[HEADER_ORIGIN] = bridge_id
        headers.wire = (
            MSG_ID_LINE + event_id.encode() + tail
            if tail is not None and plain_header_value(event_id)
            else None
        )
        if payload is None:
            payload = encode(msg)
        header_bytes = _FIXED_HEADER_BYTES + len(event_id) + len(name) + len(bridge_id)
        budget = self.max_payload_bytes - _SAFETY_BYTES - header_bytes
        if len(payload) > budget:
            msg, payload = _truncate(msg, payload, budget)
            if self._m is not None:
                self._m.truncated.labels(name).inc()
        if msg.__class__ is ErrorEvent:
            rank = msg.severity.rank  # type: ignore[union-attr]
            key = (msg.machine, msg.severity, msg.source)  # type: ignore[union-attr]
            subject = self._error_subjects.get(key) or self._error_subject(key)
        else:
            severity = getattr(msg, "severity", None)
            rank = severity.rank if severity is not None else _RANK.get(name, 3)
            subject = self._subject(msg)
        return Outbound(subject, payload, headers, name, event_id, rank=rank)

    def _wire_tail(self, name: str) -> bytes | None:
        values = (name, _VERSION, self.bridge_id)
        tail = (
            b"\r\n"
            + b"".join(
                f"{key}: {value}\r\n".encode()
                for key, value in zip(
                    (HEADER_CONTRACT, HEADER_CONTRACT_VERSION, HEADER_ORIGIN), values, strict=True
                )
            )
            + b"\r\n"
            if all(map(plain_header_value, values))
            else None
        )
        self._wire_tails[name] = tail
        return tail

    def _error_subject(self, key: tuple[str, Severity, str]) -> str:
        """An error event's subject, memoised by (machine, severity, source)."""
        if len(self._error_subjects) >= _SUBJECT_MEMO_MAX:
            self._error_subjects.clear()
        subject = self._error_subjects[key] = self.subjects.error(*key)
        return subject

    def _subject(self, msg: Message) -> str:
        """The subject of any other contract than ``ErrorEvent`` (``build`` does those)."""
        if isinstance(msg, DeadLetter | DeadLetterSummary):
            return self.subjects.dead_letter(msg.machine)
        if isinstance(msg, FloodStarted | FloodSummary | FloodEnded):
            return self.subjects.flood(msg.machine, msg.source)
        if isinstance(msg, HealthReport):
            return self.subjects.health(msg.machine, msg.service)
        if isinstance(msg, BridgeHeartbeat):
            return self.subjects.bridge(msg.machine, "heartbeat")
        return self.subjects.bridge(msg.machine, contract_name(msg))


def _truncate(msg: Message, payload: bytes, budget: int) -> tuple[Message, bytes]:
    if isinstance(msg, ErrorEvent):
        return _truncate_event(msg, len(payload), budget)
    if isinstance(msg, DeadLetter):
        return _truncate_dead_letter(msg, len(payload), budget)
    if isinstance(msg, FloodStarted | FloodSummary):  # only the sample event can be large
        sample_size = _size_of_event(msg.sample)
        sample, _ = _truncate_event(msg.sample, sample_size, budget - (len(payload) - sample_size))
        out = msgspec.structs.replace(msg, sample=sample)
        return out, encode(out)
    return msg, payload  # FloodEnded and SpoolEvicted have no unbounded field


def _truncate_event(ev: ErrorEvent, original: int, budget: int) -> tuple[Message, bytes]:
    details_text = ev.details if isinstance(ev.details, str) else _json.encode(ev.details).decode()
    fields = ["details"]
    base = _size_of(
        msgspec.structs.replace(ev, details="", truncated=_marker(original, original, fields))
    )
    message = ev.message
    if base > budget:  # details alone cannot make it fit: cut the message too
        fields.append("message")
        message = _cut_text(
            ev.message, max(0, len(ev.message.encode("utf-8", "surrogatepass")) - (base - budget))
        )
    keep = max(0, budget - base)
    while True:  # JSON escaping can grow the text: shrink until it fits
        out = msgspec.structs.replace(
            ev,
            details=_cut_text(details_text, keep),
            message=message,
            truncated=_marker(original, 0, fields),
        )
        size = _size_of(out) + 32  # the final marker's digits
        if size <= budget or keep == 0:
            break
        keep = int(keep * budget / size * 0.98)
    out = msgspec.structs.replace(out, truncated=_marker(original, _size_of(out), fields))
    return out, encode(out)


def _truncate_dead_letter(dl: DeadLetter, original: int, budget: int) -> tuple[Message, bytes]:
    base = _size_of(
        msgspec.structs.replace(dl, frames=[], truncated=_marker(original, original, ["frames"]))
    )
    room = max(0, (budget - base) * 3 // 4 - 4 * len(dl.frames))  # base64 grows bytes by 4/3
    frames = []
    for frame in dl.frames:
        frames.append(frame[:room])
        room = max(0, room - len(frame))
    out = msgspec.structs.replace(dl, frames=frames, truncated=_marker(original, 0, ["frames"]))
    out = msgspec.structs.replace(out, truncated=_marker(original, _size_of(out), ["frames"]))
    return out, encode(out)


def _marker(original: int, kept: int, fields: list[str]) -> Truncation:
    return Truncation(original_bytes=original, kept_bytes=kept, fields=list(fields))


def _size_of(msg: Message) -> int:
    return len(encode(msg))


def _size_of_event(ev: ErrorEvent) -> int:
    return len(_json.encode(ev))


def _cut_text(text: str, max_bytes: int) -> str:
    """Leading part of ``text`` whose UTF-8 form is at most ``max_bytes``."""
    return text.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")

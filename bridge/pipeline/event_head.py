"""``EventHead``: an ``ErrorEvent`` as the stages after decoding read it, decoded from its
contract JSON without the fields no stage reads.

The decode worker (``bridge.adapters.decode_worker``) answers with each message's contract JSON
(``contracts.codec.encode``), which is also the outbound payload. The bridge's event loop, the
data path's bottleneck, used to decode that JSON back into a whole ``ErrorEvent`` only to read
a few fields of it in the stages (parity's ZMQ side, counting, dedup, flood control, the
outbound builder): ``occurred_at``, ``details`` (any JSON, built into Python objects) and the
rest of ``legacy`` cost most of the decode. ``EventHead`` has only what they read, with the
same names and types, so each stage takes either; msgspec skips the other fields unparsed.
Measured (``loadtest/README.md``): 1.16 us per D1 message against 2.15 us for the whole
``ErrorEvent``, best of 5 over 20k.

Where a stage needs the whole event (a flood's sample, a payload to truncate), ``full_event``
decodes it from the JSON the head keeps (``payload``). A dead letter is decoded whole: the
union ``EventHead | DeadLetter`` is told apart by the contract's ``type`` tag, as
``ErrorEvent | DeadLetter`` is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from contracts.messages import DeadLetter, Dialect, ErrorEvent, Severity

__all__ = ["EventHead", "decode_heads", "full_event"]


class LegacyHead(msgspec.Struct, frozen=True, kw_only=True):
    """The part of ``LegacyOrigin`` the stages read (counting by dialect, unknown severities)."""

    dialect: Dialect
    raw_severity: Any = None


class EventHead(msgspec.Struct, kw_only=True, tag="error_event", tag_field="type", gc=False):
    """The fields of an ``ErrorEvent`` that parity, counting, dedup, flood control and the
    outbound builder read (same names and types), and ``payload``: the event's contract JSON
    it was decoded from (set by ``decode_heads``; never part of any JSON). Not a contract:
    never published or stored as such (``full_event`` gives the contract)."""

    event_id: str
    received_at: datetime
    machine: str
    source: str
    severity: Severity
    error_type: str
    message: str
    fingerprint: str = ""
    legacy: LegacyHead | None = None
    #: the contract JSON; a JSON key no contract has, so decoding never fills it
    payload: bytes = msgspec.field(default=b"", name="busbridge.payload")


_heads = msgspec.json.Decoder(EventHead | DeadLetter)
_events = msgspec.json.Decoder(ErrorEvent)


def decode_heads(payloads: list[bytes]) -> list[EventHead | DeadLetter]:
    """Each contract JSON of ``payloads`` (an ``ErrorEvent`` or a ``DeadLetter``, as
    ``contracts.codec.encode`` made it) as an ``EventHead`` keeping its JSON, or a whole
    ``DeadLetter``, in order. Raises ``msgspec.DecodeError``/``msgspec.ValidationError`` when one
    is not such a contract."""
    decode = _heads.decode
    out = []
    for payload in payloads:
        msg = decode(payload)
        if msg.__class__ is EventHead:
            msg.payload = payload  # type: ignore[union-attr]
        out.append(msg)
    return out


def full_event(ev: ErrorEvent | EventHead) -> ErrorEvent:
    """``ev`` as the whole ``ErrorEvent`` contract (itself when it is one). Raises
    ``msgspec.DecodeError`` only for a head whose JSON is not an ``ErrorEvent``, which
    ``decode_heads`` never makes."""
    if ev.__class__ is ErrorEvent:
        return ev  # type: ignore[return-value]
    return _events.decode(ev.payload)  # type: ignore[union-attr]

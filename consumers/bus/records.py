"""What a consumer hands to its handler, and what it writes when it gives up on a message.

* ``DeliveryInfo``: where a delivered message came from (stream sequence, deliveries, subject,
  headers), given to the handler beside the decoded contract.
* ``RawMessage``: a message the consumer could not type (unknown ``type``, newer
  ``schema_version``, undecodable or invalid body), handed over only with
  ``Subscription.unknown == "raw"``.
* ``ConsumerDeadLetter`` (``contracts.messages``; ``DeadLetterCause`` here is its
  ``ConsumerDeadLetterCause``): the record a consumer stores on
  ``<prefix>.consumer_dlq.<durable>`` when it gives up on a message.
* ``classify``: the decision taken for every delivered body before the handler sees it
  (deliver a contract, deliver raw, or skip with a reason). Pure; never raises.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, get_args

import msgspec

from consumers.bus.subscription import CONSUMER_DEAD_LETTER, Subscription, subject_matches
from contracts.codec import decode as decode_contract
from contracts.messages import (
    CONTRACT_VERSION,
    ConsumerDeadLetter,
    ContractName,
    Message,
    Severity,
)
from contracts.messages import ConsumerDeadLetterCause as DeadLetterCause

__all__ = [
    "CONSUMER_DEAD_LETTER_VERSION",
    "SKIP_REASONS",
    "ConsumerDeadLetter",
    "DeadLetterCause",
    "DeliveryInfo",
    "Item",
    "RawMessage",
    "Verdict",
    "as_str_headers",
    "classify",
    "contract_of",
    "cut",
    "decode_dead_letter",
    "encode_dead_letter",
]

CONSUMER_DEAD_LETTER_VERSION = CONTRACT_VERSION
#: why a message did not reach the handler as a contract (a bounded set: a metric label).
#: ``filtered``: not selected (type, severity or subject); never handed over raw.
SKIP_REASONS = ("filtered", "undecodable", "unknown_type", "newer_version", "invalid")

#: newest ``schema_version`` this reader understands, per ``type`` tag
_KNOWN_VERSIONS = dict.fromkeys(
    get_args(ContractName), CONTRACT_VERSION
)  # every contract of contracts.messages is at CONTRACT_VERSION


class DeliveryInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One delivery of a stored message to a consumer.

    ``stream_seq``: the message's sequence in the stream (stable across redeliveries);
    ``consumer_seq``: this delivery's sequence in the durable; ``num_delivered``: how many
    times the server has delivered it, this delivery included (1 on the first);
    ``num_pending``: messages the durable still has to deliver after it; ``stored_at``:
    the server's store time (UTC); ``headers``: the message headers (``Nats-Msg-Id``,
    ``Busbridge-Contract``, ...).
    """

    stream: str
    durable: str
    subject: str
    stream_seq: int
    consumer_seq: int
    num_delivered: int
    num_pending: int
    stored_at: datetime | None = None
    headers: dict[str, str] = {}


class RawMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message the consumer could not type; ``reason`` is one of ``SKIP_REASONS``
    but ``filtered``. ``type``/``schema_version``: as read from the body, when readable."""

    subject: str
    data: bytes
    reason: str
    headers: dict[str, str] = {}
    type: str | None = None
    schema_version: int | None = None


_dead_letter_encoder = msgspec.json.Encoder()
_dead_letter_decoder = msgspec.json.Decoder(ConsumerDeadLetter)


def encode_dead_letter(record: ConsumerDeadLetter) -> bytes:
    """Compact JSON of one ``ConsumerDeadLetter``."""
    return _dead_letter_encoder.encode(record)


def decode_dead_letter(data: bytes) -> ConsumerDeadLetter:
    """Parse a ``ConsumerDeadLetter``; raises ``msgspec.DecodeError``/``ValidationError``."""
    return _dead_letter_decoder.decode(data)


class _Peek(msgspec.Struct):
    type: str | None = None
    schema_version: int = 1


_peek_decoder = msgspec.json.Decoder(_Peek)

Item = Message | ConsumerDeadLetter | RawMessage


class Verdict(NamedTuple):
    """``item``: what the handler gets (``None``: skip); ``reason``: one of ``SKIP_REASONS``
    when skipped or raw, ``None`` for a typed contract."""

    item: Item | None
    reason: str | None


def classify(
    data: bytes,
    subject: str,
    headers: dict[str, str],
    sub: Subscription,
    filters: list[str],
) -> Verdict:
    """Decide what happens to one delivered body. Never raises.

    Order: a subject outside ``filters`` or a ``type`` not in ``sub.types`` is ``filtered``;
    a body that is not a JSON object with a ``type`` string is ``undecodable``; a type this
    reader does not know is ``unknown_type``; a ``schema_version`` above the known one is
    ``newer_version`` (an older reader must not silently accept it, contracts.messages);
    a body the contract's decoder refuses is ``invalid``; a contract whose ``severity`` is
    not selected is ``filtered``. The unusable ones are skipped or raw per ``sub.unknown``.
    """
    if not any(subject_matches(f, subject) for f in filters):
        return Verdict(None, "filtered")
    try:
        peek = _peek_decoder.decode(data)
    except msgspec.MsgspecError:
        return _unusable("undecodable", data, subject, headers, sub, None)
    if peek.type is None:
        return _unusable("undecodable", data, subject, headers, sub, peek)
    if peek.type not in _KNOWN_VERSIONS:
        return _unusable("unknown_type", data, subject, headers, sub, peek)
    if peek.type not in sub.types:
        return Verdict(None, "filtered")
    if peek.schema_version > _KNOWN_VERSIONS[peek.type]:
        return _unusable("newer_version", data, subject, headers, sub, peek)
    try:
        item = _decode(peek.type, data)
    except msgspec.MsgspecError:
        return _unusable("invalid", data, subject, headers, sub, peek)
    wanted = sub.wanted_severities()
    severity = getattr(item, "severity", None)
    if wanted and isinstance(severity, Severity) and severity not in wanted:
        return Verdict(None, "filtered")
    return Verdict(item, None)


def _decode(type_tag: str, data: bytes) -> Message | ConsumerDeadLetter:
    if type_tag == CONSUMER_DEAD_LETTER:
        return decode_dead_letter(data)
    return decode_contract(data)


def _unusable(
    reason: str,
    data: bytes,
    subject: str,
    headers: dict[str, str],
    sub: Subscription,
    peek: _Peek | None,
) -> Verdict:
    if sub.unknown != "raw":
        return Verdict(None, reason)
    raw = RawMessage(
        subject=subject,
        data=data,
        reason=reason,
        headers=headers,
        type=peek.type if peek else None,
        schema_version=peek.schema_version if peek else None,
    )
    return Verdict(raw, reason)


def contract_of(data: bytes, headers: dict[str, str], header_name: str) -> str:
    """The contract name of a stored message: its header, else its body's ``type``, else ``""``."""
    named = headers.get(header_name)
    if named:
        return named
    try:
        return _peek_decoder.decode(data).type or ""
    except msgspec.MsgspecError:
        return ""


def cut(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters with a ``…`` marker."""
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def as_str_headers(headers: Any) -> dict[str, str]:
    """nats-py's headers (``None`` or a dict) as a plain ``dict[str, str]``."""
    return {str(k): str(v) for k, v in (headers or {}).items()}

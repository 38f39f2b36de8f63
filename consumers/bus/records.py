"""What a consumer hands to its handler, and what it writes when it gives up on a message.

* ``DeliveryInfo``: where a delivered message came from (stream sequence, deliveries, subject,
  headers), given to the handler beside the decoded contract.
* ``RawMessage``: a message the consumer could not type (unknown ``type``, newer
  ``schema_version``, undecodable or invalid body), handed over only with
  ``Subscription.unknown == "raw"``.
* ``ConsumerDeadLetter``: the record a consumer stores on
  ``<prefix>.consumer_dlq.<durable>`` when it gives up on a message. It is a wire contract
  (``type: consumer_dead_letter``, version ``CONSUMER_DEAD_LETTER_VERSION``) defined here
  until it joins the tagged union in ``contracts.messages`` with a generated schema.
* ``classify``: the decision taken for every delivered body before the handler sees it
  (deliver a contract, deliver raw, or skip with a reason). Pure; never raises.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from consumers.bus.subscription import CONSUMER_DEAD_LETTER, Subscription, subject_matches
from contracts.codec import decode as decode_contract
from contracts.messages import CONTRACT_VERSION, Message, Severity

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

CONSUMER_DEAD_LETTER_VERSION = 1
#: why a message did not reach the handler as a contract (a bounded set: a metric label).
#: ``filtered``: not selected (type, severity or subject); never handed over raw.
SKIP_REASONS = ("filtered", "undecodable", "unknown_type", "newer_version", "invalid")

#: newest ``schema_version`` this reader understands, per ``type`` tag
_KNOWN_VERSIONS = {
    "error_event": CONTRACT_VERSION,
    "dead_letter": CONTRACT_VERSION,
    "spool_evicted": CONTRACT_VERSION,
    "flood_started": CONTRACT_VERSION,
    "flood_summary": CONTRACT_VERSION,
    "flood_ended": CONTRACT_VERSION,
    "phase_changed": CONTRACT_VERSION,
    "health_report": CONTRACT_VERSION,
    "bridge_heartbeat": CONTRACT_VERSION,
    CONSUMER_DEAD_LETTER: CONSUMER_DEAD_LETTER_VERSION,
}


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


class DeadLetterCause(str, enum.Enum):
    """Why a consumer gave up on a message (a bounded set: a metric label)."""

    #: the handler raised on the last allowed attempt (``max_deliver``)
    HANDLER_FAILED = "handler_failed"
    #: delivered more than ``max_deliver`` times without an ack (ack_wait passed while a
    #: consumer crashed or hung, or storing the dead letter failed before): not handled again
    NOT_ACKNOWLEDGED = "not_acknowledged"
    #: the server stopped delivering it (JetStream max-deliveries advisory)
    MAX_DELIVERIES = "max_deliveries"


class ConsumerDeadLetter(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag=CONSUMER_DEAD_LETTER,
    tag_field="type",
):
    """A message a durable consumer gave up on, with the reason and the original bytes.

    ``event_id``: ``<durable>:<stream_seq>``, also the record's ``Nats-Msg-Id``, so writing
    it twice (a lost ack, several instances seeing one advisory) stores it once within the
    stream's duplicate window. ``stream``/``stream_seq``/``subject``: the original message.
    ``deliveries``: times the server delivered it (the advisory's count for
    ``max_deliveries``). ``cause``: ``DeadLetterCause``. ``error_type``: the exception's
    qualified class name (``""`` when no handler failure is known); ``error_message``: its
    text, cut to ``MAX_ERROR_CHARS``; ``error_traceback``: the formatted traceback, cut
    likewise. ``contract``: the original's ``Busbridge-Contract`` header, else the ``type``
    read from its body, else ``""``. ``headers``: the original headers. ``payload``: the
    original bytes (base64 in JSON), cut to fit the server's ``max_payload`` when
    ``payload_truncated``; ``payload_bytes``: the original size in bytes.
    ``dead_lettered_at``: UTC. ``instance``: ``<host>:<pid>`` of the consumer that wrote it.
    """

    event_id: str
    durable: str
    stream: str
    stream_seq: int
    subject: str
    deliveries: int
    cause: DeadLetterCause
    dead_lettered_at: datetime
    error_type: str = ""
    error_message: str = ""
    error_traceback: str = ""
    contract: str = ""
    headers: dict[str, str] = {}
    payload: bytes = b""
    payload_bytes: int = 0
    payload_truncated: bool = False
    instance: str = ""
    schema_version: int = CONSUMER_DEAD_LETTER_VERSION


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

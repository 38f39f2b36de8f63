"""Encoding and decoding of the contracts, with one reused encoder/decoder.

``encode(msg) -> bytes`` (compact JSON); ``decode(data) -> Message`` raises
``msgspec.ValidationError``/``msgspec.DecodeError`` on bad input. ``contract_name``
gives the tag used in the ``Busbridge-Contract`` header.
"""

from __future__ import annotations

import msgspec

from contracts.messages import Message

__all__ = ["contract_name", "decode", "encode"]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def encode(msg: Message) -> bytes:
    """Encode one contract message as compact JSON bytes."""
    return _encoder.encode(msg)


def decode(data: bytes) -> Message:
    """Decode JSON bytes into the contract named by its ``type`` tag."""
    return _decoder.decode(data)


def contract_name(msg: Message) -> str:
    """The ``type`` tag of a message, e.g. ``error_event``."""
    return type(msg).__struct_config__.tag  # type: ignore[return-value]

"""NATS-native events -> legacy D1 frames, for legacy ZMQ subscribers in ``nats_primary``.

Format (legacy-bus.md §1, D1 ``errpub_envelope``, ``ErrorPublisher.publish_error``):
one frame ``b"ERROR:" + json.dumps(envelope)`` with the envelope
``{"message_type": "error_report"|"critical_alert", "source", "timestamp"
(naive-UTC ISO), "error_data": {"error_id", "error_type", "severity",
"details", "message"}}``, so every legacy subscriber that parses D1 reads it.

Loop prevention: the envelope also carries ``"busbridge_origin": <bridge id>``.
``is_reemitted(frames)`` finds that key; a bridge that reads such a frame on
its ingest socket drops it (the event is already in NATS, with the same msg
id: ``error_id`` is the native event's id). A JSON *string* that contains the
words cannot match: inside a string the quotes are escaped.
"""

from __future__ import annotations

import json
from datetime import UTC

from contracts.messages import ErrorEvent, Severity

__all__ = ["ORIGIN_KEY", "encode_d1", "is_reemitted"]

ORIGIN_KEY = "busbridge_origin"
_MARKER = b'"busbridge_origin": '


def encode_d1(ev: ErrorEvent, bridge_id: str) -> list[bytes]:
    """The frames (one) of a D1 message carrying ``ev``, marked with ``bridge_id``."""
    at = ev.occurred_at or ev.received_at
    envelope = {
        "message_type": "critical_alert" if ev.severity is Severity.CRITICAL else "error_report",
        "source": ev.source,
        "timestamp": at.astimezone(UTC).replace(tzinfo=None).isoformat(),
        "error_data": {
            "error_id": ev.event_id,
            "error_type": ev.error_type,
            "severity": ev.severity.value,
            "details": ev.details,
            "message": ev.message,
        },
        ORIGIN_KEY: bridge_id,
    }
    return [b"ERROR:" + json.dumps(envelope, default=str).encode()]


def is_reemitted(frames: list[bytes]) -> bool:
    """True when a frame set was made by ``encode_d1`` (of any bridge)."""
    # ``find``, not ``in``: CPython's ``bytes.__contains__`` first tries the operand as an
    # int and builds (then drops) a TypeError for every bytes operand
    return len(frames) == 1 and frames[0].find(_MARKER) >= 0

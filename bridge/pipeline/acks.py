"""The publish port's vocabulary: outcomes of a publish, shared by the
publisher (``bridge.pipeline.publish``) and the transport that implements it
(``bridge.adapters.jetstream``), so pipeline stages never import adapters.
"""

from __future__ import annotations

import enum

import msgspec

from bridge.errors import BridgeError

__all__ = ["AckOutcome", "AckResult", "NotConnected", "PublishRefused", "RunCut"]


class NotConnected(BridgeError):
    """Publishing is impossible right now (disconnected and buffer full, or closed)."""

    code = "nats_not_connected"


class PublishRefused(BridgeError):
    """The client refused the message itself (too large, bad subject or header): retrying cannot help."""

    code = "publish_refused"


class RunCut(BridgeError):
    """Of several messages handed over at once, only the first ``queued`` were queued: the
    next one failed with ``cause`` (``NotConnected`` or ``PublishRefused``), and none after it
    was queued."""

    code = "publish_run_cut"

    def __init__(self, queued: int, cause: NotConnected | PublishRefused) -> None:
        super().__init__(f"{queued} messages queued, then {cause}")
        self.queued = queued
        self.cause = cause


class AckOutcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    NO_RESPONDERS = "no_responders"
    ERROR = "jetstream_error"


class AckResult(msgspec.Struct, frozen=True):
    """Outcome of one publish: ``seq`` is the stream sequence when stored."""

    outcome: AckOutcome
    seq: int = 0
    error_code: int = 0
    description: str = ""

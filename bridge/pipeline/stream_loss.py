"""Stream-loss check: did JetStream lose messages it had acknowledged? (issue 17)

Design note
-----------
A nats-server acknowledges a message once it is in memory and the page cache; its file
store is synced every ``sync_interval`` (2 min by default). A power cut of the NATS host,
or a store directory restored from an older copy, therefore loses the messages stored
last, and the stream's sequence goes back: the server starts again at its last synced
message and gives the lost sequence numbers to new messages.

The spool keeps acknowledged rows for ``spool.retain_acked_secs`` (``Spool.retire``). Rows
whose PubAck carried a stream sequence are **anchors**. After every (re)connect the bridge
asks, for anchors in spool order (the publisher keeps order, so spool order is stream order):
is the message at ``stream_seq`` still the one with this ``Nats-Msg-Id``?

* ``stream_seq`` above the stream's last sequence: lost (the sequence went back);
* a message there with another ``Nats-Msg-Id``: lost (the sequence was given again);
* ``stream_seq`` below the stream's first sequence, or no message there (deleted by an
  operator or a limit): not lost by the server's crash, nothing to restore;
* the same ``Nats-Msg-Id``: held.

A crash loses a suffix of the store, so "held" is true for a prefix of the anchors: the
newest anchor is probed first (one request when nothing was lost), else a binary search
finds the first lost one in ``O(log n)`` requests. Every retained row after the last held
anchor is then restored to the spool and published again with its own ``Nats-Msg-Id``:
exactly the lost ones when every row is an anchor (one PubAck per message); with fast-ingest
batches (only a batch's commit carries a stream sequence) the rows between the last held
anchor and the first lost one may include held ones, and the stream's duplicate window
drops those copies (the retention window must not exceed it; ``bridge.config`` checks).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bridge.pipeline.spool import Anchor

__all__ = ["DELETED", "StreamReader", "last_held"]

#: ``StreamReader.msg_id_at``'s answer for a sequence with no message (deleted, or below
#: the stream's first sequence)
DELETED = "\x00deleted"


class StreamReader(Protocol):
    """What the check reads of the stream (``bridge.adapters.jetstream.JetStreamLink``)."""

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        """``(first_seq, last_seq)`` of ``stream`` now."""
        ...

    async def msg_id_at(self, stream: str, seq: int) -> str:
        """``Nats-Msg-Id`` of the message at ``seq`` (``""`` when it has none; ``DELETED``
        when there is no message at ``seq``)."""
        ...


async def last_held(
    anchors: Sequence[Anchor],
    held: Callable[[Anchor], Awaitable[bool]],
) -> int | None:
    """Index of the last anchor the stream still holds, given that held ones form a prefix;
    -1 when none is held, None when all are (nothing lost)."""
    if not anchors or await held(anchors[-1]):
        return None
    lo, hi = -1, len(anchors) - 1  # anchors[lo] held (or lo = -1), anchors[hi] lost
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if await held(anchors[mid]):
            lo = mid
        else:
            hi = mid
    return lo


def holder(
    reader: StreamReader, stream: str, first_seq: int, last_seq: int
) -> Callable[[Anchor], Awaitable[bool]]:
    """``held(anchor)`` for ``stream`` whose sequences are ``first_seq..last_seq`` now."""

    async def held(anchor: Anchor) -> bool:
        if anchor.stream_seq > last_seq:
            return False
        if anchor.stream_seq < first_seq:
            return True
        found = await reader.msg_id_at(stream, anchor.stream_seq)
        return found == DELETED or found == anchor.msg_id

    return held

"""The deterministic message sequence of a ``Workload``: what each slot sends and from which socket.

Pure (no I/O, no clock): ``message_mix(workload)`` yields one ``Slot`` per
message slot, forever, from ``random.Random(workload.seed)``; the producer
takes as many as the rate and duration allow. Slot ``k`` goes out on socket
``k % publishers``; a duplicate copy goes out right after it on
``dup_socket`` (another socket). Draw order per slot (see workload.py):
malformed?, else flood?, else dialect by weight, then duplicate? (D1/D2 only).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from typing import NamedTuple

from loadtest.workload import DEDUP_DIALECTS, Workload

__all__ = [
    "KIND_DUPLICATE",
    "KIND_EVENT",
    "KIND_FLOOD",
    "KIND_MALFORMED",
    "KIND_NAMES",
    "Slot",
    "message_mix",
]

KIND_EVENT = 0  # an event that must be stored exactly once
KIND_DUPLICATE = (
    1  # a copy (same token / error_id) of an event sent just before, from another socket
)
KIND_MALFORMED = 2  # a frame set the bridge must dead-letter
KIND_FLOOD = 3  # one message of a flood (one fingerprint): stored or summarised
KIND_NAMES = ("event", "duplicate", "malformed", "flood")


class Slot(NamedTuple):
    """``kind`` of the slot's message (``KIND_EVENT``/``KIND_MALFORMED``/``KIND_FLOOD``), its ``socket``,
    the ``dialect`` of an event (else ""), and ``dup_socket`` (>= 0 when a duplicate copy follows)."""

    kind: int
    socket: int
    dialect: str
    dup_socket: int


def message_mix(workload: Workload) -> Iterator[Slot]:
    """The slots of ``workload``, in send order; the same workload always gives the same sequence."""
    rng = random.Random(workload.seed)
    names = [d for d, w in workload.dialects.items() if w > 0]
    cumulative = list(itertools.accumulate(workload.dialects[d] for d in names))
    total_weight = cumulative[-1]
    sockets = workload.publishers
    flood_share = workload.flood.share if workload.flood is not None else 0.0
    for k in itertools.count():
        socket = k % sockets
        if rng.random() < workload.malformed_ratio:
            yield Slot(KIND_MALFORMED, socket, "", -1)
        elif flood_share and rng.random() < flood_share:
            yield Slot(KIND_FLOOD, socket, "", -1)
        else:
            dialect = names[bisect.bisect_right(cumulative, rng.random() * total_weight)]
            dup = -1
            if (
                dialect in DEDUP_DIALECTS
                and workload.duplicate_ratio
                and rng.random() < workload.duplicate_ratio
            ):
                dup = (socket + 1 + rng.randrange(sockets - 1)) % sockets
            yield Slot(KIND_EVENT, socket, dialect, dup)

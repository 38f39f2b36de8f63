"""In-process dedup window: drops copies of the same event before they reach NATS (DESIGN §3).

Copies share an event id: the ``PC2_ERROR`` and ``CROSS_MACHINE_ERROR`` pair
(same legacy ``error_id``), a legacy sender retrying. JetStream's duplicate
window with ``Nats-Msg-Id`` is the second line (it also catches copies from
other bridges and from agents publishing natively).

Bounded by time (``window_secs`` since the id was first seen) and by count
(``max_ids``, oldest forgotten first). The clock is injected; nothing here
counts or logs: ``seen`` returns the decision. Expiry is looked at only once the oldest
id's time is up (``_expires_at``), not on every call.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["DedupWindow"]


class DedupWindow:
    """``seen(event_id) -> bool``: True when the id was already seen within the window."""

    def __init__(self, window_secs: float, max_ids: int, clock: Callable[[], float]) -> None:
        if window_secs <= 0 or max_ids < 1:
            raise ValueError("window_secs and max_ids must be positive")
        self.window_secs = window_secs
        self.max_ids = max_ids
        self._clock = clock
        self._first_seen: OrderedDict[str, float] = OrderedDict()
        #: monotonic time the oldest id leaves the window (inf: none held); may be early after
        #: an eviction by count, never late
        self._expires_at = math.inf

    def __len__(self) -> int:
        return len(self._first_seen)

    def seen(self, event_id: str) -> bool:
        """Record ``event_id``; True if it is a copy of one seen less than ``window_secs`` ago."""
        now = self._clock()
        if now >= self._expires_at:
            self._expire(now)
        first = self._first_seen
        if event_id in first:
            return True
        first[event_id] = now
        if len(first) > self.max_ids:
            first.popitem(last=False)
        elif self._expires_at == math.inf:
            self._expires_at = now + self.window_secs
        return False

    def _expire(self, now: float) -> None:
        first = self._first_seen
        window = self.window_secs
        while first:
            oldest_id, at = next(iter(first.items()))
            if now - at < window:
                self._expires_at = at + window
                return
            del first[oldest_id]
        self._expires_at = math.inf

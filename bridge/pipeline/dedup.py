"""In-process dedup window: drops copies of the same event before they reach NATS (DESIGN §3).

Copies share an event id: the ``PC2_ERROR`` and ``CROSS_MACHINE_ERROR`` pair
(same legacy ``error_id``), a legacy sender retrying. JetStream's duplicate
window with ``Nats-Msg-Id`` is the second line (it also catches copies from
other bridges and from agents publishing natively).

Bounded by time (``window_secs`` since the id was first seen) and by count
(``max_ids``, oldest forgotten first). The clock is injected; nothing here
counts or logs: ``seen`` returns the decision.
"""

from __future__ import annotations

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

    def __len__(self) -> int:
        return len(self._first_seen)

    def seen(self, event_id: str) -> bool:
        """Record ``event_id``; True if it is a copy of one seen less than ``window_secs`` ago."""
        now = self._clock()
        self._expire(now)
        if event_id in self._first_seen:
            return True
        self._first_seen[event_id] = now
        if len(self._first_seen) > self.max_ids:
            self._first_seen.popitem(last=False)
        return False

    def _expire(self, now: float) -> None:
        first = self._first_seen
        while first:
            oldest_id, at = next(iter(first.items()))
            if now - at < self.window_secs:
                return
            del first[oldest_id]

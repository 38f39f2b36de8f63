"""Event identity: the deterministic ``Nats-Msg-Id`` of each legacy message (DESIGN §3).

* A legacy ``error_id`` (D1/D2 uuid4) is the id as sent, so the ``PC2_ERROR``
  and ``CROSS_MACHINE_ERROR`` copies of one event share it.
* Otherwise the id is ``<blake2b-128 of the frames, hex>-<n>`` where ``n`` counts
  identical frame sets: legitimate identical repeats (D7, dialects without a
  timestamp) get distinct ids, and two bridges reading the same bus compute
  the same ids.

The counter of a frame hash resets only after ``window_secs`` with no
occurrence; with ``window_secs >= duplicate_window`` every id the reset makes
reusable has already left JetStream's duplicate window. A hash not seen for
``window_secs`` is forgotten (its counter would restart anyway), so the table
holds the hashes of one window, not of all time. At most ``max_tracked``
hashes are remembered (least recently seen forgotten first); forgetting one
seen within the window is a duplicate risk: counted in ``evicted_in_window``
(exported as ``busbridge_identity_evicted_in_window``).

Two processes can share one table (the decode worker, ``bridge.adapters.decode_worker``):
with ``track_changes`` on, every hash counted is remembered as changed; ``take_changes``
returns those entries ``(hash, last seen, occurrences)`` and ``apply`` writes another
table's into this one. When the two sides take turns (one decodes only while the other
has nothing unanswered) and pass their changes at each turn, both count as one table
would. ``last seen`` is ``clock()`` seconds: the processes must share the clock
(``time.monotonic`` is system-wide on Linux). Evictions are counted by the side whose
own count caused them, not by ``apply``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from hashlib import blake2b

__all__ = ["EventIdentity", "frames_digest"]

_MAX_ID_CHARS = 128
_UNSAFE_ID = re.compile(r"[^\x21-\x7e]")


def frames_digest(frames: Sequence[bytes]) -> str:
    """128-bit hex digest of a frame list; frame boundaries are part of the hash."""
    h = blake2b(digest_size=16)
    for frame in frames:
        h.update(len(frame).to_bytes(8, "little"))
        h.update(frame)
    return h.hexdigest()


class EventIdentity:
    """Callable ``(frames, legacy_error_id) -> msg id``; ``clock`` is monotonic seconds."""

    def __init__(self, window_secs: float, max_tracked: int, clock: Callable[[], float]) -> None:
        if window_secs <= 0 or max_tracked < 1:
            raise ValueError("window_secs and max_tracked must be positive")
        self.window_secs = window_secs
        self.max_tracked = max_tracked
        self._clock = clock
        #: hash -> (last seen, occurrences); tuples of numbers, so the cyclic GC stops tracking
        #: them (a list per hash made every full collection walk the whole table)
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.evicted_in_window = 0
        #: hashes counted since the last ``take_changes`` (None: not tracked), at most
        #: ``max_tracked``: beyond, ``take_changes`` returns the whole table instead
        self._changed: dict[str, None] | None = None
        self._changed_overflow = False

    def track_changes(self) -> None:
        """Remember from now on which hashes this table counts (``take_changes``)."""
        if self._changed is None:
            self._changed = {}

    def take_changes(self) -> list[tuple[str, float, int]]:
        """The entries ``(hash, last seen, occurrences)`` counted since the last call (or
        since ``track_changes``) and still held, least recently seen first (the whole table,
        ``snapshot``, when more than ``max_tracked`` hashes were counted since); [] when
        changes are not tracked."""
        changed, seen = self._changed, self._seen
        if self._changed_overflow:
            self._changed, self._changed_overflow = {}, False
            return self.snapshot()
        if not changed:
            return []
        self._changed = {}
        entries = [(key, *seen[key]) for key in changed if key in seen]
        entries.sort(key=lambda e: e[1])
        return entries

    def changes_waiting(self) -> int:
        """How many hashes ``take_changes`` would return now (a bound: some may be gone)."""
        return len(self._changed) if self._changed is not None else 0

    def snapshot(self) -> list[tuple[str, float, int]]:
        """Every entry held, least recently seen first (a new sharer's starting table)."""
        return [(key, at, count) for key, (at, count) in self._seen.items()]

    def apply(self, entries: Sequence[tuple[str, float, int]]) -> None:
        """Write another table's entries (``take_changes``, ``snapshot``) into this one, as
        if counted here; not counted as changes of this table. Entries beyond
        ``max_tracked`` are forgotten least recently seen first, without counting them in
        ``evicted_in_window`` (the side that counted them does)."""
        seen = self._seen
        for key, at, count in entries:
            seen[key] = (at, count)
            seen.move_to_end(key)
        while len(seen) > self.max_tracked:
            seen.popitem(last=False)

    def __call__(self, frames: Sequence[bytes], legacy_id: str | None) -> str:
        if legacy_id:
            legacy_id = legacy_id[:_MAX_ID_CHARS]
            if legacy_id.isascii() and legacy_id.isprintable() and " " not in legacy_id:
                return legacy_id  # already \x21-\x7e only (the common uuid4): no regex pass
            return _UNSAFE_ID.sub("_", legacy_id)
        key = frames_digest(frames)
        return f"{key}-{self._occurrence(key)}"

    def __len__(self) -> int:
        """Frame hashes remembered now."""
        return len(self._seen)

    def _occurrence(self, key: str) -> int:
        now = self._clock()
        entry = self._seen.get(key)
        if entry is None or now - entry[0] >= self.window_secs:
            self._forget_idle(now)
            count = 1
            self._seen[key] = (now, count)
            self._evict(now)
        else:
            count = entry[1] + 1
            self._seen[key] = (now, count)
        self._seen.move_to_end(key)
        changed = self._changed
        if changed is not None:
            changed[key] = None
            if len(changed) > self.max_tracked:  # bounded while nobody takes them
                changed.clear()
                self._changed_overflow = True
        return count

    def _forget_idle(self, now: float) -> None:
        """Drop hashes not seen for a whole window (least recently seen first: they lead)."""
        seen = self._seen
        while seen and now - next(iter(seen.values()))[0] >= self.window_secs:
            seen.popitem(last=False)

    def _evict(self, now: float) -> None:
        while len(self._seen) > self.max_tracked:
            _, (last_seen, _) = self._seen.popitem(last=False)
            if now - last_seen < self.window_secs:
                self.evicted_in_window += 1

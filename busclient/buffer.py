"""The bounded local buffer between the callers of a ``BusClient`` and its publisher thread.

Design note
-----------
One ``EventBuffer`` per client, shared by any number of caller threads (``offer``, never
blocks beyond a short lock) and the client's one publisher thread (``next_for_publish``,
``settle``). Everything is guarded by one ``threading.Lock``.

Invariants:

* The buffer holds exactly the events accepted and not yet settled, in acceptance order
  (``seq``). The publisher only ever publishes and acknowledges the head, so the stream stores
  one publisher's events in the order they were accepted.
* Every offered event ends in exactly one ``Outcome``: ``acked`` (JetStream stored it, or said
  it was a duplicate of a stored copy), or dropped with a reason: ``overflow`` (the buffer was
  full), ``closed`` (offered after ``close``), ``rejected`` (JetStream can never store it) or
  ``abandoned`` (still buffered when ``close`` gave up). ``stats()`` counts each, so
  ``submitted == acked + sum(dropped) + buffered`` at any time.
* Bounds: at most ``max_events`` events and ``max_bytes`` payload bytes. When an event does not
  fit, older events of a *lower* severity are evicted to make room (lowest severity first,
  oldest first; never the head while it is being published); if that is not enough the
  offered event itself is dropped. Equal or higher severities are never evicted for a newcomer,
  so a flood of errors cannot push out the first errors, and a critical still gets in past
  buffered debug/info noise.
* Waiting is by ``concurrent.futures.Future`` (``flushed_future``, ``settled_future``), resolved
  outside the lock, so a sync caller can block on it with a timeout and an asyncio caller can
  ``asyncio.wrap_future`` it without blocking its loop.
* ``next_for_publish`` returns ``None`` and marks the publisher idle when the buffer is empty;
  the next ``offer`` reports that the publisher must be woken (one wake-up per idle period).
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any

from contracts.messages import ErrorEvent, Severity

__all__ = ["ClientStats", "Entry", "EventBuffer", "Outcome"]


class Outcome(str, enum.Enum):
    """How one event left the buffer (a bounded set: the keys of ``ClientStats.dropped``)."""

    ACKED = "acked"
    OVERFLOW = "overflow"
    CLOSED = "closed"
    REJECTED = "rejected"
    ABANDONED = "abandoned"


class Entry:
    """One event on its way to JetStream: the encoded intake message and its state."""

    __slots__ = (
        "event",
        "event_id",
        "headers",
        "in_flight",
        "outcome",
        "payload",
        "rank",
        "seq",
        "severity",
        "size",
        "subject",
    )

    def __init__(
        self, event: ErrorEvent, subject: str, payload: bytes, headers: dict[str, str]
    ) -> None:
        self.event: ErrorEvent | None = event
        self.event_id = event.event_id
        self.subject = subject
        self.payload: bytes | None = payload
        self.headers = headers
        self.severity: Severity = event.severity
        self.rank = event.severity.rank
        self.size = len(payload)
        self.seq = 0
        self.in_flight = False
        self.outcome: Outcome | None = None

    def release(self, outcome: Outcome) -> None:
        """Settle: record the outcome and drop the payload (a kept ticket holds no bytes)."""
        self.outcome = outcome
        self.in_flight = False
        self.payload = None
        self.event = None


@dataclass(frozen=True)
class ClientStats:
    """Counters of one client since it was created.

    ``submitted``: every event offered; ``accepted``: those that entered the buffer; ``acked``:
    stored by JetStream (``duplicates`` of them were already stored: a retried publish);
    ``retries``: publish attempts that failed transiently and were repeated; ``dropped``: events
    that will never be stored, per ``Outcome`` reason; ``dropped_by_severity``: the same per
    severity value; ``buffered`` / ``buffered_bytes``: waiting now (events, payload bytes);
    ``connected``: the NATS connection is up; ``reconnects``: how often it came back.
    """

    submitted: int = 0
    accepted: int = 0
    acked: int = 0
    duplicates: int = 0
    retries: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_by_severity: dict[str, int] = field(default_factory=dict)
    buffered: int = 0
    buffered_bytes: int = 0
    connected: bool = False
    reconnects: int = 0


_Waiter = tuple[Callable[[], bool], "Future[Any]", Callable[[], Any]]


class EventBuffer:
    """Bounded, severity-aware FIFO of ``Entry``; see the module note. Thread-safe."""

    def __init__(self, max_events: int, max_bytes: int) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be >= 1")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._queue: deque[Entry] = deque()
        self._bytes = 0
        self._by_rank = [0] * len(Severity)
        self._seq = 0
        self._idle = False
        self._refusing = False
        self._waiters: list[_Waiter] = []
        self._counts: dict[str, int] = {"submitted": 0, "accepted": 0, "acked": 0}
        self._counts.update(duplicates=0, retries=0)
        self._dropped: dict[str, int] = {}
        self._dropped_sev: dict[str, int] = {}

    # ------------------------------------------------------------------ callers

    def offer(self, entry: Entry) -> tuple[bool, list[Entry], bool]:
        """Add ``entry``: ``(accepted, dropped, wake)``. ``dropped`` lists the entries given up
        to make room (or ``entry`` itself when it was refused); ``wake``: the publisher was idle
        and must be woken. Never blocks beyond the lock, never raises."""
        with self._lock:
            self._counts["submitted"] += 1
            if self._refusing:
                self._drop(entry, Outcome.CLOSED)
                return False, [entry], False
            victims = self._room_for(entry)
            if victims is None:
                self._drop(entry, Outcome.OVERFLOW)
                return False, [entry], False
            if victims:
                self._evict(victims)
            self._seq += 1
            entry.seq = self._seq
            self._queue.append(entry)
            self._bytes += entry.size
            self._by_rank[entry.rank] += 1
            self._counts["accepted"] += 1
            wake, self._idle = self._idle, False
            ready = self._due_waiters() if victims else []
        _resolve(ready)
        return True, victims, wake

    def refuse_new(self) -> int:
        """From now on every ``offer`` is dropped as ``closed``; returns the last accepted seq."""
        with self._lock:
            self._refusing = True
            return self._seq

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def flushed_future(self, seq: int) -> Future[bool]:
        """A future resolved (True) once every entry up to ``seq`` is settled."""
        return self._watch(lambda: not self._queue or self._queue[0].seq > seq, lambda: True)

    def settled_future(self, entry: Entry) -> Future[Outcome]:
        """A future resolved with ``entry``'s outcome once it is settled."""
        return self._watch(lambda: entry.outcome is not None, lambda: entry.outcome)

    def cancel_future(self, fut: Future[Any]) -> None:
        """Forget a waiter whose caller stopped waiting (a timeout)."""
        with self._lock:
            self._waiters = [w for w in self._waiters if w[1] is not fut]

    def stats(self, connected: bool, reconnects: int) -> ClientStats:
        with self._lock:
            return ClientStats(
                **self._counts,
                dropped=dict(self._dropped),
                dropped_by_severity=dict(self._dropped_sev),
                buffered=len(self._queue),
                buffered_bytes=self._bytes,
                connected=connected,
                reconnects=reconnects,
            )

    # ------------------------------------------------------------------ publisher

    def next_for_publish(self) -> Entry | None:
        """The head, marked in flight; ``None`` (and the publisher marked idle) when empty."""
        with self._lock:
            if not self._queue:
                self._idle = True
                return None
            head = self._queue[0]
            head.in_flight = True
            return head

    def note_retry(self) -> None:
        with self._lock:
            self._counts["retries"] += 1

    def settle(self, entry: Entry, outcome: Outcome, *, duplicate: bool = False) -> None:
        """The head left: ``acked`` (``duplicate``: JetStream had it already) or ``rejected``."""
        with self._lock:
            if entry.outcome is not None:
                return
            self._remove(entry)
            if outcome is Outcome.ACKED:
                self._counts["acked"] += 1
                self._counts["duplicates"] += duplicate
                entry.release(outcome)
            else:
                self._drop(entry, outcome)
            ready = self._due_waiters()
        _resolve(ready)

    def abandon_all(self) -> list[Entry]:
        """Settle everything still buffered as ``abandoned``; returns those entries."""
        with self._lock:
            left = list(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._by_rank = [0] * len(Severity)
            for entry in left:
                self._drop(entry, Outcome.ABANDONED)
            ready = self._due_waiters()
        _resolve(ready)
        return left

    # ------------------------------------------------------------------ internals (locked)

    def _room_for(self, entry: Entry) -> list[Entry] | None:
        """Entries to evict so ``entry`` fits ([] if it fits), or ``None`` if it cannot."""
        need_events = len(self._queue) + 1 - self.max_events
        need_bytes = self._bytes + entry.size - self.max_bytes
        if need_events <= 0 and need_bytes <= 0:
            return []
        if entry.size > self.max_bytes or not any(self._by_rank[: entry.rank]):
            return None
        victims: list[Entry] = []
        for rank in range(entry.rank):
            if not self._by_rank[rank]:
                continue
            for candidate in self._queue:
                if candidate.rank != rank or candidate.in_flight:
                    continue
                victims.append(candidate)
                need_events -= 1
                need_bytes -= candidate.size
                if need_events <= 0 and need_bytes <= 0:
                    return victims
        return None

    def _evict(self, victims: list[Entry]) -> None:
        gone = {id(v) for v in victims}
        self._queue = deque(e for e in self._queue if id(e) not in gone)
        for victim in victims:
            self._bytes -= victim.size
            self._by_rank[victim.rank] -= 1
            self._drop(victim, Outcome.OVERFLOW)

    def _remove(self, entry: Entry) -> None:
        if self._queue and self._queue[0] is entry:
            self._queue.popleft()
        else:
            self._queue.remove(entry)
        self._bytes -= entry.size
        self._by_rank[entry.rank] -= 1

    def _drop(self, entry: Entry, outcome: Outcome) -> None:
        self._dropped[outcome.value] = self._dropped.get(outcome.value, 0) + 1
        sev = entry.severity.value
        self._dropped_sev[sev] = self._dropped_sev.get(sev, 0) + 1
        entry.release(outcome)

    def _watch(self, done: Callable[[], bool], value: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            if done():
                fut.set_result(value())
                return fut
            self._waiters.append((done, fut, value))
        return fut

    def _due_waiters(self) -> list[tuple[Future[Any], Any]]:
        if not self._waiters:
            return []
        due, keep = [], []
        for waiter in self._waiters:
            (due if waiter[0]() else keep).append(waiter)
        self._waiters = keep
        return [(fut, value()) for _, fut, value in due]


def _resolve(ready: list[tuple[Future[Any], Any]]) -> None:
    for fut, value in ready:
        try:
            fut.set_result(value)
        except InvalidStateError:  # the waiter was cancelled meanwhile
            pass

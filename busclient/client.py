"""``BusClient``: publish ``ErrorEvent``s natively to the sidecar's intake, from any thread or loop.

Design note
-----------
A client is three parts: the caller side (this module: build and encode the event, offer it to
the buffer, return a ``Ticket``; never blocks beyond a lock, never raises for buffering), the
bounded ``EventBuffer`` (``busclient.buffer``: bounds, eviction by severity, outcomes, waiting)
and the ``PublisherThread`` (``busclient.publisher``: its own thread, event loop and NATS
connection; PubAck per event, retries in order). So it works the same from plain threads, from
asyncio code, and from threads whose event loop is later closed.

Every event goes to ``Subjects(prefix).intake(machine, source)``
(``errbus_intake.<machine>.<source>``), consumed by the machine's sidecar (stream
``ERRBUS_INTAKE``, which the sidecar provisions), with headers ``Nats-Msg-Id`` = ``event_id``,
``Busbridge-Contract``, ``Busbridge-Contract-Version`` and ``Busbridge-Client-Api``.

``close`` flushes within its timeout, stops the thread and counts what is left as
``abandoned``; an open client is closed (``exit_flush_secs``) when the interpreter exits, and
one garbage-collected unclosed has its thread stopped (what it held is counted as abandoned). A
client belongs to the process that made it (its thread does not survive ``fork``).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import os
import threading
import time
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import Any

from busclient.buffer import ClientStats, Entry, EventBuffer, Outcome
from busclient.config import ClientConfig
from busclient.events import build_event, intake_headers
from busclient.publisher import PublisherThread
from contracts.codec import encode
from contracts.messages import ErrorEvent, Severity

__all__ = ["BusClient", "Ticket"]

log = logging.getLogger("busclient")

_DROP_LOG_EVERY_SECS = 10.0
_live_clients: weakref.WeakSet[BusClient] = weakref.WeakSet()


class Ticket:
    """What ``BusClient.report``/``publish`` returns for one event.

    ``event_id``: the event's id (its ``Nats-Msg-Id``). ``accepted``: it entered the buffer
    (False: dropped at once, see ``outcome``). ``outcome``: ``None`` while pending, then an
    ``Outcome`` (``acked``, or the reason it was dropped). ``wait``/``wait_async`` block (or
    await) until it is settled, at most ``timeout_secs`` seconds, and return True only when
    JetStream stored it. Waiting never raises.
    """

    __slots__ = ("_buffer", "_entry", "accepted", "event_id")

    def __init__(self, entry: Entry, buffer: EventBuffer, accepted: bool) -> None:
        self._entry = entry
        self._buffer = buffer
        self.event_id = entry.event_id
        self.accepted = accepted

    @property
    def outcome(self) -> Outcome | None:
        return self._entry.outcome

    def wait(self, timeout_secs: float = 5.0) -> bool:
        return _wait(self._buffer, self._buffer.settled_future(self._entry), timeout_secs) is (
            Outcome.ACKED
        )

    async def wait_async(self, timeout_secs: float = 5.0) -> bool:
        fut = self._buffer.settled_future(self._entry)
        return await _wait_async(self._buffer, fut, timeout_secs) is Outcome.ACKED

    def __repr__(self) -> str:
        return f"Ticket({self.event_id!r}, accepted={self.accepted}, outcome={self.outcome})"


class BusClient:
    """Native publisher of ``ErrorEvent``s to the busbridge intake; see the module note.

    ``BusClient(config=None, **overrides)``: ``config`` as given, with ``overrides`` (any
    ``ClientConfig`` field) replacing its fields; without ``config`` it comes from
    ``ClientConfig.from_env(**overrides)`` (constructor arguments, then the environment).
    Raises ``ValueError``/``TypeError`` on bad settings, nothing later. Thread-safe; usable as
    a context manager (sync or async), which closes it.
    """

    def __init__(self, config: ClientConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = ClientConfig.from_env(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self._config = config
        self._subjects = config.subjects
        self._buffer = EventBuffer(config.max_buffered_events, config.max_buffered_bytes)
        self._publisher = PublisherThread(config, self._buffer)
        self._close_lock = threading.Lock()
        self._closed = False
        self._close_result = True
        self._drop_lock = threading.Lock()
        self._drop_log_at = -_DROP_LOG_EVERY_SECS
        self._drops_unlogged = 0
        self._publisher.start()
        _live_clients.add(self)
        # dropped without close: stop the thread (not at exit: _close_at_exit flushes then)
        self._finalizer = weakref.finalize(self, _stop_unclosed, self._publisher, self._buffer)
        self._finalizer.atexit = False

    @property
    def config(self) -> ClientConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ publishing

    def report(
        self,
        error_type: Any,
        message: Any = "",
        *,
        severity: Any = Severity.ERROR,
        source: Any = None,
        details: Any = None,
        occurred_at: datetime | float | None = None,
        event_id: str | None = None,
        client_api: str | None = None,
    ) -> Ticket:
        """Build an ``ErrorEvent`` (``busclient.events.build_event``: severity in any legacy
        spelling, times UTC, ``occurred_at`` a datetime or epoch seconds, defaulting to now;
        ``source`` defaulting to the config's) and ``publish`` it. Never blocks, never raises
        for buffering; safe in sync code and inside a running event loop."""
        event = build_event(
            machine=self._config.machine,
            source=self._config.source if source is None else source,
            error_type=error_type,
            message=message,
            severity=severity,
            details=details,
            occurred_at=occurred_at,
            event_id=event_id,
        )
        return self.publish(event, client_api=client_api)

    def publish(self, event: ErrorEvent, *, client_api: str | None = None) -> Ticket:
        """Hand ``event`` to the publisher thread: it goes to
        ``<prefix>_intake.<event.machine>.<event.source>`` with ``Nats-Msg-Id`` =
        ``event.event_id`` and ``Busbridge-Client-Api`` = ``client_api`` (default the config's).
        When the buffer is full or the client closed, the event is dropped, counted in
        ``stats().dropped`` and logged (rate limited); the ticket says so. Never blocks."""
        api = client_api or self._config.client_api
        entry = Entry(
            event,
            self._subjects.intake(event.machine, event.source),
            encode(event),
            intake_headers(event.event_id, api),
        )
        accepted, dropped, wake = self._buffer.offer(entry)
        if wake:
            self._publisher.wake()
        if dropped:
            self._log_drops(len(dropped))
        return Ticket(entry, self._buffer, accepted)

    # ------------------------------------------------------------------ flush / close

    def flush(self, timeout_secs: float = 5.0) -> bool:
        """Wait until every event accepted before this call is settled (stored, or dropped),
        at most ``timeout_secs`` seconds. True when nothing from before is pending. Never
        raises; blocks the calling thread (use ``aflush`` in a coroutine)."""
        fut = self._buffer.flushed_future(self._buffer.last_seq)
        return _wait(self._buffer, fut, timeout_secs) is True

    async def aflush(self, timeout_secs: float = 5.0) -> bool:
        """``flush`` for coroutines: awaits without blocking the caller's loop."""
        fut = self._buffer.flushed_future(self._buffer.last_seq)
        return await _wait_async(self._buffer, fut, timeout_secs) is True

    def close(self, timeout_secs: float = 5.0) -> bool:
        """Refuse new events, flush, stop the publisher thread and close NATS, all within
        ``timeout_secs`` seconds (most of it for the flush). Events still buffered then are
        settled as ``abandoned`` (counted, logged as an error; one in flight at that moment may
        have been stored). Returns True when nothing was abandoned. Idempotent; never raises."""
        with self._close_lock:
            if self._closed:
                return self._close_result
            self._closed = True
            deadline = time.monotonic() + max(0.0, timeout_secs)
            last = self._buffer.refuse_new()
            reserve = min(1.0, timeout_secs * 0.2)
            _wait(self._buffer, self._buffer.flushed_future(last), timeout_secs - reserve)
            self._publisher.stop(max(0.0, deadline - time.monotonic()))
            left = self._buffer.abandon_all()
            if left:
                log.error(
                    "busclient: closed with %d events not acknowledged by JetStream (abandoned)",
                    len(left),
                )
            self._close_result = not left
            _live_clients.discard(self)
            self._finalizer.detach()
        self._log_drops(0, force=True)
        return self._close_result

    async def aclose(self, timeout_secs: float = 5.0) -> bool:
        """``close`` for coroutines: the flush is awaited, the thread joined off the loop."""
        if not self._closed:
            await self.aflush(max(0.0, timeout_secs - min(1.0, timeout_secs * 0.2)))
        return await asyncio.to_thread(self.close, min(1.0, timeout_secs * 0.2))

    def stats(self) -> ClientStats:
        """A snapshot of the counters (``busclient.buffer.ClientStats``)."""
        return self._buffer.stats(self._publisher.connected, self._publisher.reconnects)

    def __enter__(self) -> BusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> BusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        c = self._config
        return f"BusClient(machine={c.machine!r}, source={c.source!r}, closed={self._closed})"

    def _log_drops(self, count: int, *, force: bool = False) -> None:
        """Log drops: the first at once, then at most one summary per ``_DROP_LOG_EVERY_SECS``
        (and a last one at ``close``)."""
        now = time.monotonic()
        with self._drop_lock:
            self._drops_unlogged += count
            if not self._drops_unlogged or (
                not force and now - self._drop_log_at < _DROP_LOG_EVERY_SECS
            ):
                return
            self._drop_log_at, pending, self._drops_unlogged = now, self._drops_unlogged, 0
        stats = self.stats()
        log.warning(
            "busclient: %d events dropped since the last report (buffer bound %d events / %d "
            "bytes); totals by reason %s, by severity %s",
            pending,
            self._config.max_buffered_events,
            self._config.max_buffered_bytes,
            stats.dropped,
            stats.dropped_by_severity,
        )


def _wait(buffer: EventBuffer, fut: Future[Any], timeout_secs: float) -> Any:
    try:
        return fut.result(timeout=max(0.0, timeout_secs))
    except FutureTimeout:
        buffer.cancel_future(fut)
        return None


async def _wait_async(buffer: EventBuffer, fut: Future[Any], timeout_secs: float) -> Any:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.0, timeout_secs))
    except TimeoutError:
        buffer.cancel_future(fut)
        return None


def _stop_unclosed(publisher: PublisherThread, buffer: EventBuffer) -> None:
    """A client garbage-collected without ``close``: stop its thread, count what it held."""
    buffer.refuse_new()
    publisher.stop(0.0)
    left = buffer.abandon_all()
    if left:
        log.error("busclient: a BusClient was dropped unclosed holding %d events", len(left))


def _forget_after_fork() -> None:
    """A forked child has none of the parent's publisher threads: it must not wait for them at
    exit (a client is per process: make it after forking)."""
    _live_clients.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def _close_at_exit() -> None:
    """Give every client still open ``exit_flush_secs`` to deliver what it holds."""
    for client in list(_live_clients):
        client.close(client.config.exit_flush_secs)

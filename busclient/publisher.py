"""The publisher thread of a ``BusClient``: its own event loop, its own NATS connection.

Design note
-----------
Legacy agents are threads that create an event loop, use it and close it (BaseAgent connected
library A that way, and every later publish failed with "Event loop is closed"). So the client
never touches a caller's loop: one daemon thread per client runs a private asyncio loop that
owns the NATS connection; callers hand events over through the thread-safe ``EventBuffer``
and wake the thread with ``loop.call_soon_threadsafe`` (only when it is idle).

On that loop:

* The connection keeper connects with reconnects unlimited (an unreachable server at start is
  retried every ``reconnect_wait_secs``, like a drop later on), and starts a fresh connection
  if nats-py ever closes one for good. Pings detect a silent server.
* The publish loop takes the buffer's head and publishes it with JetStream semantics: one
  ``js.publish`` at a time, awaiting its PubAck (``ack_timeout_secs``). Window 1 is what keeps
  order simple and exact across failures: nothing newer is sent before the head is stored.
  Agents report a few errors per second; a pipelined window (as the bridge has) is not worth
  its reordering hazards here (throughput: ``busclient/README.md``).
* Transient failures (ack timeout, no responders: the intake stream does not exist yet,
  503 and other JetStream API errors, a dropped connection) are retried forever with the same
  payload and ``Nats-Msg-Id``, after a backoff doubling from ``retry_initial_secs`` to
  ``retry_max_secs`` with jitter; while disconnected the loop waits for the reconnect instead
  of timing out. A copy stored before its PubAck got lost is collapsed by the stream's
  duplicate window (a retry later than that window after the first attempt can store it twice).
* Permanent failures settle the event as ``rejected`` (counted, logged): JetStream error 10054
  (message too large) and a client-side size/subject/header error. An event larger than the
  server's ``max_payload`` is first cut to fit (``events.fit_payload``), never dropped for size
  alone.
* ``stop`` cancels the loop's tasks, closes the connection within the budget it is given and
  joins the thread within the caller's timeout; it never waits longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from busclient.buffer import Entry, EventBuffer, Outcome
from busclient.config import ClientConfig
from busclient.events import fit_payload, headers_size

__all__ = ["PublisherThread", "redact_url"]

log = logging.getLogger("busclient")

#: JetStream API error codes no retry can fix (10054: message size exceeds maximum); every other
#: API error (503, leader elections, insufficient resources) is retried, as the bridge does
PERMANENT_ERROR_CODES = frozenset({10054})

_TRANSIENT = (
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    OSError,
)
_PERMANENT = (nats.errors.MaxPayloadError, nats.errors.BadSubjectError, nats.errors.BadHeaderError)
_ERROR_LOG_EVERY_SECS = 30.0
_RETRY_SECS = 5.0  # after a connect attempt failed for a reason reconnecting does not cover


def redact_url(url: str) -> str:
    """``url`` without credentials (``nats://***@host:4222``), for log lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PublisherThread:
    """One daemon thread with a private event loop publishing ``buffer``'s head; see the note.

    ``start()`` returns once the loop runs. ``wake()`` and ``stop()`` are safe from any thread.
    """

    def __init__(self, config: ClientConfig, buffer: EventBuffer) -> None:
        self._config = config
        self._buffer = buffer
        self._thread = threading.Thread(
            target=self._run, name=f"busclient-{config.source}", daemon=True
        )
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._up: asyncio.Event | None = None
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._close_budget_secs = 1.0
        self.connected = False
        self.reconnects = 0
        self._last_error_log = 0.0

    # ------------------------------------------------------------------ any thread

    def start(self, timeout_secs: float = 10.0) -> None:
        self._thread.start()
        self._started.wait(timeout_secs)

    def wake(self) -> None:
        """Tell the publish loop that the buffer has something (no-op once stopped)."""
        self._call_soon(lambda: self._wake.set() if self._wake else None)

    def stop(self, timeout_secs: float) -> bool:
        """Stop the loop and join the thread, within ``timeout_secs``; True when it ended."""
        deadline = time.monotonic() + max(0.0, timeout_secs)
        self._close_budget_secs = max(0.05, timeout_secs * 0.5)
        self._call_soon(lambda: self._stop.set() if self._stop else None)
        if threading.current_thread() is self._thread:
            return False  # asked from its own loop (a finalizer run there): it ends by itself
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        ended = not self._thread.is_alive()
        if not ended:
            log.warning("busclient: publisher thread still closing NATS; left behind (daemon)")
        return ended

    def _call_soon(self, fn: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(fn)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException:  # the thread must end cleanly whatever happened
            log.exception("busclient: publisher thread failed; events stay buffered")
        finally:
            self._started.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop, self._up = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._started.set()
        keeper = asyncio.create_task(self._keep_connected())
        publisher = asyncio.create_task(self._publish_loop())
        stopper = asyncio.create_task(self._stop.wait())
        await asyncio.wait({publisher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if publisher.done() and not publisher.cancelled() and publisher.exception():
            log.error("busclient: publish loop failed", exc_info=publisher.exception())
        for task in (keeper, publisher, stopper):
            task.cancel()
        await asyncio.gather(keeper, publisher, stopper, return_exceptions=True)
        await self._close_connection()

    async def _close_connection(self) -> None:
        nc, self._nc = self._nc, None
        self.connected = False
        if nc is None or nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.close(), self._close_budget_secs)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            log.debug("busclient: closing NATS: %r", exc)

    # ------------------------------------------------------------------ connection

    async def _keep_connected(self) -> None:
        assert self._up is not None
        while True:
            closed = asyncio.Event()
            nc = NATS()
            self._nc = nc
            try:
                await nc.connect(**self._connect_options(closed))
            except Exception:  # bad options or TLS setup: say so, keep buffering, try again
                log.exception("busclient: cannot connect to NATS; retrying in %s s", _RETRY_SECS)
                await asyncio.sleep(_RETRY_SECS)
                continue
            self._js = nc.jetstream()
            self.connected = True
            self._up.set()
            url = nc.connected_url.geturl() if nc.connected_url else ""
            log.info("busclient: connected to %s", redact_url(url))
            await closed.wait()
            self.connected = False
            self._up.clear()
            log.warning("busclient: NATS connection closed; connecting again")

    def _connect_options(self, closed: asyncio.Event) -> dict[str, object]:
        c = self._config

        async def on_closed() -> None:
            closed.set()

        options: dict[str, object] = {
            "servers": list(c.servers),
            "name": c.connection_name or f"busclient:{c.machine}:{c.source}",
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": c.reconnect_wait_secs,
            "connect_timeout": c.connect_timeout_secs,
            "ping_interval": c.ping_interval_secs,
            "max_outstanding_pings": c.max_outstanding_pings,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": on_closed,
        }
        options.update(c.connect_options)
        return options

    async def _on_error(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY_SECS:
            self._last_error_log = now
            servers = ", ".join(redact_url(s) for s in self._config.servers)
            log.warning("busclient: NATS (%s): %r; events are buffered meanwhile", servers, exc)

    async def _on_disconnected(self) -> None:
        if self.connected:
            log.warning("busclient: NATS connection lost; buffering until it is back")
        self.connected = False
        if self._up is not None:
            self._up.clear()

    async def _on_reconnected(self) -> None:
        self.connected = True
        self.reconnects += 1
        if self._up is not None:
            self._up.set()
        log.info("busclient: NATS reconnected")

    # ------------------------------------------------------------------ publishing

    async def _publish_loop(self) -> None:
        assert self._wake is not None and self._up is not None
        backoff = self._config.retry_initial_secs
        failures = 0
        while True:
            entry = self._buffer.next_for_publish()
            if entry is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            if not self._up.is_set():
                await self._up.wait()
                continue
            error = await self._publish_one(entry)
            if error is None:
                if failures:
                    log.info("busclient: publishing again after %d failed attempts", failures)
                failures, backoff = 0, self._config.retry_initial_secs
                continue
            failures += 1
            self._buffer.note_retry()
            if failures == 1:
                log.warning(
                    "busclient: publish to %s failed (%s); retrying with the same Nats-Msg-Id",
                    entry.subject,
                    error,
                )
            await asyncio.sleep(backoff / 2 + random.random() * backoff / 2)
            backoff = min(self._config.retry_max_secs, backoff * 2)

    async def _publish_one(self, entry: Entry) -> str | None:
        """Publish ``entry`` and settle it; returns a reason when it must be retried."""
        nc, js = self._nc, self._js
        if entry.outcome is not None or nc is None or js is None:
            return None if entry.outcome is not None else "not connected"
        if not self._fit(entry, nc.max_payload):
            return None
        try:
            ack = await js.publish(
                entry.subject,
                entry.payload or b"",
                timeout=self._config.ack_timeout_secs,
                headers=entry.headers,
            )
        except nats.js.errors.NoStreamResponseError:
            return "no responders: no stream takes the intake subjects yet"
        except nats.js.errors.APIError as exc:
            if exc.err_code in PERMANENT_ERROR_CODES:
                self._reject(entry, repr(exc))
                return None
            return repr(exc)
        except _PERMANENT as exc:
            self._reject(entry, repr(exc))
            return None
        except _TRANSIENT as exc:
            return repr(exc) or type(exc).__name__
        except Exception as exc:  # an unknown failure is logged and retried, never fatal
            log.exception("busclient: unexpected publish failure; retrying")
            return repr(exc)
        self._buffer.settle(entry, Outcome.ACKED, duplicate=bool(ack.duplicate))
        return None

    def _fit(self, entry: Entry, max_payload: int) -> bool:
        """Cut ``entry`` to the server's ``max_payload`` if needed; False when it was rejected."""
        limit = max_payload - headers_size(entry.headers)
        if entry.payload is None or entry.event is None or len(entry.payload) <= limit:
            return True
        fitted = fit_payload(entry.event, entry.payload, limit)
        if fitted is None:
            self._reject(entry, f"larger than max_payload {max_payload} even without details")
            return False
        entry.event, entry.payload = fitted
        log.warning(
            "busclient: event %s cut to fit max_payload %d bytes (was %d)",
            entry.event_id,
            max_payload,
            entry.size,
        )
        return True

    def _reject(self, entry: Entry, reason: str) -> None:
        log.error("busclient: event %s can never be stored (%s); dropped", entry.event_id, reason)
        self._buffer.settle(entry, Outcome.REJECTED)

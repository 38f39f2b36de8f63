"""``ErrorBusConsumer``: a durable, typed reader of ERRBUS with bounded redelivery.

Design note
-----------
State: one NATS connection (opened and closed here when given ``servers``, else the
caller's ``nc``), one JetStream **pull** subscription bound to the durable consumer named
``Subscription.durable`` (created, or updated, at start), an optional core subscription to
the durable's max-deliveries advisory, the messages of the current pull not yet handed out,
the one message being handled, and a bounded memory of the last handler error per stream
sequence (so a dead letter written on a later delivery still says why).

Life of a delivery: pull (``batch_size``, waiting up to ``fetch_timeout_secs``) ->
``records.classify`` -> the handler -> settle, one message at a time, in delivery order:

* skipped (filtered, unknown type, newer ``schema_version``, undecodable or invalid body,
  unless ``unknown="raw"``): acked, counted by reason; the handler never sees it;
* handler returned: acked (``ack_sync``: the server confirms, so a restart does not
  handle it again);
* handler raised on attempt ``n < max_deliver``: ``nak(delay=backoff_secs[n-1])``; the
  consumer goes on with the next messages while this one waits;
* handler raised on attempt ``max_deliver``: a ``ConsumerDeadLetter`` is stored on
  ``<prefix>.consumer_dlq.<durable>`` (PubAck awaited), then the message is acked;
* delivered more than ``max_deliver`` times (earlier deliveries were never settled: a
  consumer crashed, hung past ``ack_wait_secs`` or could not store the dead letter): dead-
  lettered as ``not_acknowledged`` without calling the handler again.

Invariants:

* **Never an immediate nak**: every nak carries a delay from ``backoff_secs`` (all > 0 s);
  messages that cannot be typed are acked, never nak'd. The handler runs at most
  ``max_deliver`` times per message (per the server's delivery count).
* The durable is created with ``max_deliver + SPARE_DELIVERIES`` server-side deliveries, so a
  delivery lost to a crash still comes back to reach the dead-letter path. Only if all of
  those are lost too does the server give up; when an instance next pulls, the server
  publishes the max-deliveries advisory, on which every running instance fetches the message by sequence and stores the dead
  letter (its ``Nats-Msg-Id`` ``<durable>:<seq>`` makes copies collapse in the stream).
  An advisory sent while no instance runs is not seen (advisories are not stored).
* No server-side ``backoff``: JetStream would use it as the ack wait of each delivery, so
  a short first backoff would redeliver a slow but healthy handler's message. Retry delays
  are naks with a delay; ``ack_wait_secs`` is only the crash detector, and an in-progress
  ack every ``ack_wait_secs / 3`` keeps a running handler's message from being redelivered.
* A message is acked only after its handler returned or its dead letter was stored.
* ``stop()``: no new pull; the pull in progress ends within ``fetch_timeout_secs``; the
  messages already pulled are handled and settled; then the subscriptions are removed and an
  owned connection closed. Cancelling ``run()`` instead leaves the current message unsettled:
  the server redelivers it after ``ack_wait_secs``.

Handlers: ``handler(item, info)`` where ``item`` is the decoded contract (``ErrorEvent``,
``FloodStarted``, ..., ``ConsumerDeadLetter``) or a ``RawMessage``, and ``info`` a
``DeliveryInfo``. A coroutine function is awaited on the consumer's loop; a plain function
runs in a worker thread (``asyncio.to_thread``) so it cannot stall the loop, the in-progress
acks or the NATS keepalive. Handlers must tolerate a second delivery (at-least-once).

Several instances with the same durable share the work (each message goes to one of them);
instances with different durables each get everything. The durable's editable settings
(filters, ``max_deliver``, ``ack_wait``, ``max_ack_pending``) follow the instance that
started last; where it starts (``deliver``) is fixed when it is created.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import threading
import traceback
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from consumers.bus.records import (
    CONSUMER_DEAD_LETTER_VERSION,
    ConsumerDeadLetter,
    DeadLetterCause,
    DeliveryInfo,
    Item,
    as_str_headers,
    classify,
    contract_of,
    cut,
    encode_dead_letter,
)
from consumers.bus.stats import ConsumerMetrics, ConsumerStats
from consumers.bus.subscription import (
    CONSUMER_DEAD_LETTER,
    Subscription,
    consumer_dead_letter_subject,
    family_wildcards,
    filter_subjects,
)
from contracts.subjects import HEADER_CONTRACT, HEADER_CONTRACT_VERSION, HEADER_MSG_ID, Subjects

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from bridge.config.model import BridgeConfig

__all__ = [
    "SPARE_DELIVERIES",
    "ConsumerError",
    "Delivery",
    "ErrorBusConsumer",
    "Handler",
]

log = logging.getLogger(__name__)

#: server-side deliveries beyond ``max_deliver`` (see the design note)
SPARE_DELIVERIES = 3
REQUEST_TIMEOUT_SECS = 5.0
ACK_TIMEOUT_SECS = 5.0
MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 8000
#: room kept free in ``max_payload`` for the dead letter's headers, in bytes
_HEADER_ROOM_BYTES = 1024
_REMEMBERED_ERRORS = 10_000
_MAX_FILTER_SUBJECTS = 64
_MULTI_FILTER_SINCE = (2, 10)
_RETRY_MIN_SECS, _RETRY_MAX_SECS = 0.1, 5.0
_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}"

Handler = Callable[[Item, DeliveryInfo], Awaitable[None] | None]


class ConsumerError(Exception):
    """The consumer cannot run: NATS unreachable at start, stream missing, durable refused,
    connection closed under it, or (from ``stop()``) the consumer thread failed."""


class Delivery(NamedTuple):
    """What the async iterator yields: the decoded ``item`` and its ``DeliveryInfo``."""

    item: Item
    info: DeliveryInfo


@dataclass
class _InFlight:
    msg: Msg
    info: DeliveryInfo
    keepalive: asyncio.Task[None]


class _MaxDeliveries(msgspec.Struct):
    """``io.nats.jetstream.advisory.v1.max_deliver`` (the fields used)."""

    stream_seq: int = 0
    deliveries: int = 0


_advisory_decoder = msgspec.json.Decoder(_MaxDeliveries)


class _HandlerThread(threading.local):
    consumer: ErrorBusConsumer | None = None


_handler_thread = _HandlerThread()
_ErrorText = tuple[str, str, str]  # (error_type, error_message, error_traceback)


class ErrorBusConsumer:
    """A durable consumer of ERRBUS (see the module's design note).

    ``servers`` (the consumer connects, reconnecting forever after a good start, with
    ``connect_options`` passed to ``nats.connect``) or ``nc`` (a connected client the caller
    owns and closes; not with ``start_in_thread``). ``stream``: the stream name;
    ``prefix``: its subject prefix (``stream.subject_prefix``). ``metrics``: shared
    Prometheus series, optional. ``stats`` counts what this instance did.

    Use: ``async with ErrorBusConsumer(sub, servers=[url]) as c: await c.run(handler)``
    (until ``c.stop()``), or ``async for item, info in c:`` (a delivery is acked when the
    loop asks for the next one or leaves the ``async with`` normally; leaving it with an
    exception counts as a handler failure), or from sync code ``c.start_in_thread(handler)``
    ... ``c.stop()``.
    """

    def __init__(
        self,
        subscription: Subscription,
        *,
        servers: Iterable[str] | None = None,
        nc: Client | None = None,
        connect_options: dict[str, Any] | None = None,
        stream: str = "ERRBUS",
        prefix: str = "errbus",
        metrics: ConsumerMetrics | None = None,
    ) -> None:
        if (servers is None) == (nc is None):
            raise ValueError("pass servers= (the consumer connects) or nc= (a connected client)")
        self.subscription = subscription
        self.stream = stream
        self.subjects = Subjects(prefix)
        self.dead_letter_subject = consumer_dead_letter_subject(self.subjects, subscription.durable)
        self.stats = ConsumerStats(subscription.durable, metrics)
        self._servers = list(servers) if servers is not None else None
        self._nc = nc
        self._owns_nc = nc is None
        self._connect_options = dict(connect_options or {})
        self._js: JetStreamContext | None = None
        self._psub: Any = None
        self._advisory_sub: Any = None
        self._filters: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._buffer: deque[Msg] = deque()
        self._current: _InFlight | None = None
        self._errors: OrderedDict[int, _ErrorText] = OrderedDict()
        self._fetch_failures = 0
        self._instance = f"{socket.gethostname()}:{os.getpid()}"
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stop_requested = False

    @classmethod
    def from_bridge_config(
        cls,
        cfg: BridgeConfig,
        subscription: Subscription,
        *,
        metrics: ConsumerMetrics | None = None,
    ) -> ErrorBusConsumer:
        """A consumer of the stream ``cfg`` provisions, connecting like the project's other
        NATS tools (``bridge.adapters.nats_connect``: ``nats.servers`` or the embedded server's
        URL, keepalive, credentials and TLS from the config). Raises ``NatsUnreachable`` when
        no server is known, ``ConfigError`` when a credential cannot be read."""
        from bridge.adapters.nats_connect import connect_options, nats_servers

        options = connect_options(cfg.nats, name=f"busbridge-consumer-{subscription.durable}")
        return cls(
            subscription,
            servers=nats_servers(cfg),
            connect_options=options,
            stream=cfg.stream.name,
            prefix=cfg.stream.subject_prefix,
            metrics=metrics,
        )

    @property
    def filters(self) -> list[str]:
        """The subject filters this consumer matches (after ``start``)."""
        return list(self._filters)

    # --- start and stop -------------------------------------------------------------

    async def __aenter__(self) -> ErrorBusConsumer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if self._current is not None:
                if exc is None:
                    await self._settle_ok()
                elif isinstance(exc, Exception):
                    await self._settle_failed(exc)
            await self._release_buffer()
        finally:
            await self.close()

    async def start(self) -> None:
        """Connect (when given ``servers``), check the stream, create or update the durable,
        bind the pull subscription and watch the advisory. Raises ``ConsumerError``."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        if self._owns_nc:
            self._nc = await self._connect()
        try:
            assert self._nc is not None
            self._js = self._nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
            await self._check_stream()
            await self._ensure_durable()
            self._psub = await self._js.pull_subscribe_bind(
                durable=self.subscription.durable, stream=self.stream
            )
            if self.subscription.watch_advisories:
                subject = _ADVISORY.format(stream=self.stream, durable=self.subscription.durable)
                self._advisory_sub = await self._nc.subscribe(subject, cb=self._on_advisory)
        except BaseException:
            await self.close()
            raise

    def stop(self, timeout_secs: float | None = 30.0) -> None:
        """Ask the consumer to stop (see the design note); safe from any thread, idempotent.

        After ``start_in_thread``, called from another thread (not from the consumer's own
        handler, which returns at once and lets the consumer stop after it), it waits up to
        ``timeout_secs`` for the thread to end, then raises ``ConsumerError`` if it did not
        or if the consumer failed while running.
        """
        self._stop_requested = True
        loop, event = self._loop, self._stop
        if loop is not None and event is not None:
            if _running_loop() is loop:
                event.set()
            else:
                with contextlib.suppress(RuntimeError):  # loop already closed: stopped
                    loop.call_soon_threadsafe(event.set)
        thread = self._thread
        inside = thread is threading.current_thread() or _handler_thread.consumer is self
        if thread is None or inside:  # asked by its own handler: it stops after it returns
            return
        thread.join(timeout_secs)
        if thread.is_alive():
            raise ConsumerError(
                f"consumer {self.subscription.durable} did not stop within {timeout_secs} s"
            )
        self._thread = None
        failure, self._failure = self._failure, None
        if failure is not None:
            raise ConsumerError(f"consumer {self.subscription.durable} failed: {failure}") from (
                failure
            )

    async def close(self) -> None:
        """Remove the subscriptions and close an owned connection (the durable stays)."""
        self._take_current()
        for sub in (self._advisory_sub, self._psub):
            if sub is not None:
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
        self._advisory_sub = self._psub = None
        if self._owns_nc and self._nc is not None:
            await self._nc.close()
            self._nc = None
        self._stop_requested = False

    # --- delivering -------------------------------------------------------------------

    async def run(self, handler: Handler) -> None:
        """Hand every selected message to ``handler`` until ``stop()``; returns then.

        Handler failures are retried and dead-lettered, never raised here; raises
        ``ConsumerError`` only if the connection is closed under the consumer.
        """
        while (delivery := await self._next()) is not None:
            try:
                await _call(self, handler, delivery)
            except Exception as exc:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                await self._settle_failed(exc)
            else:
                await self._settle_ok()

    def __aiter__(self) -> ErrorBusConsumer:
        return self

    async def __anext__(self) -> Delivery:
        if self._current is not None:
            await self._settle_ok()
        delivery = await self._next()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    async def _next(self) -> Delivery | None:
        """The next message for the handler (settling the skipped ones); ``None`` once
        stopped and the pulled messages are used up."""
        if self._stop is None:
            raise ConsumerError("the consumer is not started (use `async with` or start())")
        while True:
            if not self._buffer:
                if self._stop.is_set():
                    return None
                self._buffer.extend(await self._fetch())
                continue
            delivery = await self._prepare(self._buffer.popleft())
            if delivery is not None:
                return delivery

    async def _prepare(self, msg: Msg) -> Delivery | None:
        info = self._info(msg)
        sub = self.subscription
        verdict = classify(msg.data, msg.subject, info.headers, sub, self._filters)
        if verdict.item is None:
            await self._ack(msg)
            self.stats.skip(verdict.reason or "filtered")
            return None
        if info.num_delivered > sub.max_deliver:
            error = self._errors.get(info.stream_seq)
            await self._dead_letter(msg, info, DeadLetterCause.NOT_ACKNOWLEDGED, error)
            return None
        if verdict.reason is not None:
            self.stats.count("raw")
        keepalive = asyncio.create_task(self._keep_alive(msg))
        self._current = _InFlight(msg, info, keepalive)
        return Delivery(verdict.item, info)

    def _info(self, msg: Msg) -> DeliveryInfo:
        meta = msg.metadata
        return DeliveryInfo(
            stream=meta.stream,
            durable=self.subscription.durable,
            subject=msg.subject,
            stream_seq=meta.sequence.stream,
            consumer_seq=meta.sequence.consumer,
            num_delivered=meta.num_delivered,
            num_pending=meta.num_pending,
            stored_at=meta.timestamp,
            headers=as_str_headers(msg.headers),
        )

    async def _keep_alive(self, msg: Msg) -> None:
        """In-progress acks while the handler works, so ``ack_wait`` never redelivers it."""
        interval = max(self.subscription.ack_wait_secs / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except nats.errors.Error:
                self.stats.error("in_progress")

    def _take_current(self) -> _InFlight | None:
        current, self._current = self._current, None
        if current is not None:
            current.keepalive.cancel()
        return current

    # --- settling ---------------------------------------------------------------------

    async def _settle_ok(self) -> None:
        current = self._take_current()
        if current is None:
            return
        self.stats.count("processed")
        self._errors.pop(current.info.stream_seq, None)
        await self._ack(current.msg)

    async def _settle_failed(self, exc: Exception) -> None:
        current = self._take_current()
        if current is None:
            return
        info, sub = current.info, self.subscription
        self.stats.count("failed")
        error = self._remember(info.stream_seq, exc)
        log.warning(
            "consumer %s: handler failed on %s (stream seq %d, attempt %d of %d): %s: %s",
            sub.durable,
            info.subject,
            info.stream_seq,
            info.num_delivered,
            sub.max_deliver,
            error[0],
            error[1],
        )
        if info.num_delivered >= sub.max_deliver:
            await self._dead_letter(current.msg, info, DeadLetterCause.HANDLER_FAILED, error)
        elif await self._nak(current.msg, sub.backoff_for(info.num_delivered)):
            self.stats.count("redelivered")

    async def _release_buffer(self) -> None:
        """Messages pulled but not handed out (the iterator was left): back to the server
        after the first backoff delay."""
        while self._buffer:
            if await self._nak(self._buffer.popleft(), self.subscription.backoff_for(1)):
                self.stats.count("released")

    async def _ack(self, msg: Msg) -> bool:
        try:
            await msg.ack_sync(timeout=ACK_TIMEOUT_SECS)
        except (nats.errors.Error, TimeoutError) as exc:
            self.stats.error("ack")
            log.warning("consumer %s: ack failed: %r", self.subscription.durable, exc)
            return False
        return True

    async def _nak(self, msg: Msg, delay_secs: float) -> bool:
        try:
            await msg.nak(delay=delay_secs)
        except nats.errors.Error as exc:
            self.stats.error("nak")
            log.warning("consumer %s: nak failed: %r", self.subscription.durable, exc)
            return False
        return True

    def _remember(self, seq: int, exc: Exception) -> _ErrorText:
        kind = type(exc)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        trace = "".join(traceback.format_exception(exc))
        error = (name, cut(str(exc), MAX_ERROR_CHARS), cut(trace, MAX_TRACEBACK_CHARS))
        self._errors[seq] = error
        self._errors.move_to_end(seq)
        while len(self._errors) > _REMEMBERED_ERRORS:
            self._errors.popitem(last=False)
        return error

    # --- dead letters -----------------------------------------------------------------

    async def _dead_letter(
        self, msg: Msg, info: DeliveryInfo, cause: DeadLetterCause, error: _ErrorText | None
    ) -> None:
        """Store the dead letter, then ack; if it cannot be stored, nak with the longest
        backoff (a later delivery, or the advisory, tries again)."""
        record = self._record(msg.subject, msg.data, info.headers, info, cause, error)
        if await self._store_dead_letter(record):
            self._errors.pop(info.stream_seq, None)
            await self._ack(msg)
        else:
            await self._nak(msg, max(self.subscription.backoff_secs))

    def _record(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str],
        info: DeliveryInfo | _MaxDeliveries,
        cause: DeadLetterCause,
        error: _ErrorText | None,
    ) -> ConsumerDeadLetter:
        seq = info.stream_seq
        deliveries = info.num_delivered if isinstance(info, DeliveryInfo) else info.deliveries
        error_type, error_message, error_traceback = error or ("", "", "")
        record = ConsumerDeadLetter(
            event_id=f"{self.subscription.durable}:{seq}",
            durable=self.subscription.durable,
            stream=self.stream,
            stream_seq=seq,
            subject=subject,
            deliveries=deliveries,
            cause=cause,
            dead_lettered_at=datetime.now(UTC),
            error_type=error_type,
            error_message=error_message,
            error_traceback=error_traceback,
            contract=contract_of(data, headers, HEADER_CONTRACT),
            headers=headers,
            payload_bytes=len(data),
            instance=self._instance,
        )
        return _with_payload(record, data, self._max_payload())

    def _max_payload(self) -> int:
        return self._nc.max_payload if self._nc is not None else 1024 * 1024

    async def _store_dead_letter(self, record: ConsumerDeadLetter) -> bool:
        """Publish ``record`` and wait for its PubAck; True when stored (or a duplicate)."""
        headers = {
            HEADER_MSG_ID: record.event_id,
            HEADER_CONTRACT: CONSUMER_DEAD_LETTER,
            HEADER_CONTRACT_VERSION: str(CONSUMER_DEAD_LETTER_VERSION),
        }
        assert self._js is not None
        try:
            ack = await self._js.publish(
                self.dead_letter_subject,
                encode_dead_letter(record),
                headers=headers,
                stream=self.stream,
            )
        except (nats.errors.Error, TimeoutError) as exc:
            self.stats.error("dead_letter")
            log.error(
                "consumer %s: could not store the dead letter of stream seq %d: %r",
                record.durable,
                record.stream_seq,
                exc,
            )
            return False
        if not ack.duplicate:
            self.stats.count("dead_lettered")
            log.error(
                "consumer %s: dead-lettered stream seq %d (%s after %d deliveries: %s %s) on %s",
                record.durable,
                record.stream_seq,
                record.cause.value,
                record.deliveries,
                record.error_type,
                record.error_message,
                self.dead_letter_subject,
            )
        return True

    async def _on_advisory(self, msg: Msg) -> None:
        """The server gave up on a message: store its dead letter from the stream's copy."""
        try:
            advisory = _advisory_decoder.decode(msg.data)
        except msgspec.MsgspecError:
            return
        self.stats.count("advisories")
        subject, data, headers = "", b"", {}
        assert self._js is not None
        try:
            stored = await self._js.get_msg(self.stream, advisory.stream_seq)
            subject, data = stored.subject or "", stored.data or b""
            headers = as_str_headers(stored.headers)
        except (nats.errors.Error, TimeoutError) as exc:  # gone (limits, purge) or unreachable
            log.warning(
                "consumer %s: advisory for seq %d: %r", self._name, advisory.stream_seq, exc
            )
        error = self._errors.get(advisory.stream_seq)
        record = self._record(
            subject, data, headers, advisory, DeadLetterCause.MAX_DELIVERIES, error
        )
        if not await self._store_dead_letter(record):
            self.stats.error("advisory")

    @property
    def _name(self) -> str:
        return self.subscription.durable

    # --- NATS -------------------------------------------------------------------------

    async def _connect(self) -> Client:
        """Connect, trying each server once, then reconnect forever after this good start."""
        nc = Client()
        options: dict[str, Any] = {
            "name": f"busbridge-consumer-{self._name}",
            "connect_timeout": 5.0,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.2,
            "error_cb": self._on_nats_error,
        } | self._connect_options
        try:
            await nc.connect(servers=self._servers, **options)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            await nc.close()
            raise ConsumerError(
                f"cannot connect to NATS {', '.join(self._servers or [])}: {exc!r}"
            ) from exc
        if "max_reconnect_attempts" not in self._connect_options:
            nc.options.update(max_reconnect_attempts=-1, reconnect_time_wait=1.0)
        return nc

    async def _on_nats_error(self, exc: Exception) -> None:
        log.warning("consumer %s: NATS: %r", self._name, exc)

    async def _check_stream(self) -> None:
        assert self._js is not None
        try:
            await self._js.stream_info(self.stream)
        except nats.js.errors.NotFoundError as exc:
            raise ConsumerError(f"stream {self.stream} does not exist") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise ConsumerError(f"cannot read stream {self.stream}: {exc!r}") from exc

    async def _ensure_durable(self) -> None:
        """Create the durable, or update an existing one keeping where it started."""
        assert self._js is not None
        sub = self.subscription
        self._filters = filter_subjects(sub, self.subjects)
        config = ConsumerConfig(
            name=sub.durable,
            durable_name=sub.durable,
            description="busbridge consumer (consumers.bus)",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW if sub.deliver == "new" else DeliverPolicy.ALL,
            max_deliver=sub.max_deliver + SPARE_DELIVERIES,
            ack_wait=sub.ack_wait_secs,
            max_ack_pending=sub.max_ack_pending,
            **_where(self._server_filters()),
        )
        try:
            existing = (await self._js.consumer_info(self.stream, sub.durable)).config
        except nats.js.errors.NotFoundError:
            existing = None
        if existing is not None:
            config.deliver_policy = existing.deliver_policy
            config.opt_start_seq = existing.opt_start_seq
            config.opt_start_time = existing.opt_start_time
        try:
            await self._js.add_consumer(self.stream, config)
        except nats.js.errors.APIError as exc:
            raise ConsumerError(
                f"durable {sub.durable} refused: {exc.description or exc!r}"
            ) from exc

    def _server_filters(self) -> list[str]:
        """The filters when the server can apply them, else wider ones (filtered here)."""
        assert self._nc is not None
        filters = self._filters
        version = self._nc.connected_server_version
        multi = (version.major, version.minor) >= _MULTI_FILTER_SINCE
        if len(filters) == 1 or (multi and len(filters) <= _MAX_FILTER_SUBJECTS):
            return filters
        wide = family_wildcards(self.subscription, self.subjects)
        return wide if multi or len(wide) == 1 else [self.subjects.all]

    async def _fetch(self) -> list[Msg]:
        """One pull; ``[]`` when nothing came or it failed (then after a capped backoff)."""
        sub = self.subscription
        assert self._psub is not None and self._nc is not None
        try:
            msgs = await self._psub.fetch(sub.batch_size, timeout=sub.fetch_timeout_secs)
        except TimeoutError:  # nothing to deliver (nats-py's timeouts subclass it)
            msgs = []
        except nats.errors.Error as exc:
            await self._fetch_failed(exc)
            return []
        for _ in msgs:
            self.stats.count("delivered")
        if self._fetch_failures:
            log.info(
                "consumer %s: pulling again after %d failures", self._name, self._fetch_failures
            )
            self._fetch_failures = 0
        return msgs

    async def _fetch_failed(self, exc: Exception) -> None:
        assert self._nc is not None and self._stop is not None
        if self._nc.is_closed:
            raise ConsumerError(f"consumer {self._name}: the NATS connection is closed") from exc
        self.stats.error("fetch")
        self._fetch_failures += 1
        if self._fetch_failures == 1:
            log.warning("consumer %s: pull failed (retrying): %r", self._name, exc)
        delay = min(_RETRY_MIN_SECS * 2 ** (self._fetch_failures - 1), _RETRY_MAX_SECS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        if self._nc.is_connected and not self._stop.is_set():
            with contextlib.suppress(ConsumerError, nats.errors.Error, TimeoutError):
                await self._ensure_durable()  # recreates a durable deleted under us

    # --- from sync code ---------------------------------------------------------------

    def start_in_thread(
        self, handler: Handler, *, ready_timeout_secs: float = 30.0
    ) -> ErrorBusConsumer:
        """Run ``async with self: await self.run(handler)`` on a new thread with its own
        event loop; return once started. Raises ``ConsumerError`` (or the start's own error)
        when it cannot start within ``ready_timeout_secs``. ``stop()`` ends it; ``with
        consumer.start_in_thread(h):`` stops on leaving the block."""
        if not self._owns_nc:
            raise ValueError("start_in_thread needs servers=: a client belongs to one loop")
        if self._thread is not None:
            raise RuntimeError(f"consumer {self._name} is already running in a thread")
        self._ready.clear()
        self._failure = None
        self._stop_requested = False
        self._thread = threading.Thread(
            target=self._thread_main, args=(handler,), name=f"errbus-{self._name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(ready_timeout_secs):
            self.stop(timeout_secs=ready_timeout_secs)
            raise ConsumerError(f"consumer {self._name} not started within {ready_timeout_secs} s")
        if self._failure is not None:
            thread, self._thread = self._thread, None
            thread.join()
            failure, self._failure = self._failure, None
            raise failure
        return self

    def _thread_main(self, handler: Handler) -> None:
        try:
            asyncio.run(self._thread_body(handler))
        except BaseException as exc:  # noqa: BLE001 - surfaced once, by start_in_thread or stop
            self._failure = exc
        finally:
            self._ready.set()

    async def _thread_body(self, handler: Handler) -> None:
        async with self:
            self._ready.set()
            await self.run(handler)

    def __enter__(self) -> ErrorBusConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(consumer: ErrorBusConsumer, handler: Handler, delivery: Delivery) -> None:
    """Await a coroutine handler; run a plain one in a worker thread (then await what it
    returns, if awaitable)."""
    # a coroutine function, a partial of one, or an object with ``async def __call__``
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
        await handler(delivery.item, delivery.info)  # type: ignore[misc]
        return
    result = await asyncio.to_thread(_in_handler_thread, consumer, handler, delivery)
    if inspect.isawaitable(result):
        await result


def _in_handler_thread(consumer: ErrorBusConsumer, handler: Handler, delivery: Delivery) -> Any:
    """Run a plain handler in a worker thread, marked so its ``consumer.stop()`` does not
    wait for the consumer thread (which waits for this handler)."""
    _handler_thread.consumer = consumer
    try:
        return handler(delivery.item, delivery.info)
    finally:
        _handler_thread.consumer = None


def _where(filters: list[str]) -> dict[str, Any]:
    if len(filters) == 1:
        return {"filter_subject": filters[0]}
    return {"filter_subjects": filters}


def _with_payload(record: ConsumerDeadLetter, data: bytes, max_payload: int) -> ConsumerDeadLetter:
    """``record`` carrying ``data``, cut so the encoded record fits ``max_payload``."""
    room = max_payload - _HEADER_ROOM_BYTES - len(encode_dead_letter(record))
    keep = max(0, room * 3 // 4 - 4)  # base64: 4 characters per 3 bytes
    if len(data) <= keep:
        return msgspec.structs.replace(record, payload=data)
    return msgspec.structs.replace(record, payload=data[:keep], payload_truncated=True)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

"""The data path of one bridge, assembled in one place: ``build_pipeline(cfg, metrics, transport)``.

Stage order (the one description of it; the README and the package docstrings point here)::

    ZMQ SUB :7150                      bridge.adapters.zmq.IngestSocket: chunks of <= 32 messages
                                       (the decode worker gathers a reader turn's chunks)
      -> IngestRunner.take              bridge.pipeline.runner, for each message in read order:
           loop check                   bridge.legacy.reemit (frames a bridge re-emitted)
           legacy republish             Routing.republish (phase), frames byte for byte
      -> decode + identity              bridge.pipeline.decode (dialects: bridge.legacy.dialects;
                                        event id: bridge.pipeline.identity) -> ErrorEvent | DeadLetter,
                                        here, or in the decode worker process (zmq.decode_worker,
                                        auto: what a turn brings beyond 128 messages and every
                                        turn while it is busy; bridge.adapters.decode_worker,
                                        replies in order, one identity table for both)
      -> IngestRunner.settle            for each decoded message in read order:
           counters, inventory, parity  Routing.observe (phase): the parity tap's ZMQ side
           [zmq_only stops here]        Routing.to_jetstream
           dead letters                 bridge.pipeline.dead_letters (per key: store the first
                                        N with their bytes, count the rest in summaries)
           dedup                        bridge.pipeline.dedup (event id within window_secs)
           flood gate                   bridge.pipeline.flood (per fingerprint: pass / suppress;
                                        FloodStarted/Summary/Ended emitted down the same path)
           outbound                     bridge.pipeline.outbound (subject, headers, max_payload)
      -> sink                           spool on: bridge.pipeline.buffering.SpooledQueue (SQLite,
                                        bridge.pipeline.spool: committed before publishing);
                                        spool off: the publisher itself
      -> publisher                      chosen at connect (SelectingPublisher, publish.mode):
                                        fast-ingest batches (bridge.pipeline.batch_publish,
                                        nats-server >= 2.14) or one PubAck per message
                                        (bridge.pipeline.publish); both keep order, retry with
                                        the same Nats-Msg-Id and settle every message once
      -> transport                      bridge.adapters.jetstream.JetStreamLink (batches:
                                        bridge.adapters.fast_ingest) -> PubAck
      -> on_done                        spool row deleted (SpooledQueue.on_done); parity's
                                        JetStream side confirmed (Routing.confirmed)

Bridge-made messages (flood events, phase changes, spool eviction summaries) join at the
outbound stage. Every callback is passed to a constructor here; the cutover phase switches
the runner with one immutable ``Routing`` value (``bridge.phase_runtime``); hot reload goes
through ``Pipeline.reconfigure``. The stages import no adapter: the transport comes in as a
``Transport`` (``bridge.pipeline.publish``); this module imports the decode worker's process
and socket code (``bridge.adapters.decode_worker``) to start it with the runner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import anyio

from bridge.adapters.decode_worker import INLINE_MAX, DecodeWorker, WorkerSettings
from bridge.adapters.zmq import Admission, BatchHandler
from bridge.config.flood import flood_rules
from bridge.config.model import BridgeConfig
from bridge.metrics import Metrics
from bridge.migration import SourceInventory
from bridge.pipeline.acks import AckResult, NotConnected
from bridge.pipeline.batch_publish import BatchPublisher, BatchReply, BatchTransport
from bridge.pipeline.buffering import SpooledQueue
from bridge.pipeline.dead_letters import DeadLetterGate
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.dedup import DedupWindow
from bridge.pipeline.flood import FloodGate
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import Outbound, PipelinedPublisher, Transport
from bridge.pipeline.runner import IngestRunner, Sink
from bridge.pipeline.spool import Spool
from bridge.pipeline.summaries import eviction_summary
from contracts.subjects import Subjects

__all__ = [
    "BatchLink",
    "Link",
    "Pipeline",
    "SelectingPublisher",
    "build_pipeline",
    "dead_letter_gate",
    "flood_gate",
]

log = logging.getLogger(__name__)


class Link(Transport, Protocol):
    """What the pipeline needs of the NATS link besides ``publish`` (``JetStreamLink``)."""

    @property
    def connected(self) -> bool: ...

    @property
    def max_payload(self) -> int: ...

    async def subscribe_acks(
        self, prefix: str, on_ack: Callable[[int, AckResult], None]
    ) -> None: ...

    async def stream_bounds(self, stream: str) -> tuple[int, int]: ...

    async def msg_id_at(self, stream: str, seq: int) -> str: ...


class BatchLink(BatchTransport, Protocol):
    """A fast-ingest transport that can subscribe to its replies (``FastIngestTransport``)."""

    async def subscribe(self, on_reply: Callable[[BatchReply], None]) -> Any: ...


class SelectingPublisher:
    """The publisher the pipeline talks to. Until ``select`` (at connect, before anything is
    sent) it is a ``PipelinedPublisher`` that only queues; ``select(batch_transport)`` either
    keeps it or hands its unsent messages, in order, to a ``BatchPublisher`` over
    ``batch_transport``. Same surface as both (``submit`` never blocks)."""

    def __init__(
        self,
        pipelined: PipelinedPublisher,
        make_batch: Callable[[BatchTransport], BatchPublisher],
    ) -> None:
        self.current: PipelinedPublisher | BatchPublisher = pipelined
        self._make_batch = make_batch
        self._selected = anyio.Event()

    @property
    def mode(self) -> str:
        """``batch`` or ``pipelined`` (``pipelined`` until selected)."""
        return "batch" if isinstance(self.current, BatchPublisher) else "pipelined"

    def select(self, batch_transport: BatchTransport | None) -> None:
        """Choose once: batches over ``batch_transport``, or (None) one PubAck per message."""
        if self._selected.is_set():
            raise RuntimeError("the publisher was selected already")
        if batch_transport is not None:
            assert isinstance(self.current, PipelinedPublisher)
            batch = self._make_batch(batch_transport)
            for item in self.current.take_unsent():
                batch.submit(item)
            self.current = batch
        self._selected.set()

    async def run(self) -> None:
        await self._selected.wait()
        await self.current.run()

    def submit(self, item: Outbound) -> bool:
        return self.current.submit(item)

    @property
    def backlog(self) -> int:
        return self.current.backlog

    @property
    def retrying(self) -> int:
        return self.current.retrying

    @property
    def room(self) -> int:
        return self.current.room

    @property
    def in_flight(self) -> int:
        return self.current.in_flight

    @property
    def last_ack_at(self) -> float | None:
        return self.current.last_ack_at

    def connection_lost(self) -> None:
        self.current.connection_lost()

    def resume(self) -> None:
        self.current.resume()

    def expire_overdue(self) -> int:
        return self.current.expire_overdue()

    def abandon_all(self) -> int:
        return self.current.abandon_all()

    def reconfigure(self, **settings: Any) -> None:
        self.current.reconfigure(**settings)


class Pipeline:
    """The assembled data path (see the module note). Built by ``build_pipeline``.

    ``runner``: where the ingest socket delivers batches (and the NATS inputs their messages,
    ``handle_external``). ``decoder``: the legacy/native decoder the NATS inputs use too.
    ``inventory``: the sources seen, by transport (migration view). ``sink``: the spooled
    queue, or the publisher without a spool. ``backlog``: messages accepted and not yet acknowledged.
    """

    def __init__(
        self,
        cfg: BridgeConfig,
        metrics: Metrics,
        *,
        link: Link,
        ack_prefix: str,
        identity: EventIdentity,
        builder: OutboundBuilder,
        publisher: SelectingPublisher,
        queue: SpooledQueue | None,
        runner: IngestRunner,
        decoder: LegacyDecoder,
        inventory: SourceInventory,
        decode_worker: DecodeWorker | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.link = link
        self.ack_prefix = ack_prefix
        self.identity = identity
        self.builder = builder
        self.publisher = publisher
        self.queue = queue
        self.runner = runner
        self.decoder = decoder
        self.inventory = inventory
        self.decode_worker = decode_worker
        self.sink: Sink = queue if queue is not None else publisher
        self._connected = anyio.Event()  # set by attach and every reconnect: check for loss

    # -- state ---------------------------------------------------------------------------

    @property
    def zmq_intake(self) -> tuple[BatchHandler, Admission | None]:
        """Where the ZMQ reader delivers its batches, and the backpressure it must respect:
        the decode worker (``zmq.decode_worker``), else the runner in this process."""
        if self.decode_worker is not None:
            return self.decode_worker.handle_batch, self.decode_worker
        return self.runner.handle_batch, None

    @property
    def backlog(self) -> int:
        return self.queue.backlog if self.queue is not None else self.publisher.backlog

    @property
    def catching_up(self) -> bool:
        """NATS is unreachable, or the spool drains a backlog."""
        return not self.link.connected or (self.queue is not None and self.queue.draining)

    @property
    def held_back(self) -> int:
        """Messages held back rather than flowing (the spool-empty guard): all of the backlog
        while catching up, else those waiting for a retry (live in-flight ones do not count)."""
        return self.backlog if self.catching_up else self.publisher.retrying

    # -- lifecycle -----------------------------------------------------------------------

    async def attach(
        self, stream_config: dict[str, Any], batch_transport: BatchLink | None = None
    ) -> None:
        """NATS is reached and the stream provisioned (``stream_config`` as the server reports
        it): choose the publisher (``batch_transport``: fast-ingest batches, the server and the
        stream allow them; None: one PubAck per message), subscribe to its replies, learn the
        server's ``max_payload`` and duplicate window, then let the publisher send."""
        self.publisher.select(batch_transport)
        current = self.publisher.current
        if isinstance(current, BatchPublisher):
            assert batch_transport is not None
            await batch_transport.subscribe(current.on_reply)
        else:
            await self.link.subscribe_acks(self.ack_prefix, current.on_ack)
        self.builder.set_max_payload(self.link.max_payload)
        if self.queue is not None:
            window_ns = stream_config.get("duplicate_window", 0)
            self.queue.set_duplicate_window(window_ns / 1e9 or None)
        self.publisher.resume()
        self._connected.set()

    def connection_changed(self, connected: bool) -> None:
        """NATS (re)connected: retries go out at once, in order, and the retained messages are
        checked against the stream (``restore_lost``); disconnected: whatever is in flight is
        retried after the reconnect (``PipelinedPublisher``)."""
        if connected:
            self.publisher.resume()
            self._connected.set()
        else:
            if self.queue is not None:
                self.queue.connection_lost()
            self.publisher.connection_lost()

    async def run(self) -> None:
        """Publisher, spool tasks and the flood ticker, until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.publisher.run)
            if self.decode_worker is not None:
                tg.start_soon(self.decode_worker.run)
            if self.queue is not None:
                tg.start_soon(self.queue.run)
                tg.start_soon(self._stream_loss_loop, self.queue)
            tg.start_soon(self._flood_loop)

    async def _stream_loss_loop(self, queue: SpooledQueue) -> None:
        """After every connect: did the stream lose acknowledged messages? Publish them again
        (``SpooledQueue.restore_lost``). A check that fails is tried again 2 s later."""
        while True:
            await self._connected.wait()
            self._connected = anyio.Event()
            try:
                await queue.restore_lost(self.link, self.cfg.stream.name)
            except NotConnected as exc:  # NATS gone again, JetStream not ready yet, ...
                log.warning("stream loss check failed (%s: %s); retrying", type(exc).__name__, exc)
                await anyio.sleep(2.0)
                if self.link.connected:
                    self._connected.set()

    async def drain(self, timeout_secs: float) -> tuple[int, int]:
        """Stop: close open floods (their last summaries), write what is staged to the spool,
        wait up to ``timeout_secs`` for the backlog to be acknowledged while NATS is connected,
        then abandon the rest (with the spool it stays on disk for the next start; without
        it, it is counted as dropped, reason ``shutdown``). Returns ``(backlog, left)``.
        First the decode worker settles what it was given (what it has not answered within
        ``timeout_secs`` is decoded here)."""
        if self.decode_worker is not None:
            await self.decode_worker.flush(timeout_secs)
        flood = self.runner.flood
        if flood is not None:
            for event in flood.flush():
                self.runner.emit(event)
        if self.runner.dead_letters is not None:
            self.runner.emit_dead_letter_summaries(self.runner.dead_letters.flush())
        if self.queue is not None:
            await self.queue.flush_staging()
        backlog = self.backlog
        with anyio.move_on_after(timeout_secs):
            while self.backlog and self.link.connected:
                await anyio.sleep(0.01)  # NATS down: nothing can drain, the spool keeps it all
        left = self.backlog
        self.publisher.abandon_all()
        if left and self.queue is None:
            self.metrics.dropped.labels("shutdown").inc(left)
        return backlog, left

    async def close(self) -> None:
        """Delete the rows acknowledged last (after ``drain`` and the task group ended)."""
        if self.queue is not None:
            await self.queue.flush_acks()

    def reconfigure(self, cfg: BridgeConfig, live: list[str]) -> None:
        """Apply a reloaded config's live settings (``bridge.config.reload.LIVE_PATHS``): flood
        rules (on, off or new rules; turning it off publishes the open floods' last summaries),
        spool caps and rates, publish window, pending limit, timeouts and backoff."""
        self.cfg = cfg
        if any(p.startswith("flood.") for p in live):
            self._reconfigure_flood()
        if self.queue is not None:
            s = cfg.spool
            self.queue.reconfigure(
                max_bytes=s.max_bytes,
                max_age_secs=s.max_age_secs,
                max_replay_rate=s.max_replay_rate_per_sec,
                summary_interval_secs=s.eviction_summary_interval_secs,
                retain_acked_secs=s.retain_acked_secs,
                retain_max_bytes=s.retain_max_bytes,
            )
        p = cfg.publish
        self.publisher.reconfigure(
            max_in_flight=p.max_in_flight,
            max_pending=p.max_pending,
            ack_timeout_secs=p.ack_timeout_secs,
            retry_initial_secs=p.retry_initial_secs,
            retry_max_secs=p.retry_max_secs,
        )

    def _reconfigure_flood(self) -> None:
        gate, f = self.runner.flood, self.cfg.flood
        if not f.enabled:
            if gate is not None:
                for event in gate.flush():
                    self.runner.emit(event)
            self.runner.set_flood(None)
        elif gate is None:
            self.runner.set_flood(flood_gate(self.cfg))
        else:
            gate.update_rules(*flood_rules(f))
            gate.reconfigure(
                summary_interval_secs=f.summary_interval_secs,
                max_fingerprints=f.max_fingerprints,
                suppress_critical=f.suppress_critical,
                global_max_per_sec=f.global_max_per_sec,
            )

    async def _flood_loop(self) -> None:
        """Publish due flood summaries and ends, once a second."""
        while True:
            await anyio.sleep(1.0)
            flood = self.runner.flood
            if flood is not None:
                for event in flood.tick():
                    self.runner.emit(event)
            if self.runner.dead_letters is not None:
                self.runner.emit_dead_letter_summaries(self.runner.dead_letters.tick())
            self.metrics.floods_active.set(flood.active_floods if flood is not None else 0)
            evicted = self.identity.evicted_in_window
            if self.decode_worker is not None:
                evicted += self.decode_worker.evicted_in_window
            self.metrics.identity_evicted_in_window.set(evicted)


def dead_letter_gate(cfg: BridgeConfig) -> DeadLetterGate | None:
    """The dead-letter flood control ``cfg.dead_letters`` asks for (None: off)."""
    d = cfg.dead_letters
    if not d.enabled:
        return None
    return DeadLetterGate(
        machine=cfg.machine or "",
        threshold=d.threshold,
        window_secs=d.window_secs,
        summary_interval_secs=d.summary_interval_secs,
        max_keys=d.max_keys,
        leading_bytes=d.leading_bytes,
        aggregate_threshold=d.aggregate_threshold,
        clock=time.monotonic,
        wall_clock=lambda: datetime.now(UTC),
    )


def flood_gate(cfg: BridgeConfig) -> FloodGate | None:
    """The flood gate ``cfg.flood`` asks for (None: flood control off)."""
    f = cfg.flood
    if not f.enabled:
        return None
    rules, default = flood_rules(f)
    return FloodGate(
        rules,
        default,
        machine=cfg.machine or "",
        summary_interval_secs=f.summary_interval_secs,
        max_fingerprints=f.max_fingerprints,
        suppress_critical=f.suppress_critical,
        global_max_per_sec=f.global_max_per_sec,
        clock=time.monotonic,
    )


def build_pipeline(
    cfg: BridgeConfig,
    metrics: Metrics,
    link: Link,
    *,
    ack_prefix: str,
    on_batching_disabled: Callable[[], None] | None = None,
) -> Pipeline:
    """Build every stage for ``cfg`` and wire them through their constructors.

    Blocking (opens the SQLite spool and reads its totals): run it in a worker thread.
    ``ack_prefix``: the reply-subject prefix of this bridge's PubAcks.
    ``on_batching_disabled()``: the stream refused fast-ingest batches (``allow_batched`` off).
    Until NATS is reached,
    ``max_payload`` is the embedded server's configured one (else NATS' default 1 MiB);
    ``Pipeline.attach`` replaces it with the server's. Raises ``sqlite3.Error`` when the
    spool cannot be opened."""
    identity = EventIdentity(
        cfg.identity.occurrence_window_secs, cfg.identity.max_tracked, time.monotonic
    )
    builder = OutboundBuilder(
        Subjects(cfg.stream.subject_prefix),
        cfg.bridge_id or "",
        cfg.nats.embedded.max_payload_bytes,
        metrics,
    )
    queue: SpooledQueue | None = None
    runner: IngestRunner | None = None

    def on_done(item: Outbound, outcome: str, ack: AckResult | None) -> None:
        """The publisher settled ``item``: the spool deletes its row, parity confirms it, a
        message that came over NATS is acknowledged to its source."""
        if queue is not None:
            queue.on_done(item, outcome, ack)
        if item.on_settled is not None:
            item.on_settled(outcome)
        confirmed = runner.routing.confirmed if runner is not None else None
        if confirmed is not None:
            confirmed([item], outcome, ack)

    def on_done_many(items: list[Outbound], outcome: str, ack: AckResult) -> None:
        """``on_done`` for messages the batch publisher settled alike (a flow ack, a commit)."""
        if queue is not None:
            queue.on_done_many(items, outcome, ack)
        for item in items:
            if item.on_settled is not None:
                item.on_settled(outcome)
        confirmed = runner.routing.confirmed if runner is not None else None
        if confirmed is not None:
            confirmed(items, outcome, ack)

    p = cfg.publish
    settings = {
        "max_in_flight": p.max_in_flight,
        "ack_timeout_secs": p.ack_timeout_secs,
        "max_pending": p.max_pending,
        "retry_initial_secs": p.retry_initial_secs,
        "retry_max_secs": p.retry_max_secs,
        "on_done": on_done,
    }
    publisher = SelectingPublisher(
        PipelinedPublisher(link, ack_prefix, metrics, **settings),
        lambda transport: BatchPublisher(
            transport,
            metrics,
            batch_max_msgs=p.batch_max_msgs,
            batch_idle_secs=p.batch_idle_secs,
            max_outstanding_acks=p.batch_outstanding_acks,
            on_disabled=on_batching_disabled,
            on_done_many=on_done_many,
            **settings,
        ),
    )
    queue = _spooled_queue(cfg, metrics, publisher, builder)
    decoder = LegacyDecoder(
        machine=cfg.machine or "",
        identity=identity,
        local_tz=ZoneInfo(cfg.legacy.local_timezone),
        max_frame_bytes=cfg.zmq.max_frame_bytes,
        oversized_keep_bytes=cfg.zmq.oversized_keep_bytes,
    )
    d = cfg.dedup
    inventory = SourceInventory(cfg.migration.max_sources)
    runner = IngestRunner(
        decoder,
        builder,
        queue if queue is not None else publisher,
        metrics,
        dedup=DedupWindow(d.window_secs, d.max_ids, time.monotonic) if d.enabled else None,
        flood=flood_gate(cfg),
        drop_reason="spool_staging_full" if queue is not None else "pending_full",
        inventory=inventory,
        dead_letters=dead_letter_gate(cfg),
    )
    worker = None
    if cfg.zmq.decode_worker:
        worker_settings = WorkerSettings(
            machine=cfg.machine or "",
            local_timezone=cfg.legacy.local_timezone,
            max_frame_bytes=cfg.zmq.max_frame_bytes,
            oversized_keep_bytes=cfg.zmq.oversized_keep_bytes,
            occurrence_window_secs=cfg.identity.occurrence_window_secs,
            max_tracked=cfg.identity.max_tracked,
            malloc_trim_interval_secs=cfg.malloc_trim_interval_secs,
        )
        worker = DecodeWorker(
            worker_settings,
            runner,
            decoder,
            metrics,
            identity=identity,
            inline_max=INLINE_MAX if cfg.zmq.decode_worker == "auto" else 0,
        )
    return Pipeline(
        cfg,
        metrics,
        link=link,
        ack_prefix=ack_prefix,
        identity=identity,
        builder=builder,
        publisher=publisher,
        queue=queue,
        runner=runner,
        decoder=decoder,
        inventory=inventory,
        decode_worker=worker,
    )


def _spooled_queue(
    cfg: BridgeConfig, metrics: Metrics, publisher: SelectingPublisher, builder: OutboundBuilder
) -> SpooledQueue | None:
    sc = cfg.spool
    if not sc.enabled:
        return None
    path = Path(sc.path) if sc.path else Path(cfg.data_dir) / "spool.db"
    queue = SpooledQueue(
        Spool(path, sc.synchronous.value),
        publisher,
        metrics,
        staging_max=sc.staging_max,
        batch_max=sc.batch_max,
        max_bytes=sc.max_bytes,
        max_age_secs=sc.max_age_secs,
        max_replay_rate=sc.max_replay_rate_per_sec,
        summary_factory=lambda tally: builder.build(eviction_summary(tally, cfg)),
        summary_interval_secs=sc.eviction_summary_interval_secs,
        retain_acked_secs=sc.retain_acked_secs,
        retain_max_bytes=sc.retain_max_bytes,
    )
    log.info("spool %s: %d messages waiting (%d B)", path, queue.rows, queue.bytes)
    return queue

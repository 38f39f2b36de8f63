"""Composition root: builds every part of one bridge and runs them in one task group.

Start order: embedded nats-server (when no server is configured) -> durable
spool (its unacknowledged rows are replayed before live traffic) -> phase
runtime (the cutover phase in force decides whether the ZMQ ingest socket is
bound and what is republished, ``bridge.phase_runtime``) -> admin HTTP -> tasks, one of which connects to NATS (retrying for as
long as it is unreachable), provisions the stream, subscribes to PubAcks and
only then lets the publisher send. So a NATS outage at boot is absorbed by the
spool like any other. ``serve`` reports the started ``Bridge`` through
``task_status.started`` (the handshake), so a caller knows the socket is bound.

Stop order (``request_stop``, SIGTERM/SIGINT in the CLI): stop reading ZMQ and
release the port, close open floods (their last summaries), write what is
staged to the spool, drain pending and in-flight publishes within
``publish.drain_timeout_secs`` (with the spool, what is left stays on disk
for the next start; without it, it is counted as dropped, reason
``shutdown``), then unwind in reverse start order: admin server, NATS
connection, embedded server.
A failure in any task cancels the others and surfaces once from ``serve``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import anyio.abc

from bridge.adapters.jetstream import JetStreamLink
from bridge.adapters.nats_server import NatsServerProcess
from bridge.adapters.zmq import IngestSocket
from bridge.admin import AdminServer
from bridge.config.flood import flood_rules
from bridge.config.model import BridgeConfig
from bridge.health.service import HealthService
from bridge.metrics import Metrics
from bridge.phase_runtime import PhaseRuntime
from bridge.pipeline.buffering import SpooledQueue
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.dedup import DedupWindow
from bridge.pipeline.flood import FloodGate
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import PipelinedPublisher
from bridge.pipeline.runner import IngestRunner
from bridge.pipeline.spool import Spool
from bridge.pipeline.summaries import eviction_summary
from contracts.subjects import Subjects

__all__ = ["Bridge"]

log = logging.getLogger(__name__)


class Bridge:
    """One running bridge. Attributes are set once ``serve`` has started it.

    ``zmq_endpoints``: where the SUB socket is bound/connected. ``nats_url``:
    the server in use. ``admin_port``: the admin HTTP port (0 in config picks one).
    """

    def __init__(self, cfg: BridgeConfig, *, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.subjects = Subjects(cfg.stream.subject_prefix)
        self.embedded: NatsServerProcess | None = None
        self.link: JetStreamLink | None = None
        self.publisher: PipelinedPublisher | None = None
        self.phases: PhaseRuntime | None = None
        self.queue: SpooledQueue | None = None
        self._identity: EventIdentity | None = None
        self.runner: IngestRunner | None = None
        self.admin: AdminServer | None = None
        self.health: HealthService | None = None
        self.nats_url = ""
        self.admin_port = 0
        self.stream_config: dict[str, Any] = {}
        self._stop = anyio.Event()
        self._last_probe_ok: float | None = None
        self._ack_prefix = f"_INBOX.busbridge.{uuid.uuid4().hex}"
        self._acks_ready = False
        #: set once NATS was reached, the stream provisioned and PubAcks subscribed
        self.nats_ready = anyio.Event()

    @property
    def ingest(self) -> IngestSocket | None:
        """The ZMQ ingest socket, None while the phase keeps it closed (``nats_only``)."""
        return self.phases.ingest if self.phases is not None else None

    @property
    def zmq_endpoints(self) -> list[str]:
        return self.phases.zmq_endpoints if self.phases is not None else []

    def request_stop(self) -> None:
        """Begin a graceful shutdown (idempotent, callable from any task)."""
        self._stop.set()

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[Bridge] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until ``request_stop``; see the module note for the order of things."""
        async with AsyncExitStack() as stack:
            await self._start_link(stack)
            self._start_publisher()
            builder = self._builder()
            await self._start_spool(builder)
            self._start_ingest(stack, builder)
            await self._start_admin(stack)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.publisher.run)  # type: ignore[union-attr]
                tg.start_soon(self._connect_then_probe, builder)
                if self.queue is not None:
                    tg.start_soon(self.queue.run)
                tg.start_soon(self._flood_loop)
                if self.cfg.health.enabled:
                    tg.start_soon(self._run_health)
                await self._read_until_stopped(task_status)
                await self._drain()
                if self.health is not None:
                    await self.health.farewell()
                tg.cancel_scope.cancel()
            if self.queue is not None:
                await self.queue.flush_acks()

    async def _start_link(self, stack: AsyncExitStack) -> None:
        """The NATS link, not yet connected (the embedded server is started here, it is local)."""
        servers = list(self.cfg.nats.servers)
        if not servers:
            servers = [await self._start_embedded(stack)]
        self.nats_url = servers[0]
        link = JetStreamLink(
            self.cfg.nats,
            servers,
            name=f"busbridge-{self.cfg.bridge_id}",
            on_state=self._nats_state,
        )
        stack.push_async_callback(link.close)
        self.link = link

    async def _connect_then_probe(self, builder: OutboundBuilder) -> None:
        """Connect (retrying while NATS is unreachable: ingest and spool already run), provision
        the stream, subscribe to PubAcks, then let the publisher go and keep readiness fresh."""
        assert self.link is not None and self.publisher is not None
        await self.link.connect()
        self.stream_config = await self.link.ensure_stream(self.cfg.stream, timeout_secs=math.inf)
        await self.link.subscribe_acks(self._ack_prefix, self.publisher.on_ack)
        builder.max_payload_bytes = self.link.max_payload
        if self.queue is not None:
            self.queue.duplicate_window_secs = (
                self.stream_config.get("duplicate_window", 0) / 1e9 or None
            )
        self._acks_ready = True
        self.nats_ready.set()
        self.publisher.resume()
        log.info(
            "NATS %s, stream %s ready (max_payload %d B)",
            self.nats_url,
            self.cfg.stream.name,
            self.link.max_payload,
        )
        await self._probe_loop()

    async def _start_embedded(self, stack: AsyncExitStack) -> str:
        emb = self.cfg.nats.embedded
        store = Path(emb.store_dir) if emb.store_dir else Path(self.cfg.data_dir) / "nats"
        server = NatsServerProcess(
            store,
            binary=emb.binary,
            host=emb.host,
            port=emb.port,
            max_payload_bytes=emb.max_payload_bytes,
        )
        url = await anyio.to_thread.run_sync(server.start, emb.startup_timeout_secs)
        stack.push_async_callback(anyio.to_thread.run_sync, server.stop)
        self.embedded = server
        log.info("embedded nats-server pid %s on %s, store %s", server.pid, url, store)
        return url

    def _nats_state(self, connected: bool) -> None:
        self.metrics.nats_connected.set(1 if connected else 0)
        if connected and self.link is not None and self.link.reconnects:
            self.metrics.nats_reconnects.inc()
        if self.publisher is not None and self._acks_ready:
            self.publisher.resume() if connected else self.publisher.connection_lost()

    def _start_publisher(self) -> None:
        assert self.link is not None
        p = self.cfg.publish
        self.publisher = PipelinedPublisher(
            self.link,
            self._ack_prefix,
            self.metrics,
            max_in_flight=p.max_in_flight,
            ack_timeout_secs=p.ack_timeout_secs,
            max_pending=p.max_pending,
            retry_initial_secs=p.retry_initial_secs,
            retry_max_secs=p.retry_max_secs,
        )

    def _builder(self) -> OutboundBuilder:
        """Until NATS is reached, ``max_payload`` is the embedded server's configured one (else
        NATS' default 1 MiB); the server's own value replaces it once connected."""
        return OutboundBuilder(
            self.subjects,
            self.cfg.bridge_id or "",
            self.cfg.nats.embedded.max_payload_bytes,
            self.metrics,
        )

    async def _start_spool(self, builder: OutboundBuilder) -> None:
        sc = self.cfg.spool
        if not sc.enabled:
            return
        assert self.publisher is not None
        path = Path(sc.path) if sc.path else Path(self.cfg.data_dir) / "spool.db"
        spool = await anyio.to_thread.run_sync(Spool, path, sc.synchronous.value)
        self.queue = await anyio.to_thread.run_sync(
            lambda: SpooledQueue(  # reads the spool's totals
                spool,
                self.publisher,
                self.metrics,
                staging_max=sc.staging_max,
                batch_max=sc.batch_max,
                max_bytes=sc.max_bytes,
                max_age_secs=sc.max_age_secs,
                max_replay_rate=sc.max_replay_rate_per_sec,
                summary_factory=lambda tally: builder.build(eviction_summary(tally, self.cfg)),
                summary_interval_secs=sc.eviction_summary_interval_secs,
            )
        )
        self.publisher.on_done = self.queue.on_done
        log.info("spool %s: %d messages waiting (%d B)", path, self.queue.rows, self.queue.bytes)

    def _start_ingest(self, stack: AsyncExitStack, builder: OutboundBuilder) -> None:
        assert self.publisher is not None
        identity = self._identity = EventIdentity(
            self.cfg.identity.occurrence_window_secs, self.cfg.identity.max_tracked, time.monotonic
        )
        decoder = LegacyDecoder(
            machine=self.cfg.machine or "",
            identity=identity,
            local_tz=ZoneInfo(self.cfg.legacy.local_timezone),
            max_frame_bytes=self.cfg.zmq.max_frame_bytes,
            oversized_keep_bytes=self.cfg.zmq.oversized_keep_bytes,
        )
        sink, drop_reason = (
            (self.queue, "spool_staging_full")
            if self.queue is not None
            else (self.publisher, "pending_full")
        )
        self.runner = IngestRunner(
            decoder,
            builder,
            sink,
            self.metrics,
            dedup=self._dedup(),
            flood=self._flood(),
            drop_reason=drop_reason,
        )
        self.phases = PhaseRuntime(
            self.cfg,
            self.metrics,
            self.runner,
            js=lambda: self.link.nc.jetstream(),  # type: ignore[union-attr]
            nats_ready=self.nats_ready,
            backlog=self._held_back,
            catching_up=self._catching_up,
            publish=self.runner.publish,
            on_zmq_event=self._zmq_event,
        )
        stack.callback(self.phases.close)
        self.phases.open()

    def _dedup(self) -> DedupWindow | None:
        d = self.cfg.dedup
        return DedupWindow(d.window_secs, d.max_ids, time.monotonic) if d.enabled else None

    def _flood(self) -> FloodGate | None:
        f = self.cfg.flood
        if not f.enabled:
            return None
        rules, default = flood_rules(f)
        return FloodGate(
            rules,
            default,
            machine=self.cfg.machine or "",
            summary_interval_secs=f.summary_interval_secs,
            max_fingerprints=f.max_fingerprints,
            suppress_critical=f.suppress_critical,
            global_max_per_sec=f.global_max_per_sec,
            clock=time.monotonic,
        )

    async def _flood_loop(self) -> None:
        """Publish due flood summaries and ends, once a second (flood control may be reloaded on or off)."""
        assert self.runner is not None
        while True:
            await anyio.sleep(1.0)
            flood = self.runner.flood
            if flood is not None:
                for event in flood.tick():
                    self.runner.emit(event)
            self.metrics.floods_active.set(flood.active_floods if flood is not None else 0)
            self.metrics.identity_evicted_in_window.set(
                self._identity.evicted_in_window if self._identity else 0
            )

    def apply_config(self, cfg: BridgeConfig, live: list[str]) -> None:
        """Apply a reloaded config whose changed ``live`` paths may change at run time
        (see ``bridge.config.reload.LIVE_PATHS``); sockets and in-flight messages are untouched,
        except that a new ``phase.current`` moves the bridge to that phase if its guards allow."""
        self.cfg = cfg
        logging.getLogger().setLevel(cfg.log_level)
        if self.phases is not None:
            self.phases.apply_config(cfg, live)
        if any(p.startswith("flood.") for p in live) and self.runner is not None:
            self._apply_flood()
        if self.queue is not None:
            sc = self.queue
            sc.max_bytes, sc.max_age_secs = cfg.spool.max_bytes, cfg.spool.max_age_secs
            sc.max_replay_rate, sc.summary_interval_secs = (
                cfg.spool.max_replay_rate_per_sec,
                cfg.spool.eviction_summary_interval_secs,
            )
        if self.publisher is not None:
            p = cfg.publish
            # a smaller window or pending limit applies to the next send / submit: what is already
            # in flight or pending stays; with the spool, refused messages wait on disk
            self.publisher.max_in_flight, self.publisher.max_pending = (
                p.max_in_flight,
                p.max_pending,
            )
            self.publisher.ack_timeout_secs = p.ack_timeout_secs
            self.publisher.retry_initial_secs, self.publisher.retry_max_secs = (
                p.retry_initial_secs,
                p.retry_max_secs,
            )

    def _apply_flood(self) -> None:
        assert self.runner is not None
        gate, f = self.runner.flood, self.cfg.flood
        if not f.enabled:
            if gate is not None:
                for event in gate.flush():
                    self.runner.emit(event)
            self.runner.flood = None
        elif gate is None:
            self.runner.flood = self._flood()
        else:
            gate.update_rules(*flood_rules(f))
            gate.reconfigure(
                summary_interval_secs=f.summary_interval_secs,
                max_fingerprints=f.max_fingerprints,
                suppress_critical=f.suppress_critical,
                global_max_per_sec=f.global_max_per_sec,
            )

    async def _run_health(self) -> None:
        """Heartbeat and agent probes (``bridge.health.service``): never blocks ingest, survives NATS outages."""
        assert self.link is not None
        self.health = HealthService(
            self.cfg,
            self.link,
            self.metrics,
            readiness=self.readiness,
            phase=self._phase_name,
            nats_ready=self.nats_ready,
        )
        await self.health.run()

    def _phase_name(self) -> str:
        """The cutover phase in force, for heartbeats."""
        phases = getattr(self, "phases", None)
        return phases.phase.value if phases is not None else "dual"

    def _zmq_event(self, name: str, connected: int) -> None:
        self.metrics.zmq_connection_events.labels(name).inc()
        self.metrics.zmq_publishers.set(connected)

    async def _start_admin(self, stack: AsyncExitStack) -> None:
        a = self.cfg.admin
        if not a.enabled:
            return
        self.admin = AdminServer(
            self.metrics,
            self.readiness,
            a.host,
            a.port,
            phase=self.phases.describe if self.phases else None,
        )
        await self.admin.start()
        stack.push_async_callback(self.admin.stop)
        self.admin_port = self.admin.port
        log.info("admin HTTP on http://%s:%d (/metrics /healthz /readyz)", a.host, self.admin_port)

    async def _read_until_stopped(self, task_status: anyio.abc.TaskStatus[Bridge]) -> None:
        assert self.phases is not None
        async with anyio.create_task_group() as ingest_tg:
            ingest_tg.start_soon(self.phases.run)
            task_status.started(self)
            log.info(
                "bridge %s running in phase %s; ZMQ %s",
                self.cfg.bridge_id,
                self.phases.phase.value,
                ", ".join(self.zmq_endpoints) or "closed",
            )
            await self._stop.wait()
            ingest_tg.cancel_scope.cancel()
        self.phases.close()  # stop reading and release the ports before draining

    async def _drain(self) -> None:
        assert self.publisher is not None and self.runner is not None
        if self.runner.flood is not None:  # close open floods so their counts are published
            for event in self.runner.flood.flush():
                self.runner.emit(event)
        if self.queue is not None:
            await self.queue.flush_staging()
        backlog = self._backlog()
        with anyio.move_on_after(self.cfg.publish.drain_timeout_secs):
            while self._backlog() and self.link is not None and self.link.connected:
                await anyio.sleep(0.01)  # NATS down: nothing can drain, the spool keeps it all
        left = self._backlog()
        self.publisher.abandon_all()
        if not left:
            log.info("shutdown: drained %d messages", backlog)
        elif self.queue is not None:
            log.warning(
                "shutdown: %d of %d messages not yet acknowledged stay in the spool for the next start",
                left,
                backlog,
            )
        else:
            self.metrics.dropped.labels("shutdown").inc(left)
            log.error(
                "shutdown: %d of %d unacknowledged messages abandoned (no spool)", left, backlog
            )

    def _catching_up(self) -> bool:
        """NATS is unreachable or the spool drains a backlog."""
        return (
            self.link is None
            or not self.link.connected
            or (self.queue is not None and self.queue.draining)
        )

    def _held_back(self) -> int:
        """Messages held back rather than flowing (the spool-empty guard): all of the backlog while
        catching up, else those waiting for a retry (live in-flight ones do not count)."""
        assert self.publisher is not None
        return self._backlog() if self._catching_up() else self.publisher.retrying

    def _backlog(self) -> int:
        assert self.publisher is not None
        return self.queue.backlog if self.queue is not None else self.publisher.backlog

    async def _probe_loop(self) -> None:
        """Keep readiness fresh on an idle bus: probe JetStream when no PubAck came recently."""
        assert self.link is not None and self.publisher is not None
        while True:
            interval = self.cfg.admin.probe_interval_secs
            last_ack = self.publisher.last_ack_at
            stale = last_ack is None or time.monotonic() - last_ack > interval
            if stale and await self.link.probe():
                self._last_probe_ok = time.monotonic()
            await anyio.sleep(interval)

    def _phase_reads_zmq(self) -> bool:
        return self.phases is None or self.phases.phase.behaviour.ingest

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, details)`` for ``/readyz``; see ``bridge.admin``.

        Not ready (``degraded`` when only buffering to the spool is going on):
        NATS down, no recent PubAck or probe, a backlog waiting on disk, or the
        ingest socket closed.
        """
        reasons = []
        if self.link is None or not self.link.connected:
            reasons.append("nats_disconnected")
        if self.queue is not None and self.queue.draining:
            reasons.append("spool_backlog")
        fresh = max(
            self._last_probe_ok or -math.inf,
            (self.publisher and self.publisher.last_ack_at) or -math.inf,
        )
        if time.monotonic() - fresh > self.cfg.admin.ready_max_age_secs:
            reasons.append("no_recent_puback_or_probe")
        if (self.ingest is None or not self.zmq_endpoints) and self._phase_reads_zmq():
            reasons.append("ingest_closed")
        degraded = bool(reasons) and set(reasons) <= {
            "nats_disconnected",
            "spool_backlog",
            "no_recent_puback_or_probe",
        }
        details = {
            "reasons": reasons,
            "degraded": degraded and self.queue is not None,
            "backlog": self._backlog() if self.publisher else 0,
            "zmq_publishers_connected": self.ingest.publishers_connected if self.ingest else 0,
            "phase": self.phases.phase.value if self.phases is not None else None,
        }
        return not reasons, details

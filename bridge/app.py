"""Composition root: builds every part of one bridge and runs them in one task group.

Start order: embedded nats-server (when no server is configured) -> the data path
(``bridge.pipeline.assemble.build_pipeline``; the stage order is described there; the spool's
unacknowledged rows are replayed before live traffic) -> phase runtime (the cutover phase in
force decides whether the ZMQ ingest socket is bound and how the runner routes messages,
``bridge.phase_runtime``) -> admin HTTP -> one task group, in which one task connects to NATS
(retrying for as long as it is unreachable), provisions the stream and only then attaches the
pipeline (PubAcks subscribed, the publisher let go). So a NATS outage at boot is absorbed by
the spool like any other. ``serve`` reports the started ``Bridge`` through
``task_status.started`` (the handshake), so a caller knows the socket is bound.

Stop order (``request_stop``, SIGTERM/SIGINT in the CLI): stop reading ZMQ and release the
port, then ``Pipeline.drain`` (close open floods, write what is staged to the spool, wait up to
``publish.drain_timeout_secs`` for the backlog; with the spool, what is left stays on disk for
the next start; without it, it is counted as dropped, reason ``shutdown``), then unwind in
reverse start order: admin server, NATS connection, embedded server.
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

import anyio
import anyio.abc

from bridge.adapters.fast_ingest import (
    FastInbox,
    FastIngestTransport,
    enable_batches,
    server_version,
    version_supports_fast_ingest,
)
from bridge.adapters.jetstream import JetStreamLink
from bridge.adapters.migration_kv import run_reports
from bridge.adapters.nats_inputs import (
    JetStreamInput,
    connect_legacy,
    ensure_intake_stream,
    find_legacy_stream,
    msg_id,
    native_durable,
    native_filter,
)
from bridge.adapters.nats_server import NatsServerProcess
from bridge.adapters.zmq import IngestSocket
from bridge.admin import AdminServer
from bridge.config.model import BridgeConfig, PublishMode
from bridge.errors import ProvisioningError
from bridge.health.service import HealthService
from bridge.legacy.nats_libraries import LEGACY_SUBJECTS
from bridge.metrics import Metrics
from bridge.phase_runtime import PhaseRuntime
from bridge.pipeline.assemble import Pipeline, SelectingPublisher, build_pipeline
from bridge.pipeline.buffering import SpooledQueue
from bridge.pipeline.runner import IngestRunner
from contracts.migration import MigrationReport

__all__ = ["Bridge"]

log = logging.getLogger(__name__)


class Bridge:
    """One running bridge. Attributes are set once ``serve`` has started it.

    ``zmq_endpoints``: where the SUB socket is bound/connected. ``nats_url``:
    the server in use. ``admin_port``: the admin HTTP port (0 in config picks one).
    ``pipeline``: the assembled data path (``runner``, ``queue`` and ``publisher`` are its).
    """

    def __init__(self, cfg: BridgeConfig, *, metrics: Metrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.embedded: NatsServerProcess | None = None
        self.link: JetStreamLink | None = None
        self.pipeline: Pipeline | None = None
        self.phases: PhaseRuntime | None = None
        self.admin: AdminServer | None = None
        self.health: HealthService | None = None
        self.nats_url = ""
        self.admin_port = 0
        self.stream_config: dict[str, Any] = {}
        self._stop = anyio.Event()
        self._last_probe_ok: float | None = None
        self._ack_prefix = f"_INBOX.busbridge.{uuid.uuid4().hex}"
        #: every bridge's latest migration report, read from KV (``bridge.migration``)
        self.fleet_reports: list[MigrationReport] = []
        self.inputs: list[JetStreamInput] = []
        self._acks_ready = False
        self._batching_disabled = anyio.Event()
        #: set once NATS was reached, the stream provisioned and PubAcks subscribed
        self.nats_ready = anyio.Event()

    @property
    def runner(self) -> IngestRunner | None:
        return self.pipeline.runner if self.pipeline is not None else None

    @property
    def publisher(self) -> SelectingPublisher | None:
        return self.pipeline.publisher if self.pipeline is not None else None

    @property
    def queue(self) -> SpooledQueue | None:
        return self.pipeline.queue if self.pipeline is not None else None

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
            link = await self._start_link(stack)
            pipeline = self.pipeline = await anyio.to_thread.run_sync(
                lambda: build_pipeline(
                    self.cfg,
                    self.metrics,
                    link,
                    ack_prefix=self._ack_prefix,
                    on_batching_disabled=self._batching_disabled.set,
                )
            )
            self._start_phases(stack, pipeline)
            await self._start_admin(stack)
            async with anyio.create_task_group() as tg:
                tg.start_soon(pipeline.run)
                tg.start_soon(self._connect_then_probe, pipeline)
                tg.start_soon(self._keep_batching_allowed)
                tg.start_soon(self._run_nats_inputs, pipeline)
                tg.start_soon(self._run_migration_view, pipeline)
                if self.cfg.health.enabled:
                    tg.start_soon(self._run_health)
                await self._read_until_stopped(task_status)
                await self._drain(pipeline)
                if self.health is not None:
                    await self.health.farewell()
                tg.cancel_scope.cancel()
            await pipeline.close()

    async def _start_link(self, stack: AsyncExitStack) -> JetStreamLink:
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
        return link

    async def _connect_then_probe(self, pipeline: Pipeline) -> None:
        """Connect (retrying while NATS is unreachable: ingest and spool already run), provision
        the stream, attach the pipeline (PubAcks, the publisher let go), keep readiness fresh."""
        assert self.link is not None
        await self.link.connect()
        batched = self._use_batches()
        self.stream_config = await self.link.ensure_stream(
            self.cfg.stream, timeout_secs=math.inf, allow_batched=batched
        )
        transport = None
        if batched:
            transport = FastIngestTransport(self.link, FastInbox(f"{self._ack_prefix}.fi"))
        await pipeline.attach(self.stream_config, transport)
        self._acks_ready = True
        self.nats_ready.set()
        log.info(
            "NATS %s, stream %s ready (max_payload %d B, publishing %s)",
            self.nats_url,
            self.cfg.stream.name,
            self.link.max_payload,
            "fast-ingest batches" if batched else "one PubAck per message",
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
            sync_interval=emb.sync_interval,
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
        if self.pipeline is not None and self._acks_ready:
            self.pipeline.connection_changed(connected)

    async def _keep_batching_allowed(self) -> None:
        """The stream refused fast-ingest batches (recreated without ``allow_batched``, by an
        operator or another tool): switch it on again, at most every 2 s."""
        while True:
            await self._batching_disabled.wait()
            self._batching_disabled = anyio.Event()
            if self.link is not None and self.link.nc is not None:
                await enable_batches(self.link.nc, self.cfg.stream.name)
            await anyio.sleep(2.0)

    def _use_batches(self) -> bool:
        """Fast-ingest batches for ``publish.mode`` and the connected server's version. Raises
        ``ProvisioningError`` for ``batch`` on a server older than 2.14."""
        assert self.link is not None and self.link.nc is not None
        mode = self.cfg.publish.mode
        if mode is PublishMode.PIPELINED:
            return False
        version = server_version(self.link.nc)
        supported = version_supports_fast_ingest(version)
        if not supported and mode is PublishMode.BATCH:
            raise ProvisioningError(
                f"publish.mode batch needs nats-server >= 2.14 (connected: {version}); "
                "use publish.mode auto or pipelined"
            )
        if not supported:
            log.info("nats-server %s has no fast-ingest batches: one PubAck per message", version)
        return supported

    async def _run_nats_inputs(self, pipeline: Pipeline) -> None:
        """Native intake and the legacy ``errors.>`` half (``bridge.adapters.nats_inputs``),
        once NATS is ready; the legacy one on ``intake.legacy_servers`` when set."""
        i = self.cfg.intake
        if not (i.native or i.legacy_nats):
            return
        await self.nats_ready.wait()
        assert self.link is not None and self.link.nc is not None
        js = self.link.nc.jetstream()
        decoder, machine = pipeline.decoder, self.cfg.machine or ""
        common = {
            "handle": pipeline.runner.handle_external,
            "paused": lambda: pipeline.catching_up,
            "cfg": i,
            "metrics": self.metrics,
            "machine": machine,
        }
        async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
            if i.native:
                native = JetStreamInput(
                    "native",
                    js=js,
                    stream=lambda: ensure_intake_stream(js, self.cfg),
                    filter_subject=native_filter(self.cfg),
                    durable=native_durable(self.cfg),
                    decode=lambda m, now: decoder.decode_native(m.data, msg_id(m), now),
                    **common,
                )
                self.inputs.append(native)
                tg.start_soon(native.run)
            if i.legacy_nats:
                legacy_js = js
                if i.legacy_servers:
                    nc = await connect_legacy(self.cfg)
                    stack.push_async_callback(nc.close)
                    legacy_js = nc.jetstream()
                legacy = JetStreamInput(
                    "legacy",
                    js=legacy_js,
                    stream=lambda: find_legacy_stream(legacy_js),
                    filter_subject=LEGACY_SUBJECTS,
                    durable=i.legacy_durable,
                    decode=lambda m, now: decoder.decode_legacy_nats(m.subject, m.data, now),
                    poll_secs=i.legacy_poll_secs,
                    **common,
                )
                self.inputs.append(legacy)
                tg.start_soon(legacy.run)

    async def _run_migration_view(self, pipeline: Pipeline) -> None:
        """Write this bridge's migration report and read the fleet's, periodically."""
        await self.nats_ready.wait()
        machine, bridge_id = self.cfg.machine or "", self.cfg.bridge_id or ""

        def keep(reports: list[MigrationReport]) -> None:
            self.fleet_reports = reports

        await run_reports(
            lambda: self.link.nc.jetstream(),  # type: ignore[union-attr]
            self.cfg,
            lambda: pipeline.inventory.report(machine, bridge_id),
            keep,
        )

    def migration_reports(self) -> list[MigrationReport]:
        """The fleet's reports with this bridge's own one live (not as last written)."""
        if self.pipeline is None:
            return list(self.fleet_reports)
        machine, bridge_id = self.cfg.machine or "", self.cfg.bridge_id or ""
        others = [r for r in self.fleet_reports if (r.machine, r.bridge_id) != (machine, bridge_id)]
        return [*others, self.pipeline.inventory.report(machine, bridge_id)]

    def _start_phases(self, stack: AsyncExitStack, pipeline: Pipeline) -> None:
        self.phases = PhaseRuntime(
            self.cfg,
            self.metrics,
            pipeline.runner,
            js=lambda: self.link.nc.jetstream(),  # type: ignore[union-attr]
            nats_ready=self.nats_ready,
            backlog=lambda: pipeline.held_back,
            catching_up=lambda: pipeline.catching_up,
            publish=pipeline.runner.publish,
            on_zmq_event=self._zmq_event,
            migration=self.migration_reports,
            zmq_intake=pipeline.zmq_intake,
        )
        stack.callback(self.phases.close)
        self.phases.open()

    def apply_config(self, cfg: BridgeConfig, live: list[str]) -> None:
        """Apply a reloaded config whose changed ``live`` paths may change at run time
        (see ``bridge.config.reload.LIVE_PATHS``); sockets and in-flight messages are untouched,
        except that a new ``phase.current`` moves the bridge to that phase if its guards allow."""
        self.cfg = cfg
        logging.getLogger().setLevel(cfg.log_level)
        if self.phases is not None:
            self.phases.apply_config(cfg, live)
        if self.pipeline is not None:
            self.pipeline.reconfigure(cfg, live)

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

    async def _drain(self, pipeline: Pipeline) -> None:
        backlog, left = await pipeline.drain(self.cfg.publish.drain_timeout_secs)
        if not left:
            log.info("shutdown: drained %d messages", backlog)
        elif self.queue is not None:
            log.warning(
                "shutdown: %d of %d messages not yet acknowledged stay in the spool for the next start",
                left,
                backlog,
            )
        else:
            log.error(
                "shutdown: %d of %d unacknowledged messages abandoned (no spool)", left, backlog
            )

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
            "backlog": self.pipeline.backlog if self.pipeline else 0,
            "zmq_publishers_connected": self.ingest.publishers_connected if self.ingest else 0,
            "phase": self.phases.phase.value if self.phases is not None else None,
        }
        return not reasons, details

"""``LoadEnv``: one load-test rig: nats-server, bridge process, stream probe, load producers.

Design note
-----------
``async with LoadEnv(workdir) as env`` starts, in order: a nats-server (``NatsServerProcess``,
store in ``workdir/nats``, port 0) unless ``servers`` are given (a cluster the caller owns),
the bridge as its own ``busbridge run`` process (``loadtest.harness.BridgeProcess``: flood
control off unless ``flood``, fleet health off; ``bridge_extra`` YAML sections merged
into its defaults, key by key), and a ``StreamProbe`` reading the stream from its first message. ``producer()``
makes a ``LoadProducer`` aimed at the bridge's ZMQ endpoint; ``drive`` runs it to the end
with a progress callback about once a second (``sent``/``received``/``spool``; ``peak_spool``
kept); ``catch_up`` waits for the stream to hold what was sent, ``close_floods`` makes the
bridge close open floods (by stopping it), ``collect`` does both and reconciles.

On exit, also on an error or a cancellation, everything started here is stopped by its own
handle (PID): producers first (they return their logs), then the probe, the bridge (SIGTERM,
then SIGKILL), and the nats-server it started. Blocking calls (process start/stop, /metrics)
run in worker threads so the probe keeps reading meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import yaml

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.bridge_watch import metric, process_cpu_secs
from loadtest.harness import BridgeProcess
from loadtest.load_producer import LoadProducer, SentLog
from loadtest.probe import StreamProbe
from loadtest.results import ProbeReport
from loadtest.scenarios import Progress
from loadtest.workload import Workload

__all__ = ["BEFORE_TEARDOWN", "LoadEnv", "bridge_extra_param"]

SPOOL_METRIC = "busbridge_spool_messages"

#: Awaited with the env, in order, when the ``async with`` body ended without an error and
#: before anything is stopped: the CI profile's fault injection and final stream recount
#: (``loadtest.ci_profile``) set it for the scenarios it runs.
BEFORE_TEARDOWN: ContextVar[tuple[Callable[[LoadEnv], Awaitable[None]], ...]] = ContextVar(
    "before_teardown", default=()
)


def bridge_extra_param(params: dict[str, Any]) -> str:
    """A scenario's ``bridge_extra`` param as YAML text (``--param bridge_extra="k: v"``
    arrives parsed into a dict; empty: "")."""
    value = params.get("bridge_extra")
    if isinstance(value, dict):
        return yaml.safe_dump(value)
    return str(value or "")


class LoadEnv:
    """See the module note. ``server`` is ``None`` when ``servers`` were passed in;
    ``bridge`` and ``probe`` exist after ``__aenter__``."""

    def __init__(
        self,
        workdir: Path,
        *,
        bridge_extra: str = "",
        flood: bool = False,
        servers: list[NatsServerProcess] | None = None,
        log_level: str = "WARNING",
    ) -> None:
        self.workdir = workdir
        self.bridge_extra = bridge_extra
        self.flood = flood
        self.log_level = log_level
        self.servers = servers
        self.server: NatsServerProcess | None = None
        self.bridge: BridgeProcess
        self.probe: StreamProbe
        self._producers: list[LoadProducer] = []
        self.peak_spool = 0
        #: CPU seconds the last ``drive``'s producer used from ready to done (0.0 before one)
        self.producer_cpu_secs = 0.0

    @property
    def urls(self) -> list[str]:
        """Client URLs of the nats-server(s) in use."""
        return (
            [s.url for s in self.servers]
            if self.servers
            else [self.server.url]
            if self.server
            else []
        )

    async def __aenter__(self) -> LoadEnv:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            await self._start()
        except BaseException:
            await self._teardown()
            raise
        return self

    async def _start(self) -> None:
        if not self.servers:
            self.server = NatsServerProcess(self.workdir / "nats")
            await anyio.to_thread.run_sync(self.server.start)
        urls = self.urls
        extra = self.bridge_extra
        if len(urls) > 1 and "nats:" not in extra:
            extra = f"nats: {{servers: {urls!r}, reconnect_wait_secs: 0.2}}\n" + extra
        self.bridge = BridgeProcess(
            self.workdir, urls[0], extra=extra, flood=self.flood, log_level=self.log_level
        )
        await anyio.to_thread.run_sync(self.bridge.start)
        self.probe = StreamProbe(urls)
        await self.probe.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                for hook in BEFORE_TEARDOWN.get():
                    await hook(self)
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        with anyio.CancelScope(shield=True):
            for producer in self._producers:
                try:
                    await anyio.to_thread.run_sync(producer.stop)
                except Exception:
                    pass
            if hasattr(self, "probe"):
                await self.probe.stop()
            if hasattr(self, "bridge"):
                await anyio.to_thread.run_sync(self.bridge.stop)
            if self.server is not None:
                await anyio.to_thread.run_sync(self.server.stop)

    def producer(self, workload: Workload) -> LoadProducer:
        """A ``LoadProducer`` for the bridge's ZMQ endpoint, stopped on exit if still running."""
        producer = LoadProducer(self.bridge.endpoint, workload)
        self._producers.append(producer)
        return producer

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of a bridge metric (``busbridge_...``) from its ``/metrics``; 0 when it does not answer."""
        return await anyio.to_thread.run_sync(
            lambda: metric(self.bridge.admin_port, name, **labels)
        )

    async def counters(self, producer: LoadProducer | None = None) -> dict[str, float]:
        """``sent`` (by ``producer``), ``received`` (by the probe), ``spool`` (bridge backlog);
        also keeps ``peak_spool``."""
        spool = await self.metric(SPOOL_METRIC)
        self.peak_spool = max(self.peak_spool, int(spool))
        return {
            "sent": float(producer.sent_count if producer else 0),
            "received": float(self.probe.received),
            "spool": spool,
        }

    async def drive(self, producer: LoadProducer, progress: Progress, stage: str) -> SentLog:
        """Start ``producer``, report progress about once a second until it has sent its whole
        workload, and return its ``SentLog`` (``producer_cpu_secs``: what the child used
        meanwhile). Raises what the producer raised."""
        await anyio.to_thread.run_sync(producer.start)
        cpu_at_ready = process_cpu_secs(producer.pid, children=False)
        while not producer.finished:
            progress(stage, await self.counters(producer))
            with anyio.move_on_after(1.0):
                while not producer.finished:
                    await anyio.sleep(0.05)
        self.producer_cpu_secs = process_cpu_secs(producer.pid, children=False) - cpu_at_ready
        sent = await anyio.to_thread.run_sync(producer.stop)
        progress(stage, await self.counters(producer))
        return sent

    async def collect(
        self,
        sent: SentLog,
        progress: Progress,
        *,
        timeout_secs: float = 60.0,
        idle_secs: float = 5.0,
    ) -> ProbeReport:
        """``catch_up``, then ``close_floods``, then the probe's report against ``sent``."""
        await self.catch_up(sent, progress, timeout_secs=timeout_secs, idle_secs=idle_secs)
        await self.close_floods(progress)
        return self.probe.report(sent)

    async def catch_up(
        self,
        sent: SentLog,
        progress: Progress,
        *,
        timeout_secs: float = 60.0,
        idle_secs: float = 5.0,
    ) -> int:
        """Wait until the probe has every expected event and dead letter of ``sent`` (or nothing
        new came for ``idle_secs`` while the bridge's spool is empty, or ``timeout_secs``
        passed), then until the stream is quiet for a second; return ``probe.received``."""
        target = len(sent.expected_events()) + sent.malformed_sent()
        deadline = time.monotonic() + timeout_secs
        while self.probe.received < target and time.monotonic() < deadline:
            progress("draining", await self.counters())
            before = self.probe.received
            await self.probe.wait_for(target, timeout_secs=1.0, idle_secs=idle_secs)
            if self.probe.received == before and await self._stalled(before, idle_secs, deadline):
                break
        await self.probe.wait_quiet(1.0, timeout_secs=max(1.0, deadline - time.monotonic()))
        return self.probe.received

    async def close_floods(self, progress: Progress) -> None:
        """If the probe saw floods that did not end, stop the bridge (SIGTERM: it closes every
        flood with its last summary) and wait until the stream is quiet. The bridge is gone after."""
        obs = self.probe.observed
        if obs.flood_started > obs.flood_ended:
            progress("closing floods", await self.counters())
            await anyio.to_thread.run_sync(self.bridge.stop)
            await self.probe.wait_quiet(1.5, timeout_secs=30.0)

    async def _stalled(self, before: int, idle_secs: float, deadline: float) -> bool:
        """True when nothing arrives for ``idle_secs`` and the bridge has no backlog left."""
        wait = max(0.0, min(idle_secs, deadline - time.monotonic()))
        await self.probe.wait_for(before + 1, timeout_secs=wait, idle_secs=wait)
        return self.probe.received == before and await self.metric(SPOOL_METRIC) == 0

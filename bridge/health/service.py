"""Fleet health of one bridge: heartbeat, agent probes and their writes, as one runnable service.

``HealthService.run()`` (until cancelled) runs, in its own task group inside the
bridge's:

* provisioning: once NATS is up, create the KV bucket (and again whenever it
  went missing); a refusal is logged and retried every ``_PROVISION_RETRY_SECS``;
* the heartbeat: a ``BridgeHeartbeat`` every ``heartbeat_interval_secs`` to key
  ``bridge.<machine>.<bridge_id>`` and the stream (``<prefix>.bridge.<machine>.heartbeat``);
* probe rounds (only with ``health.startup_config``): a ``HealthReport`` per agent to
  key ``agent.<machine>.<service>`` and, by the policy of ``bridge.health.sink``,
  the stream (``<prefix>.health.<machine>.<service>``);
* the sink's writer.

None of it touches the ingest path: heartbeats and probes only ever call
``HealthSink.offer`` (never blocks), and nothing here raises into the bridge: a
NATS outage delays writes, a broken probe becomes a ``probe_error`` report.
Metrics: ``busbridge_health_*`` (``bridge.metrics``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio

from bridge.adapters.agent_probe import ProbeClient
from bridge.adapters.health_kv import HealthStore
from bridge.adapters.jetstream import JetStreamLink
from bridge.config.health import port_offset
from bridge.config.model import BridgeConfig
from bridge.errors import ProvisioningError
from bridge.health.heartbeat import HeartbeatBuilder, collect_stats
from bridge.health.probes import AgentProber
from bridge.health.rounds import ProbeRounds
from bridge.health.sink import HealthMessage, HealthSink
from bridge.metrics import HEALTH_REASONS, Metrics
from bridge.pipeline.outbound import OutboundBuilder
from contracts.health_keys import agent_key, bridge_key
from contracts.messages import BridgeHeartbeat, HealthReport, HealthStatus
from contracts.subjects import Subjects

__all__ = ["HealthService"]

log = logging.getLogger(__name__)

_PROVISION_RETRY_SECS = 5.0

Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class HealthService:
    """See the module note. ``phase()`` names the cutover phase for the heartbeat."""

    def __init__(
        self,
        cfg: BridgeConfig,
        link: JetStreamLink,
        metrics: Metrics,
        *,
        readiness: Readiness,
        phase: Callable[[], str],
        nats_ready: anyio.Event,
    ) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.machine, self.bridge_id = cfg.machine or "", cfg.bridge_id or ""
        self._readiness, self._nats_ready = readiness, nats_ready
        self.store = HealthStore(
            link, cfg.health, request_timeout_secs=cfg.publish.ack_timeout_secs
        )
        builder = OutboundBuilder(
            Subjects(cfg.stream.subject_prefix), self.bridge_id, cfg.nats.embedded.max_payload_bytes
        )
        self.sink = HealthSink(
            self.store,
            lambda msg: _subject_and_headers(builder, msg),
            refresh_secs=cfg.health.report_refresh_secs,
            on_written=lambda contract, to: metrics.health_written.labels(contract, to).inc(),
            on_failed=metrics.health_write_failures.inc,
        )
        self.heartbeats = HeartbeatBuilder(
            bridge_id=self.bridge_id,
            machine=self.machine,
            interval_secs=cfg.health.heartbeat_interval_secs,
            phase=phase,
        )
        self.rounds: ProbeRounds | None = None
        self._latest: dict[str, HealthStatus] = {}
        self._stopping = False

    async def run(self) -> None:
        """Run every part until cancelled."""
        h = self.cfg.health
        async with (
            ProbeClient(h.max_reply_bytes, max_connections=h.max_concurrent_probes) as client,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(self._provision_loop)
            tg.start_soon(self.sink.run)
            tg.start_soon(self._heartbeat_loop)
            if h.startup_config:
                self.rounds = self._rounds(client)
                tg.start_soon(self.rounds.run)

    def _rounds(self, client: ProbeClient) -> ProbeRounds:
        h = self.cfg.health
        assert h.startup_config is not None
        return ProbeRounds(
            AgentProber.from_config(self.cfg, client),
            h.startup_config,
            port_offset(h),
            interval_secs=h.probe_interval_secs,
            max_concurrent=h.max_concurrent_probes,
            exclude=h.exclude_services,
            on_report=self.on_report,
            on_config_error=lambda text: self.metrics.health_startup_config_errors.inc(),
        )

    async def _provision_loop(self) -> None:
        await self._nats_ready.wait()
        while True:
            if not self.store.provisioned and self.store.connected:
                try:
                    await self.store.ensure_bucket()
                    log.info(
                        "health KV bucket %s ready (ttl %g s)",
                        self.cfg.health.kv_bucket,
                        self.cfg.health.kv_ttl_secs,
                    )
                except ProvisioningError as exc:
                    log.error("%s; retrying in %g s", exc, _PROVISION_RETRY_SECS)
                    await anyio.sleep(_PROVISION_RETRY_SECS)
            await anyio.sleep(0.5)

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            self.sink.offer(bridge_key(self.machine, self.bridge_id), self._heartbeat())
            await anyio.sleep(self.cfg.health.heartbeat_interval_secs)

    def _heartbeat(self, *, stopping: bool = False) -> BridgeHeartbeat:
        probed = len(self.rounds.agents) if self.rounds is not None else 0
        return self.heartbeats.build(
            collect_stats(self.metrics, self._readiness), agents_probed=probed, stopping=stopping
        )

    async def farewell(self, timeout_secs: float = 2.0) -> bool:
        """On a clean shutdown: stop the heartbeat and write one last heartbeat with ``stopping``
        set, so other machines show this bridge as stopped rather than stale. Gives up after
        ``timeout_secs`` or at once when NATS is unreachable; True when it was written."""
        self._stopping = True
        with anyio.move_on_after(timeout_secs):
            if await self.sink.write_now(
                bridge_key(self.machine, self.bridge_id), self._heartbeat(stopping=True)
            ):
                log.info("farewell heartbeat written: %s is stopping", self.bridge_id)
                return True
        return False

    def on_report(self, report: HealthReport) -> None:
        """Count one probe result and hand it to the sink."""
        m = self.metrics
        m.health_probes.labels(report.status.value).inc()
        if report.reason in HEALTH_REASONS:
            m.health_probe_failures.labels(report.reason).inc()
        if report.latency_secs is not None and report.method:
            m.health_probe_latency.labels(report.method).observe(report.latency_secs)
        self._latest[report.service] = report.status
        self._count_agents()
        self.sink.offer(agent_key(report.machine, report.service), report)

    def _count_agents(self) -> None:
        current = (
            {a.name for a in self.rounds.agents} if self.rounds is not None else set(self._latest)
        )
        counts = Counter(s for name, s in self._latest.items() if name in current)
        for status in HealthStatus:
            self.metrics.health_agents.labels(status.value).set(counts.get(status, 0))


def _subject_and_headers(
    builder: OutboundBuilder, msg: HealthMessage
) -> tuple[str, dict[str, str]]:
    out = builder.build(msg)
    return out.subject, out.headers

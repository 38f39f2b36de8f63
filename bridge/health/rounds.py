"""Probe rounds: every local legacy agent checked once per ``probe_interval_secs``.

Each round re-reads the legacy startup config (in a worker thread), so an edited
file is picked up without a restart; a file that cannot be read or parsed keeps
the last good agent list (the problem is logged and counted, never raised).
Excluded services (``health.exclude_services``) are left out. Agents are probed
concurrently, at most ``max_concurrent_probes`` at a time; each report is handed
to ``on_report`` as soon as it is ready. A probe that breaks inside the bridge
yields a ``probe_error`` report instead of ending the loop. A round that takes
longer than the interval is followed at once by the next; rounds never overlap,
so a slow or hung agent delays only its own next check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from bridge.health.probes import AgentProber
from bridge.health.startup_config import AgentSpec, StartupConfigError, load_startup_config
from contracts.messages import HealthReport

__all__ = ["ProbeRounds"]

log = logging.getLogger(__name__)


class ProbeRounds:
    """Runs rounds of ``prober`` over the agents of ``startup_config``.

    ``on_report(report)`` is called for every report; ``on_config_error(text)``
    for every failed read of the startup config. ``agents`` is the list in use.
    """

    def __init__(
        self,
        prober: AgentProber,
        startup_config: str | Path,
        port_offset: int | None,
        *,
        interval_secs: float,
        max_concurrent: int,
        exclude: list[str] | None = None,
        on_report: Callable[[HealthReport], None],
        on_config_error: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.prober = prober
        self.path, self.port_offset = Path(startup_config), port_offset
        self.interval_secs = interval_secs
        self._limiter = anyio.CapacityLimiter(max_concurrent)
        self.exclude = set(exclude or ())
        self._on_report, self._on_config_error = on_report, on_config_error
        self.agents: list[AgentSpec] = []
        self._last_error = ""

    async def run(self) -> None:
        """Probe forever (cancel to stop)."""
        while True:
            started = time.monotonic()
            await self.round()
            await anyio.sleep(max(0.0, self.interval_secs - (time.monotonic() - started)))

    async def round(self) -> int:
        """One round over the current agents; returns how many were probed."""
        await self.reload()
        agents = list(self.agents)
        async with anyio.create_task_group() as tg:
            for agent in agents:
                tg.start_soon(self._probe_one, agent)
        return len(agents)

    async def reload(self) -> None:
        """Re-read the startup config; on failure keep the agents in use."""
        try:
            parsed = await anyio.to_thread.run_sync(
                load_startup_config, self.path, self.port_offset
            )
        except StartupConfigError as exc:
            self._config_error(str(exc))
            return
        self.agents = [a for a in parsed.agents if a.name not in self.exclude]
        if self._last_error or not self.agents:
            log.info(
                "legacy startup config %s (%s): %d agents to probe",
                self.path,
                parsed.schema,
                len(self.agents),
            )
        self._last_error = ""
        for entry in parsed.skipped:
            log.debug("startup config %s: skipped %s", self.path, entry)

    def _config_error(self, text: str) -> None:
        if text != self._last_error:
            log.error("%s (probing the %d agents known before)", text, len(self.agents))
        self._last_error = text
        self._on_config_error(text)

    async def _probe_one(self, agent: AgentSpec) -> None:
        async with self._limiter:
            try:
                report = await self.prober.probe(agent)
            except (
                Exception
            ) as exc:  # a bug or an OS error inside the bridge: report it, keep probing
                log.exception("probe of %s failed", agent.name)
                report = self.prober.failed(agent, f"{type(exc).__name__}: {exc}")
        self._on_report(report)

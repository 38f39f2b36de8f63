"""Hot reload of the configuration file (STYLE habit 9).

``plan_reload(running, candidate)`` diffs two validated configs leaf by leaf
and splits the changed paths into those that may change live (``LIVE_PATHS``:
flood rules, log level, spool bounds, publish timeouts, readiness timing) and
those that need a restart (sockets, NATS, stream, paths, ...). ``merge_live``
builds the config to run: the running one with only the live changes applied.

``ConfigReloader.reload()`` reads and fully validates the file; an invalid
file keeps the running config (result ``invalid``); otherwise the live part is
applied through the callback (``applied``, or ``partial`` when some changes
were refused, each named in the log), only restart-bound changes were found
(``refused``), or nothing changed (``unchanged``).
Every result is counted in ``busbridge_config_reloads_total{result}``. Reloads
come from SIGHUP or from ``watch`` noticing a new modification time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import msgspec

from bridge.config.load import load_config
from bridge.config.model import BridgeConfig
from bridge.errors import ConfigError

__all__ = ["LIVE_PATHS", "ConfigReloader", "ReloadPlan", "merge_live", "plan_reload"]

log = logging.getLogger(__name__)

#: dotted paths (or prefixes ending in ".") that a running bridge applies without a restart
LIVE_PATHS = (
    "log_level",
    "flood.",
    "spool.max_bytes",
    "spool.max_age_secs",
    "spool.max_replay_rate_per_sec",
    "spool.eviction_summary_interval_secs",
    "spool.retain_acked_secs",
    "spool.retain_max_bytes",
    "publish.ack_timeout_secs",
    "publish.max_in_flight",
    "publish.max_pending",
    "publish.retry_initial_secs",
    "publish.retry_max_secs",
    "publish.drain_timeout_secs",
    "admin.ready_max_age_secs",
    "admin.probe_interval_secs",
    "phase.current",
    "phase.force",
    "phase.guards.",
)


class ReloadPlan(NamedTuple):
    live: list[str]
    refused: list[str]


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            yield from _leaves(getattr(value, name), f"{path}.{name}" if path else name)
    else:
        yield path, value


def _is_live(path: str) -> bool:
    return any(path == p or (p.endswith(".") and path.startswith(p)) for p in LIVE_PATHS)


def plan_reload(running: BridgeConfig, candidate: BridgeConfig) -> ReloadPlan:
    """Changed leaf paths, split into live-changeable and refused (need a restart)."""
    old = dict(_leaves(running))
    changed = [path for path, value in _leaves(candidate) if old.get(path) != value]
    live = [p for p in changed if _is_live(p)]
    return ReloadPlan(live, [p for p in changed if not _is_live(p)])


def merge_live(running: BridgeConfig, candidate: BridgeConfig, live: list[str]) -> BridgeConfig:
    """``running`` with the ``live`` paths taken from ``candidate``."""
    merged = running
    for path in live:
        merged = _replace_path(merged, path.split("."), _get_path(candidate, path.split(".")))
    return merged


def _get_path(value: Any, parts: list[str]) -> Any:
    for part in parts:
        value = getattr(value, part)
    return value


def _replace_path(value: Any, parts: list[str], new: Any) -> Any:
    head, rest = parts[0], parts[1:]
    inner = new if not rest else _replace_path(getattr(value, head), rest, new)
    return msgspec.structs.replace(value, **{head: inner})


ApplyFn = Callable[[BridgeConfig, list[str]], None]


class ConfigReloader:
    """Reloads ``path`` into a running bridge through ``apply(new_config, live_paths)``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        running: BridgeConfig,
        apply: ApplyFn,
        count: Callable[[str], None] = lambda result: None,
        override: Callable[[BridgeConfig], BridgeConfig] = lambda cfg: cfg,
    ) -> None:
        self.path = Path(path)
        self.running = running
        self._apply = apply
        self._count = count
        self._override = override  # command-line overrides stay in force across reloads
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def reload(self) -> str:
        """Reload now; return the result (``applied``/``partial``/``refused``/``unchanged``/``invalid``)."""
        result = self._reload()
        self._count(result)
        return result

    def _reload(self) -> str:
        try:
            candidate = self._override(load_config(self.path))
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config: %s", exc)
            return "invalid"
        plan = plan_reload(self.running, candidate)
        for path in plan.refused:
            log.warning(
                "config reload: %s changed but needs a restart; keeping the running value", path
            )
        if not plan.live:
            return "refused" if plan.refused else "unchanged"
        merged = merge_live(self.running, candidate, plan.live)
        try:
            self._apply(merged, plan.live)
        except Exception:  # never let a reload take the bridge down
            log.exception("config reload could not be applied; keeping the running config")
            return "invalid"
        self.running = merged
        log.info("config reload applied: %s", ", ".join(plan.live))
        return "partial" if plan.refused else "applied"

    async def watch(self, interval_secs: float = 2.0) -> None:
        """Reload whenever the file's modification time changes (until cancelled)."""
        while True:
            await anyio.sleep(interval_secs)
            mtime = self._stat()
            if mtime is not None and mtime != self._mtime:
                self._mtime = mtime
                self.reload()

"""Rules and resolved values of the ``health:`` section that span several fields or the environment.

``health_problems(cfg)`` returns every violated rule as ``health.<key>: message``
(``bridge.config.load.cross_checks`` adds them to the other problems).
``port_offset(cfg)`` is the value of ``${PORT_OFFSET}`` in the legacy startup
config's port expressions: ``health.port_offset``, else the environment
variable ``PORT_OFFSET`` (what the legacy ``system_launcher.py`` expands,
legacy-bus.md §5), else ``None``: unset, so an expression's own ``:-N``
default applies, else 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from bridge.config.model import HealthConfig

__all__ = ["ENV_PORT_OFFSET", "health_problems", "port_offset"]

ENV_PORT_OFFSET = "PORT_OFFSET"


def port_offset(cfg: HealthConfig, environ: Mapping[str, str] = os.environ) -> int | None:
    """``cfg.port_offset``, else ``int($PORT_OFFSET)``, else ``None``. Raises ``ValueError`` for a bad env value."""
    if cfg.port_offset is not None:
        return cfg.port_offset
    text = environ.get(ENV_PORT_OFFSET, "").strip()
    return int(text) if text else None


def health_problems(cfg: HealthConfig) -> list[str]:
    """Every violated rule of ``cfg`` as ``health.<key>: message``."""
    problems = []
    slowest = max(
        cfg.heartbeat_interval_secs, cfg.probe_interval_secs if cfg.startup_config else 0.0
    )
    if cfg.kv_ttl_secs <= cfg.stale_after_intervals * slowest:
        problems.append(
            f"health.kv_ttl_secs: must be > stale_after_intervals x the longest interval "
            f"({cfg.stale_after_intervals:g} x {slowest:g} s), else a dead bridge or agent vanishes "
            "from the bucket before it is shown stale"
        )
    if cfg.port_offset is None:
        try:
            port_offset(cfg)
        except ValueError:
            problems.append(
                f"health.port_offset: env {ENV_PORT_OFFSET}={os.environ[ENV_PORT_OFFSET]!r} is not an integer"
            )
    if not cfg.probe_host.strip():
        problems.append("health.probe_host: must not be empty")
    return problems

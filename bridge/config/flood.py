"""Flood rules from the config (``flood.rules`` + the default rule) into ``FloodRule`` values."""

from __future__ import annotations

from bridge.config.model import FloodConfig
from bridge.pipeline.flood import FloodRule
from contracts.messages import Severity

__all__ = ["flood_rules"]


def flood_rules(cfg: FloodConfig) -> tuple[list[FloodRule], FloodRule]:
    """``(rules in order, default rule)``; the config was validated (regexes, severities)."""
    rules = [
        FloodRule(
            r.name,
            r.threshold,
            r.window_secs,
            pattern=r.match,
            escalate_to=Severity(r.escalate_to) if r.escalate_to else None,
        )
        for r in cfg.rules
    ]
    return rules, FloodRule("default", cfg.default_threshold, cfg.default_window_secs)

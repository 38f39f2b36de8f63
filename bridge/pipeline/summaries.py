"""Bridge-originated contract messages built from pipeline state (eviction summaries)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from bridge.config.model import BridgeConfig
from bridge.pipeline.buffering import EvictionTally
from contracts.messages import SpoolEvicted

__all__ = ["eviction_summary"]


def eviction_summary(tally: EvictionTally, cfg: BridgeConfig) -> SpoolEvicted:
    """A ``SpoolEvicted`` event for ``tally`` (its id is unique: it is a new event)."""
    now = datetime.now(UTC)
    return SpoolEvicted(
        event_id=f"spool-evicted-{uuid.uuid4()}",
        bridge_id=cfg.bridge_id or "",
        machine=cfg.machine or "",
        first_evicted_at=tally.first_at or now,
        last_evicted_at=tally.last_at or now,
        by_severity=dict(tally.by_severity),
        by_reason=dict(tally.by_reason),
        evicted_bytes=tally.bytes,
    )

"""What a load run sends: rate, duration, publishers, dialect mix, bursts, duplicates, malformed frames, floods.

Plain data (frozen msgspec Structs, JSON-able, validated on construction) read by
``loadtest.load_producer.LoadProducer`` and reported by the scenarios. Dialect
names are those of ``loadtest.traffic.DIALECTS`` (legacy-bus.md §1).

Message mix, per message slot (one RNG draw each, seeded by ``seed``):

* ``malformed_ratio``: the slot is a malformed frame set (``traffic.malformed``),
  which the bridge must dead-letter;
* else ``flood.share`` (if ``flood``): a flood message (one fingerprint, see
  ``FloodSpec``);
* else an event in a dialect chosen by weight from ``dialects``; a D1/D2 event
  is followed, with probability ``duplicate_ratio``, by a duplicate copy (same
  legacy ``error_id``) from another publisher socket. Duplicate copies are
  extra messages on top of ``rate_per_sec`` x ``duration_secs`` slots.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["DEDUP_DIALECTS", "Burst", "FloodSpec", "Workload"]

DEDUP_DIALECTS = frozenset(
    {"D1", "D2"}
)  # dialects with a legacy error_id (legacy-bus.md §9 trap 7)
_KNOWN_DIALECTS = (
    "D1",
    "D2",
    "D3",
    "D4",
    "D5",
    "D6",
    "D7",
)  # = traffic.DIALECTS (no import: no zmq here)

Ratio = Annotated[float, Meta(ge=0.0, le=1.0)]
PositiveSecs = Annotated[float, Meta(gt=0.0)]


class Burst(msgspec.Struct, frozen=True, kw_only=True):
    """Every ``every_secs`` seconds (from the start), send at rate x ``factor`` for ``length_secs``."""

    every_secs: PositiveSecs
    length_secs: Annotated[float, Meta(ge=0.0)]
    factor: Annotated[float, Meta(gt=0.0)]

    def __post_init__(self) -> None:
        if not (self.every_secs > 0 and self.length_secs >= 0 and self.factor > 0):
            raise ValueError(f"burst needs every_secs > 0, length_secs >= 0, factor > 0: {self!r}")
        if self.length_secs > self.every_secs:
            raise ValueError(f"burst length_secs {self.length_secs} > every_secs {self.every_secs}")


class FloodSpec(msgspec.Struct, frozen=True, kw_only=True):
    """``share`` of the messages are one error repeated: same source, error_type and message text.

    Flood messages are D1 envelopes (legacy-bus.md §1 D1) whose ``details`` is an
    object holding the token, so the bridge's message is the ``error_type`` and
    every flood message has the same fingerprint (bridge/pipeline/fingerprint.py:
    source, error_type, masked message), whichever publisher sends it.
    """

    share: Ratio = 0.5
    source: str = "FloodAgent"
    error_type: str = "memory_scheduler_timeout"


class Workload(msgspec.Struct, frozen=True, kw_only=True):
    """One load run. ``rate_per_sec``: message slots per second over all publishers (before bursts).

    ``dialects``: weights (any positive numbers) over ``traffic.DIALECTS``.
    ``duplicate_ratio``: fraction of D1/D2 events sent once more with the same
    ``error_id`` from another publisher socket (needs ``publishers >= 2`` to be
    > 0). ``malformed_ratio``: fraction of slots that are malformed frame sets.
    ``pad_bytes``: filler per message (~300 B per frame set at 120).
    ``seed``: the RNG seed; the same workload sends the same message sequence.
    """

    rate_per_sec: Annotated[float, Meta(gt=0.0)] = 2000.0
    duration_secs: PositiveSecs = 10.0
    publishers: Annotated[int, Meta(ge=1, le=256)] = 4
    dialects: dict[str, Annotated[float, Meta(ge=0.0)]] = msgspec.field(
        default_factory=lambda: {"D1": 1.0}
    )
    burst: Burst | None = None
    duplicate_ratio: Ratio = 0.0
    malformed_ratio: Ratio = 0.0
    flood: FloodSpec | None = None
    pad_bytes: Annotated[int, Meta(ge=0, le=1_000_000)] = 120
    seed: int = 0

    def __post_init__(self) -> None:
        if not (
            self.rate_per_sec > 0
            and self.duration_secs > 0
            and self.publishers >= 1
            and self.pad_bytes >= 0
        ):
            raise ValueError(
                "rate_per_sec and duration_secs must be > 0, publishers >= 1, pad_bytes >= 0"
            )
        ratios = (
            self.duplicate_ratio,
            self.malformed_ratio,
            self.flood.share if self.flood else 0.0,
        )
        if not all(0.0 <= r <= 1.0 for r in ratios):
            raise ValueError(
                f"ratios must be within [0, 1]: duplicate, malformed, flood share = {ratios}"
            )
        unknown = sorted(set(self.dialects) - set(_KNOWN_DIALECTS))
        if unknown:
            raise ValueError(f"unknown dialects {unknown}; known: {list(_KNOWN_DIALECTS)}")
        if not any(w > 0 for w in self.dialects.values()):
            raise ValueError("dialects needs at least one positive weight")
        if self.duplicate_ratio > 0 and self.publishers < 2:
            raise ValueError(
                "duplicate_ratio > 0 needs publishers >= 2 (copies go out from another socket)"
            )

    def rate_at(self, elapsed_secs: float) -> float:
        """The target rate (messages/s) at ``elapsed_secs`` since the start, bursts included."""
        burst = self.burst
        if burst is not None and elapsed_secs % burst.every_secs < burst.length_secs:
            return self.rate_per_sec * burst.factor
        return self.rate_per_sec

    def slots_until(self, elapsed_secs: float) -> float:
        """Message slots due from the start until ``elapsed_secs``: the integral of ``rate_at``."""
        t = min(max(elapsed_secs, 0.0), self.duration_secs)
        burst = self.burst
        if burst is None:
            return self.rate_per_sec * t
        cycles, within = divmod(t, burst.every_secs)
        burst_secs = cycles * burst.length_secs + min(within, burst.length_secs)
        return self.rate_per_sec * (t + burst_secs * (burst.factor - 1.0))

    def expected_slots(self) -> int:
        """Message slots in the whole run (malformed and flood included, duplicate copies not)."""
        return int(self.slots_until(self.duration_secs))

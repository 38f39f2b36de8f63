"""Cutover phases, the allowed transitions and their guards, in one place (DESIGN §4).

``zmq_only -> dual -> nats_primary -> nats_only``: forward one step at a time,
and only when the guards of the target pass (or ``force``); backward to any
earlier phase at once, with no guard (rollback must always be possible).

What each phase does (``PhaseBehaviour``):

==============  ============  ===============  ===================================
phase           ZMQ :7150     to JetStream     legacy republish (ZMQ PUB)
==============  ============  ===============  ===================================
zmq_only        bound         nothing          original frames, byte for byte
dual            bound         every event      original frames, byte for byte
nats_primary    bound         every event      original frames + NATS-native events
nats_only       released      (native only)    off
==============  ============  ===============  ===================================

Guards (``check_transition``), each configurable in ``phase.guards``:

* ``parity`` (into ``nats_primary``): the parity checker's ratio over its window
  is at least ``min_parity_ratio`` with at least ``min_parity_events`` compared;
* ``spool_empty`` (into ``nats_primary`` and ``nats_only``): no backlog is held
  back (NATS connected, the spool not draining, no publish waiting for a
  retry; live messages in flight do not count);
* ``quiet_period`` (into ``nats_only``): no ZMQ frame received and no ZMQ
  publisher connected for ``quiet_period_secs``;
* ``legacy_nats_quiet`` (into ``nats_only``): no event of the legacy NATS libraries
  (``errors.>``) seen by any bridge of the fleet for ``quiet_period_secs`` (the migration
  view, ``bridge.migration.legacy_idle_secs``).

This module decides only; ``bridge.cutover`` acts on its decisions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from contracts.messages import GuardResult

__all__ = [
    "GuardInputs",
    "Phase",
    "PhaseBehaviour",
    "TransitionCheck",
    "check_transition",
]


class Phase(str, enum.Enum):
    """The four cutover phases, in their forward order."""

    ZMQ_ONLY = "zmq_only"
    DUAL = "dual"
    NATS_PRIMARY = "nats_primary"
    NATS_ONLY = "nats_only"

    @property
    def step(self) -> int:
        """0 (zmq_only) .. 3 (nats_only)."""
        return _ORDER.index(self)

    @property
    def behaviour(self) -> PhaseBehaviour:
        return _BEHAVIOUR[self]


_ORDER = list(Phase)


@dataclass(frozen=True)
class PhaseBehaviour:
    """What the bridge does in a phase.

    ``ingest``: 7150 is bound and read. ``to_jetstream``: decoded events and
    dead letters are published (else shadow decode + inventory only).
    ``republish_frames``: frames read from ZMQ are re-sent byte for byte on the
    legacy republish socket. ``republish_native``: NATS-native events are
    re-emitted to ZMQ in a legacy dialect.
    """

    ingest: bool
    to_jetstream: bool
    republish_frames: bool
    republish_native: bool


_BEHAVIOUR = {
    Phase.ZMQ_ONLY: PhaseBehaviour(
        ingest=True, to_jetstream=False, republish_frames=True, republish_native=False
    ),
    Phase.DUAL: PhaseBehaviour(
        ingest=True, to_jetstream=True, republish_frames=True, republish_native=False
    ),
    Phase.NATS_PRIMARY: PhaseBehaviour(
        ingest=True, to_jetstream=True, republish_frames=True, republish_native=True
    ),
    Phase.NATS_ONLY: PhaseBehaviour(
        ingest=False, to_jetstream=True, republish_frames=False, republish_native=False
    ),
}


class GuardSettings(Protocol):  # bridge.config.model.PhaseGuardsConfig
    min_parity_ratio: float
    min_parity_events: int
    require_spool_empty: bool
    quiet_period_secs: float


@dataclass(frozen=True)
class GuardInputs:
    """What the guards look at, sampled by the caller at decision time.

    ``parity_ratio``: matched / compared over the parity window, ``None`` when no
    checker runs or nothing was compared; ``parity_events``: events compared in
    that window; ``parity_window_secs`` for the message. ``backlog``: messages
    held back (see ``spool_empty`` in the module note). ``zmq_idle_secs``: seconds since the last
    ZMQ frame or open publisher connection (``inf`` when none was ever seen).
    ``legacy_nats_idle_secs``: seconds since any bridge of the fleet saw an event of a legacy
    NATS library (``inf`` when none was ever seen).
    """

    parity_ratio: float | None = None
    parity_events: int = 0
    parity_window_secs: float = 0.0
    backlog: int = 0
    zmq_idle_secs: float = float("inf")
    legacy_nats_idle_secs: float = float("inf")


@dataclass(frozen=True)
class TransitionCheck:
    """``allowed``: the transition may happen now. ``reason``: why not, in words
    (empty when allowed). ``guards``: every guard evaluated, for ``PhaseChanged``."""

    allowed: bool
    reason: str
    guards: list[GuardResult]
    forced: bool = False


def check_transition(
    current: Phase,
    target: Phase,
    inputs: GuardInputs,
    settings: GuardSettings,
    *,
    force: bool = False,
) -> TransitionCheck:
    """Decide whether ``current -> target`` may happen now.

    Backward (or same) phase: always allowed, no guard. Forward: only one step
    at a time (``force`` does not skip steps: each phase's behaviour is what
    the next guard measures), and only when every guard of ``target`` passes,
    unless ``force``; guards are still evaluated and reported when forced.
    """
    if target.step <= current.step:
        return TransitionCheck(True, "", [])
    if target.step > current.step + 1:
        nxt = _ORDER[current.step + 1].value
        return TransitionCheck(
            False, f"{current.value} -> {target.value} skips a phase: go to {nxt} first", []
        )
    guards = _guards_for(target, inputs, settings)
    failed = [g for g in guards if not g.passed]
    if failed and not force:
        return TransitionCheck(False, "; ".join(g.detail for g in failed), guards)
    return TransitionCheck(True, "", guards, forced=bool(failed))


def _guards_for(target: Phase, inputs: GuardInputs, s: GuardSettings) -> list[GuardResult]:
    out = []
    if target is Phase.NATS_PRIMARY:
        out.append(_parity(inputs, s))
    if target in (Phase.NATS_PRIMARY, Phase.NATS_ONLY) and s.require_spool_empty:
        out.append(
            GuardResult(
                name="spool_empty",
                passed=inputs.backlog == 0,
                observed=float(inputs.backlog),
                required=0.0,
                detail=f"backlog {inputs.backlog} messages held back (spool draining, retries or NATS down; needs 0)",
            )
        )
    if target is Phase.NATS_ONLY:
        idle = inputs.zmq_idle_secs
        out.append(
            GuardResult(
                name="quiet_period",
                passed=idle >= s.quiet_period_secs,
                observed=None if idle == float("inf") else round(idle, 3),
                required=s.quiet_period_secs,
                detail=f"ZMQ quiet for {idle:.1f} s of the {s.quiet_period_secs:g} s required (frames or publishers seen)",
            )
        )
        idle = inputs.legacy_nats_idle_secs
        out.append(
            GuardResult(
                name="legacy_nats_quiet",
                passed=idle >= s.quiet_period_secs,
                observed=None if idle == float("inf") else round(idle, 3),
                required=s.quiet_period_secs,
                detail=f"legacy NATS (errors.>) quiet for {idle:.1f} s of the {s.quiet_period_secs:g} s required (fleet-wide)",
            )
        )
    return out


def _parity(inputs: GuardInputs, s: GuardSettings) -> GuardResult:
    ratio, n = inputs.parity_ratio, inputs.parity_events
    window = f"over {inputs.parity_window_secs:g} s ({n} events)"
    if ratio is None and s.min_parity_events == 0:
        detail = "parity not measured (min_parity_events is 0)"
        return GuardResult(
            name="parity", passed=True, observed=None, required=s.min_parity_ratio, detail=detail
        )
    if ratio is None or n < s.min_parity_events:
        detail = f"parity unknown: {n} events compared {window.split(' (')[0]}, needs >= {s.min_parity_events}"
        return GuardResult(
            name="parity", passed=False, observed=ratio, required=s.min_parity_ratio, detail=detail
        )
    passed = ratio >= s.min_parity_ratio
    op = ">=" if passed else "<"
    detail = f"parity {ratio:.4f} {op} {s.min_parity_ratio:.4f} {window}"
    return GuardResult(
        name="parity", passed=passed, observed=ratio, required=s.min_parity_ratio, detail=detail
    )

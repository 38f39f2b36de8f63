"""The phase controller: holds the phase in force, applies requests through the guards.

``request(target, by=..., force=...)`` asks ``bridge.phase.check_transition``
with fresh ``GuardInputs`` (sampled by the ``inputs`` callable); when allowed
it switches, persists the phase to ``<data_dir>/phase.json`` (so a restart,
even while NATS is unreachable, comes back in the last phase in force),
publishes a ``PhaseChanged`` event, updates ``busbridge_phase`` and calls
``on_change(old, new)`` so the bridge re-arms its sockets and tasks. A
refused request leaves everything as it is and is remembered in ``refusal``
(shown by ``/phase`` and ``busbridge phase``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bridge.config.model import PhaseGuardsConfig
from bridge.metrics import Metrics
from bridge.phase import GuardInputs, Phase, TransitionCheck, check_transition
from contracts.messages import GuardResult, PhaseChanged

__all__ = ["CutoverController", "Decision", "load_persisted_phase"]

log = logging.getLogger(__name__)


class _Persisted(msgspec.Struct):
    phase: Phase
    changed_at: datetime
    by: str


def load_persisted_phase(path: Path) -> Phase | None:
    """The phase last written by a controller at ``path``; None when absent or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Persisted).phase
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass
class Decision:
    """Outcome of one request: ``result`` is applied, forced, refused or unchanged."""

    result: str
    phase: Phase
    requested: Phase
    reason: str = ""
    guards: list[GuardResult] = field(default_factory=list)
    by: str = ""


class CutoverController:
    """See the module note. ``publish(msg)`` sends a bridge event down the pipeline."""

    def __init__(
        self,
        initial: Phase,
        *,
        bridge_id: str,
        machine: str,
        state_path: Path,
        guards: PhaseGuardsConfig,
        inputs: Callable[[], GuardInputs],
        publish: Callable[[PhaseChanged], None],
        metrics: Metrics,
        on_change: Callable[[Phase, Phase], None] = lambda old, new: None,
    ) -> None:
        self.phase = initial
        self.guards = guards
        self._bridge_id, self._machine = bridge_id, machine
        self._state_path = state_path
        self._inputs = inputs
        self._publish = publish
        self._m = metrics
        self.on_change = on_change
        self.last: Decision | None = None
        self._set_metric()

    @property
    def refusal(self) -> Decision | None:
        """The last decision if it was a refusal still standing (another phase is in force)."""
        return self.last if self.last is not None and self.last.result == "refused" else None

    def start(self, by: str) -> None:
        """Persist the phase taken at startup (not a transition: no ``PhaseChanged``;
        heartbeats carry the phase)."""
        self._persist(by)
        log.info("phase %s at startup (%s)", self.phase.value, by)

    def request(self, target: Phase, *, by: str, force: bool = False) -> Decision:
        """Move to ``target`` if the transition table and guards allow; see ``bridge.phase``."""
        if target is self.phase:
            decision = Decision("unchanged", self.phase, target, by=by)
        else:
            check = check_transition(self.phase, target, self._inputs(), self.guards, force=force)
            decision = self._decide(check, target, by)
        self.last = decision
        self._m.phase_transitions.labels(decision.result).inc()
        self._m.phase_desired_mismatch.set(1 if decision.result == "refused" else 0)
        return decision

    def _decide(self, check: TransitionCheck, target: Phase, by: str) -> Decision:
        if not check.allowed:
            log.warning(
                "phase %s -> %s refused (%s): %s", self.phase.value, target.value, by, check.reason
            )
            return Decision("refused", self.phase, target, check.reason, check.guards, by)
        old, self.phase = self.phase, target
        self._set_metric()
        self._persist(by)
        self._publish(self._event(old.value, target, by, check.forced, check.guards))
        result = "forced" if check.forced else "applied"
        log.warning(
            "phase %s -> %s (%s%s)",
            old.value,
            target.value,
            by,
            ", guards overridden" if check.forced else "",
        )
        self.on_change(old, target)
        return Decision(result, target, target, "", check.guards, by)

    def _event(
        self, old: str, new: Phase, by: str, forced: bool, guards: list[GuardResult]
    ) -> PhaseChanged:
        return PhaseChanged(
            event_id=f"phase-{uuid.uuid4()}",
            bridge_id=self._bridge_id,
            machine=self._machine,
            from_phase=old,
            to_phase=new.value,
            by=by,
            forced=forced,
            guards=guards,
            changed_at=datetime.now(UTC),
        )

    def _set_metric(self) -> None:
        for p in Phase:
            self._m.phase.labels(p.value).set(1 if p is self.phase else 0)

    def _persist(self, by: str) -> None:
        """Write the phase atomically (temp file + rename); a failure is logged, not raised."""
        tmp = self._state_path.with_suffix(".tmp")
        try:
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(msgspec.json.encode(_Persisted(self.phase, datetime.now(UTC), by)))
            os.replace(tmp, self._state_path)
        except OSError as exc:
            log.error("cannot persist phase to %s: %s", self._state_path, exc)

"""Phase transition table and guards (bridge.phase), the controller (bridge.cutover)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.model import PhaseGuardsConfig
from bridge.cutover import CutoverController, load_persisted_phase
from bridge.metrics import Metrics
from bridge.phase import GuardInputs, Phase, check_transition

GUARDS = PhaseGuardsConfig(
    min_parity_ratio=0.999, min_parity_events=100, require_spool_empty=True, quiet_period_secs=600
)
CLEAN = GuardInputs(
    parity_ratio=1.0, parity_events=1000, parity_window_secs=300, backlog=0, zmq_idle_secs=601
)


@pytest.mark.parametrize("current", list(Phase))
@pytest.mark.parametrize("target", list(Phase))
def test_table_forward_one_step_backward_any(current: Phase, target: Phase) -> None:
    check = check_transition(current, target, CLEAN, GUARDS)
    assert check.allowed == (target.step <= current.step + 1)
    if target.step > current.step + 1:
        assert "skips a phase" in check.reason
        assert not check_transition(
            current, target, CLEAN, GUARDS, force=True
        ).allowed  # force never skips


def test_rollback_needs_no_guard_even_with_everything_failing() -> None:
    bad = GuardInputs(parity_ratio=0.1, parity_events=5, backlog=10_000, zmq_idle_secs=0)
    for current in Phase:
        for target in Phase:
            if target.step < current.step:
                check = check_transition(current, target, bad, GUARDS)
                assert check.allowed and check.guards == []


def test_parity_guard_says_by_how_much() -> None:
    inputs = GuardInputs(parity_ratio=0.982, parity_events=1234, parity_window_secs=300, backlog=0)
    check = check_transition(Phase.DUAL, Phase.NATS_PRIMARY, inputs, GUARDS)
    assert not check.allowed
    assert check.reason == "parity 0.9820 < 0.9990 over 300 s (1234 events)"
    [parity, spool] = check.guards
    assert (parity.name, parity.passed, parity.observed, parity.required) == (
        "parity",
        False,
        0.982,
        0.999,
    )
    assert spool.passed


def test_parity_unknown_and_too_few_events_refuse() -> None:
    for inputs in (
        GuardInputs(),
        GuardInputs(parity_ratio=1.0, parity_events=99, parity_window_secs=300),
    ):
        check = check_transition(Phase.DUAL, Phase.NATS_PRIMARY, inputs, GUARDS)
        assert (
            not check.allowed
            and "parity unknown" in check.reason
            and "needs >= 100" in check.reason
        )


def test_parity_not_required_when_min_events_is_zero() -> None:
    guards = PhaseGuardsConfig(min_parity_events=0)
    assert check_transition(Phase.DUAL, Phase.NATS_PRIMARY, GuardInputs(), guards).allowed


def test_spool_and_quiet_period_guards() -> None:
    inputs = GuardInputs(backlog=42, zmq_idle_secs=12.5)
    check = check_transition(Phase.NATS_PRIMARY, Phase.NATS_ONLY, inputs, GUARDS)
    assert not check.allowed
    assert "backlog 42 messages" in check.reason
    assert "ZMQ quiet for 12.5 s of the 600 s required" in check.reason
    relaxed = PhaseGuardsConfig(require_spool_empty=False, quiet_period_secs=10)
    assert check_transition(Phase.NATS_PRIMARY, Phase.NATS_ONLY, inputs, relaxed).allowed


def test_force_passes_and_keeps_the_failed_guards() -> None:
    check = check_transition(
        Phase.DUAL, Phase.NATS_PRIMARY, GuardInputs(backlog=3), GUARDS, force=True
    )
    assert check.allowed and check.forced
    assert [g.name for g in check.guards if not g.passed] == ["parity", "spool_empty"]
    assert not check_transition(
        Phase.ZMQ_ONLY, Phase.DUAL, CLEAN, GUARDS, force=True
    ).forced  # no guard failed


def test_behaviour_table() -> None:
    assert [p.behaviour.to_jetstream for p in Phase] == [False, True, True, True]
    assert [p.behaviour.ingest for p in Phase] == [True, True, True, False]
    assert [p.behaviour.republish_frames for p in Phase] == [True, True, True, False]
    assert [p.behaviour.republish_native for p in Phase] == [False, False, True, False]


def _controller(
    tmp_path: Path, inputs: GuardInputs, published: list, changes: list
) -> CutoverController:
    return CutoverController(
        Phase.ZMQ_ONLY,
        bridge_id="b1",
        machine="MainPC",
        state_path=tmp_path / "phase.json",
        guards=GUARDS,
        inputs=lambda: inputs,
        publish=published.append,
        metrics=Metrics(),
        on_change=lambda old, new: changes.append((old, new)),
    )


def test_controller_applies_persists_publishes_and_refuses(tmp_path: Path) -> None:
    published: list = []
    changes: list = []
    c = _controller(
        tmp_path,
        GuardInputs(parity_ratio=0.5, parity_events=500, parity_window_secs=60),
        published,
        changes,
    )
    c.start("startup (config)")
    assert published == [] and load_persisted_phase(tmp_path / "phase.json") is Phase.ZMQ_ONLY
    d = c.request(Phase.DUAL, by="config (reload)")
    assert (d.result, c.phase) == ("applied", Phase.DUAL)
    d = c.request(Phase.NATS_PRIMARY, by="kv:fleet@7")
    assert (d.result, c.phase, c.refusal) == ("refused", Phase.DUAL, d)
    assert d.reason.startswith("parity 0.5000 < 0.9990")
    d = c.request(Phase.NATS_PRIMARY, by="kv:fleet@8", force=True)
    assert (d.result, c.phase, c.refusal) == ("forced", Phase.NATS_PRIMARY, None)
    assert c.request(Phase.NATS_PRIMARY, by="x").result == "unchanged"
    assert c.request(Phase.ZMQ_ONLY, by="rollback").result == "applied"
    assert [(e.from_phase, e.to_phase, e.forced, e.by) for e in published] == [
        ("zmq_only", "dual", False, "config (reload)"),
        ("dual", "nats_primary", True, "kv:fleet@8"),
        ("nats_primary", "zmq_only", False, "rollback"),
    ]
    assert [g.name for g in published[1].guards] == ["parity", "spool_empty"]
    assert changes == [
        (Phase.ZMQ_ONLY, Phase.DUAL),
        (Phase.DUAL, Phase.NATS_PRIMARY),
        (Phase.NATS_PRIMARY, Phase.ZMQ_ONLY),
    ]
    assert load_persisted_phase(tmp_path / "phase.json") is Phase.ZMQ_ONLY
    m = c._m.registry
    assert m.get_sample_value("busbridge_phase", {"phase": "zmq_only"}) == 1
    assert m.get_sample_value("busbridge_phase", {"phase": "dual"}) == 0
    assert m.get_sample_value("busbridge_phase_transitions_total", {"result": "refused"}) == 1
    assert m.get_sample_value("busbridge_phase_transitions_total", {"result": "forced"}) == 1


def test_persisted_phase_unreadable_is_none(tmp_path: Path) -> None:
    (tmp_path / "phase.json").write_text("{not json")
    assert load_persisted_phase(tmp_path / "phase.json") is None
    assert load_persisted_phase(tmp_path / "missing.json") is None

"""FloodGate with a fake clock: windows, summaries that add up, rules, LRU, hot rules, global ceiling."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.pipeline.fingerprint import fingerprint
from bridge.pipeline.flood import GLOBAL_RULE_NAME, FloodGate, FloodRule, Verdict
from contracts.messages import ErrorEvent, FloodEnded, FloodStarted, FloodSummary, Severity
from tests.support.fakes import FakeClock

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
DEFAULT = FloodRule("default", threshold=5, window_secs=60.0)
CONN = FloodRule(
    "connection_error", threshold=10, window_secs=60.0, pattern=r"(?i)connection[ _]?error"
)
MEM = FloodRule(
    "memory_error",
    threshold=3,
    window_secs=300.0,
    pattern=r"(?i)memory",
    escalate_to=Severity.CRITICAL,
)


def _ev(
    source: str = "A",
    error_type: str = "boom",
    message: str = "it broke #1",
    severity=Severity.ERROR,
) -> ErrorEvent:
    return ErrorEvent(
        event_id="x",
        occurred_at=None,
        received_at=T0,
        machine="M",
        source=source,
        severity=severity,
        error_type=error_type,
        message=message,
        fingerprint=fingerprint(source, error_type, message),
    )


def _gate(clock: FakeClock, **kw) -> FloodGate:
    opts = {"machine": "M", "summary_interval_secs": 10.0, "clock": clock}
    opts.update(kw)
    return FloodGate([CONN, MEM], DEFAULT, **opts)


def _run(gate: FloodGate, events, clock: FakeClock, step: float = 0.0):
    verdicts, emitted = [], []
    for ev in events:
        decision = gate.check(ev)
        verdicts.append(decision.verdict)
        emitted += decision.events
        clock.advance(step)
        emitted += gate.tick()
    return verdicts, emitted


def test_first_n_pass_then_suppress_with_one_started() -> None:
    clock = FakeClock()
    verdicts, emitted = _run(_gate(clock), [_ev() for _ in range(8)], clock)
    assert verdicts == [Verdict.PASS] * 5 + [Verdict.SUPPRESS] * 3
    assert [type(e) for e in emitted] == [FloodStarted]
    started = emitted[0]
    assert (started.rule, started.threshold, started.sample.message) == (
        "default",
        5,
        "it broke #1",
    )


def test_numbers_in_messages_share_a_fingerprint() -> None:
    clock = FakeClock()
    verdicts, _ = _run(_gate(clock), [_ev(message=f"it broke #{n}") for n in range(7)], clock)
    assert verdicts.count(Verdict.SUPPRESS) == 2


def test_summaries_and_end_add_up_exactly() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    sent = 1000
    verdicts, emitted = _run(gate, [_ev() for _ in range(sent)], clock, step=0.05)  # 50 s of storm
    clock.advance(61.0)  # quiet for a whole window
    emitted += gate.tick()
    summaries = [e for e in emitted if isinstance(e, FloodSummary)]
    ended = [e for e in emitted if isinstance(e, FloodEnded)]
    passed = verdicts.count(Verdict.PASS)
    assert passed == 5 and len(summaries) >= 5 and len(ended) == 1
    assert passed + sum(s.suppressed for s in summaries) == sent
    assert ended[0].suppressed_total == sent - passed == summaries[-1].suppressed_total
    assert gate.active_floods == 0


def test_window_reset_lets_threshold_pass_again() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    assert _run(gate, [_ev() for _ in range(6)], clock)[0][-1] is Verdict.SUPPRESS
    clock.advance(60.0)
    assert _run(gate, [_ev() for _ in range(5)], clock)[0] == [Verdict.PASS] * 5


def test_critical_is_never_suppressed_unless_configured() -> None:
    clock = FakeClock()
    crit = [_ev(severity=Severity.CRITICAL) for _ in range(50)]
    assert set(_run(_gate(clock), crit, clock)[0]) == {Verdict.PASS}
    assert _run(_gate(clock, suppress_critical=True), crit, clock)[0].count(Verdict.SUPPRESS) == 45


def test_rules_match_error_type_or_message_and_can_escalate() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    verdicts, _ = _run(gate, [_ev(error_type="ConnectionError") for _ in range(12)], clock)
    assert verdicts.count(Verdict.PASS) == 10
    verdicts, emitted = _run(
        gate, [_ev(message="CUDA out of memory", error_type="x") for _ in range(4)], clock
    )
    assert verdicts.count(Verdict.PASS) == 3
    assert emitted[0].rule == "memory_error" and emitted[0].severity is Severity.CRITICAL


def test_lru_eviction_closes_an_active_flood_without_losing_counts() -> None:
    clock = FakeClock()
    gate = _gate(clock, max_fingerprints=2)
    _, _emitted = _run(gate, [_ev(source="A") for _ in range(8)], clock)
    _, more = _run(gate, [_ev(source="B"), _ev(source="C")], clock)  # A is forgotten
    summary = next(e for e in more if isinstance(e, FloodSummary))
    assert summary.source == "A" and summary.suppressed == 3
    assert any(isinstance(e, FloodEnded) and e.source == "A" for e in more)
    assert gate.tracked == 2


def test_update_rules_keeps_windows_and_floods() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    _run(gate, [_ev() for _ in range(6)], clock)
    gate.update_rules([], FloodRule("default", threshold=100, window_secs=60.0))
    assert gate.active_floods == 1
    assert _run(gate, [_ev()], clock)[0] == [Verdict.PASS]  # count 7 <= 100 now


def test_flush_ends_every_flood() -> None:
    clock = FakeClock()
    gate = _gate(clock)
    _run(gate, [_ev(source=s) for s in "ABAB" * 5], clock)
    out = gate.flush()
    assert sorted(type(e).__name__ for e in out) == ["FloodEnded"] * 2 + ["FloodSummary"] * 2
    assert gate.active_floods == 0


def test_global_ceiling_sheds_lowest_severities_first_and_never_critical() -> None:
    clock = FakeClock()
    gate = _gate(clock, global_max_per_sec=100)
    levels = [Severity.INFO, Severity.WARNING, Severity.ERROR, Severity.CRITICAL]
    events = [
        _ev(source=f"S{n}", severity=levels[n % 4]) for n in range(400)
    ]  # 400 fingerprints, one second
    verdicts, emitted = _run(gate, events, clock)
    passed = dict.fromkeys(levels, 0)
    for ev, v in zip(events, verdicts, strict=True):
        passed[ev.severity] += v is Verdict.PASS
    assert passed[Severity.CRITICAL] == 100
    assert passed[Severity.INFO] < passed[Severity.WARNING] < passed[Severity.ERROR] < 100
    clock.advance(11.0)
    emitted += gate.tick()
    shed = sum(
        e.suppressed for e in emitted if isinstance(e, FloodSummary) and e.rule == GLOBAL_RULE_NAME
    )
    assert shed == 400 - sum(passed.values())


def test_constructor_and_rules_are_checked() -> None:
    with pytest.raises(ValueError):
        FloodGate([], DEFAULT, machine="M", summary_interval_secs=0, clock=FakeClock())
    with pytest.raises(ValueError):
        FloodGate(
            [FloodRule("bad", threshold=-1, window_secs=1)], DEFAULT, machine="M", clock=FakeClock()
        )

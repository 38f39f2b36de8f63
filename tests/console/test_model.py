"""The console's index and alert rules, without servers: grouping, states, regressions, paging,
trends, floods, dead letters, and the rule engine's once-per-key decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from consumers.console.alerts import AlertRule, AlertsConfig, RuleEngine, default_rules
from consumers.console.model import ConsoleModel, EventFilter, IssueState
from consumers.console.service import hexdump
from consumers.console.settings import load_settings
from contracts.messages import (
    DeadLetter,
    DeadLetterReason,
    DeadLetterSummary,
    Dialect,
    ErrorEvent,
    FloodEnded,
    FloodStarted,
    FloodSummary,
    LegacyOrigin,
    Severity,
)

T0 = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)


def ev(
    n: int,
    *,
    fp: str = "fp1",
    source: str = "AgentA",
    machine: str = "MainPC",
    severity: Severity = Severity.ERROR,
    secs: float | None = None,
    dialect: Dialect | None = Dialect.ERRPUB_ENVELOPE,
    message: str = "boom",
) -> ErrorEvent:
    at = T0 + timedelta(seconds=n if secs is None else secs)
    return ErrorEvent(
        event_id=f"e{n}",
        occurred_at=at,
        received_at=at,
        machine=machine,
        source=source,
        severity=severity,
        error_type="RuntimeError",
        message=f"{message} {n}",
        fingerprint=fp,
        legacy=LegacyOrigin(dialect=dialect) if dialect else None,
    )


def test_events_of_one_fingerprint_are_one_issue_with_counts_machines_and_agents() -> None:
    m = ConsoleModel()
    m.ingest(1, ev(1, machine="MainPC"))
    m.ingest(2, ev(2, machine="PC2", severity=Severity.CRITICAL))
    m.ingest(3, ev(3, fp="fp2", source="AgentB"))
    m.ingest(3, ev(99))  # a redelivered sequence is ignored
    issue = m.issues["fp1"]
    assert (issue.count, issue.first_seq, issue.last_seq) == (2, 1, 2)
    assert issue.severity == "critical" and dict(issue.machines) == {"MainPC": 1, "PC2": 1}
    assert set(issue.agents) == {"MainPC/AgentA", "PC2/AgentA"}
    assert issue.first_seen == T0.timestamp() + 1 and issue.last_seen == T0.timestamp() + 2
    page = m.issues_page(sort="count", now=T0.timestamp() + 10)
    assert [r["fingerprint"] for r in page["rows"]] == ["fp1", "fp2"] and page["total"] == 2


def test_a_resolved_issue_with_a_later_event_shows_as_a_regression() -> None:
    m = ConsoleModel()
    m.ingest(1, ev(1))
    m.set_state("fp1", IssueState(state="resolved", resolved_seq=1, at=1.0), revision=1)
    assert m.display_state(m.issues["fp1"]) == ("resolved", False)
    assert m.issues_page(now=0)["total"] == 0  # not unresolved
    m.ingest(5, ev(5))
    assert m.display_state(m.issues["fp1"]) == ("unresolved", True)
    [row] = m.issues_page(now=0)["rows"]
    assert row["regression"] and row["state"] == "unresolved"
    m.set_state("fp1", IssueState(state="ignored", at=2.0), revision=2)
    assert m.display_state(m.issues["fp1"]) == ("ignored", False)
    assert not m.set_state("fp1", IssueState(state="resolved"), revision=1)  # older revision


def test_a_state_change_keeps_the_earlier_decisions_in_its_history() -> None:
    first = IssueState().then(state="resolved", note="fixed", by="ana", at=10.0, resolved_seq=4)
    second = first.then(state="unresolved", note="back", by="bo", at=20.0)
    assert (second.state, second.note, second.resolved_seq) == ("unresolved", "back", 4)
    assert [h["note"] for h in second.history] == ["fixed"]
    assert msgspec.json.decode(msgspec.json.encode(second), type=IssueState) == second


def test_the_feed_pages_newest_first_with_filters_and_text_search() -> None:
    m = ConsoleModel()
    for n in range(1, 251):
        source = "AgentA" if n % 2 else "AgentB"
        m.ingest(
            n, ev(n, source=source, fp=f"fp{n % 3}", message="disk full" if n % 5 == 0 else "x")
        )
    page = m.events_page(EventFilter(sources=("AgentB",)), limit=100)
    assert [r.seq for r in page["rows"][:3]] == [250, 248, 246] and len(page["rows"]) == 100
    older = m.events_page(EventFilter(sources=("AgentB",)), before_seq=page["next_before_seq"])
    assert (
        older["rows"][0].seq == 50 and len(older["rows"]) == 25 and older["next_before_seq"] is None
    )
    found = m.events_page(EventFilter(q="DISK FULL", since=T0.timestamp() + 200))
    assert [r.seq for r in found["rows"]] == [250, 245, 240, 235, 230, 225, 220, 215, 210, 205, 200]
    assert m.events_page(EventFilter(until=T0.timestamp() + 2))["rows"][0].seq == 2


def test_the_index_is_bounded_but_counts_are_not() -> None:
    m = ConsoleModel(max_events=100)
    for n in range(1, 1001):
        m.ingest(n, ev(n))
    assert len(m.events) <= 100 and m.events[-1].seq == 1000
    assert m.issues["fp1"].count == 1000 and m.agents["MainPC/AgentA"].count == 1000
    assert m.event_row(1) is None and m.event_row(1000) is not None


def test_trends_count_per_minute_hour_and_day() -> None:
    m = ConsoleModel()
    for n in range(10):
        m.ingest(n + 1, ev(n, secs=n * 30))  # two per minute for five minutes
    now = T0.timestamp() + 299
    series = m.issues["fp1"].series
    hour = series.buckets("1h", now)
    assert len(hour) == 60 and hour[-5:] == [2, 2, 2, 2, 2] and sum(hour) == 10
    assert series.buckets("24h", now)[-1] == 10 and len(series.buckets("24h", now)) == 24
    assert series.buckets("7d", now)[-1] == 10 and len(series.buckets("7d", now)) == 7


def test_transport_of_each_event_per_agent() -> None:
    m = ConsoleModel()
    m.ingest(1, ev(1))
    m.ingest(2, ev(2, dialect=None))
    m.ingest(3, ev(3, dialect=Dialect.NATS_LIBRARY_B))
    assert dict(m.agents["MainPC/AgentA"].transports) == {
        "zmq:errpub_envelope": 1,
        "native:native": 1,
        "nats:library_b": 1,
    }


def test_floods_are_active_until_they_end_with_their_summaries() -> None:
    m = ConsoleModel()
    sample = ev(1)
    base = {
        "machine": "MainPC",
        "fingerprint": "fp1",
        "source": "AgentA",
        "error_type": "RuntimeError",
        "rule": "timeout_error",
        "severity": Severity.ERROR,
    }
    m.ingest(
        1,
        FloodStarted(
            event_id="f1", threshold=5, window_secs=30, started_at=T0, sample=sample, **base
        ),
    )
    m.ingest(
        2,
        FloodSummary(
            event_id="f2",
            suppressed=40,
            suppressed_total=40,
            first_seen=T0,
            last_seen=T0,
            sample=sample,
            **base,
        ),
    )
    [active] = m.floods_view()["active"]
    assert active["suppressed_total"] == 40 and len(active["summaries"]) == 1
    m.ingest(3, FloodEnded(event_id="f3", started_at=T0, ended_at=T0, suppressed_total=40, **base))
    view = m.floods_view()
    assert not view["active"] and view["ended"][0]["ended_at"] == T0.timestamp()


def test_dead_letters_are_listed_newest_first_with_a_preview() -> None:
    m = ConsoleModel(max_dead_letters=2)
    for n in range(1, 4):
        m.ingest(
            n,
            DeadLetter(
                event_id=f"d{n}",
                received_at=T0,
                machine="PC2",
                reason=DeadLetterReason.INVALID_UTF8,
                frames=[b"ERROR:\xff" + bytes([48 + n])],
                frame_sizes=[8],
            ),
        )
    rows = m.dead_letters_page()
    assert [r.seq for r in rows] == [3, 2] and m.dead_letter_total == 3
    assert rows[0].preview == "ERROR:\ufffd3"
    assert hexdump(b"ERROR:\xff")[0].startswith("00000000  45 52 52 4f 52 3a ff")


def _engine(rules: list[AlertRule], resolved: dict[str, int] | None = None) -> RuleEngine:
    return RuleEngine(rules, lambda fp: (resolved or {}).get(fp, 0))


def test_agent_flood_fires_above_twenty_in_five_minutes_then_cools_down() -> None:
    engine = _engine([r for r in default_rules() if r.name == "agent_flood"])
    fired = []
    for n in range(60):
        fired += engine.observe(n + 1, ev(n, secs=n * 5, fp=f"fp{n}"), f"fp{n}")
    assert [(a.event_seq, a.count) for a in fired] == [(21, 21)]  # 21st within 300 s; cooldown
    assert fired[0].alert_id == "agent_flood.MainPC.AgentA.21" and fired[0].threshold == 20
    late = engine.observe(99, ev(99, secs=21 * 5 + 300, fp="x"), "x")
    assert [a.rule for a in late] == ["agent_flood"]  # cooldown over, still > 20 in the window


def test_new_issue_regression_and_critical_fire_once_each() -> None:
    resolved: dict[str, int] = {}
    engine = _engine(default_rules(), resolved)
    first = engine.observe(1, ev(1, severity=Severity.CRITICAL), "fp1")
    assert sorted(a.rule for a in first) == ["critical", "new_issue"]
    assert engine.observe(2, ev(2, severity=Severity.CRITICAL), "fp1") == []  # cooldown
    resolved["fp1"] = 2
    assert [a.alert_id for a in engine.observe(3, ev(3), "fp1")] == ["regression.fp1.r2"]
    assert engine.observe(4, ev(4), "fp1") == []  # one regression per resolution
    resolved["fp1"] = 4
    assert [a.rule for a in engine.observe(5, ev(5), "fp1")] == ["regression"]


def test_two_engines_over_the_same_events_decide_the_same_alerts() -> None:
    events = [ev(n, secs=n, fp=f"fp{n % 4}", source=f"A{n % 2}") for n in range(200)]
    a, b = _engine(default_rules()), _engine(default_rules())
    ids_a = [x.alert_id for n, e in enumerate(events) for x in a.observe(n + 1, e, e.fingerprint)]
    ids_b = [x.alert_id for n, e in enumerate(events) for x in b.observe(n + 1, e, e.fingerprint)]
    assert ids_a == ids_b and len(ids_a) == len(set(ids_a))


def test_settings_file_is_strict(tmp_path) -> None:
    from bridge.errors import ConfigError

    good = tmp_path / "ok.yaml"
    good.write_text(
        "port: 9170\nalerts:\n  webhooks: [{url: 'http://127.0.0.1:1/h'}]\n"
        "  rules: [{name: flood20, kind: agent_frequency, threshold: 20, window_secs: 300}]\n"
    )
    s = load_settings(str(good))
    assert s.port == 9170 and s.alerts.rules[0].cooldown() == 300
    assert load_settings(None).alerts == AlertsConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("alerts: {rules: [{name: x, kind: nope}]}\nextra: 1\n")
    with pytest.raises(ConfigError):
        load_settings(str(bad))


def test_a_dead_letter_summary_is_listed_with_its_count() -> None:
    m = ConsoleModel()
    sample = DeadLetter(
        event_id="d9",
        received_at=T0,
        machine="PC2",
        reason=DeadLetterReason.INVALID_JSON,
        frames=[b"\xff\xfe garbage"],
        frame_sizes=[11],
    )
    m.ingest(1, sample)
    m.ingest(
        2,
        DeadLetterSummary(
            event_id="s1",
            machine="PC2",
            key="invalid_json|-|fffe2067",
            reason=DeadLetterReason.INVALID_JSON,
            dialect_guess=None,
            leading_bytes=b"\xff\xfe g",
            threshold=20,
            window_secs=60.0,
            suppressed=4980,
            suppressed_total=4980,
            first_seen=T0,
            last_seen=T0,
            sample=sample,
        ),
    )
    summary, stored = m.dead_letters_page()
    assert (summary.seq, summary.suppressed, stored.suppressed) == (2, 4980, 0)
    assert "4980 more like this suppressed" in summary.detail and summary.preview.endswith(
        "garbage"
    )
    assert m.dead_letter_total == 1 and m.dead_letter_suppressed_total == 4980

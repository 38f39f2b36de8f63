"""Chaos scenarios (nats_outage, bridge_crash, cluster_node_loss, reload_under_load, phase_walk)
against real nats-servers, real ``busbridge run`` processes and real ZMQ sockets, each with a
tiny workload; plus the pure parts they rest on: the crash's at-risk window and the reload steps.

Every scenario must pass all its checks (by token: nothing lost that may not be, nothing
stored twice, in order) and show that the fault really happened (a spool backlog, a killed
leader and a new one, refused reloads, every phase walked).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import yaml

from bridge.config.load import parse_config
from bridge.config.reload import plan_reload
from bridge.errors import ConfigError
from loadtest.crash_window import crash_window
from loadtest.harness import BridgeProcess
from loadtest.load_producer import SentLog
from loadtest.message_mix import KIND_EVENT, KIND_MALFORMED
from loadtest.reload_steps import RELOAD_STEPS
from loadtest.results import ScenarioResult
from loadtest.scenarios import DEFAULTS, SCENARIOS, ScenarioOptions, run_scenario
from loadtest.workload import Workload

pytestmark = pytest.mark.integration

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)
CHAOS = ("nats_outage", "bridge_crash", "cluster_node_loss", "reload_under_load", "phase_walk")
SEC = 1_000_000_000


async def _run(name: str, tmp_path: Path, workload: Workload, **params: object) -> ScenarioResult:
    stages: list[str] = []
    options = ScenarioOptions(workload=workload, workdir=tmp_path, params=dict(params))
    result = await run_scenario(name, options, lambda stage, counters: stages.append(stage))
    failed = [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]
    assert result.scenario == name and result.passed, failed
    assert stages, "no progress reported"
    assert (
        msgspec.json.decode(msgspec.json.encode(result), type=ScenarioResult).extra == result.extra
    )  # JSON-able
    return result


def test_chaos_scenarios_are_registered_with_defaults() -> None:
    for name in CHAOS:
        assert name in SCENARIOS
        workload, _params, help_text = DEFAULTS[name]
        assert workload.duration_secs >= 10 and help_text
    assert (
        DEFAULTS["nats_outage"][1]["outage_secs"] == 60.0
    )  # DESIGN §7: a 60 s outage at 10k msg/s
    assert DEFAULTS["nats_outage"][0].rate_per_sec == 10_000.0


# --------------------------------------------------------------------------- pure parts


def _log(times_secs: list[float], kinds: list[int] | None = None) -> SentLog:
    """One publisher sending events n = 0, 1, ... at the given seconds."""
    kinds = kinds or [KIND_EVENT] * len(times_secs)
    return SentLog(
        publishers=1,
        n=[list(range(len(times_secs)))],
        kind=[kinds],
        sent_ns=[[int(t * SEC) for t in times_secs]],
        token_publisher=[[0] * len(times_secs)],
    )


def test_crash_window_excuses_only_losses_between_read_lag_and_ready() -> None:
    sent = _log([float(n) for n in range(10)])  # kill at 5.2 s, ready at 7.0 s, read lag 0.5 s
    stored = {(0, n) for n in range(10)} - {
        (0, 5),
        (0, 6),
    }  # 5 and 6 sent while the bridge was down
    w = crash_window(sent, stored, kill_ns=int(5.2 * SEC), ready_ns=7 * SEC, read_lag_ns=SEC // 2)
    assert (w.at_risk, w.at_risk_lost, w.lost_outside, w.not_resumed) == (2, 2, 0, [])
    assert (w.sent_before_kill, w.lost_before_kill, w.sent_while_down, w.lost_while_down) == (
        1,
        1,
        1,
        1,
    )

    w = crash_window(
        sent,
        stored - {(0, 2), (0, 8)},
        kill_ns=int(5.2 * SEC),
        ready_ns=7 * SEC,
        read_lag_ns=SEC // 2,
    )
    assert w.lost_outside == 2 and w.lost_outside_samples == [
        (0, 2),
        (0, 8),
    ]  # before the lag, after ready

    w = crash_window(
        sent, {(0, n) for n in range(5)}, kill_ns=int(5.2 * SEC), ready_ns=7 * SEC, read_lag_ns=SEC
    )
    assert w.not_resumed == [0] and w.lost_outside == 3  # 7, 8, 9: sent after ready, never stored


def test_crash_window_ignores_what_is_not_an_expected_event() -> None:
    sent = _log([1.0, 2.0, 9.0], kinds=[KIND_MALFORMED, KIND_EVENT, KIND_EVENT])
    w = crash_window(sent, {(0, 1), (0, 2)}, kill_ns=5 * SEC, ready_ns=6 * SEC, read_lag_ns=SEC)
    assert (w.at_risk, w.lost_outside, w.not_resumed) == (0, 0, [])


def test_reload_steps_expect_what_the_bridge_decides(tmp_path: Path) -> None:
    """Each rewrite, validated and planned the way the running bridge does, gives its expected result."""
    doc = yaml.safe_load(BridgeProcess(tmp_path, "nats://127.0.0.1:4222").config.read_text())
    running = parse_config(msgspec.json.encode(doc).decode(), "<running>")
    results = []
    for step in RELOAD_STEPS:
        new = step.edit(doc)
        try:
            candidate = parse_config(msgspec.json.encode(new).decode(), step.name)
        except ConfigError:
            results.append("invalid")
            continue
        plan = plan_reload(running, candidate)
        results.append(
            "applied"
            if plan.live and not plan.refused
            else "refused"
            if plan.refused and not plan.live
            else "?"
        )
        if step.expect == "applied":
            doc, running = new, candidate
    assert results == [s.expect for s in RELOAD_STEPS]
    assert {"applied", "invalid", "refused"} <= set(results)


# --------------------------------------------------------------------------- scenarios, real servers


async def test_nats_outage_loses_nothing_and_drains(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=400, duration_secs=30, publishers=2, dialects=ALL_DIALECTS)
    result = await _run(
        "nats_outage",
        tmp_path,
        w,
        outage_secs=2.0,
        warmup_secs=1.0,
        tail_secs=0.5,
        max_drain_secs=20.0,
    )
    x, probe = result.extra, result.probe
    assert probe is not None and probe.expected > 800 and probe.lost == 0 and probe.duplicated == 0
    assert (
        x["spool_peak_messages"] > 0 and x["drained"] and x["drain_stored"] > 0
    )  # the outage really backed up
    assert (
        x["spool_left_at_end"] == 0
    )  # read from the bridge's /metrics: drained, nothing held back
    assert x["backlog_drain_x_live"] > 0
    assert x["rss_before_outage_mib"] > 0 and x["rss_peak_hwm_mib"] >= x["rss_before_outage_mib"]
    assert x["traffic_secs"] < 30  # stopped once drained (+ tail), not at the cap


async def test_bridge_crash_keeps_the_spool_and_loses_only_at_risk_frames(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=400, duration_secs=4, publishers=2, dialects=ALL_DIALECTS)
    result = await _run(
        "bridge_crash", tmp_path, w, kill_after_secs=1.5, down_secs=0.5, backlog_secs=0.7
    )
    x, probe = result.extra, result.probe
    assert x["killed_pid"] != x["restarted_pid"]
    assert (
        x["spooled_at_kill"] > 50
    )  # NATS was down before the kill: a backlog on disk, all of it stored
    assert (
        x["at_risk"] > 0 and x["lost_outside"] == 0 and probe is not None and probe.duplicated == 0
    )
    assert probe.lost == x["at_risk_lost"]


async def test_cluster_node_loss_elects_a_new_leader_without_loss(tmp_path: Path) -> None:
    w = Workload(
        rate_per_sec=300, duration_secs=5, publishers=2, dialects={"D1": 1.0, "D3": 1.0, "D7": 1.0}
    )
    result = await _run("cluster_node_loss", tmp_path, w, kill_after_secs=1.5)
    x, probe = result.extra, result.probe
    assert x["killed_node"] in {"n1", "n2", "n3"} and x["new_leader"] != x["killed_node"]
    assert (
        x["election_secs"] is not None and probe is not None and probe.lost == probe.duplicated == 0
    )
    assert probe.expected == x["sent"]


async def test_reload_under_load_applies_live_changes_and_refuses_the_rest(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=400, duration_secs=6, publishers=2, dialects=ALL_DIALECTS)
    result = await _run("reload_under_load", tmp_path, w)
    x = result.extra
    assert [s["result"] for s in x["reloads"]] == [s.expect for s in RELOAD_STEPS]
    assert (
        x["reload_totals"]["applied"] == 5
        and x["reload_totals"]["invalid"] == 1
        and x["reload_totals"]["refused"] == 1
    )
    assert (
        result.probe is not None and result.probe.expected == x["sent"] and result.probe.lost == 0
    )


async def test_phase_walk_scenario_walks_every_phase_and_back(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=400, duration_secs=10, publishers=2)
    result = await _run("phase_walk", tmp_path, w, hold_secs=2.0)
    x = result.extra
    assert [wd["phase"] for wd in x["windows"]] == [
        "zmq_only",
        "dual",
        "nats_primary",
        "nats_only",
        "dual",
        "zmq_only",
    ]
    publishing = [wd for wd in x["windows"] if wd["phase"] in ("dual", "nats_primary")]
    assert all(wd["checked"] > 0 and wd["stored"] == wd["checked"] for wd in publishing)
    assert x["lost"] == x["leaked"] == x["duplicated"] == 0 and x["port_released_in_nats_only"]

"""The CI profile (``busbridge loadtest ci``): the whole profile passes against real nats-servers,
bridge processes and ZMQ producers, and it can fail: a fault injected into the stream's output
(deleted stored events, events stored again under fresh msg ids) turns it red, naming the check.

Judged on loss, duplicates and order only; nothing here looks at speed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtest.ci_profile import PROFILE, parse_injection, select
from loadtest.report import read_json
from loadtest.results import ScenarioResult
from tests.support.process import BUSBRIDGE

pytestmark = pytest.mark.integration

CORRECTNESS = {
    "lost",
    "duplicated",
    "out_of_order",
    "unexpected",
    "dead_letters",
    "stream_lost",
    "stream_duplicated",
}


def run_ci(
    tmp_path: Path, *args: str, timeout_secs: float
) -> tuple[int, str, list[ScenarioResult]]:
    """``busbridge loadtest ci ARGS`` as CI runs it; (exit status, stdout, results from --json)."""
    out = tmp_path / "ci.json"
    cmd = [
        BUSBRIDGE,
        "loadtest",
        "ci",
        "--json",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_secs)
    assert out.exists(), proc.stdout + proc.stderr
    return proc.returncode, proc.stdout, read_json(out)


@pytest.mark.timeout(600)
def test_profile_passes_every_scenario_on_loss_duplicates_and_order(tmp_path: Path) -> None:
    status, out, results = run_ci(tmp_path, timeout_secs=560)
    assert [r.scenario for r in results] == [e.scenario for e in PROFILE]
    failed = {r.scenario: [c for c in r.checks if not c.ok] for r in results if not r.passed}
    assert failed == {}, out
    assert status == 0
    for r in results:
        names = {c.name.split(":")[-1] for c in r.checks}
        assert {"stream_lost", "stream_duplicated"} <= names, r.scenario
        assert r.extra["ci_recount"] and all(
            rc["deleted"] == rc["republished"] == 0 for rc in r.extra["ci_recount"]
        )
        if (
            r.probe is not None
        ):  # every scenario with a probe is judged on loss, copies and order by token
            assert {"lost", "duplicated", "out_of_order"} <= names, r.scenario
            assert r.probe.expected > 0 and r.probe.received_unique > 0
    assert out.rstrip().endswith(f"== {len(PROFILE)} scenarios: {len(PROFILE)} passed, 0 failed")


@pytest.mark.timeout(120)
def test_injected_loss_turns_the_profile_red_naming_stream_lost(tmp_path: Path) -> None:
    status, out, [result] = run_ci(
        tmp_path, "--only", "steady", "--inject", "loss=5", timeout_secs=100
    )
    assert status == 1
    assert [c.name for c in result.checks if not c.ok] == ["stream_lost"]
    [check] = [c for c in result.checks if c.name == "stream_lost"]
    assert check.detail.startswith("5 of ")
    [recount] = result.extra["ci_recount"]
    assert (recount["deleted"], recount["missing"], recount["final_copies"]) == (5, 5, 0)
    assert recount["final_events"] == recount["live_events"] - 5
    assert "FAIL stream_lost: 5 of " in out and out.rstrip().endswith("1 failed (steady)")


@pytest.mark.timeout(120)
def test_injected_duplicates_turn_the_profile_red_naming_stream_duplicated(tmp_path: Path) -> None:
    status, out, [result] = run_ci(
        tmp_path, "--only", "steady", "--inject", "duplicate=4", timeout_secs=100
    )
    assert status == 1
    assert [c.name for c in result.checks if not c.ok] == ["stream_duplicated"]
    [check] = [c for c in result.checks if c.name == "stream_duplicated"]
    assert check.detail.startswith("4 extra stored copies")
    [recount] = result.extra["ci_recount"]
    assert (recount["republished"], recount["missing"], recount["final_copies"]) == (4, 0, 4)
    assert recount["final_events"] == recount["live_events"]
    assert "FAIL stream_duplicated: 4 extra" in out


def test_profile_covers_the_key_scenarios_and_options_parse() -> None:
    assert [e.scenario for e in PROFILE] == [
        "steady",
        "burst",
        "duplicate_storm",
        "flood",
        "nats_outage",
        "bridge_crash",
        "cluster_node_loss",
        "reload_under_load",
        "legacy_nats",
    ]
    injection = parse_injection(["loss=2", "duplicate=3", "loss=1"])
    assert (injection.loss, injection.duplicate) == (3, 3)
    assert [e.scenario for e in select(["flood", "steady"])] == ["steady", "flood"]
    with pytest.raises(ValueError, match="loss=N or duplicate=N"):
        parse_injection(["loss=-1"])

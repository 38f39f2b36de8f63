"""The ``soak`` scenario: a few seconds through the real rig (nats-server, ``busbridge run``
process, ZMQ producer child, probe) with a tiny warm-up; its RSS samples, slope and checks, the
memory chart; and the proof that ``rss_flat`` can fail (a negative ``max_growth``, a fake
growth). Behaviour only: no assertion on how fast or how big."""

from __future__ import annotations

from pathlib import Path

import msgspec

from loadtest.plot import write_plot
from loadtest.results import ScenarioResult
from loadtest.scenarios import DEFAULTS, ScenarioOptions, run_scenario
from loadtest.scenarios.soak import fit_time_and_unread, rss_summary, slope_per_min
from loadtest.workload import Workload

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)


def test_soak_defaults_are_the_issue_s_run() -> None:
    workload, params, help_text = DEFAULTS["soak"]
    assert (workload.rate_per_sec, workload.duration_secs) == (5_000.0, 900.0)
    assert workload.dialects == ALL_DIALECTS and help_text
    assert params == {
        "sample_secs": 10.0,
        "warmup_secs": 180.0,
        "max_growth": 0.05,
        "bridge_extra": "",
    }


async def test_soak_samples_rss_and_its_flat_check_can_fail(tmp_path: Path) -> None:
    stages: list[str] = []
    options = ScenarioOptions(
        workload=Workload(rate_per_sec=300, duration_secs=3, publishers=2, dialects=ALL_DIALECTS),
        workdir=tmp_path,
        params={"sample_secs": 0.5, "warmup_secs": 0.5, "max_growth": -1.0},
    )
    result = await run_scenario("soak", options, lambda stage, counters: stages.append(stage))
    assert "soak" in stages
    failed = {c.name for c in result.checks if not c.ok}
    assert failed == {"rss_flat"}, [c.detail for c in result.checks]  # lossless; RSS cannot halve
    samples = result.extra["rss_samples"]
    assert len(samples) >= 3 and all(rss > 0 and anon > 0 for _, rss, anon, *_ in samples)
    assert all(spool >= 0 and unread >= 0 for *_, spool, unread in samples)
    assert [s[0] for s in samples] == sorted(s[0] for s in samples)
    assert isinstance(result.extra["rss_slope_mib_per_min"], float)
    assert result.extra["rss_end_mib"] == samples[-1][1]
    assert msgspec.json.decode(msgspec.json.encode(result), type=ScenarioResult).extra == (
        result.extra
    )
    png = tmp_path / "soak.png"
    write_plot([result], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = tmp_path / "soak.html"
    write_plot([result], html)
    assert "bridge memory" in html.read_text()


def test_rss_flat_passes_flat_memory_and_fails_a_fake_growth() -> None:
    flat = [(float(t), 100.0, 80.0, 0, 0) for t in range(0, 100, 10)]
    numbers, check = rss_summary(flat, warmup_secs=30, max_growth=0.05)
    assert check.ok and numbers["rss_slope_mib_per_min"] == 0.0
    assert numbers["rss_at_warmup_mib"] == numbers["rss_end_mib"] == 100.0

    growing = [(t, rss + t / 10, anon, 0, 0) for t, rss, anon, *_ in flat]  # +1 MiB / 10 s
    numbers, check = rss_summary(growing, warmup_secs=30, max_growth=0.05)
    assert not check.ok and "slope +6.00 MiB/min" in check.detail
    assert numbers["rss_slope_mib_per_min"] == 6.0 and numbers["rss_end_over_warmup"] == 1.058

    numbers, check = rss_summary(flat, warmup_secs=1_000, max_growth=0.05)
    assert not check.ok and "nothing to judge" in check.detail


def test_growth_net_of_the_zmq_queue_separates_a_backlog_from_a_leak() -> None:
    queue = [0, 0, 20_000, 40_000, 10_000, 0, 30_000, 0, 0, 5_000]
    backlog = [(10.0 * k, 200 + 8 * u / 1024, 180.0, 0, u) for k, u in enumerate(queue)]
    slope, kib = fit_time_and_unread(backlog) or (None, None)
    assert abs(slope) < 1e-6 and round(kib, 3) == 8.0  # 8 KiB per queued message, no growth
    leak = [(t, rss + t / 10, anon, spool, u) for t, rss, anon, spool, u in backlog]
    slope, kib = fit_time_and_unread(leak) or (None, None)
    assert round(slope, 3) == 6.0 and round(kib, 3) == 8.0
    numbers, _ = rss_summary(leak, warmup_secs=0, max_growth=0.05)
    assert numbers["rss_slope_net_of_unread_mib_per_min"] == 6.0
    assert numbers["rss_kib_per_unread_message"] == 8.0


def test_slope_is_least_squares_per_minute() -> None:
    assert slope_per_min([(0, 1.0), (30, 2.0), (60, 3.0)]) == 2.0
    assert slope_per_min([(0, 1.0)]) is None and slope_per_min([(5, 1.0), (5, 2.0)]) is None

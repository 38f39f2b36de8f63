"""Probe, reconciliation and the traffic scenarios (steady, burst, duplicate_storm, flood).

Every scenario runs a tiny workload through the real rig (nats-server, ``busbridge run``
process, ZMQ producer child, probe) and must pass; the probe's numbers are shown to fail when
the stream or the send log disagree (a lost, copied, reordered, unexpected message), and the
probe keeps counting right across a nats-server restart.
"""

from __future__ import annotations

import copy
from pathlib import Path

import anyio
import msgspec
import nats

from contracts.subjects import HEADER_CONTRACT, HEADER_MSG_ID
from loadtest.load_producer import SentLog
from loadtest.message_mix import KIND_DUPLICATE, KIND_EVENT, KIND_FLOOD
from loadtest.reconcile import Observed, reconcile
from loadtest.results import ScenarioResult, correctness_checks, latency_stats
from loadtest.scenarios import DEFAULTS, SCENARIOS, ScenarioOptions, no_progress, run_scenario
from loadtest.scenarios.env import LoadEnv
from loadtest.workload import Burst, FloodSpec, Workload

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)


def _failed(result: ScenarioResult) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in result.checks if not c.ok]


def _failing(checks: list) -> set[str]:
    return {c.name for c in checks if not c.ok}


async def _run(name: str, tmp_path: Path, workload: Workload, **params: object) -> ScenarioResult:
    seen: list[str] = []
    result = await run_scenario(
        name,
        ScenarioOptions(workload=workload, workdir=tmp_path, params=dict(params)),
        lambda s, c: seen.append(s),
    )
    assert name in seen  # progress was reported while driving
    assert result.scenario == name and result.passed, _failed(result)
    assert (
        msgspec.json.decode(msgspec.json.encode(result), type=ScenarioResult).checks
        == result.checks
    )
    return result


def test_registry_names_the_traffic_scenarios() -> None:
    for name in ("steady", "burst", "duplicate_storm", "flood"):
        assert name in SCENARIOS
        workload, _params, help_text = DEFAULTS[name]
        assert workload.duration_secs >= 10 and help_text


async def test_steady_stores_every_dialect_once_in_order(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=400, duration_secs=2, publishers=3, dialects=ALL_DIALECTS)
    result = await _run("steady", tmp_path, w)
    probe = result.probe
    assert probe is not None
    assert probe.sent == probe.expected == probe.received_unique == 800
    assert (probe.lost, probe.duplicated, probe.out_of_order, probe.unexpected) == (0, 0, 0, 0)
    assert probe.latency is not None and probe.latency.count == 800
    assert sum(c for _, c in probe.latency.histogram_ms) == 800
    stored = probe.latency_to_stored  # the stream's clock, set against the producer's
    assert stored is not None and stored.count == 800
    assert 0 < stored.p50_ms <= probe.latency.p50_ms and stored.max_ms <= probe.latency.max_ms
    assert (
        sum(s for _, s, _ in probe.timeline) == 800 and sum(r for _, _, r in probe.timeline) == 800
    )
    assert result.extra["frames_read_by_bridge"] == 800


async def test_burst_loses_nothing(tmp_path: Path) -> None:
    w = Workload(
        rate_per_sec=300,
        duration_secs=3,
        publishers=2,
        dialects={"D1": 1, "D4": 1, "D7": 1},
        burst=Burst(every_secs=1.0, length_secs=0.25, factor=6.0),
    )
    result = await _run("burst", tmp_path, w)
    assert result.probe is not None
    assert result.probe.expected == result.probe.received_unique == w.expected_slots()


async def test_duplicate_storm_stores_each_event_once(tmp_path: Path) -> None:
    w = Workload(
        rate_per_sec=400,
        duration_secs=2,
        publishers=3,
        dialects={"D1": 1, "D2": 1},
        duplicate_ratio=0.5,
        malformed_ratio=0.05,
    )
    result = await _run("duplicate_storm", tmp_path, w)
    probe = result.probe
    assert probe is not None
    assert result.extra["duplicates_sent"] > 50 and result.extra["cross_machine_copies_sent"] > 10
    assert (
        probe.sent == probe.expected + result.extra["duplicates_sent"] + probe.dead_letters_expected
    )
    assert probe.duplicated == 0 and result.extra["error_events_stored"] == probe.expected
    assert probe.dead_letters_received == probe.dead_letters_expected > 0


async def test_flood_reconciles_stored_and_suppressed(tmp_path: Path) -> None:
    w = Workload(
        rate_per_sec=1000,
        duration_secs=2,
        publishers=2,
        dialects={"D1": 1, "D3": 1},
        flood=FloodSpec(share=0.7),
    )
    result = await _run("flood", tmp_path, w, flood_threshold=4)
    flood = result.probe.flood if result.probe else None
    assert flood is not None and flood.balanced and flood.sent > 1000
    assert flood.stored_events == 4  # one 60 s window: the rule's first 4 pass
    assert flood.suppressed_in_summaries == flood.sent - 4 and flood.other_suppressed == 0
    assert flood.started == flood.ended == 1
    assert result.probe is not None and result.probe.lost == 0 and result.probe.expected > 300


async def test_probe_numbers_fail_when_the_stream_or_the_log_disagree(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=300, duration_secs=1, publishers=2, dialects={"D1": 1})
    async with LoadEnv(tmp_path) as env:
        sent = await env.drive(env.producer(w), no_progress, "test")
        clean = await env.collect(sent, no_progress)
        assert not _failing(correctness_checks(clean)) and clean.expected == 300

        # the log claims one more event than was sent: lost
        claims_more = _with_extra_event(sent)
        report = env.probe.report(claims_more)
        assert (report.lost, report.lost_samples) == (1, [(0, 150)])
        assert _failing(correctness_checks(report)) == {"lost"}

        # the log says publisher 1 sent its first two events the other way round: out of order
        report = env.probe.report(_swap_first_two(sent, publisher=1))
        assert report.out_of_order == 1 and report.per_publisher[1]["out_of_order"] == 1
        assert _failing(correctness_checks(report)) == {"out_of_order"}

        # a stored event published again under a fresh msg id, plus an event nobody sent
        nc = await nats.connect(env.urls[0])
        try:
            js = nc.jetstream()
            first = await js.get_msg("ERRBUS", seq=1)
            await js.publish(
                first.subject, first.data, headers={**first.headers, HEADER_MSG_ID: "injected-copy"}
            )
            headers = {HEADER_CONTRACT: "error_event", HEADER_MSG_ID: "stranger"}
            await js.publish(
                "errbus.error.LoadPC.error.Stranger",
                b'{"message": "lt-p999-000000001"}',
                headers=headers,
            )
        finally:
            await nc.close()
        await env.probe.wait_quiet(1.0)
        report = env.probe.report(sent)
        assert (report.duplicated, report.unexpected, report.lost) == (1, 1, 0)
        assert _failing(correctness_checks(report)) == {"duplicated", "unexpected"}

        # the log claims a malformed frame set the stream has no dead letter for
        report = env.probe.report(_with_extra_event(sent, kind=2))
        assert (report.dead_letters_expected, report.dead_letters_received) == (1, 0)
        assert "dead_letters" in _failing(correctness_checks(report))


async def test_probe_counts_right_across_a_nats_server_restart(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=300, duration_secs=4, publishers=2, dialects={"D1": 1, "D5": 1})
    async with LoadEnv(tmp_path) as env:
        server = env.server
        assert server is not None

        async def outage() -> None:
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(server.stop)
            await anyio.sleep(1.0)
            await anyio.to_thread.run_sync(server.start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(outage)
            sent = await env.drive(env.producer(w), no_progress, "test")
        report = await env.collect(sent, no_progress, timeout_secs=90)
        assert env.probe.reconnects >= 1
        assert (report.expected, report.received_unique) == (1200, 1200)
        assert not _failing(correctness_checks(report)), report


async def test_load_env_stops_every_process_it_started_when_cancelled(tmp_path: Path) -> None:
    w = Workload(rate_per_sec=200, duration_secs=30, publishers=2)
    pids: list[int | None] = []
    with anyio.move_on_after(3.0) as scope:
        async with LoadEnv(tmp_path) as env:
            producer = env.producer(w)
            pids += [env.server.pid if env.server else None, env.bridge.pid]
            await env.drive(producer, no_progress, "test")
    assert scope.cancelled_caught and producer._process is not None
    pids.append(producer._process.pid)
    assert all(pids) and not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_reconcile_flood_balance_and_copied_events_out_of_the_order_check() -> None:
    # publisher 0 sent event 0 (copied by publisher 1), event 1, flood 2, flood 3
    sent = SentLog(
        publishers=2,
        n=[[0, 1, 2, 3], [0]],
        kind=[[KIND_EVENT, KIND_EVENT, KIND_FLOOD, KIND_FLOOD], [KIND_DUPLICATE]],
        sent_ns=[[10, 20, 30, 40], [15]],
        token_publisher=[[0, 0, 0, 0], [0]],
        started_ns=10,
    )
    obs = Observed()
    for token, at in (
        ((0, 1), 1_000),
        ((0, 0), 2_000),
        ((0, 2), 3_000),
    ):  # the copy of (0, 0) came late
        obs.add_event(token, at)
    obs.flood_summaries.append(("fp", 1, (0, 3)))
    report = reconcile(obs, sent)
    assert (report.lost, report.out_of_order, report.duplicated) == (0, 0, 0)
    assert report.flood is not None and report.flood.balanced and report.flood.stored_events == 1

    obs.flood_summaries.clear()  # the summary of flood message 3 never arrived
    report = reconcile(obs, sent)
    assert report.flood is not None and not report.flood.balanced
    assert _failing(correctness_checks(report)) == {"flood_balanced"}


def test_reconcile_latency_to_stored_takes_the_first_copy_and_skips_unknown_times() -> None:
    sent = SentLog(
        publishers=1,
        n=[[0, 1, 2]],
        kind=[[KIND_EVENT, KIND_EVENT, KIND_EVENT]],
        sent_ns=[[1_000_000, 2_000_000, 3_000_000]],
        started_ns=1_000_000,
    )
    obs = Observed()
    obs.add_event((0, 0), 9_000_000, 5_000_000)  # stored 4 ms after its send
    obs.add_event((0, 1), 9_000_000, None)  # no stored time in its delivery
    obs.add_event((0, 2), 10_000_000, 5_000_000)  # 2 ms
    obs.add_event((0, 0), 11_000_000, 10_000_000)  # a stored copy: counted as one, not timed
    report = reconcile(obs, sent)
    assert report.duplicated == 1 and report.latency is not None and report.latency.count == 3
    stored = report.latency_to_stored
    assert stored is not None and stored.count == 2
    assert (stored.p50_ms, stored.max_ms) == (2.0, 4.0)


def test_latency_stats_percentiles_and_histogram() -> None:
    stats = latency_stats([i * 1_000_000 for i in range(1, 101)])  # 1..100 ms
    assert stats is not None
    assert (stats.count, stats.p50_ms, stats.p90_ms, stats.p99_ms, stats.max_ms) == (
        100,
        50.0,
        90.0,
        99.0,
        100.0,
    )
    assert sum(c for _, c in stats.histogram_ms) == 100 and stats.histogram_ms[-1][0] == 100.0
    assert latency_stats([]) is None


def _with_extra_event(sent: SentLog, kind: int = KIND_EVENT) -> SentLog:
    """``sent`` plus one more message of publisher 0 (the next ``n``)."""
    log = copy.deepcopy(sent)
    log.n[0].append(max(log.n[0]) + 1)
    log.kind[0].append(kind)
    log.sent_ns[0].append(log.sent_ns[0][-1] + 1)
    log.token_publisher[0].append(0)
    return log


def _swap_first_two(sent: SentLog, publisher: int) -> SentLog:
    log = copy.deepcopy(sent)
    log.n[publisher][0], log.n[publisher][1] = log.n[publisher][1], log.n[publisher][0]
    return log

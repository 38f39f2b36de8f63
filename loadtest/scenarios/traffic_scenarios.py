"""Traffic scenarios: ``steady``, ``burst``, ``duplicate_storm``, ``flood`` (issue 7).

Each runs one ``LoadEnv`` (nats-server + bridge process + probe) per run, drives the workload
through real ZMQ sockets, waits until the stream has caught up and reconciles by token. Every
result carries ``correctness_checks`` (loss, copies, order, unexpected, dead letters, flood
balance) plus the scenario's own checks; numbers go to ``extra``. Nothing here checks speed.
Among the numbers: the CPU seconds each process used from the first send until the stream
caught up (``cpu_secs``: bridge with its decode worker, nats-server, load producer, this
harness with its probe; /proc and ``getrusage``) and the bridge's share per message sent
(``bridge_cpu_us_per_msg``): on a 2-core machine the four compete, and the bridge's CPU per
message is the steadiest figure of its per-message cost (latency percentiles move with
whatever else runs).

Own checks:

* all: ``frames_read``: the bridge read every frame sent (``busbridge_frames_received_total``
  == sent: no drop at the ZMQ socket, legacy-bus.md trap on RCVHWM);
* ``duplicate_storm``: copies were really sent (D1 same bytes from another socket, D2
  ``CROSS_MACHINE_ERROR:PC2:`` copies) and each event is still stored once;
* ``flood``: a flood was started, stored flood events stay within the rule's threshold per
  window, background traffic was never suppressed. Flood control runs with one rule for the
  flood's ``error_type`` (``flood_threshold`` per ``flood_window_secs``, summaries every
  ``summary_interval_secs``); background events each have their own fingerprint
  (``traffic.event_text`` puts an unmasked ``ref=p<publisher>n<n>`` in every message), so
  no other rule ever merges them.
"""

from __future__ import annotations

import itertools
import math
import re
import resource
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from loadtest.bridge_watch import process_cpu_secs
from loadtest.load_producer import SentLog
from loadtest.message_mix import message_mix
from loadtest.results import Check, ProbeReport, ScenarioResult, correctness_checks
from loadtest.scenarios import Progress, ScenarioOptions, machine_info, scenario, utc_now
from loadtest.scenarios.env import LoadEnv, bridge_extra_param
from loadtest.workload import Burst, FloodSpec, Workload

__all__ = ["burst", "duplicate_storm", "flood", "run_traffic", "steady"]

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)

#: (env, sent, report) -> extra numbers and own checks of a scenario
OwnChecks = Callable[[LoadEnv, SentLog, ProbeReport], Awaitable[tuple[dict[str, Any], list[Check]]]]


async def run_traffic(
    name: str,
    options: ScenarioOptions,
    progress: Progress,
    *,
    own: OwnChecks | None = None,
    bridge_extra: str = "",
    flood: bool = False,
) -> ScenarioResult:
    """Run ``options.workload`` ``options.runs`` times through a fresh rig each; the result holds the
    last run's probe report, per-run numbers in ``extra["runs"]`` and every run's checks (named
    ``run<k>:<check>`` when there is more than one run)."""
    started, t0 = utc_now(), time.monotonic()
    runs: list[dict[str, Any]] = []
    checks: list[Check] = []
    report: ProbeReport | None = None
    for k in range(options.runs):
        workdir = options.workdir / (f"{name}-run{k + 1}" if options.runs > 1 else name)
        async with LoadEnv(workdir, bridge_extra=bridge_extra, flood=flood) as env:
            extra, run_checks, report = await _one_run(env, name, options.workload, progress, own)
        if not options.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        runs.append(extra)
        prefix = f"run{k + 1}:" if options.runs > 1 else ""
        checks += [Check(name=prefix + c.name, ok=c.ok, detail=c.detail) for c in run_checks]
    extra = dict(runs[-1]) if runs else {}
    if options.runs > 1:
        extra["runs"] = runs
    return ScenarioResult(
        scenario=name,
        workload=options.workload,
        machine=machine_info(),
        started_at=started,
        duration_secs=round(time.monotonic() - t0, 2),
        probe=report,
        extra=extra,
        checks=checks,
    )


async def _one_run(
    env: LoadEnv, name: str, workload: Workload, progress: Progress, own: OwnChecks | None
) -> tuple[dict[str, Any], list[Check], ProbeReport]:
    cpu_before = _cpu_secs(env)
    sent = await env.drive(env.producer(workload), progress, name)
    await env.catch_up(sent, progress)
    cpu = {k: round(v - cpu_before[k], 2) for k, v in _cpu_secs(env).items()}
    cpu["producer"] = round(env.producer_cpu_secs, 2)
    read = int(await env.metric("busbridge_frames_received_total"))
    extra: dict[str, Any] = {
        "sent": sent.total(),
        "send_rate_per_sec": round(sent.total() / workload.duration_secs, 1),
        "frames_read_by_bridge": read,
        "bridge_dropped": int(await env.metric("busbridge_dropped_total")),
        "bridge_duplicates": int(await env.metric("busbridge_duplicates_total")),
        "peak_spool_messages": env.peak_spool,
        "probe_reconnects": env.probe.reconnects,
        "cpu_secs": cpu,
        "bridge_cpu_us_per_msg": round(cpu["bridge"] / max(1, sent.total()) * 1e6, 1),
    }
    await env.close_floods(progress)
    report = env.probe.report(sent)
    own_extra, own_checks = await own(env, sent, report) if own else ({}, [])
    checks = correctness_checks(report)
    detail = f"bridge read {read} of {sent.total()} frames sent"
    checks.append(Check(name="frames_read", ok=read == sent.total(), detail=detail))
    return {**extra, **own_extra}, checks + own_checks, report


def _cpu_secs(env: LoadEnv) -> dict[str, float]:
    """CPU seconds used so far by the bridge (with its decode worker), the local nats-server
    (0.0 with external servers) and this harness process (the probe, the driver; user +
    system of every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "bridge": process_cpu_secs(env.bridge.pid),
        "nats_server": process_cpu_secs(env.server.pid if env.server else None),
        "harness": usage.ru_utime + usage.ru_stime,
    }


# --------------------------------------------------------------------------- steady, burst


@scenario(
    "steady",
    defaults=Workload(
        rate_per_sec=10_000.0, duration_secs=30.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={"bridge_extra": ""},
    help="fixed rate, all seven dialects: loss, order, latency p50..p99 (DESIGN §7: p99 at 10k msg/s)",
)
async def steady(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    """``bridge_extra``: YAML sections for the bridge config (e.g. to compare spool settings)."""
    return await run_traffic(
        "steady", options, progress, bridge_extra=bridge_extra_param(options.params)
    )


@scenario(
    "burst",
    defaults=Workload(
        rate_per_sec=2_000.0,
        duration_secs=30.0,
        publishers=4,
        dialects=ALL_DIALECTS,
        burst=Burst(every_secs=5.0, length_secs=1.0, factor=10.0),
    ),
    help="base rate with bursts of rate x factor: nothing lost at the ZMQ socket or later",
)
async def burst(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    return await run_traffic("burst", options, progress, own=_burst_numbers)


async def _burst_numbers(
    env: LoadEnv, sent: SentLog, report: ProbeReport
) -> tuple[dict[str, Any], list[Check]]:
    full_secs = sent.per_second()[:-1] or sent.per_second()  # the last second is partial
    return {
        "max_sent_per_sec": max(full_secs, default=0),
        "min_sent_per_sec": min(full_secs, default=0),
    }, []


# --------------------------------------------------------------------------- duplicate_storm


@scenario(
    "duplicate_storm",
    defaults=Workload(
        rate_per_sec=5_000.0,
        duration_secs=30.0,
        publishers=4,
        dialects={"D1": 1.0, "D2": 1.0},
        duplicate_ratio=0.5,
    ),
    help="D1/D2 events sent twice (same error_id; D2 as CROSS_MACHINE copies): every event stored once",
)
async def duplicate_storm(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    workload = options.workload

    async def own(
        env: LoadEnv, sent: SentLog, report: ProbeReport
    ) -> tuple[dict[str, Any], list[Check]]:
        return _duplicate_checks(workload, env, sent, report)

    return await run_traffic("duplicate_storm", options, progress, own=own)


def cross_machine_copies(workload: Workload, sent: SentLog) -> int:
    """D2 ``CROSS_MACHINE_ERROR:PC2:`` copies among the copies sent (from the workload's slot
    sequence, which is deterministic, over the slots actually sent)."""
    slots = sent.total() - sent.duplicates_sent()
    return sum(
        1
        for s in itertools.islice(message_mix(workload), slots)
        if s.dialect == "D2" and s.dup_socket >= 0
    )


def _duplicate_checks(
    workload: Workload, env: LoadEnv, sent: SentLog, report: ProbeReport
) -> tuple[dict[str, Any], list[Check]]:
    copies = sent.duplicates_sent()
    cross = cross_machine_copies(workload, sent)
    stored = env.probe.observed.events
    extra = {
        "duplicates_sent": copies,
        "cross_machine_copies_sent": cross,
        "error_events_stored": stored,
    }
    checks = [
        Check(
            name="copies_sent",
            ok=copies > 0,
            detail=f"{copies} copies sent ({cross} CROSS_MACHINE_ERROR:PC2:)",
        ),
        Check(
            name="stored_once",
            ok=stored == report.expected,
            detail=f"{stored} error events stored for {report.expected} events sent plus {copies} copies",
        ),
    ]
    return extra, checks


# --------------------------------------------------------------------------- flood


@scenario(
    "flood",
    defaults=Workload(
        rate_per_sec=10_000.0,
        duration_secs=30.0,
        publishers=4,
        dialects=ALL_DIALECTS,
        flood=FloodSpec(share=0.8),
    ),
    params={"flood_threshold": 5, "flood_window_secs": 60.0, "summary_interval_secs": 1.0},
    help="one fingerprint at a high rate plus background traffic: stored + summarised == sent",
)
async def flood(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    spec = options.workload.flood or FloodSpec()
    workload = msgspec.structs.replace(options.workload, flood=spec)
    p = options.params
    threshold, window = int(p["flood_threshold"]), float(p["flood_window_secs"])
    extra = (
        "flood:\n  enabled: true\n"
        f"  summary_interval_secs: {float(p['summary_interval_secs'])}\n"
        f"  rules: [{{name: load_test_flood, match: '^{re.escape(spec.error_type)}$',"
        f" threshold: {threshold}, window_secs: {window}}}]\n"
    )

    async def own(
        env: LoadEnv, sent: SentLog, report: ProbeReport
    ) -> tuple[dict[str, Any], list[Check]]:
        numbers = {"flood_threshold": threshold, "flood_window_secs": window}
        return numbers, _flood_checks(report, workload.duration_secs, threshold, window)

    options = msgspec.structs.replace(options, workload=workload)
    return await run_traffic("flood", options, progress, own=own, bridge_extra=extra, flood=True)


def _flood_checks(
    report: ProbeReport, duration_secs: float, threshold: int, window_secs: float
) -> list[Check]:
    f = report.flood
    if f is None:
        return [Check(name="flood_seen", ok=False, detail="no flood message was sent or stored")]
    bound = threshold * (
        math.ceil(duration_secs / window_secs) + 1
    )  # fixed windows the run can touch
    return [
        Check(
            name="flood_started",
            ok=f.started >= 1 and f.summaries >= 1,
            detail=f"{f.started} floods started, {f.summaries} summaries, {f.ended} ended",
        ),
        Check(
            name="flood_bounded",
            ok=f.stored_events <= bound,
            detail=f"{f.stored_events} flood events stored (rule: {threshold} per {window_secs} s, <= {bound})",
        ),
        Check(
            name="background_not_suppressed",
            ok=f.other_suppressed == 0,
            detail=f"{f.other_suppressed} non-flood events suppressed",
        ),
    ]

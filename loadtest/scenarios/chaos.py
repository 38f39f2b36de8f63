"""Chaos scenarios (issue 7): ``nats_outage``, ``bridge_crash``, ``cluster_node_loss``,
``reload_under_load``, ``phase_walk``.

Each drives a ``Workload`` through the real rig (``LoadEnv``: nats-server(s), ``busbridge run``
process, ``StreamProbe``, ``LoadProducer`` child) while it breaks something on a timeline
set by its params, then waits for the stream to catch up and judges by token
(``correctness_checks``) plus its own checks; its numbers go to ``extra``. Times are
``time.monotonic_ns``/``time.monotonic`` of this host, the clock of the producer's send
times and the probe's receipts. Every process is stopped by its own handle (PID), also on
an error: the rig's by ``LoadEnv``, the cluster's by ``running_cluster``.

* ``nats_outage``: traffic; after ``warmup_secs`` the nats-server is stopped for
  ``outage_secs`` and restarted on the same store dir and port; traffic goes on until the
  bridge is ready again (backlog drained) plus ``tail_secs``. ``workload.duration_secs`` caps
  the whole traffic. Reports peak spool backlog, drain time and rate (stream messages stored
  per second from the restart until ready, live traffic included) as a multiple of the live
  rate, the backlog's own drain rate (peak backlog / drain time) as a multiple of the live
  rate, RSS before/peak.
* ``bridge_crash``: SIGKILL of the bridge after ``kill_after_secs``, restarted on the same
  data dir (spool) after ``down_secs``; with ``backlog_secs`` > 0 the nats-server is stopped
  that long before the kill (and restarted with the bridge) so the crash hits a backlog on
  disk. Every event left in the dead bridge's spool must be stored; the legacy transport may
  lose what sat in its socket buffers or was sent while it was down: only events sent in
  the at-risk window ``[kill - read_lag_secs, restarted bridge answers /healthz)``
  (``loadtest.crash_window``) may be lost, and how many were is reported; no duplicates.
* ``cluster_node_loss``: a 3-node JetStream cluster (``loadtest.servers.running_cluster``),
  R3 stream, the bridge and the probe given all three URLs; the stream leader is SIGKILLed
  after ``kill_after_secs``. Reports the node, the time to the first PubAck after the kill
  and to a known new leader; no loss, no duplicates, in order.
* ``reload_under_load``: the bridge's config file rewritten ``loadtest.reload_steps`` by
  step (SIGHUP each), evenly over the traffic; every result as expected (the restart-bound
  step after the invalid file is ``refused``, not ``partial``: the running config was kept),
  the same process throughout, no loss. Results counted from ``busbridge_config_reloads_total``.
* ``phase_walk``: ``loadtest.phase_walk.walk`` (in-process bridge, config-file phase switches
  ``zmq_only -> dual -> nats_primary -> nats_only -> dual -> zmq_only`` under load, D1
  traffic at ``workload.rate_per_sec`` from ``workload.publishers``, ``hold_secs`` per phase;
  the other workload fields are not used); its per-phase windows, lost / leaked / duplicated
  as checks; ``python -m loadtest.phase_walk`` runs the same walk on its own.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio
import msgspec
import yaml

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.bridge_watch import (
    BridgeSampler,
    Drain,
    measure_drain,
    metric,
    status_kib,
    stream_count,
)
from loadtest.crash_window import CrashWindow, Token, crash_window, spooled_tokens
from loadtest.load_producer import LoadProducer, SentLog
from loadtest.phase_walk import WalkStopped, walk
from loadtest.reload_steps import RELOAD_STEPS
from loadtest.results import Check, ProbeReport, ScenarioResult, correctness_checks
from loadtest.scenarios import Progress, ScenarioOptions, machine_info, scenario, utc_now
from loadtest.scenarios.env import LoadEnv, bridge_extra_param
from loadtest.servers import restarted, running_cluster, stream_leader
from loadtest.workload import Workload

__all__ = ["bridge_crash", "cluster_node_loss", "nats_outage", "phase_walk", "reload_under_load"]

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)
_SECOND_NS = 1_000_000_000


# --------------------------------------------------------------------------- shared


class _Traffic:
    """A running ``LoadProducer`` with a progress line about once a second; ``stage`` is shown."""

    def __init__(
        self, env: LoadEnv, producer: LoadProducer, progress: Progress, stage: str
    ) -> None:
        self.env, self.producer, self.progress, self.stage = env, producer, progress, stage

    async def tick(self) -> None:
        while True:
            self.progress(self.stage, await self.env.counters(self.producer))
            await anyio.sleep(1.0)

    async def finish(self) -> SentLog:
        """Wait until the workload is sent; return the log."""
        while not self.producer.finished:
            await anyio.sleep(0.1)
        return await self.stop()

    async def stop(self) -> SentLog:
        """Stop sending now; return the log."""
        return await anyio.to_thread.run_sync(self.producer.stop)


@asynccontextmanager
async def _traffic(
    env: LoadEnv, workload: Workload, progress: Progress, stage: str
) -> AsyncIterator[_Traffic]:
    """Start a producer for ``workload`` (connected and sending on entry) with a progress ticker."""
    producer = env.producer(workload)
    await anyio.to_thread.run_sync(producer.start)
    traffic = _Traffic(env, producer, progress, stage)
    async with anyio.create_task_group() as tg:
        tg.start_soon(traffic.tick)
        try:
            yield traffic
        finally:
            tg.cancel_scope.cancel()


def _result(
    name: str,
    workload: Workload,
    started: str,
    t0: float,
    report: ProbeReport | None,
    extra: dict[str, Any],
    checks: list[Check],
) -> ScenarioResult:
    return ScenarioResult(
        scenario=name,
        workload=workload,
        machine=machine_info(),
        started_at=started,
        duration_secs=round(time.monotonic() - t0, 2),
        probe=report,
        extra=extra,
        checks=checks,
    )


def _check(name: str, ok: bool, detail: str) -> Check:
    return Check(name=name, ok=bool(ok), detail=detail)


async def _settle(
    env: LoadEnv,
    sent: SentLog,
    progress: Progress,
    *,
    idle_secs: float = 5.0,
    timeout_secs: float = 120.0,
) -> ProbeReport:
    """Wait until the stream caught up with ``sent`` (or stalled, or ``timeout_secs``), then reconcile."""
    await env.catch_up(sent, progress, timeout_secs=timeout_secs, idle_secs=idle_secs)
    return env.probe.report(sent)


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


# --------------------------------------------------------------------------- nats_outage


@scenario(
    "nats_outage",
    defaults=Workload(
        rate_per_sec=10_000.0, duration_secs=600.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={
        "outage_secs": 60.0,
        "warmup_secs": 5.0,
        "tail_secs": 3.0,
        "max_drain_secs": 300.0,
        "bridge_extra": "",
    },
    help="nats-server stopped outage_secs under load, restarted on its store: 0 lost/dup, drain rate, RSS"
    " (traffic runs until drained + tail_secs; duration_secs caps it)",
)
async def nats_outage(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    p, workload = options.params, options.workload
    started, t0 = utc_now(), time.monotonic()
    workdir = options.workdir / "nats_outage"
    async with LoadEnv(workdir, bridge_extra=bridge_extra_param(p)) as env:
        sampler = BridgeSampler(env.bridge.pid or 0, env.bridge.admin_port)
        sampler.start()
        try:
            run = await _outage(env, workload, p, progress)
            # a backlog left over when max_drain_secs ran out is late, not lost: give it as long again
            report = await _settle(
                env, run.sent, progress, timeout_secs=max(120.0, float(p["max_drain_secs"]))
            )
            # still held when the run ends (not drained): late rather than lost; the bridge keeps them
            left = int(metric(env.bridge.admin_port, "busbridge_spool_messages"))
        finally:
            sampler.stop()
        rss_peak = status_kib(env.bridge.pid or 0, "VmHWM")
        reconnects = env.probe.reconnects
    drain, sent = run.drain, run.sent
    extra = {
        "sent": sent.total(),
        "outage_secs": float(p["outage_secs"]),
        "traffic_secs": _traffic_secs(sent),
        "spool_peak_messages": sampler.spool_peak,
        "drain_secs": round(drain.secs, 2),
        "drained": drain.drained,
        "drain_stored": drain.stored,
        "drain_rate_per_sec": round(drain.rate_per_sec),
        "drain_rate_x_live": round(drain.rate_per_sec / workload.rate_per_sec, 2),
        # the backlog alone (live traffic goes on meanwhile): peak backlog / drain time, over live
        "backlog_drain_x_live": round(
            sampler.spool_peak / max(drain.secs, 1e-9) / workload.rate_per_sec, 2
        ),
        "rss_before_outage_mib": _mib(run.rss_before_kib),
        "rss_max_sampled_mib": _mib(max(sampler.rss_kib or [0])),
        "rss_peak_hwm_mib": _mib(rss_peak),
        "probe_reconnects": reconnects,
        "spool_left_at_end": left,
    }
    checks = [
        *correctness_checks(report),
        _check(
            "backlog_built",
            sampler.spool_peak > 0,
            f"peak spool backlog {sampler.spool_peak} messages",
        ),
        _check(
            "drained",
            drain.drained,
            f"ready again {drain.secs:.1f} s after the restart (max {p['max_drain_secs']} s)",
        ),
    ]
    return _result("nats_outage", workload, started, t0, report, extra, checks)


class _OutageRun(NamedTuple):
    sent: SentLog
    rss_before_kib: int
    drain: Drain


async def _outage(
    env: LoadEnv, workload: Workload, p: dict[str, Any], progress: Progress
) -> _OutageRun:
    """Warm up, stop the server, wait, restart it on its store, time the drain, run the tail."""
    assert env.server is not None
    async with _traffic(env, workload, progress, "warmup") as traffic:
        await anyio.sleep(float(p["warmup_secs"]))
        rss_before = status_kib(env.bridge.pid or 0, "VmRSS")
        traffic.stage = "outage"
        # counted before the stop: the bridge may drain a small backlog before any count
        # taken after the restart (a stop right after the count adds at most what the
        # stream stored in between to ``drain_stored``)
        stored_before = await stream_count(env.server.url)
        await anyio.to_thread.run_sync(env.server.stop)
        await anyio.sleep(float(p["outage_secs"]))
        env.server = await anyio.to_thread.run_sync(restarted, env.server)  # LoadEnv stops this one
        traffic.stage = "draining"
        url, port, max_secs = env.server.url, env.bridge.admin_port, float(p["max_drain_secs"])
        # abandon on Ctrl-C/SIGTERM: the teardown must not wait out max_secs of polling
        drain = await anyio.to_thread.run_sync(
            functools.partial(measure_drain, url, port, max_secs, stored_before=stored_before),
            abandon_on_cancel=True,
        )
        traffic.stage = "tail"
        with anyio.move_on_after(float(p["tail_secs"])):
            await traffic.finish()
        return _OutageRun(await traffic.stop(), rss_before, drain)


def _traffic_secs(sent: SentLog) -> float:
    """First to last send."""
    last = max((times[-1] for times in sent.sent_ns if times), default=sent.start_ns())
    return round((last - sent.start_ns()) / _SECOND_NS, 1)


# --------------------------------------------------------------------------- bridge_crash


@scenario(
    "bridge_crash",
    defaults=Workload(
        rate_per_sec=5_000.0, duration_secs=20.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={"kill_after_secs": 5.0, "down_secs": 3.0, "backlog_secs": 0.0, "read_lag_secs": 0.5},
    help="SIGKILL of the bridge under load, restart on its spool: spooled kept, loss only in the at-risk window",
)
async def bridge_crash(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    p, workload = options.params, options.workload
    kill_after, down = float(p["kill_after_secs"]), float(p["down_secs"])
    if workload.duration_secs < kill_after + down + 1.0:
        need = kill_after + down + 1.0
        raise ValueError(
            f"bridge_crash needs duration_secs >= kill_after_secs + down_secs + 1 ({need})"
        )
    started, t0 = utc_now(), time.monotonic()
    async with LoadEnv(options.workdir / "bridge_crash") as env:
        async with _traffic(env, workload, progress, "steady") as traffic:
            pid_before, kill_ns, spooled = await _crash(
                env, traffic, kill_after, float(p["backlog_secs"])
            )
            await anyio.sleep(down)
            if float(p["backlog_secs"]) > 0:
                env.server = await anyio.to_thread.run_sync(restarted, env.server)
            await anyio.to_thread.run_sync(env.bridge.start)
            ready_ns = time.monotonic_ns()
            traffic.stage = "restarted"
            sent = await traffic.finish()
        report = await _settle(env, sent, progress, idle_secs=2.0)
        stored = set(env.probe.observed.first_ns)
        restarted_pid = env.bridge.pid
    lag_ns = int(float(p["read_lag_secs"]) * _SECOND_NS)
    window = crash_window(sent, stored, kill_ns=kill_ns, ready_ns=ready_ns, read_lag_ns=lag_ns)
    extra = {
        "sent": sent.total(),
        "kill_after_secs": kill_after,
        "down_secs": down,
        "backlog_secs": float(p["backlog_secs"]),
        "killed_pid": pid_before,
        "restarted_pid": restarted_pid,
        "spooled_at_kill": len(spooled),
        **msgspec.to_builtins(window),
    }
    checks = correctness_checks(report, allow_lost=window.at_risk_lost) + _crash_checks(
        window, spooled, stored
    )
    return _result("bridge_crash", workload, started, t0, report, extra, checks)


def _crash_checks(window: CrashWindow, spooled: set[Token], stored: set[Token]) -> list[Check]:
    spooled_lost = sorted(spooled - stored)
    w = window
    return [
        _check(
            "spooled_kept",
            not spooled_lost,
            f"{len(spooled)} events in the spool at the kill, {len(spooled_lost)} of them lost {spooled_lost[:5]}",
        ),
        _check(
            "lost_only_at_risk",
            w.lost_outside == 0,
            f"{w.at_risk_lost} of {w.at_risk} at-risk events lost ({w.lost_before_kill} sent in the"
            f" {w.read_lag_ms:.0f} ms before the kill, {w.lost_while_down} while down);"
            f" {w.lost_outside} lost outside the window {w.lost_outside_samples[:5]}",
        ),
        _check(
            "publishers_resumed",
            not w.not_resumed,
            f"publishers with nothing stored that they sent after the restart: {w.not_resumed}",
        ),
    ]


async def _crash(
    env: LoadEnv, traffic: _Traffic, kill_after: float, backlog_secs: float
) -> tuple[int | None, int, set[Token]]:
    """After ``kill_after`` s SIGKILL the bridge (NATS stopped ``backlog_secs`` before, if > 0, so a
    backlog sits in the spool); return its pid, the kill time and the event tokens left in its spool."""
    assert env.server is not None
    await anyio.sleep(max(0.0, kill_after - backlog_secs))
    if backlog_secs > 0:
        traffic.stage = "nats stopped"
        await anyio.to_thread.run_sync(env.server.stop)
        await anyio.sleep(backlog_secs)
    traffic.stage = "bridge killed"
    pid, kill_ns = env.bridge.pid, time.monotonic_ns()
    await anyio.to_thread.run_sync(env.bridge.kill)
    return pid, kill_ns, await anyio.to_thread.run_sync(spooled_tokens, env.bridge.spool_path)


# --------------------------------------------------------------------------- cluster_node_loss

_CLUSTER_EXTRA = "stream: {replicas: 3}\npublish: {ack_timeout_secs: 1.0, retry_max_secs: 0.5}\n"
_ACKS = "busbridge_acked_total"


@scenario(
    "cluster_node_loss",
    defaults=Workload(
        rate_per_sec=5_000.0, duration_secs=20.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={"kill_after_secs": 5.0, "election_timeout_secs": 30.0, "stale_ack_secs": 0.1},
    help="3-node JetStream cluster, R3 stream, the stream leader SIGKILLed under load: 0 lost/dup, election time",
)
async def cluster_node_loss(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    p, workload = options.params, options.workload
    started, t0 = utc_now(), time.monotonic()
    workdir = options.workdir / "cluster_node_loss"
    with running_cluster(workdir / "cluster") as servers:
        async with LoadEnv(workdir, servers=servers, bridge_extra=_CLUSTER_EXTRA) as env:
            async with _traffic(env, workload, progress, "steady") as traffic:
                await anyio.sleep(float(p["kill_after_secs"]))
                leader = await stream_leader(env.urls)
                victim = next(s for s in servers if s.server_name == leader)
                traffic.stage = f"leader {leader} killed"
                timeout = float(p["election_timeout_secs"])
                killed_at, election = await _kill_leader(
                    env, victim, float(p["stale_ack_secs"]), timeout
                )
                survivors = [s.url for s in servers if s is not victim]
                new_leader = await stream_leader(survivors, timeout_secs=timeout)
                leader_known = round(time.monotonic() - killed_at, 3)
                traffic.stage = f"new leader {new_leader}"
                sent = await traffic.finish()
            report = await _settle(env, sent, progress)
            reconnects = env.probe.reconnects
    extra = {
        "sent": sent.total(),
        "killed_node": leader,
        "new_leader": new_leader,
        "election_secs": election,
        "leader_known_secs": leader_known,
        "probe_reconnects": reconnects,
    }
    checks = [
        *correctness_checks(report),
        _check(
            "new_leader",
            new_leader != leader,
            f"stream leader {leader} killed, {new_leader} elected",
        ),
        _check(
            "publishing_resumed", election is not None, f"first PubAck {election} s after the kill"
        ),
    ]
    return _result("cluster_node_loss", workload, started, t0, report, extra, checks)


async def _kill_leader(
    env: LoadEnv, victim: NatsServerProcess, stale_ack_secs: float, timeout_secs: float
) -> tuple[float, float | None]:
    """SIGKILL ``victim``; return when (``time.monotonic``) and the seconds from then to the first
    PubAck the bridge counts (None: none within ``timeout_secs``). PubAcks counted within
    ``stale_ack_secs`` of the kill may be the dead leader's (already on the wire), so the count
    to beat is taken then."""
    killed_at = time.monotonic()
    await anyio.to_thread.run_sync(victim.kill)
    await anyio.sleep(stale_ack_secs)
    before = await env.metric(_ACKS)
    with anyio.move_on_after(timeout_secs):
        while await env.metric(_ACKS) <= before:
            await anyio.sleep(0.02)
        return killed_at, round(time.monotonic() - killed_at, 3)
    return killed_at, None


# --------------------------------------------------------------------------- reload_under_load

_RELOADS = "busbridge_config_reloads_total"
_RESULTS = ("applied", "partial", "refused", "unchanged", "invalid")


@scenario(
    "reload_under_load",
    defaults=Workload(
        rate_per_sec=5_000.0, duration_secs=20.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={"reload_timeout_secs": 10.0},
    help="config file rewritten under load (live changes, one invalid, one restart-bound; SIGHUP): 0 lost/dup",
)
async def reload_under_load(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    workload = options.workload
    started, t0 = utc_now(), time.monotonic()
    interval = workload.duration_secs / (len(RELOAD_STEPS) + 1)
    # SIGHUP only: the file watcher would reload the same rewrite a second time
    async with LoadEnv(
        options.workdir / "reload_under_load", bridge_extra="config_watch_secs: 3600\n"
    ) as env:
        pid = env.bridge.pid
        doc = yaml.safe_load(env.bridge.config.read_text())
        steps: list[dict[str, str]] = []
        async with _traffic(env, workload, progress, "reloading") as traffic:
            for step in RELOAD_STEPS:
                await anyio.sleep(interval)
                traffic.stage = f"reload {step.name}"
                new = step.edit(doc)
                result = await _reload(env, new, float(options.params["reload_timeout_secs"]))
                steps.append({"step": step.name, "expect": step.expect, "result": result})
                if result == "applied":
                    doc = new  # the file the bridge now runs; refused rewrites are not built on
            traffic.stage = "steady"
            sent = await traffic.finish()
        report = await _settle(env, sent, progress)
        totals = {r: int(await env.metric(_RELOADS, result=r)) for r in _RESULTS}
        same_pid = (
            env.bridge.pid == pid and env.bridge.proc is not None and env.bridge.proc.poll() is None
        )
    wrong = [s for s in steps if s["result"] != s["expect"]]
    extra = {
        "sent": sent.total(),
        "reloads": steps,
        "reload_totals": totals,
        "applied": totals["applied"],
        "refused": totals["invalid"] + totals["refused"],
    }
    checks = [
        *correctness_checks(report),
        _check(
            "reload_results",
            not wrong,
            f"{len(steps) - len(wrong)} of {len(steps)} reloads as expected; wrong: {wrong}",
        ),
        _check("no_restart", same_pid, f"bridge pid {pid} served the whole run"),
    ]
    return _result("reload_under_load", workload, started, t0, report, extra, checks)


async def _reload(env: LoadEnv, doc: dict[str, Any], timeout_secs: float) -> str:
    """Write ``doc`` as the bridge's config, SIGHUP it, return the result it counted ("timeout" if none)."""
    port = env.bridge.admin_port

    def counts() -> dict[str, float]:
        return {r: metric(port, _RELOADS, result=r) for r in _RESULTS}

    before = await anyio.to_thread.run_sync(counts)
    env.bridge.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert env.bridge.proc is not None
    env.bridge.proc.send_signal(signal.SIGHUP)
    with anyio.move_on_after(timeout_secs):
        while True:
            await anyio.sleep(0.05)
            now = await anyio.to_thread.run_sync(counts)
            changed = [r for r in _RESULTS if now[r] > before[r]]
            if changed:
                return changed[0]
    return "timeout"


# --------------------------------------------------------------------------- phase_walk


@scenario(
    "phase_walk",
    defaults=Workload(rate_per_sec=2_000.0, duration_secs=30.0, publishers=4),
    params={"hold_secs": 5.0},
    help="zmq_only -> dual -> nats_primary -> nats_only and back under D1 load: nothing lost, leaked or doubled",
)
async def phase_walk(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    workload, hold = options.workload, float(options.params["hold_secs"])
    started, t0 = utc_now(), time.monotonic()
    workdir = options.workdir / "phase_walk"
    workdir.mkdir(parents=True, exist_ok=True)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_elapsed_ticker, progress, t0)
        try:
            report = await walk(workload.rate_per_sec, hold, workload.publishers, workdir)
        except (
            BaseException
        ) as exc:  # a refused phase switch ends the walk: a failed check, not a crash
            reason = _walk_stopped(exc)
            if reason is None:
                raise
            checks = [_check("walked", False, reason)]
            return _result("phase_walk", workload, started, t0, None, {"stopped": reason}, checks)
        finally:
            tg.cancel_scope.cancel()
    return _phase_result(workload, started, t0, report)


def _walk_stopped(exc: BaseException) -> str | None:
    """The reason when ``exc`` is (a task group's group holding) ``WalkStopped``."""
    if isinstance(exc, WalkStopped):
        return str(exc.code)
    if isinstance(exc, BaseExceptionGroup):
        reasons = [r for e in exc.exceptions if (r := _walk_stopped(e)) is not None]
        return "; ".join(reasons) if reasons else None
    return None


async def _elapsed_ticker(progress: Progress, t0: float) -> None:
    while True:
        progress("phase walk", {"elapsed_secs": round(time.monotonic() - t0)})
        await anyio.sleep(1.0)


def _phase_result(
    workload: Workload, started: str, t0: float, report: dict[str, Any]
) -> ScenarioResult:
    lost, leaked, dup = report["lost"], report["leaked"], report["duplicated"]
    publishing = sum(
        w["checked"] for w in report["windows"] if w["phase"] in ("dual", "nats_primary")
    )
    extra = {
        **report,
        "lost": len(lost),
        "leaked": len(leaked),
        "lost_samples": lost[:20],
        "leaked_samples": leaked[:20],
    }
    extra.pop("machine", None)  # the result's own ``machine`` says it
    checks = [
        _check(
            "lost",
            not lost,
            f"{len(lost)} of {publishing} events sent in a publishing phase not stored {lost[:5]}",
        ),
        _check("leaked", not leaked, f"{len(leaked)} events sent in zmq_only stored {leaked[:5]}"),
        _check("duplicated", dup == 0, f"{dup} extra stored copies"),
        _check(
            "port_released",
            report["port_released_in_nats_only"],
            "ingest port free to bind in nats_only",
        ),
        _check(
            "walked", len(report["phase_changes"]) == 5, f"phase changes: {report['phase_changes']}"
        ),
    ]
    workload = msgspec.structs.replace(
        workload, dialects={"D1": 1.0}, duration_secs=float(report["elapsed_secs"])
    )
    return _result("phase_walk", workload, started, t0, None, extra, checks)

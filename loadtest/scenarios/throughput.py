"""``throughput``: busbridge against its two baselines in the same run (DESIGN §7, issue 7).

``mode=burst`` (default): per run, the same ``messages`` D1 events
(``loadtest.baselines.message_frames``, ~300 B legacy frames, unique ``error_id`` each) go through

1. ``ceiling``: the pipelined raw JetStream publisher (``loadtest.ceiling``; no ZMQ, payloads
   prepared before the clock starts): stored / (first publish -> last PubAck);
2. ``naive``: ZMQ -> ``loadtest.naive_bridge`` (one awaited ``js.publish`` per message);
3. ``busbridge``: ZMQ -> ``busbridge run`` (``loadtest.harness.BridgeProcess``) against an
   external nats-server, every guarantee on: durable spool, ``Nats-Msg-Id``, file storage;
   otherwise its defaults, so phase ``dual`` with the legacy republish and the parity tap
   (switching either off moved neither the bridge's CPU per message nor its rate beyond
   the run-to-run spread, loadtest/README.md; ``bridge_extra="parity: {enabled: false}"``
   measures without the tap);

each into the stream on a fresh nats-server. For the ZMQ targets the message set is sent as fast
as a separate sender process can (``baselines.ZmqSender``) and throughput is end to end:
stored / (first ZMQ send -> the server's time of the last store). A target is lossless when
the stream holds every event exactly once (count of ``errbus.error.>`` == sent: with unique
msg ids inside the duplicate window no copy can be stored) and the bridge dropped nothing.
``extra``: every run, the medians per target and the ratios busbridge/ceiling and
busbridge/naive of the medians; a busbridge run also carries the CPU seconds the bridge used
from the first send to the end of the run and that per message (``cpu_us_per_msg``: its
per-message cost, steadier than the rate on a shared 2-core machine). Checks: lossless per
target and run; never speed.

``mode=sustained``: busbridge alone at ``workload.rate_per_sec`` for ``workload.duration_secs``.
Every 0.5 s the backlog (sent - stored) is sampled; passes when nothing is lost and the backlog
stays within ``rate x backlog_bound_secs`` messages the whole run (it does not grow: the
bridge keeps up). ``extra``: achieved send rate, stored rate, peak and final backlog, the
backlog's growth (mean of the last third of the samples minus the first third).

Params: ``mode``, ``messages``, ``targets`` (comma list), ``window`` (ceiling in-flight),
``backlog_bound_secs``, ``timeout_secs`` (per target), ``bridge_extra`` (YAML appended to the
bridge config), ``sync_interval`` (the nats-server's JetStream ``sync_interval`` for every
target: ``always``, ``1s``, ...; empty: the server's default of 2 min).
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import nats

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.baselines import StreamState, ThroughputRun, ZmqSender, create_stream, stream_state
from loadtest.bridge_watch import metric, process_cpu_secs, ready
from loadtest.ceiling import run_ceiling
from loadtest.harness import BridgeProcess
from loadtest.naive_bridge import NaiveBridgeProcess
from loadtest.results import Check, ScenarioResult
from loadtest.scenarios import Progress, ScenarioOptions, machine_info, scenario, utc_now
from loadtest.workload import Workload

__all__ = ["throughput"]

TARGETS = ("ceiling", "naive", "busbridge")
_PARAMS: dict[str, Any] = {
    "mode": "burst",
    "messages": 100_000,
    "targets": ",".join(TARGETS),
    "window": 1024,
    "backlog_bound_secs": 1.0,
    "timeout_secs": 300.0,
    "bridge_extra": "",
    "sync_interval": "",
}


@scenario(
    "throughput",
    defaults=Workload(rate_per_sec=20_000.0, duration_secs=10.0, publishers=4),
    params=_PARAMS,
    help="busbridge vs the naive bridge and the server ceiling, same messages, same run (mode=burst|sustained)",
)
async def throughput(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    started_at, t0 = utc_now(), time.monotonic()
    if options.params["mode"] == "sustained":
        extra, checks = await _sustained(options, progress)
    elif options.params["mode"] == "burst":
        extra, checks = await _burst(options, progress)
    else:
        raise ValueError(
            f"throughput: mode must be burst or sustained, not {options.params['mode']!r}"
        )
    return ScenarioResult(
        scenario="throughput",
        workload=options.workload,
        machine=machine_info(),
        started_at=started_at,
        duration_secs=round(time.monotonic() - t0, 3),
        probe=None,
        extra=extra,
        checks=checks,
    )


# --- burst: the three targets -----------------------------------------------------------------


async def _burst(
    options: ScenarioOptions, progress: Progress
) -> tuple[dict[str, Any], list[Check]]:
    targets = [t.strip() for t in str(options.params["targets"]).split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown or not targets:
        raise ValueError(
            f"throughput: unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}"
        )
    runs: list[ThroughputRun] = []
    for i in range(options.runs):
        for target in targets:
            workdir = options.workdir / f"run{i + 1}-{target}"
            try:
                runs.append(
                    await _one_target(
                        target, workdir, options, progress, f"run {i + 1}/{options.runs} {target}"
                    )
                )
            finally:
                if not options.keep_workdir:
                    shutil.rmtree(workdir, ignore_errors=True)
    return _summary(runs, targets, options), [_lossless_check(r, i) for i, r in enumerate(runs)]


async def _one_target(
    target: str, workdir: Path, options: ScenarioOptions, progress: Progress, stage: str
) -> ThroughputRun:
    sync = str(options.params["sync_interval"]) or None
    server = NatsServerProcess(workdir / "nats", sync_interval=sync)
    await anyio.to_thread.run_sync(server.start)
    try:
        if target == "ceiling":
            return await _ceiling(server.url, options, progress, stage)
        if target == "naive":
            return await _naive(server.url, workdir, options, progress, stage)
        return await _busbridge(server.url, workdir, options, progress, stage)
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def _ceiling(
    url: str, options: ScenarioOptions, progress: Progress, stage: str
) -> ThroughputRun:
    await create_stream(url)
    progress(stage, {"sent": 0})
    p, w = options.params, options.workload
    return await anyio.to_thread.run_sync(
        lambda: run_ceiling(
            url,
            int(p["messages"]),
            w.publishers,
            pad_bytes=w.pad_bytes,
            window=int(p["window"]),
            timeout_secs=float(p["timeout_secs"]),
        )
    )


async def _naive(
    url: str, workdir: Path, options: ScenarioOptions, progress: Progress, stage: str
) -> ThroughputRun:
    await create_stream(url)
    naive = NaiveBridgeProcess(workdir, url)
    await anyio.to_thread.run_sync(naive.start)
    try:
        run = await _send_and_wait("naive", naive.endpoint, url, options, progress, stage)
    finally:
        stats = await anyio.to_thread.run_sync(naive.stop)
    return _with(run, stats, lossless=run.lossless and stats.get("received") == run.sent)


async def _busbridge(
    url: str, workdir: Path, options: ScenarioOptions, progress: Progress, stage: str
) -> ThroughputRun:
    bridge = BridgeProcess(
        workdir, url, extra=str(options.params["bridge_extra"]), log_level="WARNING"
    )
    await anyio.to_thread.run_sync(bridge.start)
    try:
        await _until_ready(bridge)
        cpu_before = process_cpu_secs(bridge.pid)
        run = await _send_and_wait("busbridge", bridge.endpoint, url, options, progress, stage)
        cpu_secs = process_cpu_secs(bridge.pid) - cpu_before
        dropped = await anyio.to_thread.run_sync(
            metric, bridge.admin_port, "busbridge_dropped_total"
        )
    finally:
        await anyio.to_thread.run_sync(bridge.stop)
    stats = {
        "dropped": dropped,
        "cpu_secs": round(cpu_secs, 2),
        "cpu_us_per_msg": round(cpu_secs / max(1, run.sent) * 1e6, 1),
    }
    return _with(run, stats, lossless=run.lossless and dropped == 0)


async def _until_ready(bridge: BridgeProcess, timeout_secs: float = 30.0) -> None:
    """Stream provisioned and PubAcks flowing (``/readyz``), so the clock measures the pipeline."""
    with anyio.fail_after(timeout_secs):
        while not await anyio.to_thread.run_sync(ready, bridge.admin_port):
            await anyio.sleep(0.1)


async def _send_and_wait(
    target: str,
    endpoint: str,
    url: str,
    options: ScenarioOptions,
    progress: Progress,
    stage: str,
    rate: float = 0.0,
) -> ThroughputRun:
    """Send the message set over ZMQ (full speed, or ``rate``); wait until it is stored or stalls."""
    count, w = int(options.params["messages"]), options.workload
    sender = ZmqSender(endpoint, count, w.publishers, pad_bytes=w.pad_bytes, rate_per_sec=rate)
    await anyio.to_thread.run_sync(sender.start)
    try:
        sender.go()
        state = await _wait_stored(
            url, count, sender, progress, stage, float(options.params["timeout_secs"])
        )
        first_ns, last_ns = await anyio.to_thread.run_sync(sender.wait, 30.0)
    finally:
        await anyio.to_thread.run_sync(sender.stop)
    elapsed = (state.last_ts_ns - first_ns) / 1e9
    send_secs = (last_ns - first_ns) / 1e9
    return ThroughputRun(
        target=target,
        sent=count,
        stored=state.messages,
        elapsed_secs=round(elapsed, 4),
        throughput_per_sec=round(state.messages / elapsed) if elapsed > 0 else 0.0,
        lossless=state.messages == count,
        send_rate_per_sec=round(count / send_secs) if send_secs > 0 else 0.0,
    )


async def _wait_stored(
    url: str, expected: int, sender: ZmqSender, progress: Progress, stage: str, timeout_secs: float
) -> StreamState:
    """Until ``expected`` events are stored, or no progress for 5 s after the sender finished."""
    nc = await nats.connect(url)
    try:
        deadline, shown, moved_at, last = time.monotonic() + timeout_secs, 0.0, time.monotonic(), -1
        while True:
            state = await stream_state(nc)
            now = time.monotonic()
            if state.messages != last or sender.sent < expected:
                last, moved_at = state.messages, now
            if now - shown >= 1.0:
                progress(stage, {"sent": sender.sent, "stored": state.messages})
                shown = now
            if state.messages >= expected or now > deadline or now - moved_at > 5.0:
                progress(stage, {"sent": sender.sent, "stored": state.messages})
                return state
            await anyio.sleep(0.02)
    finally:
        await nc.close()


def _with(run: ThroughputRun, extra: dict[str, Any], *, lossless: bool) -> ThroughputRun:
    return msgspec.structs.replace(run, extra={**run.extra, **extra}, lossless=lossless)


def _summary(
    runs: list[ThroughputRun], targets: list[str], options: ScenarioOptions
) -> dict[str, Any]:
    medians = {
        t: statistics.median(r.throughput_per_sec for r in runs if r.target == t) for t in targets
    }
    bb = medians.get("busbridge")
    ratios = {
        f"busbridge/{t}": round(bb / medians[t], 3)
        for t in ("ceiling", "naive")
        if bb and medians.get(t)
    }
    return {
        "mode": "burst",
        "messages": int(options.params["messages"]),
        "runs": [msgspec.to_builtins(r) for r in runs],
        "median_throughput_per_sec": medians,
        "ratios": ratios,
    }


def _lossless_check(run: ThroughputRun, index: int) -> Check:
    extra = {
        k: v
        for k, v in run.extra.items()
        if k in ("dropped", "received", "ack_errors", "acked_duplicate")
    }
    return Check(
        name=f"lossless_{run.target}_{index + 1}",
        ok=run.lossless,
        detail=f"{run.stored} of {run.sent} events stored" + (f" ({extra})" if extra else ""),
    )


# --- sustained: busbridge at a fixed rate -----------------------------------------------------


async def _sustained(
    options: ScenarioOptions, progress: Progress
) -> tuple[dict[str, Any], list[Check]]:
    w, p = options.workload, options.params
    count = int(w.rate_per_sec * w.duration_secs)
    bound = w.rate_per_sec * float(p["backlog_bound_secs"])
    workdir = options.workdir / "sustained"
    sync = str(options.params["sync_interval"]) or None
    server = NatsServerProcess(workdir / "nats", sync_interval=sync)
    await anyio.to_thread.run_sync(server.start)
    try:
        bridge = BridgeProcess(
            workdir, server.url, extra=str(p["bridge_extra"]), log_level="WARNING"
        )
        await anyio.to_thread.run_sync(bridge.start)
        try:
            await _until_ready(bridge)
            samples, run = await _paced(
                bridge.endpoint, server.url, count, w, progress, float(p["timeout_secs"])
            )
            dropped = await anyio.to_thread.run_sync(
                metric, bridge.admin_port, "busbridge_dropped_total"
            )
        finally:
            await anyio.to_thread.run_sync(bridge.stop)
    finally:
        await anyio.to_thread.run_sync(server.stop)
        if not options.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return _sustained_report(samples, run, dropped, bound)


async def _paced(
    endpoint: str, url: str, count: int, w: Workload, progress: Progress, timeout_secs: float
) -> tuple[list[tuple[float, int, int]], ThroughputRun]:
    """Send ``count`` at ``w.rate_per_sec``; sample ``(secs, sent, stored)`` every 0.5 s until all
    is stored (or stalls 5 s after the end)."""
    sender = ZmqSender(
        endpoint, count, w.publishers, pad_bytes=w.pad_bytes, rate_per_sec=w.rate_per_sec
    )
    await anyio.to_thread.run_sync(sender.start)
    samples: list[tuple[float, int, int]] = []
    nc = await nats.connect(url)
    try:
        sender.go()
        t0, moved_at, last = time.monotonic(), time.monotonic(), -1
        while True:
            await anyio.sleep(0.5)
            state = await stream_state(nc)
            now = time.monotonic()
            samples.append((round(now - t0, 2), sender.sent, state.messages))
            progress("sustained busbridge", {"sent": sender.sent, "stored": state.messages})
            if state.messages != last or sender.sent < count:
                last, moved_at = state.messages, now
            if (
                state.messages >= count
                or now - moved_at > 5.0
                or now - t0 > w.duration_secs + timeout_secs
            ):
                break
        first_ns, last_ns = await anyio.to_thread.run_sync(sender.wait, 30.0)
    finally:
        await nc.close()
        await anyio.to_thread.run_sync(sender.stop)
    send_secs = (last_ns - first_ns) / 1e9
    elapsed = (state.last_ts_ns - first_ns) / 1e9
    run = ThroughputRun(
        target="busbridge",
        sent=count,
        stored=state.messages,
        elapsed_secs=round(elapsed, 3),
        throughput_per_sec=round(state.messages / elapsed) if elapsed > 0 else 0.0,
        lossless=state.messages == count,
        send_rate_per_sec=round(count / send_secs) if send_secs > 0 else 0.0,
    )
    return samples, run


def _sustained_report(
    samples: list[tuple[float, int, int]], run: ThroughputRun, dropped: float, bound: float
) -> tuple[dict[str, Any], list[Check]]:
    sending = [s for s in samples if s[1] < run.sent] or samples  # while the sender was sending
    backlogs = [sent - stored for _, sent, stored in sending]
    third = max(1, len(backlogs) // 3)
    growth = (
        statistics.mean(backlogs[-third:]) - statistics.mean(backlogs[:third]) if backlogs else 0.0
    )
    peak = max(backlogs, default=0)
    extra = {
        "mode": "sustained",
        "run": {**msgspec.to_builtins(run), "dropped": dropped},
        "backlog_peak": peak,
        "backlog_growth": round(growth, 1),
        "backlog_bound": round(bound),
        "samples": samples,
    }
    checks = [
        Check(
            name="lossless",
            ok=run.lossless and dropped == 0,
            detail=f"{run.stored} of {run.sent} events stored, {dropped:.0f} dropped",
        ),
        Check(
            name="backlog_bounded",
            ok=peak <= bound,
            detail=f"backlog peaked at {peak} messages (bound {bound:.0f}), growth {growth:+.0f} over the run; "
            f"sent at {run.send_rate_per_sec:.0f}/s",
        ),
    ]
    return extra, checks

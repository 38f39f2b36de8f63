"""``soak``: steady traffic for a long time while the bridge's memory is sampled (DESIGN §2:
memory stays flat under load).

One ``LoadEnv`` (nats-server + ``busbridge run`` process + probe) takes ``workload`` (default
5k msg/s for 900 s, all seven dialects). From just before the traffic starts until it ends,
the bridge's ``VmRSS`` and ``RssAnon`` (``/proc/<pid>/status``, the bridge process and its
decode worker summed), its spool backlog and the
messages sent that it has not read yet are sampled every ``sample_secs``; one more sample is taken when the producer has sent everything.
Then the stream catches up and is reconciled by token, as in ``steady``.

Judged (``rss_summary``): RSS is allowed to grow during ``warmup_secs`` (the bounded id windows
fill: ``dedup.max_ids``, ``identity.max_tracked``, parity's match window); after it, it must stay
flat: ``rss_flat`` passes when the last sample is at most ``max_growth`` (a fraction) above the
first sample at or after the warm-up. Reported besides: the least-squares slope of RSS over the
samples after the warm-up in MiB per minute, the same slope net of the ZMQ receive queue
(RSS fitted on time and ``unread`` together: a bridge that falls behind holds the queue in
memory, which is not growth) with the KiB one unread message costs, RSS at the warm-up vs
the end as a ratio, and every
sample (``rss_samples``: ``[seconds since the first sample, VmRSS MiB, RssAnon MiB, spool
backlog, unread]``), which ``loadtest.plot`` draws. ``unread`` (sent by the producer minus
``busbridge_frames_received_total``) is what waits in the kernel's and libzmq's receive
queues: libzmq's queue is bridge memory (several KiB per message), so RSS follows it. The other checks are the traffic scenarios' own:
loss, copies, order, unexpected, dead letters, ``frames_read``. A negative ``max_growth``
makes ``rss_flat`` fail on any run (the proof that the check can fail). ``bridge_extra``: YAML
sections for the bridge's config (``"malloc_trim_interval_secs: 0"`` measures without the
heap trim). The stream may lag behind the traffic (a backlog in the spool): the run waits up
to half the traffic's duration (at least 120 s) for it to catch up before reconciling.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import anyio

from loadtest.bridge_watch import status_kib
from loadtest.load_producer import LoadProducer
from loadtest.results import Check, ScenarioResult, correctness_checks
from loadtest.scenarios import Progress, ScenarioOptions, machine_info, scenario, utc_now
from loadtest.scenarios.env import SPOOL_METRIC, LoadEnv, bridge_extra_param
from loadtest.workload import Workload

__all__ = ["RssSampler", "fit_time_and_unread", "rss_summary", "slope_per_min", "soak"]

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)

#: one sample: (seconds since the first sample, VmRSS MiB, RssAnon MiB, spool backlog messages,
#: messages sent and not read by the bridge yet)
Sample = tuple[float, float, float, int, int]


class RssSampler:
    """Samples the bridge process of ``env`` (memory, spool backlog, what ``producer`` sent that
    it has not read) every ``interval_secs`` while ``run`` runs; ``sample`` takes one now."""

    def __init__(self, env: LoadEnv, producer: LoadProducer, interval_secs: float) -> None:
        self.env, self.producer, self.interval_secs = env, producer, interval_secs
        self.pid = env.bridge.pid or 0
        self.samples: list[Sample] = []
        self._t0 = time.monotonic()

    async def sample(self) -> Sample:
        at = round(time.monotonic() - self._t0, 2)
        rss = status_kib(self.pid, "VmRSS") / 1024
        anon = status_kib(self.pid, "RssAnon") / 1024
        spool = int(await self.env.metric(SPOOL_METRIC))
        read = int(await self.env.metric("busbridge_frames_received_total"))
        unread = max(0, self.producer.sent_count - read)
        self.samples.append((at, round(rss, 1), round(anon, 1), spool, unread))
        return self.samples[-1]

    async def run(self) -> None:
        """Sample now and then every ``interval_secs`` (on a fixed grid) until cancelled."""
        while True:
            await self.sample()
            next_at = self._t0 + len(self.samples) * self.interval_secs
            await anyio.sleep(max(0.0, next_at - time.monotonic()))


def slope_per_min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, per minute; None for fewer than two
    distinct times."""
    n = len(points)
    if n < 2:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    sxy = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return sxy / sxx * 60.0


def fit_time_and_unread(samples: list[Sample]) -> tuple[float, float] | None:
    """Least squares of RSS over time and unread messages together: ``(MiB per minute, KiB per
    unread message)``, i.e. the growth that the ZMQ receive queue does not explain, and what
    one queued message costs. None for fewer than three samples or no time spread; the unread
    term is 0 when unread never changed."""
    n = len(samples)
    if n < 3:
        return None
    mt = sum(s[0] for s in samples) / n
    mu = sum(s[4] for s in samples) / n
    mr = sum(s[1] for s in samples) / n
    tt = sum((s[0] - mt) ** 2 for s in samples)
    uu = sum((s[4] - mu) ** 2 for s in samples)
    tu = sum((s[0] - mt) * (s[4] - mu) for s in samples)
    tr = sum((s[0] - mt) * (s[1] - mr) for s in samples)
    ur = sum((s[4] - mu) * (s[1] - mr) for s in samples)
    det = tt * uu - tu * tu
    if tt == 0:
        return None
    if uu == 0 or det <= 1e-9 * tt * uu:
        return tr / tt * 60.0, 0.0
    return (tr * uu - ur * tu) / det * 60.0, (ur * tt - tr * tu) / det * 1024.0


def rss_summary(
    samples: list[Sample], warmup_secs: float, max_growth: float
) -> tuple[dict[str, Any], Check]:
    """The RSS numbers of a soak (``extra``) and its ``rss_flat`` check (see the module note)."""
    after = [s for s in samples if s[0] >= warmup_secs and s[1] > 0]
    numbers: dict[str, Any] = {
        "rss_start_mib": samples[0][1] if samples else 0.0,
        "rss_max_mib": max((s[1] for s in samples), default=0.0),
    }
    if len(after) < 2:
        detail = f"{len(after)} RSS samples after the {warmup_secs:g} s warm-up: nothing to judge"
        return numbers, Check(name="rss_flat", ok=False, detail=detail)
    (t_w, rss_w, anon_w, *_), (t_e, rss_e, anon_e, *_) = after[0], after[-1]
    slope = slope_per_min([(s[0], s[1]) for s in after]) or 0.0
    anon_slope = slope_per_min([(s[0], s[2]) for s in after])
    growth = rss_e / rss_w - 1.0
    numbers |= {
        "rss_at_warmup_mib": rss_w,
        "rss_end_mib": rss_e,
        "rss_end_over_warmup": round(rss_e / rss_w, 3),
        "rss_slope_mib_per_min": round(slope, 3),
        "rss_anon_at_warmup_mib": anon_w,
        "rss_anon_end_mib": anon_e,
        "rss_anon_slope_mib_per_min": round(anon_slope or 0.0, 3),
    }
    fit = fit_time_and_unread(after) if all(len(s) >= 5 for s in after) else None
    if fit is not None:
        numbers["rss_slope_net_of_unread_mib_per_min"] = round(fit[0], 3)
        numbers["rss_kib_per_unread_message"] = round(fit[1], 2)
    detail = (
        f"RSS {rss_w:g} MiB at {t_w:g} s -> {rss_e:g} MiB at {t_e:g} s ({100 * growth:+.1f}%,"
        f" allowed {100 * max_growth:+.1f}%); slope {slope:+.2f} MiB/min after the warm-up"
    )
    if fit is not None:
        detail += f" ({fit[0]:+.2f} net of the ZMQ receive queue, {fit[1]:.1f} KiB per message)"
    return numbers, Check(name="rss_flat", ok=growth <= max_growth, detail=detail)


@scenario(
    "soak",
    defaults=Workload(
        rate_per_sec=5_000.0, duration_secs=900.0, publishers=4, dialects=ALL_DIALECTS
    ),
    params={"sample_secs": 10.0, "warmup_secs": 180.0, "max_growth": 0.05, "bridge_extra": ""},
    help="steady traffic for long (15 min at 5k msg/s): lossless, bridge RSS sampled every"
    " sample_secs, flat after warmup_secs (end within max_growth), slope in MiB/min",
)
async def soak(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    p, workload = options.params, options.workload
    started, t0 = utc_now(), time.monotonic()
    workdir = options.workdir / "soak"
    async with LoadEnv(workdir, bridge_extra=bridge_extra_param(p)) as env:
        producer = env.producer(workload)
        sampler = RssSampler(env, producer, float(p["sample_secs"]))

        def show(stage: str, counters: dict[str, float]) -> None:
            rss = sampler.samples[-1][1] if sampler.samples else 0.0
            progress(stage, {**counters, "rss_mib": rss})

        async with anyio.create_task_group() as tg:
            tg.start_soon(sampler.run)
            sent = await env.drive(producer, show, "soak")
            tg.cancel_scope.cancel()
        await sampler.sample()  # the end of the traffic
        await env.catch_up(sent, show, timeout_secs=max(120.0, workload.duration_secs / 2))
        read = int(await env.metric("busbridge_frames_received_total"))
        extra: dict[str, Any] = {
            "sent": sent.total(),
            "send_rate_per_sec": round(sent.total() / workload.duration_secs, 1),
            "frames_read_by_bridge": read,
            "bridge_dropped": int(await env.metric("busbridge_dropped_total")),
            "bridge_duplicates": int(await env.metric("busbridge_duplicates_total")),
            "peak_spool_messages": env.peak_spool,
            "sample_secs": float(p["sample_secs"]),
            "warmup_secs": float(p["warmup_secs"]),
            "max_growth": float(p["max_growth"]),
        }
        report = env.probe.report(sent)
    if not options.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    numbers, flat = rss_summary(sampler.samples, float(p["warmup_secs"]), float(p["max_growth"]))
    frames = Check(
        name="frames_read",
        ok=read == sent.total(),
        detail=f"bridge read {read} of {sent.total()} frames sent",
    )
    return ScenarioResult(
        scenario="soak",
        workload=workload,
        machine=machine_info(),
        started_at=started,
        duration_secs=round(time.monotonic() - t0, 2),
        probe=report,
        extra={**extra, **numbers, "rss_samples": [list(s) for s in sampler.samples]},
        checks=[*correctness_checks(report), frames, flat],
    )

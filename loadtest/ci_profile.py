"""The CI profile: short runs of the key scenarios, judged on loss, duplicates and order only.

``busbridge loadtest ci`` and ``tests/loadtest/test_ci_profile.py`` (so ``.ci/run``, through
the README's test command) run ``PROFILE``: steady, burst, duplicate_storm, flood,
nats_outage, bridge_crash, cluster_node_loss, reload_under_load and legacy_nats with small
workloads (a few minutes in all on a 2-vCPU machine). Speed is never judged (DESIGN §7): each
scenario keeps its own correctness checks (``loadtest.results.correctness_checks`` plus the
scenario's), minus the few that measure speed (``NOT_JUDGED``: moved to ``extra``).

Final recount
-------------
The live probe records every stored message as it arrives; a message deleted from the stream
afterwards would never show in its numbers. So each scenario environment, before it stops
anything (``loadtest.scenarios.env.BEFORE_TEARDOWN``), gets a second, independent read: a
fresh ``StreamProbe`` reads the whole stream from its first message, and two checks compare
it with what the live probe saw:

* ``stream_lost``: every event the live probe received is still in the stream at the end;
* ``stream_duplicated``: the stream at the end holds each token once.

Fault injection (``--inject``, tests only: it proves the profile can fail) acts on the
system's output, the stream, just before that recount, never on the probe's numbers:
``loss=N`` deletes N stored error events (JetStream ``STREAM.MSG.DELETE``), ``duplicate=N``
publishes N stored error events again with fresh ``Nats-Msg-Id`` headers (so the duplicate
window cannot collapse them). Either turns the profile red with the check named above.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec
import nats
from nats.aio.msg import Msg

from contracts.subjects import HEADER_CONTRACT, HEADER_MSG_ID
from loadtest.reconcile import Observed
from loadtest.results import Check, ScenarioResult
from loadtest.stream import read_all

__all__ = [
    "NOT_JUDGED",
    "PROFILE",
    "Injection",
    "ProfileEntry",
    "Recount",
    "parse_injection",
    "run_guarded",
    "run_profile",
    "select",
]

ProgressFactory = Callable[[str], Callable[[str, dict[str, float]], None]]


class ProfileEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One scenario of the profile: ``workload`` and ``params`` override the scenario's
    defaults (``loadtest.scenarios.DEFAULTS``) field by field."""

    scenario: str
    workload: dict[str, Any] = {}
    params: dict[str, Any] = {}


_SHORT = {"rate_per_sec": 1000.0, "duration_secs": 4.0, "publishers": 4}
PROFILE: tuple[ProfileEntry, ...] = (
    ProfileEntry(
        scenario="steady",
        workload={
            **_SHORT,
            "dialects": dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0),
            "malformed_ratio": 0.01,
        },
    ),
    ProfileEntry(
        scenario="burst",
        workload={
            **_SHORT,
            "rate_per_sec": 500.0,
            "burst": {"every_secs": 2.0, "length_secs": 0.5, "factor": 6.0},
        },
    ),
    ProfileEntry(scenario="duplicate_storm", workload={**_SHORT, "rate_per_sec": 800.0}),
    ProfileEntry(scenario="flood", workload={**_SHORT}),
    # traffic runs until the backlog is drained plus tail_secs; duration_secs only caps it
    ProfileEntry(
        scenario="nats_outage",
        workload={**_SHORT, "duration_secs": 60.0},
        params={"warmup_secs": 2.0, "outage_secs": 3.0, "tail_secs": 1.0, "max_drain_secs": 45.0},
    ),
    ProfileEntry(
        scenario="bridge_crash",
        workload={**_SHORT, "duration_secs": 6.0},
        params={"kill_after_secs": 2.0, "down_secs": 1.0},
    ),
    ProfileEntry(
        scenario="cluster_node_loss",
        workload={**_SHORT, "duration_secs": 6.0},
        params={"kill_after_secs": 2.0},
    ),
    ProfileEntry(
        scenario="reload_under_load", workload={**_SHORT, "duration_secs": 8.0}
    ),  # 7 reloads, 1 s apart
    # legacy errors.> half: 400 errors (~800 library A/B messages, copies included) in 4 s
    ProfileEntry(scenario="legacy_nats", workload={**_SHORT, "rate_per_sec": 100.0}),
)

# Checks some scenarios make that measure speed; the CI profile reports them in ``extra`` only.
NOT_JUDGED: frozenset[str] = frozenset()


class Injection(msgspec.Struct, frozen=True, kw_only=True):
    """Faults put into the stream before the final recount (tests only): ``loss`` stored events
    deleted, ``duplicate`` stored events published again under fresh msg ids."""

    loss: int = 0
    duplicate: int = 0


def parse_injection(values: Sequence[str]) -> Injection:
    """``["loss=5", "duplicate=3"]`` -> ``Injection``. Raises ``ValueError`` on another form."""
    counts: dict[str, int] = {}
    for value in values:
        kind, _, number = value.partition("=")
        if kind not in ("loss", "duplicate") or not number.isdigit():
            raise ValueError(f"--inject wants loss=N or duplicate=N, got {value!r}")
        counts[kind] = counts.get(kind, 0) + int(number)
    return Injection(**counts)


def select(only: Sequence[str] | None) -> list[ProfileEntry]:
    """The profile entries named in ``only`` (all when None). Raises ``ValueError`` for a name
    not in the profile."""
    if only is None:
        return list(PROFILE)
    names = [e.scenario for e in PROFILE]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ValueError(
            f"not in the CI profile: {', '.join(unknown)} (profile: {', '.join(names)})"
        )
    return [e for e in PROFILE if e.scenario in only]


async def run_profile(
    entries: Sequence[ProfileEntry],
    workdir: Path,
    progress: ProgressFactory,
    *,
    injection: Injection | None = None,
) -> list[ScenarioResult]:
    """Run ``entries`` one after another in ``workdir``; each result carries the recount checks.

    A scenario that raises becomes a failed result (``run_guarded``) and the profile goes on.
    """
    from loadtest.scenarios import DEFAULTS, ScenarioOptions
    from loadtest.workload import Workload

    results = []
    for entry in entries:
        default_workload, _, _ = DEFAULTS[entry.scenario]
        workload = msgspec.convert(
            {**msgspec.to_builtins(default_workload), **entry.workload}, Workload
        )
        options = ScenarioOptions(
            workload=workload,
            workdir=workdir / entry.scenario,
            keep_workdir=True,
            params=entry.params,
        )
        recounts: list[Recount] = []
        with _recount_hook(recounts, injection or Injection()):
            result = await run_guarded(entry.scenario, options, progress(entry.scenario))
        results.append(_judged(result, recounts))
    return results


async def run_guarded(
    name: str, options: Any, progress: Callable[[str, dict[str, float]], None]
) -> ScenarioResult:
    """``run_scenario``, with an error turned into a failed result (check ``completed`` naming the
    error), so one broken scenario does not hide the others' results. Cancellation passes."""
    from loadtest.scenarios import machine_info, run_scenario, utc_now

    started_at, t0 = utc_now(), time.monotonic()
    try:
        return await run_scenario(name, options, progress)
    except Exception as exc:
        return ScenarioResult(
            scenario=name,
            workload=options.workload,
            machine=machine_info(),
            started_at=started_at,
            duration_secs=round(time.monotonic() - t0, 2),
            probe=None,
            checks=[Check(name="completed", ok=False, detail=f"{type(exc).__name__}: {exc}")],
        )


def _judged(result: ScenarioResult, recounts: list[Recount]) -> ScenarioResult:
    """``result`` with the speed checks moved to ``extra`` and the recount checks added."""
    judged = [c for c in result.checks if c.name not in NOT_JUDGED]
    extra = dict(result.extra)
    skipped = [msgspec.to_builtins(c) for c in result.checks if c.name in NOT_JUDGED]
    if skipped:
        extra["ci_not_judged"] = skipped
    extra["ci_recount"] = [msgspec.to_builtins(r) for r in recounts]
    return msgspec.structs.replace(result, checks=judged + recount_checks(recounts), extra=extra)


# -- final recount and injection -----------------------------------------------------------------


class Recount(msgspec.Struct, kw_only=True):
    """One environment's final read of the stream, against what its live probe saw.

    ``stream_messages``: messages the fresh probe read; ``live_events``/``final_events``: distinct
    event tokens seen live / at the end; ``missing``: seen live, gone at the end (up to 10 in
    ``missing_samples``); ``final_copies``: extra stored copies at the end; ``deleted`` and
    ``republished``: what was injected.
    """

    stream_messages: int
    live_events: int
    final_events: int
    missing: int
    missing_samples: list[tuple[int, int]]
    live_copies: int
    final_copies: int
    deleted: int = 0
    republished: int = 0


def recount_checks(recounts: Sequence[Recount]) -> list[Check]:
    """``stream_lost`` and ``stream_duplicated`` over every recount; a failed ``stream_recount``
    when there was none (the scenario never reached the hook)."""
    if not recounts:
        return [
            Check(
                name="stream_recount",
                ok=False,
                detail="no final recount: no scenario environment reached teardown",
            )
        ]
    missing = sum(r.missing for r in recounts)
    copies = sum(r.final_copies for r in recounts)
    samples = [s for r in recounts for s in r.missing_samples][:5]
    return [
        Check(
            name="stream_lost",
            ok=missing == 0,
            detail=f"{missing} of {sum(r.live_events for r in recounts)} events received live are gone from the stream"
            " at the end" + (f"; e.g. {samples}" if samples else ""),
        ),
        Check(
            name="stream_duplicated",
            ok=copies == 0,
            detail=f"{copies} extra stored copies in the stream at the end"
            f" (seen live: {sum(r.live_copies for r in recounts)})",
        ),
    ]


@contextlib.contextmanager
def _recount_hook(sink: list[Recount], injection: Injection) -> Iterator[None]:
    from loadtest.scenarios.env import BEFORE_TEARDOWN

    async def hook(env: Any) -> None:
        sink.append(
            await final_recount(
                env.probe.urls, env.probe.observed, injection, stream=env.probe.stream
            )
        )

    token = BEFORE_TEARDOWN.set((*BEFORE_TEARDOWN.get(), hook))
    try:
        yield
    finally:
        BEFORE_TEARDOWN.reset(token)


async def final_recount(
    urls: list[str],
    live: Observed,
    injection: Injection,
    *,
    stream: str = "ERRBUS",
    timeout_secs: float = 60.0,
) -> Recount:
    """Inject ``injection`` into ``stream``, read the whole stream with a fresh probe, compare with
    ``live`` (what the live probe observed)."""
    live_tokens, live_copies = (
        set(live.first_ns),
        sum(live.copies.values()),
    )  # before the live probe sees injected copies
    deleted = republished = 0
    if injection.loss or injection.duplicate:
        events = [
            m
            for m in await read_all(urls, stream)
            if (m.headers or {}).get(HEADER_CONTRACT) == "error_event"
        ]
        doomed = _spread(events, injection.loss)
        deleted = await _delete(urls, stream, doomed)
        gone = {id(m) for m in doomed}
        kept = [
            m for m in events if id(m) not in gone
        ]  # copies of deleted events would hide both faults
        republished = await _republish(urls, _spread(kept, injection.duplicate))
    final = await _read_fresh(urls, stream, timeout_secs)
    missing = sorted(live_tokens - final.first_ns.keys())
    return Recount(
        stream_messages=final.stream_messages,
        live_events=len(live_tokens),
        final_events=len(final.first_ns),
        missing=len(missing),
        missing_samples=missing[:10],
        live_copies=live_copies,
        final_copies=sum(final.copies.values()),
        deleted=deleted,
        republished=republished,
    )


def _spread(events: list[Msg], n: int) -> list[Msg]:
    """``n`` messages spread evenly over ``events`` (all of them when fewer)."""
    if n <= 0 or not events:
        return []
    if n >= len(events):
        return list(events)
    return [events[k * len(events) // n] for k in range(n)]


async def _delete(urls: list[str], stream: str, msgs: list[Msg]) -> int:
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        js = nc.jetstream()
        for m in msgs:
            await js.delete_msg(stream, m.metadata.sequence.stream)
        return len(msgs)
    finally:
        await nc.close()


async def _republish(urls: list[str], msgs: list[Msg]) -> int:
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        js = nc.jetstream()
        for m in msgs:
            headers = {**(m.headers or {}), HEADER_MSG_ID: f"ci-inject-{uuid.uuid4()}"}
            await js.publish(m.subject, m.data, headers=headers)
        return len(msgs)
    finally:
        await nc.close()


async def _read_fresh(
    urls: list[str], stream: str, timeout_secs: float, idle_secs: float = 10.0
) -> Observed:
    """Everything in ``stream`` now, read by a fresh ``StreamProbe`` from the first message."""
    from loadtest.probe import StreamProbe

    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        target = (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()
    probe = StreamProbe(urls, stream=stream)
    await probe.start()
    try:
        await _until(
            lambda: probe.observed.stream_messages >= target,
            lambda: probe.observed.stream_messages,
            timeout_secs=timeout_secs,
            idle_secs=idle_secs,
        )
    finally:
        await probe.stop()
    return probe.observed


async def _until(
    done: Callable[[], bool], progress: Callable[[], int], *, timeout_secs: float, idle_secs: float
) -> None:
    deadline = time.monotonic() + timeout_secs
    last, moved = progress(), time.monotonic()
    while not done() and time.monotonic() < deadline and time.monotonic() - moved < idle_secs:
        await anyio.sleep(0.05)
        if progress() != last:
            last, moved = progress(), time.monotonic()

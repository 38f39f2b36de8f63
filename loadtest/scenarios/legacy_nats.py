"""``legacy_nats``: the legacy NATS half (``errors.>``) under load, bridged into ERRBUS.

The scenario plays the two legacy NATS error libraries (bridge/legacy/nats_libraries.py) against
a real nats-server and a real ``busbridge run`` process:

* it creates library A's stream ``ERRORS`` on ``errors.>`` as library A does (no duplicate
  window, no msg ids), and the bridge (``intake.legacy_poll_secs`` short) finds it and consumes
  it through its durable ``busbridge_legacy``;
* ``workload.publishers`` agents (``LoadAgent000`` ...), each on its own NATS connection,
  publish ``workload.rate_per_sec`` errors per second between them for ``duration_secs``:
  library A payloads (``id``, naive-local ISO ``timestamp``, ``agent_name``, ``category`` ...;
  2 copies on ``errors.events`` and ``errors.agents.<agent>``, critical ones 4 with
  ``errors.system`` and ``errors.system.critical``, every copy with the same ``id`` and the
  ``{agent, severity}`` headers) and, a ``library_b_share`` of them, library B payloads
  (``error_id``, ``source_agent``, ``error_type`` ... once on ``errors.<severity>.<agent>``, no
  headers). Each error's ``message`` carries the token ``lt-p<agent>-<n>`` (``traffic.token``)
  and a ``ref`` that keeps fingerprints apart. Every publish awaits its PubAck (the libraries'
  ``js.publish``), so each agent's messages sit in ``ERRORS`` in its send order.

Adapter to the probe: the ``SentLog`` holds one entry per distinct error (kind event, send time
of its first copy), never the copies. So ``reconcile`` judges every distinct error stored exactly
once (copies collapsed: an extra stored copy is ``duplicated``), no loss, and per-agent order over
every error (the copies of one error come from one connection, so none is left out of the order
check as the ZMQ duplicate copies from another socket are).

Own checks: ``copies_sent`` (library A copies, critical errors and library B errors were really
sent), ``stored_once`` (error events stored == distinct errors), ``legacy_acked`` (the bridge's
``busbridge_intake_messages_total{input="legacy"}`` stored + duplicate == legacy messages
published: every copy got an outcome, none rejected), ``legacy_consumer_settled`` (JetStream
consumer info of ``busbridge_legacy`` at the end: nothing pending, nothing unacknowledged).

``fault=copy_ids`` (tests only) publishes library A's copies each under a fresh ``id``, as a
library that numbered every copy would: the bridge cannot collapse them, and ``duplicated``,
``stored_once`` and the recount's ``stream_duplicated`` must fail.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import uuid
from datetime import datetime
from typing import Any

import anyio
import msgspec
import nats
import nats.js.errors
from nats.js.api import StreamConfig

from loadtest import traffic
from loadtest.load_producer import SentLog, source_name
from loadtest.message_mix import KIND_EVENT
from loadtest.results import Check, ScenarioResult, correctness_checks
from loadtest.scenarios import Progress, ScenarioOptions, machine_info, scenario, utc_now
from loadtest.scenarios.env import LoadEnv
from loadtest.workload import Workload

__all__ = ["LEGACY_DURABLE", "LEGACY_STREAM", "legacy_nats", "legacy_payload"]

LEGACY_STREAM = "ERRORS"
LEGACY_DURABLE = "busbridge_legacy"
FAULTS = ("", "copy_ids")

_A_SEVERITIES = ("error", "warning", "high")  # library A collapses most severities to these
_A_CATEGORIES = ("system", "network", "resource", "database")
_B_SEVERITIES = ("ERROR", "WARNING", "CRITICAL", "high")
_B_TYPES = ("ConnectionError", "TimeoutError", "MemoryError", "DB_WRITE")
_dumps = json.dumps  # CPython defaults, like both libraries


class _Error(msgspec.Struct, frozen=True):
    """One legacy error: its messages ``(subject, payload, headers)``, the first copy first."""

    library: str
    critical: bool
    messages: list[tuple[str, bytes, dict[str, str] | None]]


def legacy_payload(
    rng: random.Random,
    agent: int,
    n: int,
    *,
    library_b_share: float,
    critical_share: float,
    pad_bytes: int,
    fault: str = "",
) -> _Error:
    """Error ``n`` of ``agent`` as library A or B publishes it (module note)."""
    name = source_name(agent)
    text = traffic.event_text(agent, n, pad_bytes)
    stamp = datetime.now().isoformat()  # naive local, as both libraries write it
    err_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    corr = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if rng.random() < library_b_share:
        severity = rng.choice(_B_SEVERITIES)
        body = {
            "error_id": err_id,
            "timestamp": stamp,
            "source_agent": name,
            "error_type": rng.choice(_B_TYPES),
            "severity": severity,
            "message": text,
            "stack_trace": None,
            "context": {"attempt": n % 5, "i": n},
            "correlation_id": None,
            "retry_count": 0,
        }
        subject = f"errors.{severity.lower()}.{name}"
        return _Error("B", severity == "CRITICAL", [(subject, _dumps(body).encode(), None)])
    critical = rng.random() < critical_share
    severity = "critical" if critical else rng.choice(_A_SEVERITIES)
    subjects = ["errors.events", f"errors.agents.{name}"]
    if critical:
        subjects += ["errors.system", "errors.system.critical"]
    headers = {"agent": name, "severity": severity}
    category = rng.choice(_A_CATEGORIES)
    out: list[tuple[str, bytes, dict[str, str] | None]] = []
    for k, subject in enumerate(subjects):
        body = {
            "id": err_id if k == 0 or fault != "copy_ids" else str(uuid.uuid4()),
            "timestamp": stamp,
            "agent_name": name,
            "severity": severity,
            "category": category,
            "message": text,
            "details": {"endpoint": "tcp://192.168.100.17:7140", "attempt": n % 5, "i": n},
            "stack_trace": None,
            "correlation_id": corr,
            "resolved": False,
            "resolution_notes": None,
        }
        out.append((subject, _dumps(body).encode(), dict(headers)))
    return _Error("A", critical, out)


class _Tally:
    def __init__(self) -> None:
        self.errors = 0
        self.messages = 0
        self.copies = 0
        self.library_b = 0
        self.critical_a = 0


async def create_legacy_stream(urls: list[str], name: str = LEGACY_STREAM) -> None:
    """Library A's stream, as the library creates it: ``errors.>``, no duplicate window."""
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name=name,
                subjects=["errors.>"],
                max_msgs=1_000_000,
                max_age=7 * 86400,
                duplicate_window=0,
            )
        )
    finally:
        await nc.close()


async def _agent(
    urls: list[str],
    agent: int,
    count: int,
    interval: float,
    t0: float,
    workload: Workload,
    params: dict[str, Any],
    log: list[int],
    tally: _Tally,
) -> None:
    rng = random.Random(workload.seed * 1000 + agent)
    nc = await nats.connect(servers=urls, connect_timeout=2, name=f"legacy-{source_name(agent)}")
    try:
        js = nc.jetstream()
        for n in range(count):
            due = t0 + n * interval
            if (wait := due - time.monotonic()) > 0:
                await anyio.sleep(wait)
            error = legacy_payload(
                rng,
                agent,
                n,
                library_b_share=float(params["library_b_share"]),
                critical_share=float(params["critical_share"]),
                pad_bytes=workload.pad_bytes,
                fault=str(params["fault"]),
            )
            log.append(time.monotonic_ns())
            for subject, payload, headers in error.messages:
                await js.publish(subject, payload, headers=headers)
            tally.errors += 1
            tally.messages += len(error.messages)
            tally.copies += len(error.messages) - 1
            tally.library_b += error.library == "B"
            tally.critical_a += error.library == "A" and error.critical
    finally:
        await nc.close()


async def _consumer_state(urls: list[str]) -> tuple[int, int]:
    """``(pending, unacknowledged)`` of the legacy durable; ``(-1, -1)`` when it does not exist."""
    nc = await nats.connect(servers=urls, connect_timeout=2)
    try:
        info = await nc.jetstream().consumer_info(LEGACY_STREAM, LEGACY_DURABLE)
        return info.num_pending, info.num_ack_pending
    except nats.js.errors.NotFoundError:
        return -1, -1
    finally:
        await nc.close()


async def _settled(urls: list[str], timeout_secs: float) -> tuple[int, int]:
    deadline = time.monotonic() + timeout_secs
    state = await _consumer_state(urls)
    while state != (0, 0) and time.monotonic() < deadline:
        await anyio.sleep(0.2)
        state = await _consumer_state(urls)
    return state


@scenario(
    "legacy_nats",
    defaults=Workload(rate_per_sec=200.0, duration_secs=10.0, publishers=4),
    params={
        "library_b_share": 0.3,
        "critical_share": 0.25,
        "settle_timeout_secs": 30.0,
        "fault": "",
    },
    help="library A (2/4 copies, one id) and B payloads on errors.> -> ERRBUS: each error once,"
    " per-agent order, legacy consumer fully acked",
)
async def legacy_nats(options: ScenarioOptions, progress: Progress) -> ScenarioResult:
    started, t0 = utc_now(), time.monotonic()
    workload, params = options.workload, options.params
    if params["fault"] not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS}, got {params['fault']!r}")
    agents = workload.publishers
    per_agent = max(1, int(workload.rate_per_sec * workload.duration_secs / agents))
    interval = agents / workload.rate_per_sec
    tally = _Tally()
    logs: list[list[int]] = [[] for _ in range(agents)]
    workdir = options.workdir / "legacy_nats"
    bridge_extra = "intake: {legacy_poll_secs: 0.2}\n"
    async with LoadEnv(workdir, bridge_extra=bridge_extra) as env:
        await create_legacy_stream(env.urls)
        send_start = time.monotonic()
        started_ns = time.monotonic_ns()
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                args = (env.urls, a, per_agent, interval, send_start, workload, params)
                tg.start_soon(_agent, *args, logs[a], tally)
            while tally.errors < agents * per_agent:
                counters = {"sent": float(tally.errors), "received": float(env.probe.received)}
                progress("legacy_nats", counters)
                with anyio.move_on_after(1.0):
                    while tally.errors < agents * per_agent:
                        await anyio.sleep(0.05)
        sent = SentLog(
            publishers=agents,
            n=[list(range(len(times))) for times in logs],
            kind=[[KIND_EVENT] * len(times) for times in logs],
            sent_ns=logs,
            token_publisher=[[a] * len(logs[a]) for a in range(agents)],
            started_ns=started_ns,
        )
        await env.catch_up(sent, progress)
        pending, unacked = await _settled(env.urls, float(params["settle_timeout_secs"]))
        await env.probe.wait_quiet(1.0)
        outcomes = {
            o: int(await env.metric("busbridge_intake_messages_total", input="legacy", outcome=o))
            for o in ("stored", "duplicate", "suppressed", "rejected", "retry", "abandoned")
        }
        report = env.probe.report(sent)
        stored = env.probe.observed.events
    if not options.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    acked = outcomes["stored"] + outcomes["duplicate"]
    extra: dict[str, Any] = {
        "legacy_errors": tally.errors,
        "legacy_messages_published": tally.messages,
        "library_a_copies": tally.copies,
        "library_a_critical": tally.critical_a,
        "library_b_errors": tally.library_b,
        "error_events_stored": stored,
        "intake_outcomes": outcomes,
        "legacy_consumer": {"pending": pending, "unacknowledged": unacked},
        "send_rate_per_sec": round(tally.errors / workload.duration_secs, 1),
    }
    checks = [
        *correctness_checks(report),
        Check(
            name="copies_sent",
            ok=tally.copies > 0 and tally.critical_a > 0 and tally.library_b > 0,
            detail=f"{tally.messages} legacy messages for {tally.errors} errors: {tally.copies}"
            f" library A copies ({tally.critical_a} critical x4), {tally.library_b} library B",
        ),
        Check(
            name="stored_once",
            ok=stored == report.expected,
            detail=f"{stored} error events stored for {report.expected} distinct legacy errors"
            f" ({tally.messages} messages published)",
        ),
        Check(
            name="legacy_acked",
            ok=acked == tally.messages and outcomes["rejected"] == 0,
            detail=f"bridge legacy input: {outcomes['stored']} stored + {outcomes['duplicate']}"
            f" duplicate = {acked} of {tally.messages} published ({outcomes['rejected']} rejected)",
        ),
        Check(
            name="legacy_consumer_settled",
            ok=(pending, unacked) == (0, 0),
            detail=f"{LEGACY_DURABLE} on {LEGACY_STREAM}: {pending} pending,"
            f" {unacked} unacknowledged at the end",
        ),
    ]
    return ScenarioResult(
        scenario="legacy_nats",
        workload=workload,
        machine=machine_info(),
        started_at=started,
        duration_secs=round(time.monotonic() - t0, 2),
        probe=report,
        extra=extra,
        checks=checks,
    )

"""BusClient against a real nats-server: what lands on the intake, from sync code, from asyncio and
from a thread whose loop is closed; order, retries, the bounded buffer across a NATS restart,
bounded flush/close while NATS is down, and events over max_payload."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from busclient import BusClient, Outcome, build_event
from contracts.messages import ErrorEvent, Severity
from contracts.subjects import (
    HEADER_CLIENT_API,
    HEADER_CONTRACT,
    HEADER_CONTRACT_VERSION,
    HEADER_MSG_ID,
)
from tests.busclient.conftest import MACHINE, Intake
from tests.support.nats_server import running_nats_server


def _client(url: str, **overrides: object) -> BusClient:
    options: dict[str, object] = {"machine": MACHINE, "source": "native_agent"}
    options.update(overrides)
    return BusClient(servers=url, **options)


def _is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


def test_report_lands_on_the_intake_as_an_error_event(intake: Intake) -> None:
    before = datetime.now(UTC)
    occurred = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=8)))
    with _client(intake.url) as client:
        ticket = client.report(
            "db_timeout",
            "query took too long",
            severity="high",
            details={"query": "select 1", "ms": 5000},
            occurred_at=occurred,
        )
        assert client.flush(10)
        assert ticket.outcome is Outcome.ACKED
    [stored] = intake.read()
    event = stored.msg
    assert isinstance(event, ErrorEvent)
    assert stored.subject == f"errbus_intake.{MACHINE}.native_agent"
    assert stored.headers[HEADER_MSG_ID] == event.event_id == ticket.event_id
    assert len(event.event_id) == 32  # uuid4 hex
    assert stored.headers[HEADER_CONTRACT] == "error_event"
    assert stored.headers[HEADER_CONTRACT_VERSION] == "1"
    assert stored.headers[HEADER_CLIENT_API] == "native"
    assert (event.machine, event.source, event.error_type) == (
        MACHINE,
        "native_agent",
        "db_timeout",
    )
    assert event.severity is Severity.ERROR  # "high" -> error (the legacy table)
    assert event.message == "query took too long"
    assert event.details == {"query": "select 1", "ms": 5000}
    assert event.occurred_at == occurred and _is_utc(event.occurred_at)
    assert _is_utc(event.received_at) and event.received_at >= before
    assert event.legacy is None and event.fingerprint == ""


def test_defaults_odd_values_and_prebuilt_events(intake: Intake) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    with _client(intake.url, client_api="errpub") as client:
        client.report("naive_time", None, occurred_at=datetime(2026, 1, 1, 12, 0))
        client.report("odd", {"not": "text"}, severity=None, details={1: Opaque(), "s": {3}})
        prebuilt = build_event(
            machine="othermachine",
            source="tool.x",
            error_type="custom",
            message="m",
            severity="ErrorSeverity.WARNING",
            event_id="legacy-id-1",
        )
        client.publish(prebuilt, client_api="library_b")
        assert client.flush(10)
    naive, odd, custom = intake.read()
    assert naive.msg.occurred_at == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # naive -> UTC
    assert naive.msg.message == "" and naive.msg.severity is Severity.ERROR
    assert naive.headers[HEADER_CLIENT_API] == "errpub"
    assert odd.msg.message == '{"not":"text"}'
    assert odd.msg.details == {"1": "<opaque>", "s": [3]}
    assert custom.subject == "errbus_intake.othermachine.tool_x"
    assert custom.headers[HEADER_MSG_ID] == "legacy-id-1"
    assert custom.headers[HEADER_CLIENT_API] == "library_b"
    assert custom.msg.severity is Severity.WARNING


def test_order_is_kept_and_tickets_resolve(intake: Intake) -> None:
    with _client(intake.url) as client:
        tickets = [client.report("seq", f"event {i}", details={"i": i}) for i in range(300)]
        assert tickets[-1].wait(15)
        assert all(t.wait(1) for t in tickets)
        stats = client.stats()
    events = intake.events()
    assert [e.details["i"] for e in events] == list(range(300))
    assert [e.event_id for e in events] == [t.event_id for t in tickets]
    assert (stats.submitted, stats.accepted, stats.acked, stats.buffered) == (300, 300, 300, 0)
    assert stats.dropped == {}


async def test_asyncio_use_never_blocks_the_loop(intake: Intake) -> None:
    client = _client(intake.url, source="async_agent")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    try:
        tickets = [client.report("async", f"a{i}") for i in range(50)]
        assert await client.aflush(10)
        assert await tickets[0].wait_async(1)
        assert ticks > 0  # the loop kept running while the flush was awaited
    finally:
        tick_task.cancel()
        assert await client.aclose(5)
    assert [e.message for e in await intake.aevents()] == [f"a{i}" for i in range(50)]


def test_works_from_a_thread_whose_loop_is_closed(intake: Intake) -> None:
    made: list[BusClient] = []

    def legacy_agent_thread() -> None:
        # as BaseAgent did: a private loop, the client made inside it, the loop closed after
        loop = asyncio.new_event_loop()

        async def init() -> None:
            client = _client(intake.url, source="threaded")
            client.report("from_loop", "inside the thread's loop")
            made.append(client)

        loop.run_until_complete(init())
        loop.close()

    thread = threading.Thread(target=legacy_agent_thread)
    thread.start()
    thread.join()
    client = made[0]
    try:
        client.report("after_close", "after the loop was closed")
        assert client.flush(10)
    finally:
        assert client.close(5)
    assert [e.error_type for e in intake.events()] == ["from_loop", "after_close"]


def test_no_stream_yet_is_retried_until_it_exists(bare_intake: Intake) -> None:
    with _client(bare_intake.url, retry_max_secs=0.2) as client:
        tickets = [client.report("early", f"before the stream {i}") for i in range(3)]
        assert not client.flush(1.0)  # no responders: nothing stored yet, nothing dropped
        assert client.stats().retries > 0 and client.stats().dropped == {}
        bare_intake.create_stream()
        assert client.flush(15)
        assert all(t.outcome is Outcome.ACKED for t in tickets)
    assert [e.message for e in bare_intake.events()] == [f"before the stream {i}" for i in range(3)]


def test_nats_restart_loses_and_doubles_nothing_and_overflow_is_counted(intake: Intake) -> None:
    client = _client(intake.url, max_buffered_events=200, ack_timeout_secs=1.0)
    try:
        first = [client.report("outage", f"m{i}") for i in range(150)]
        _wait_until(lambda: client.stats().acked >= 20)
        intake.server.stop()  # mid-way: part of the 150 is stored, the rest buffered
        second = [client.report("outage", f"m{150 + i}") for i in range(150)]
        refused = [t for t in second if not t.accepted]
        assert refused, "the buffer bound was never reached"
        assert all(t.outcome is Outcome.OVERFLOW for t in refused)
        assert client.stats().dropped == {"overflow": len(refused)}  # counted, not raised
        intake.server.start()  # same port, same store dir
        assert client.flush(60)
        stats = client.stats()
    finally:
        client.close(5)
    kept = [t.event_id for t in first + second if t.accepted]
    stored = [m.headers["Nats-Msg-Id"] for m in intake.read()]
    assert stored == kept  # every accepted event once, in order
    assert len(set(stored)) == len(stored) == 300 - len(refused)
    assert stats.acked == len(kept) and stats.buffered == 0
    assert stats.submitted == stats.acked + sum(stats.dropped.values())


def test_flush_and_close_are_bounded_while_nats_is_down() -> None:
    port = _unused_port()
    client = BusClient(servers=f"nats://127.0.0.1:{port}", machine=MACHINE, source="offline")
    tickets = [client.report("down", f"x{i}") for i in range(5)]
    assert all(t.accepted for t in tickets)
    assert client.flush(0.3) is False
    assert client.stats().connected is False
    result: list[bool] = []
    closer = threading.Thread(target=lambda: result.append(client.close(1.0)))
    closer.start()
    closer.join(30)  # a hang would leave it alive; close itself is bounded by its 1 s
    assert not closer.is_alive() and result == [False]
    assert all(t.outcome is Outcome.ABANDONED for t in tickets)
    late = client.report("late", "after close")  # neither raises nor hangs
    assert not late.accepted and late.outcome is Outcome.CLOSED
    assert client.stats().dropped == {"abandoned": 5, "closed": 1}
    assert client.close(1.0) is False  # idempotent


def test_event_over_max_payload_is_stored_truncated(tmp_path: Path) -> None:
    with running_nats_server(tmp_path / "nats", max_payload_bytes=16 * 1024) as server:
        intake = Intake(server)
        intake.create_stream()
        with _client(server.url) as client:
            big = {"blob": "x" * 100_000}
            ticket = client.report("huge", "context too large", details=big)
            client.report("small", "after the big one")
            assert client.flush(10)
            assert ticket.outcome is Outcome.ACKED
        huge, small = intake.read()
    assert len(huge.data) <= 16 * 1024
    assert huge.msg.truncated is not None and huge.msg.truncated.fields == ["details"]
    assert huge.msg.truncated.original_bytes > 100_000
    assert huge.msg.truncated.kept_bytes == len(huge.data)
    assert isinstance(huge.msg.details, str) and huge.msg.details.startswith('{"blob":"xxx')
    assert huge.msg.message == "context too large"
    assert small.msg.error_type == "small"


def _wait_until(
    condition: object, timeout_secs: float = 30.0, what: Callable[[], str] | None = None
) -> None:
    import time

    deadline = time.monotonic() + timeout_secs
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached{': ' + what() if what else ''}")
        time.sleep(0.01)


def _state(pid: int) -> str:
    """The states of every thread of ``pid`` (``/proc/<pid>/task/*/stat``, field 3)."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            continue
    return "".join(sorted(states))


def _stopped(pid: int) -> bool:
    state = _state(pid)
    return bool(state) and set(state) <= {"T", "t"}


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_connect_that_cannot_work_is_logged_not_raised(
    intake: Intake, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(intake.url, connect_options={"no_such_option": 1})
    ticket = client.report("kept", "buffered while the connect fails")
    assert ticket.accepted
    assert client.flush(0.5) is False
    assert client.close(1.0) is False and ticket.outcome is Outcome.ABANDONED
    assert "cannot connect to NATS" in caplog.text


def test_a_retry_after_a_lost_ack_is_stored_once(intake: Intake) -> None:
    """The server is frozen (SIGSTOP): every attempt times out and is sent again with the same
    Nats-Msg-Id; thawed, it stores the first copy and calls the others duplicates."""
    pid = intake.server.pid
    assert pid is not None
    client = _client(intake.url, ack_timeout_secs=0.3, retry_max_secs=0.3, ping_interval_secs=60)
    try:
        assert client.report("warmup", "connected").wait(10)
        os.kill(pid, signal.SIGSTOP)
        try:
            # kill() only queues the signal: report once every thread of it is stopped
            _wait_until(lambda: _stopped(pid), what=lambda: f"server state {_state(pid)}")
            ticket = client.report("frozen", "sent while the server is frozen")
            _wait_until(lambda: client.stats().retries >= 2, what=lambda: f"{client.stats()}")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert ticket.wait(15)
        stats = client.stats()
    finally:
        client.close(5)
    assert [e.error_type for e in intake.events()] == ["warmup", "frozen"]
    assert stats.duplicates == 1 and stats.acked == 2


def test_a_client_dropped_without_close_stops_its_thread(intake: Intake) -> None:
    client = _client(intake.url, source="forgotten")
    assert client.report("kept", "stored before the client is dropped").wait(10)
    del client
    gc.collect()
    _wait_until(lambda: not any(t.name == "busclient-forgotten" for t in threading.enumerate()))
    assert [e.error_type for e in intake.events()] == ["kept"]


_EXITING_AGENT = """
from busclient.compat.library_b import report_error
report_error("EXIT_PATH", "reported just before the process exits", "CRITICAL")
"""


def test_an_agent_exiting_right_after_reporting_delivers_it(intake: Intake) -> None:
    env = {**os.environ, "BUSBRIDGE_NATS_URL": intake.url, "AGENT_NAME": "short_lived"}
    subprocess.run([sys.executable, "-c", _EXITING_AGENT], env=env, check=True, timeout=60)
    [event] = intake.events()
    assert (event.source, event.error_type, event.severity) == (
        "short_lived",
        "EXIT_PATH",
        Severity.CRITICAL,
    )


def test_an_agent_exits_even_when_nats_is_down() -> None:
    env = {**os.environ, "BUSBRIDGE_NATS_URL": f"nats://127.0.0.1:{_unused_port()}"}
    done = subprocess.run(
        [sys.executable, "-c", _EXITING_AGENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails here; the exit flush itself is bounded by 2 s
    )
    assert done.returncode == 0
    assert "abandoned" in done.stderr  # the lost event is reported, not silent

"""``busbridge tail`` against a real nats-server: filters, start positions, JSON,
limits, exiting when caught up, following, and the failure exits."""

from __future__ import annotations

import argparse
import io
import re
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import nats
import pytest
from nats.aio.client import Client

from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import parse_config
from bridge.config.model import BridgeConfig
from consumers.tail import add_arguments, run_tail
from contracts import DeadLetter, DeadLetterReason, ErrorEvent, Severity, Subjects, encode

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SUBJECTS = Subjects()
T0 = datetime(2026, 11, 21, 8, 2, 16, 503_000, tzinfo=UTC)
LONG = "x" * 500

#: (machine, severity, source, error_type, message), stored in this order.
EVENTS = [
    (
        "MainPC",
        Severity.ERROR,
        "SystemDigitalTwin",
        "vram_exhausted",
        "Failed to connect\nretrying",
    ),
    ("MainPC", Severity.CRITICAL, "ModelManager", "oom", "killed"),
    ("PC2", Severity.WARNING, "Translator", "slow", LONG),
    ("PC2", Severity.INFO, "HealthMonitor", "beat", "ok"),
    ("MainPC", Severity.DEBUG, "SystemDigitalTwin", "trace", "tick"),
    ("PC2", Severity.ERROR, "Translator", "timeout", "no reply"),
]
N_EVENTS = len(EVENTS)


def _event(
    n: int, machine: str, severity: Severity, source: str, error_type: str, message: str
) -> ErrorEvent:
    at = T0 + timedelta(seconds=n)
    return ErrorEvent(
        event_id=f"ev-{n}",
        occurred_at=at,
        received_at=at + timedelta(milliseconds=5),
        machine=machine,
        source=source,
        severity=severity,
        error_type=error_type,
        message=message,
    )


DEAD = DeadLetter(
    event_id="dl-1",
    received_at=T0 + timedelta(seconds=30),
    machine="MainPC",
    reason=DeadLetterReason.INVALID_JSON,
    frames=[b"ERROR:{x"],
    frame_sizes=[8],
    detail="Expecting value",
)


def _cfg(url: str, connect_timeout_secs: float = 2) -> BridgeConfig:
    text = (
        f"machine: X\nnats: {{servers: ['{url}'], connect_timeout_secs: {connect_timeout_secs}}}\n"
    )
    return parse_config(text, "<test>")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


async def _tail(url: str, *argv: str, out: io.StringIO | None = None) -> tuple[int, list[str]]:
    out = out if out is not None else io.StringIO()
    with anyio.fail_after(5):
        rc = await run_tail(_cfg(url), _args(*argv), out=out)
    return rc, out.getvalue().splitlines()


async def _publish_event(nc: Client, n: int, *fields: object) -> None:
    ev = _event(n, *fields)  # type: ignore[arg-type]
    await nc.jetstream().publish(SUBJECTS.error(ev.machine, ev.severity, ev.source), encode(ev))


@pytest.fixture
async def nc(nats_server: NatsServerProcess) -> AsyncIterator[Client]:
    """A client on a server holding stream ERRBUS (``errbus.>``), still empty."""
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(name="ERRBUS", subjects=["errbus.>"])
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def stored(nats_server: NatsServerProcess, nc: Client) -> str:
    """The server URL once ``EVENTS`` (seq 1..6) and one dead letter (seq 7) are stored."""
    for n, fields in enumerate(EVENTS):
        await _publish_event(nc, n, *fields)
    await nc.jetstream().publish(SUBJECTS.dead_letter("MainPC"), encode(DEAD))
    return nats_server.url


def _columns(lines: list[str], index: int) -> list[str]:
    return [line.split()[index] for line in lines]


async def test_everything_stored_is_printed_in_order_and_the_run_ends(stored: str) -> None:
    rc, lines = await _tail(stored)
    assert rc == 0
    assert len(lines) == N_EVENTS
    assert _columns(lines, 1) == [e[0] for e in EVENTS]
    assert _columns(lines, 2) == [e[1].name for e in EVENTS]
    assert lines[0] == (
        "2026-11-21T08:02:16.503Z  MainPC  ERROR     SystemDigitalTwin  vram_exhausted: Failed to connect⏎retrying"
    )
    assert "\x1b[" not in "".join(lines)


async def test_long_messages_are_cut(stored: str) -> None:
    _, lines = await _tail(stored, "--source", "Translator", "--severity", "warning")
    (line,) = lines
    text = line.split("  ", 4)[4]
    assert text.startswith("slow: xxx") and text.endswith("…") and len(text) == 200


async def test_machine_filter(stored: str) -> None:
    rc, lines = await _tail(stored, "--machine", "PC2")
    assert rc == 0
    assert _columns(lines, 3) == ["Translator", "HealthMonitor", "Translator"]
    assert set(_columns(lines, 1)) == {"PC2"}


async def test_severity_list(stored: str) -> None:
    _, lines = await _tail(stored, "--severity", "error,critical")
    assert _columns(lines, 2) == ["ERROR", "CRITICAL", "ERROR"]


async def test_min_severity(stored: str) -> None:
    _, lines = await _tail(stored, "--min-severity", "warning")
    assert _columns(lines, 2) == ["ERROR", "CRITICAL", "WARNING", "ERROR"]


async def test_source_filter(stored: str) -> None:
    _, lines = await _tail(stored, "--source", "SystemDigitalTwin")
    assert _columns(lines, 4) == ["vram_exhausted:", "trace:"]


async def test_filters_combine(stored: str) -> None:
    _, lines = await _tail(stored, "--machine", "MainPC", "--min-severity", "error", "--dlq")
    assert [line.split()[2] for line in lines] == ["ERROR", "CRITICAL", "MainPC"]
    assert lines[-1].split()[1] == "DLQ"


async def test_dead_letters(stored: str) -> None:
    _, only = await _tail(stored, "--dlq-only")
    assert only == [
        "2026-11-21T08:02:46.503Z  DLQ  MainPC  invalid_json frames=1 sizes=[8] Expecting value"
    ]
    _, both = await _tail(stored, "--dlq")
    assert len(both) == N_EVENTS + 1 and both[-1] == only[0]
    _, other_machine = await _tail(stored, "--dlq-only", "--machine", "PC2")
    assert other_machine == []


async def test_last_n(stored: str) -> None:
    _, lines = await _tail(stored, "--last", "2")
    assert _columns(lines, 4) == ["trace:", "timeout:"]
    _, lines = await _tail(stored, "--last", "2", "--machine", "MainPC", "--dlq")
    assert [line.split()[1:3] for line in lines] == [["MainPC", "DEBUG"], ["DLQ", "MainPC"]]
    _, lines = await _tail(stored, "--last", "2", "--severity", "error,critical")
    assert _columns(lines, 4) == ["oom:", "timeout:"]
    _, lines = await _tail(stored, "--last", "50", "--machine", "PC2")
    assert len(lines) == 3


async def test_json_lines_are_the_stored_contract_plus_stream_seq(stored: str) -> None:
    _, lines = await _tail(stored, "--json", "--dlq")
    docs = [msgspec.json.decode(line) for line in lines]
    assert [d["stream_seq"] for d in docs] == list(range(1, N_EVENTS + 2))
    assert [d["type"] for d in docs] == ["error_event"] * N_EVENTS + ["dead_letter"]
    first = {k: v for k, v in docs[0].items() if k != "stream_seq"}
    assert first == msgspec.json.decode(encode(_event(0, *EVENTS[0])))
    assert docs[2]["message"] == LONG


async def test_limit(stored: str) -> None:
    rc, lines = await _tail(stored, "--limit", "3")
    assert rc == 0
    assert _columns(lines, 4) == ["vram_exhausted:", "oom:", "slow:"]


async def test_no_match_and_empty_stream_end_at_once(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    assert await _tail(nats_server.url) == (0, [])
    await _publish_event(nc, 0, *EVENTS[0])
    assert await _tail(nats_server.url, "--machine", "Nowhere") == (0, [])
    assert await _tail(nats_server.url, "--dlq-only") == (0, [])


async def test_undecodable_messages_are_reported_not_fatal(
    nats_server: NatsServerProcess, nc: Client
) -> None:
    await nc.jetstream().publish("errbus.error.PC2.error.Junk", b"not json")
    await _publish_event(nc, 0, *EVENTS[0])
    _, lines = await _tail(nats_server.url)
    assert lines[0] == "?? undecodable message on errbus.error.PC2.error.Junk (8 bytes)"
    assert "vram_exhausted" in lines[1]
    _, lines = await _tail(nats_server.url, "--json", "--limit", "1")
    assert msgspec.json.decode(lines[0]) == {
        "type": "undecodable",
        "subject": "errbus.error.PC2.error.Junk",
        "bytes": 8,
        "stream_seq": 1,
    }


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_colour_only_on_a_terminal_without_no_color(
    stored: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    _, lines = await _tail(stored, "--severity", "error", "--limit", "1", out=_Terminal())
    assert "\x1b[31mERROR   \x1b[0m" in lines[0]
    monkeypatch.setenv("NO_COLOR", "1")
    _, lines = await _tail(stored, "--severity", "error", "--limit", "1", out=_Terminal())
    assert "\x1b[" not in lines[0]


async def _wait_for_lines(out: io.StringIO, n: int) -> list[str]:
    while len(lines := out.getvalue().splitlines()) < n:
        await anyio.sleep(0.02)
    return lines


async def test_follow_prints_what_arrives_later(stored: str, nc: Client) -> None:
    out = io.StringIO()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_tail, _cfg(stored), _args("-f", "--machine", "PC2"), out)
            await _wait_for_lines(out, 3)
            await anyio.sleep(0.2)  # still running, nothing extra printed
            await _publish_event(nc, 10, "MainPC", Severity.ERROR, "Skipped", "other machine", "x")
            await _publish_event(
                nc, 11, "PC2", Severity.CRITICAL, "Late", "late_one", "arrived later"
            )
            lines = await _wait_for_lines(out, 4)
            tg.cancel_scope.cancel()
    assert len(lines) == 4 and "late_one: arrived later" in lines[3]


async def test_new_shows_only_later_messages(stored: str, nc: Client) -> None:
    out = io.StringIO()
    result: list[int] = []

    async def tail() -> None:
        result.append(await run_tail(_cfg(stored), _args("--new", "--limit", "1"), out))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tail)
            while not result:  # the consumer's start is not observable: publish until one lands
                await _publish_event(nc, 20, "PC2", Severity.ERROR, "Fresh", "fresh", "new")
                await anyio.sleep(0.1)
    assert result == [0]
    assert re.fullmatch(r"\S+  PC2  ERROR     Fresh  fresh: new", out.getvalue().strip())


async def test_unreachable_server_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, lines = await _tail(f"nats://127.0.0.1:{port}")
    assert (rc, lines) == (1, [])
    assert "cannot connect to NATS" in capsys.readouterr().err


async def test_missing_stream_returns_1(
    nats_server: NatsServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, lines = await _tail(nats_server.url)
    assert (rc, lines) == (1, [])
    assert "stream ERRBUS does not exist" in capsys.readouterr().err


async def test_silent_server_returns_1_within_the_connect_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as s:  # accepts TCP (kernel backlog) but never says INFO
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
        with anyio.fail_after(3):
            rc = await run_tail(_cfg(url, connect_timeout_secs=0.5), _args(), out=io.StringIO())
    assert rc == 1
    assert "no answer within 0.5 s" in capsys.readouterr().err

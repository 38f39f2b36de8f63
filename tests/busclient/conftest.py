"""Fixtures for the busclient tests: a real nats-server with the intake stream, and checks that
every client thread is gone after each test.

The intake stream is what the sidecar provisions (busclient only publishes to it): ``ERRBUS_INTAKE``,
subjects ``errbus_intake.>``, file storage, duplicate window 2 min.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from bridge.adapters.nats_server import NatsServerProcess
from busclient.compat import close_shared_clients
from contracts.messages import ErrorEvent
from contracts.subjects import sanitise_token
from tests.support.nats_server import running_nats_server
from tests.support.stream import StoredMessage, fetch_all

INTAKE_STREAM = "ERRBUS_INTAKE"
INTAKE_SUBJECTS = "errbus_intake.>"
DUPLICATE_WINDOW_SECS = 120.0
MACHINE = "testbox"


async def create_intake_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name=INTAKE_STREAM,
                subjects=[INTAKE_SUBJECTS],
                storage=StorageType.FILE,
                duplicate_window=DUPLICATE_WINDOW_SECS,
            )
        )
    finally:
        await nc.close()


class Intake:
    """A nats-server (port 0, temp store) and what landed in its intake stream."""

    def __init__(self, server: NatsServerProcess) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def create_stream(self) -> None:
        asyncio.run(create_intake_stream(self.url))

    def read(self) -> list[StoredMessage]:
        """Every stored intake message, in stream order (``.msg`` is the decoded contract)."""
        return asyncio.run(fetch_all(self.url, INTAKE_STREAM, INTAKE_SUBJECTS))

    async def aread(self) -> list[StoredMessage]:
        return await fetch_all(self.url, INTAKE_STREAM, INTAKE_SUBJECTS)

    def events(self) -> list[ErrorEvent]:
        return _events(self.read())

    async def aevents(self) -> list[ErrorEvent]:
        return _events(await self.aread())


def _events(stored: list[StoredMessage]) -> list[ErrorEvent]:
    out = []
    for message in stored:
        assert isinstance(message.msg, ErrorEvent)
        out.append(message.msg)
    return out


@pytest.fixture
def bare_intake(tmp_path: Path) -> Iterator[Intake]:
    """A nats-server without the intake stream (as before the sidecar provisioned it)."""
    with running_nats_server(tmp_path / "nats") as server:
        yield Intake(server)


@pytest.fixture
def intake(bare_intake: Intake) -> Intake:
    bare_intake.create_stream()
    return bare_intake


@pytest.fixture
def shim_env(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> Iterator[Intake]:
    """The legacy shims' shared clients point at ``intake`` (through the environment, as an
    agent would be configured); they are closed after the test."""
    monkeypatch.setenv("BUSBRIDGE_NATS_URL", intake.url)
    monkeypatch.setenv("BUSBRIDGE_MACHINE", MACHINE)
    monkeypatch.delenv("NATS_SERVERS", raising=False)
    monkeypatch.delenv("AGENT_NAME", raising=False)
    close_shared_clients()
    try:
        yield intake
    finally:
        close_shared_clients(5.0)


def delivered(intake: Intake) -> list[StoredMessage]:
    """Flush the shims' shared clients, then read the intake stream."""
    assert close_shared_clients(15.0), "shared clients abandoned events"
    return intake.read()


async def adelivered(intake: Intake) -> list[StoredMessage]:
    """``delivered`` for async tests (the flush runs off the test's loop)."""
    assert await asyncio.to_thread(close_shared_clients, 15.0), "shared clients abandoned events"
    return await intake.aread()


@pytest.fixture(autouse=True)
def _no_client_threads_left() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("busclient-")]
    assert not left, f"busclient threads still running: {left}"


def assert_native(stored: StoredMessage, *, api: str, source: str) -> ErrorEvent:
    """The envelope every shim must produce: intake subject, headers, UTC times, no legacy."""
    event = stored.msg
    assert isinstance(event, ErrorEvent)
    assert stored.subject == f"errbus_intake.{MACHINE}.{sanitise_token(source)}"
    assert stored.headers["Nats-Msg-Id"] == event.event_id
    assert stored.headers["Busbridge-Contract"] == "error_event"
    assert stored.headers["Busbridge-Contract-Version"] == "1"
    assert stored.headers["Busbridge-Client-Api"] == api
    assert (event.machine, event.source) == (MACHINE, source)
    for when in (event.occurred_at, event.received_at):
        assert when is not None and when.utcoffset() == timedelta(0)
        assert abs(datetime.now(UTC) - when) < timedelta(minutes=5)
    assert event.legacy is None and event.fingerprint == ""
    return event

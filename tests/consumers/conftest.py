"""A real nats-server holding the ERRBUS stream (as the bridge provisions it), and helpers
to store contracts the way the bridge does and to wait for consumers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bridge.adapters.jetstream import stream_config_for
from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.model import StreamConfig as StreamSettings
from bridge.pipeline.outbound import OutboundBuilder
from consumers.bus import ConsumerDeadLetter, decode_dead_letter
from contracts import ErrorEvent, Message, Severity, Subjects
from loadtest.stream import read_all

T0 = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
#: an upper bound for a consumer to get somewhere; never a timing assertion
PATIENCE_SECS = 30.0


def event(
    n: int,
    machine: str = "MainPC",
    severity: Severity = Severity.ERROR,
    source: str = "AgentA",
    error_type: str = "RuntimeError",
    details: object = None,
) -> ErrorEvent:
    at = T0 + timedelta(seconds=n)
    return ErrorEvent(
        event_id=f"ev-{n}",
        occurred_at=at,
        received_at=at + timedelta(milliseconds=3),
        machine=machine,
        source=source,
        severity=severity,
        error_type=error_type,
        message=f"message {n}",
        details=details,
    )


class Bus:
    """The test's own connection to a server holding ERRBUS."""

    def __init__(self, url: str, nc: Client) -> None:
        self.url = url
        self.nc = nc
        self.js = nc.jetstream()
        self.subjects = Subjects()
        self._builder = OutboundBuilder(self.subjects, "test-bridge", nc.max_payload)

    async def publish(self, msg: Message) -> int:
        """Store ``msg`` with the bridge's subject and headers; its stream sequence."""
        out = self._builder.build(msg)
        ack = await self.js.publish(out.subject, out.payload, headers=out.headers)
        return ack.seq

    async def publish_raw(self, subject: str, data: bytes, headers: dict | None = None) -> int:
        return (await self.js.publish(subject, data, headers=headers)).seq

    async def stored(self, subject: str) -> list[Msg]:
        """Every stored message on ``subject`` (may be a wildcard), in stream order."""
        return await read_all(self.url, "ERRBUS", subject)

    async def drained(self, durable: str) -> bool:
        """The durable has nothing left to deliver and nothing unacknowledged."""
        info = await self.js.consumer_info("ERRBUS", durable)
        return not info.num_pending and not info.num_ack_pending


async def until(
    check: Callable[[], object], what: str, timeout_secs: float = PATIENCE_SECS
) -> None:
    """Poll ``check`` (plain or async) until it is true; fail naming ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_secs
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"gave up waiting for: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def bus(nats_server: NatsServerProcess) -> AsyncIterator[Bus]:
    nc = await nats.connect(nats_server.url)
    try:
        await nc.jetstream().add_stream(config=stream_config_for(StreamSettings()))
        yield Bus(nats_server.url, nc)
    finally:
        await nc.close()


# --- for tests in plain sync code ---------------------------------------------------------


def provision(
    url: str, messages: Iterable[Message] = (), *, create: bool = True, intake: bool = False
) -> None:
    """From sync code: create ERRBUS (``create``) and the intake stream ``ERRBUS_INTAKE`` on
    ``errbus_intake.>`` (``intake``), and store ``messages`` like the bridge."""

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(config=stream_config_for(StreamSettings()))
            if intake:
                await js.add_stream(name="ERRBUS_INTAKE", subjects=["errbus_intake.>"])
            bus = Bus(url, nc)
            for msg in messages:
                await bus.publish(msg)
        finally:
            await nc.close()

    asyncio.run(go())


def dead_letters(url: str, durable: str) -> list[ConsumerDeadLetter]:
    """From sync code: the consumer dead letters ``durable`` stored."""

    async def go() -> list[ConsumerDeadLetter]:
        nc = await nats.connect(url)
        try:
            stored = await Bus(url, nc).stored(f"errbus.consumer_dlq.{durable}")
            return [decode_dead_letter(m.data) for m in stored]
        finally:
            await nc.close()

    return asyncio.run(go())


def intake(url: str) -> list[Msg]:
    """From sync code: what native publishers stored on the intake stream."""
    return asyncio.run(read_all(url, "ERRBUS_INTAKE", "errbus_intake.>"))


def wait_for(check: Callable[[], object], timeout_secs: float = PATIENCE_SECS) -> bool:
    """From sync code: poll ``check`` until true (True) or ``timeout_secs`` pass (False)."""
    deadline = time.monotonic() + timeout_secs
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def consumer_threads() -> list[threading.Thread]:
    """Threads of ``start_in_thread`` consumers still alive (named ``errbus-<durable>``)."""
    return [t for t in threading.enumerate() if t.name.startswith("errbus-")]

"""The legacy handler registrations on ``ErrorBusConsumer``: library A's
``register_error_handler(category, handler)``, library B's ``add_error_handler(fn)``,
``get_error_bus``/``init_error_bus`` and ``error_bus_handler``; payload shapes, then call
shapes against a real nats-server."""

from __future__ import annotations

import dataclasses
import enum
import threading
from datetime import datetime
from typing import Any

import pytest

from busclient.compat import close_shared_clients
from busclient.compat import library_b as busclient_b
from busclient.compat._common import with_extras
from consumers.bus import DeliveryInfo
from consumers.legacy_handlers import (
    CATEGORIES,
    ErrorMessage,
    LibraryAHandlers,
    LibraryBHandlers,
    error_bus_handler,
    legacy_fields,
    library_a_payload,
    library_b_message,
)
from contracts import Severity, decode
from tests.consumers.conftest import (
    PATIENCE_SECS,
    Bus,
    consumer_threads,
    dead_letters,
    event,
    intake,
    provision,
    until,
    wait_for,
)

FAST = {"backoff_secs": (0.05,), "fetch_timeout_secs": 0.5}

#: library A's ErrorEvent dataclass fields, in its order (nats_error_bus.py)
LIBRARY_A_KEYS = [
    "id",
    "timestamp",
    "agent_name",
    "severity",
    "category",
    "message",
    "details",
    "stack_trace",
    "correlation_id",
    "resolved",
    "resolution_notes",
]
#: library B's ErrorMessage dataclass fields, in its order (nats_client.py)
LIBRARY_B_FIELDS = [
    "error_id",
    "timestamp",
    "source_agent",
    "error_type",
    "severity",
    "message",
    "stack_trace",
    "context",
    "correlation_id",
    "retry_count",
]


class ErrorCategory(enum.Enum):  # how library A callers name categories
    NETWORK = "network"
    DATABASE = "database"


@pytest.fixture
def busclient_env(nats_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """busclient's library B shim reporting to the test server as agent ``AgentX``; its
    shared client closed and its process-wide bus forgotten afterwards."""
    monkeypatch.setenv("BUSBRIDGE_NATS_URL", nats_server.url)
    monkeypatch.setenv("BUSBRIDGE_MACHINE", "testbox")
    monkeypatch.setenv("AGENT_NAME", "AgentX")
    monkeypatch.setattr(busclient_b, "_error_bus", None)
    yield nats_server
    assert close_shared_clients()


# --- shapes -----------------------------------------------------------------------------


def test_library_a_payload_has_the_legacy_keys_and_values() -> None:
    ev = event(
        1,
        severity=Severity.CRITICAL,
        source="AgentX",
        error_type="ConnectionError",
        details={"stack_trace": "Traceback ...", "correlation_id": "c-1", "port": 7150},
    )
    payload = library_a_payload(ev)
    assert list(payload) == LIBRARY_A_KEYS
    assert payload["id"] == "ev-1" and payload["agent_name"] == "AgentX"
    assert (payload["severity"], payload["category"]) == ("critical", "network")
    assert payload["message"] == "message 1" and payload["details"]["port"] == 7150
    assert (payload["stack_trace"], payload["correlation_id"]) == ("Traceback ...", "c-1")
    assert (payload["resolved"], payload["resolution_notes"]) == (False, None)
    stamp = datetime.fromisoformat(payload["timestamp"])  # naive, host-local, as legacy wrote
    assert stamp.tzinfo is None and stamp == ev.occurred_at.astimezone().replace(tzinfo=None)


@pytest.mark.parametrize(
    ("error_type", "details", "category"),
    [
        ("ConnectionError", None, "network"),
        ("db_timeout", None, "database"),
        ("PermissionDenied", None, "authentication"),
        ("invalid_input", None, "validation"),
        ("MemoryError", None, "resource"),
        ("config_missing", None, "configuration"),
        ("external_api_down", None, "external_api"),
        ("RuntimeError", None, "system"),
        ("RuntimeError", {"category": "business_logic"}, "business_logic"),
        ("RuntimeError", "not a dict", "system"),
    ],
)
def test_library_a_category(error_type: str, details: Any, category: str) -> None:
    payload = library_a_payload(event(1, error_type=error_type, details=details))
    assert payload["category"] == category and category in CATEGORIES
    assert isinstance(payload["details"], dict)


def test_library_b_message_has_the_legacy_fields() -> None:
    ev = event(2, severity=Severity.WARNING, source="AgentY", details={"k": 1})
    info = DeliveryInfo(
        stream="ERRBUS",
        durable="d",
        subject="s",
        stream_seq=9,
        consumer_seq=3,
        num_delivered=3,
        num_pending=0,
    )
    msg = library_b_message(ev, info)
    assert [f.name for f in dataclasses.fields(ErrorMessage)] == LIBRARY_B_FIELDS
    assert dataclasses.asdict(msg)["source_agent"] == "AgentY"
    assert (msg.error_id, msg.severity, msg.error_type) == ("ev-2", "WARNING", "RuntimeError")
    assert msg.context == {"k": 1} and msg.retry_count == 2 and msg.stack_trace is None


def test_legacy_fields_read_back_what_the_publisher_shims_wrote() -> None:
    wrapped = with_extras({"port": 7150}, stack_trace="Traceback ...", correlation_id="c-9")
    ev = event(1, error_type="network", details=wrapped)  # busclient's library A shape
    assert legacy_fields(ev.details) == (
        {"port": 7150},
        {"stack_trace": "Traceback ...", "correlation_id": "c-9"},
    )
    payload = library_a_payload(ev)
    assert payload["details"] == {"port": 7150} and payload["category"] == "network"
    assert (payload["stack_trace"], payload["correlation_id"]) == ("Traceback ...", "c-9")
    message = library_b_message(event(2, details=with_extras(None, correlation_id="c-3")))
    assert (message.context, message.correlation_id) == ({}, "c-3")
    unified = event(3, error_type="db_timeout", details=with_extras({}, category="validation"))
    assert library_a_payload(unified)["category"] == "validation"
    # a dict that merely has a "details" key is the details themselves
    plain = {"details": "x", "port": 1}
    assert legacy_fields(plain) == (plain, plain)


# --- on a real server -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_library_a_register_error_handler_by_category(bus: Bus) -> None:
    network: list[dict] = []
    database: list[dict] = []

    async def on_network(payload: dict) -> None:  # legacy handlers were awaited
        network.append(payload)

    a = LibraryAHandlers([bus.url], "AgentX", **FAST)
    a.register_error_handler("network", on_network)
    a.register_error_handler(ErrorCategory.DATABASE, database.append)  # a sync one too
    await a.connect()
    try:
        await bus.publish(event(1, source="AgentX", error_type="ConnectionError"))
        await bus.publish(event(2, source="AgentX", error_type="db_timeout"))
        await bus.publish(event(3, source="AgentX", error_type="RuntimeError"))  # no handler
        await bus.publish(event(4, source="AgentY", error_type="ConnectionError"))  # not ours
        await until(lambda: bus.drained("legacy_a_AgentX"), "drained")
        await until(lambda: a.consumer.stats.processed == 3, "AgentX's three errors")
    finally:
        await a.close()
    assert [p["id"] for p in network] == ["ev-1"] and [p["id"] for p in database] == ["ev-2"]
    assert list(network[0]) == LIBRARY_A_KEYS and network[0]["agent_name"] == "AgentX"


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_library_b_add_error_handler_skips_own_errors(bus: Bus) -> None:
    got_sync: list[ErrorMessage] = []
    got_async: list[ErrorMessage] = []

    async def on_error(msg: ErrorMessage) -> None:
        got_async.append(msg)

    b = LibraryBHandlers([bus.url], "AgentX", **FAST)
    await b.connect()
    try:
        b.add_error_handler(got_sync.append)
        b.add_error_handler(on_error)
        await bus.publish(event(1, source="AgentX"))  # its own: skipped, as legacy did
        await bus.publish(event(2, "PC2", Severity.CRITICAL, source="AgentY"))
        await bus.publish(event(3, source="AgentZ"))
        await until(lambda: bus.drained("error_consumer_AgentX"), "drained")
        await until(lambda: len(got_async) == 2, "two foreign errors")
    finally:
        await b.disconnect()
    assert [m.error_id for m in got_sync] == ["ev-2", "ev-3"] == [m.error_id for m in got_async]
    assert isinstance(got_sync[0], ErrorMessage) and got_sync[0].severity == "CRITICAL"


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_library_b_in_a_thread_with_a_failing_decorated_handler(busclient_env: Any) -> None:
    """``error_bus_handler`` (busclient's) on a consumer handler: each failure is reported to
    the bus through the agent's client, re-raised, retried, then dead-lettered."""
    url = busclient_env.url
    provision(url, intake=True)  # ERRBUS, and the intake stream the sidecar would provision
    handled: list[str] = []
    done = threading.Event()

    @error_bus_handler("HANDLER_ERROR")
    def on_error(msg: ErrorMessage) -> None:
        if msg.error_id == "ev-1":
            raise ValueError("cannot handle ev-1")
        handled.append(msg.error_id)
        done.set()

    b = LibraryBHandlers([url], "AgentX", max_deliver=2, **FAST)
    b.add_error_handler(on_error)
    with b.start_in_thread():
        provision(url, [event(1, source="AgentY"), event(2, source="AgentY")], create=False)
        assert done.wait(PATIENCE_SECS)
        assert wait_for(lambda: b.consumer.stats.dead_lettered == 1)
    assert handled == ["ev-2"]
    assert consumer_threads() == []
    [record] = dead_letters(url, "error_consumer_AgentX")
    assert record.error_type == "ValueError" and record.deliveries == 2
    assert wait_for(lambda: len(intake(url)) == 2)
    reports = [decode(m.data) for m in intake(url)]
    assert [(r.error_type, r.message, r.source) for r in reports] == [
        ("HANDLER_ERROR", "cannot handle ev-1", "AgentX")
    ] * 2


@pytest.mark.integration
@pytest.mark.timeout(90)
async def test_handler_errors_log_keeps_the_legacy_log_and_drop(bus: Bus) -> None:
    after: list[str] = []

    def broken(msg: ErrorMessage) -> None:
        raise RuntimeError("legacy handlers were allowed to fail")

    b = LibraryBHandlers([bus.url], "AgentX", handler_errors="log", **FAST)
    b.add_error_handler(broken)
    b.add_error_handler(lambda msg: after.append(msg.error_id))
    await b.connect()
    try:
        await bus.publish(event(1, source="AgentY"))
        await until(lambda: bus.drained("error_consumer_AgentX"), "drained")
        await until(lambda: after == ["ev-1"], "the second handler")
    finally:
        await b.close()
    s = b.consumer.stats
    assert (s.processed, s.failed, s.redelivered, s.dead_lettered) == (1, 0, 0, 0)

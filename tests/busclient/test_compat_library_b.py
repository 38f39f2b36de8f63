"""The library B shim (``common.error_bus`` / ``nats_client`` names) driven with the legacy call
shapes: module functions, the decorator (async and sync), ErrorContext, the logging-handler
pattern of the docs, and no client-side flood throttling."""

from __future__ import annotations

import asyncio

import pytest

from busclient.compat import library_b
from busclient.compat.library_b import (
    ErrorContext,
    NATSErrorBus,
    error_bus_handler,
    get_error_bus,
    init_error_bus,
    report_critical,
    report_error,
    report_info,
    report_warning,
)
from contracts.messages import Severity
from tests.busclient.conftest import Intake, adelivered, assert_native, delivered


@pytest.fixture(autouse=True)
def _fresh_global_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library_b, "_error_bus", None)


async def test_module_functions(shim_env: Intake) -> None:
    bus = await init_error_bus(agent_name="model_orchestrator", nats_servers=[shim_env.url])
    assert bus is get_error_bus()
    assert await report_error("AGENT_STARTUP", "initialized successfully", "INFO") is True
    await report_error("DATABASE_ERROR", "Connection failed", severity="CRITICAL")
    await report_warning("High memory usage detected")
    await report_info("heartbeat")
    await report_critical("High memory usage: 95%", context={"memory_available": 12})
    await report_error(
        "HIGH_CPU_USAGE", "cpu 99%", "high", context={"cpu": 99}, correlation_id="req-1"
    )
    await bus.disconnect()
    stored = await adelivered(shim_env)
    events = [assert_native(s, api="library_b", source="model_orchestrator") for s in stored]
    assert [(e.error_type, e.severity, e.message) for e in events] == [
        ("AGENT_STARTUP", Severity.INFO, "initialized successfully"),
        ("DATABASE_ERROR", Severity.CRITICAL, "Connection failed"),
        ("WARNING", Severity.WARNING, "High memory usage detected"),
        ("INFO", Severity.INFO, "heartbeat"),
        ("CRITICAL_ERROR", Severity.CRITICAL, "High memory usage: 95%"),
        ("HIGH_CPU_USAGE", Severity.ERROR, "cpu 99%"),
    ]
    assert events[0].details is None
    assert events[4].details == {"memory_available": 12}
    assert events[5].details == {"details": {"cpu": 99}, "correlation_id": "req-1"}


async def test_decorator_and_logging_handler_pattern(shim_env: Intake) -> None:
    await init_error_bus("decorated")

    @error_bus_handler("API_ERROR", "WARNING")
    async def call_api(url: str, retries: int = 3) -> None:
        raise ConnectionError(f"cannot reach {url}")

    with pytest.raises(ConnectionError):
        await call_api("http://svc", retries=1)
    # the docs' logging handler: loop.create_task(report_error(...)) from sync emit()
    loop = asyncio.get_running_loop()
    await loop.create_task(report_error("my.logger", "logged at ERROR", "ERROR", stack_trace=None))
    [api, logged] = await adelivered(shim_env)
    api_event = assert_native(api, api="library_b", source="decorated")
    assert (api_event.error_type, api_event.severity, api_event.message) == (
        "API_ERROR",
        Severity.WARNING,
        "cannot reach http://svc",
    )
    assert api_event.details["details"] == {
        "function": "call_api",
        "args": 1,
        "kwargs": ["retries"],
    }
    assert "ConnectionError: cannot reach http://svc" in api_event.details["stack_trace"]
    assert assert_native(logged, api="library_b", source="decorated").error_type == "my.logger"


def test_sync_paths_without_an_event_loop(
    shim_env: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_NAME", "sync_agent")  # get_error_bus() without init_error_bus

    @error_bus_handler()
    def parse(text: str) -> int:
        return int(text)

    with pytest.raises(ValueError):
        parse("not a number")
    with pytest.raises(KeyError), ErrorContext(correlation_id="req-123", context={"user": "u1"}):
        {}["missing"]
    with ErrorContext():
        pass  # no exception, nothing reported
    stored = delivered(shim_env)
    parsed, keyed = (assert_native(s, api="library_b", source="sync_agent") for s in stored)
    assert (parsed.error_type, parsed.severity) == ("parse_error", Severity.ERROR)
    assert "invalid literal for int()" in parsed.message
    assert (keyed.error_type, keyed.message) == ("KeyError", "'missing'")
    assert keyed.details["details"] == {"user": "u1"}
    assert keyed.details["correlation_id"] == "req-123"
    assert "KeyError: 'missing'" in keyed.details["stack_trace"]


async def test_no_client_side_flood_throttling(shim_env: Intake) -> None:
    bus = NATSErrorBus(agent_name="flooder")
    await bus.connect()
    for i in range(12):  # library B dropped ConnectionErrors #10-12
        assert await bus.publish_error("ConnectionError", f"refused {i}") is True
    stored = await adelivered(shim_env)
    assert [assert_native(s, api="library_b", source="flooder").message for s in stored] == [
        f"refused {i}" for i in range(12)
    ]

"""The library A shim (``nats_error_bus`` + ``unified_error_handler`` names) driven with the legacy
call shapes, including BaseAgent's closed-loop pattern and the hubs' un-awaited calls."""

from __future__ import annotations

import asyncio
import enum
import threading

from busclient.compat.library_a import (
    ErrorBusAdapter,
    ErrorCategory,
    ErrorSeverity,
    NATSErrorBus,
    UnifiedErrorHandler,
    create_error_bus,
    create_unified_error_handler,
)
from contracts.messages import Severity
from tests.busclient.conftest import Intake, adelivered, assert_native, delivered


class LegacyErrorSeverity(str, enum.Enum):
    """The shape of ``common.utils.data_models.ErrorSeverity`` (a str-mixin enum)."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


async def test_nats_error_bus_publishes_one_event_per_error(shim_env: Intake) -> None:
    bus = await create_error_bus("agent_a")
    assert bus.connected
    event_id = await bus.publish_error(
        ErrorSeverity.FATAL,
        ErrorCategory.NETWORK,
        "link down",
        {"peer": "pc2"},
        stack_trace="Traceback ...",
        correlation_id="corr-1",
    )
    plain_id = await NATSErrorBus(agent_name="agent_a").publish_error(
        ErrorSeverity.DEBUG, ErrorCategory.SYSTEM, "just so"
    )
    adapter_id = await ErrorBusAdapter(bus).report_error("network_timeout", "slow", {"ms": 900})
    bus.register_error_handler("network", lambda data: None)  # accepted, never called
    assert await bus.get_recent_errors() == []
    await bus.close()
    stored = await adelivered(shim_env)
    assert len(stored) == 3  # not 2-4 copies per error
    fatal, debug, adapted = (assert_native(s, api="library_a", source="agent_a") for s in stored)
    assert fatal.event_id == event_id and debug.event_id == plain_id
    assert adapted.event_id == adapter_id
    assert (fatal.severity, fatal.error_type, fatal.message) == (
        Severity.CRITICAL,
        "network",
        "link down",
    )
    assert fatal.details == {
        "details": {"peer": "pc2"},
        "stack_trace": "Traceback ...",
        "correlation_id": "corr-1",
    }
    assert (debug.severity, debug.error_type, debug.details) == (Severity.DEBUG, "system", None)
    assert (adapted.severity, adapted.error_type, adapted.details) == (
        Severity.ERROR,
        "network_timeout",
        {"ms": 900},
    )


async def test_unified_error_handler_severities_and_misuses(shim_env: Intake) -> None:
    handler = await create_unified_error_handler("hub_agent")
    result = await handler.report_error(
        LegacyErrorSeverity.CRITICAL,
        "db gone",
        error_type="database_error",
        details={"db": "main"},
        category=ErrorCategory.DATABASE,
        related_task_id="task-7",
    )
    assert result == {"legacy": False, "nats": True}
    await handler.report_error("high", "legacy high", error_type="x")
    await handler.report_error(None, "no severity")
    # BaseAgent's legacy code passes the misuse on: severity enum in error_type, dict in severity
    await handler.report_error(
        severity={"error": "boom"},
        message="Failed to load identity profiles",
        error_type=LegacyErrorSeverity.WARNING,
        details={},
    )
    # the hubs: report_error(error=e, ...) and never awaited
    try:
        raise ValueError("bad config value")
    except ValueError as exc:
        handler.report_error(error=exc, severity="CRITICAL", context={"component": "Hub"})
    await asyncio.create_task(handler.report_error("ErrorSeverity.INFO", "str of the enum"))
    stats = handler.get_statistics()
    assert stats["statistics"]["nats_sent"] == 6
    await handler.close()
    stored = await adelivered(shim_env)
    events = [assert_native(s, api="library_a", source="hub_agent") for s in stored]
    critical, high, none, misuse, hub, info = events
    assert (critical.severity, critical.error_type, critical.message) == (
        Severity.CRITICAL,
        "database_error",
        "db gone",
    )
    assert critical.details == {
        "details": {"db": "main"},
        "category": "database",
        "related_task_id": "task-7",
    }
    assert (high.severity, none.severity, none.error_type) == (
        Severity.ERROR,
        Severity.ERROR,
        "system_error",
    )
    assert (misuse.severity, misuse.error_type, misuse.details) == (
        Severity.WARNING,
        "",
        {"error": "boom"},
    )
    assert misuse.message == "Failed to load identity profiles"
    assert (hub.severity, hub.error_type, hub.message) == (
        Severity.CRITICAL,
        "ValueError",
        "bad config value",
    )
    assert hub.details["details"] == {"component": "Hub"}
    assert "ValueError: bad config value" in hub.details["stack_trace"]
    assert (info.severity, info.error_type) == (Severity.INFO, "system_error")


def test_handler_made_in_a_closed_loop_keeps_publishing(shim_env: Intake) -> None:
    handlers: list[UnifiedErrorHandler] = []

    def base_agent_init_thread() -> None:
        # BaseAgent._start_unified_error_handler_initialization: new loop, connect, close loop
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        handlers.append(loop.run_until_complete(create_unified_error_handler("closed_loop")))
        loop.run_until_complete(handlers[0].report_error("warning", "while the loop runs"))
        loop.close()
        asyncio.set_event_loop(None)

    thread = threading.Thread(target=base_agent_init_thread)
    thread.start()
    thread.join()
    handler = handlers[0]
    # later: BaseAgent._report_error_sync makes yet another loop per report
    loop = asyncio.new_event_loop()
    assert loop.run_until_complete(handler.report_error("error", "from a new loop"))["nats"]
    loop.close()
    handler.report_error("critical", "not awaited, no loop at all")
    events = [assert_native(s, api="library_a", source="closed_loop") for s in delivered(shim_env)]
    assert [(e.message, e.severity) for e in events] == [
        ("while the loop runs", Severity.WARNING),
        ("from a new loop", Severity.ERROR),
        ("not awaited, no loop at all", Severity.CRITICAL),
    ]


def test_both_channels_disabled_sends_nothing(shim_env: Intake) -> None:
    handler = UnifiedErrorHandler("quiet", enable_legacy_zmq=False, enable_nats=False)
    assert asyncio.run(handler.report_error("error", "dropped on purpose")) == {
        "legacy": False,
        "nats": False,
    }
    UnifiedErrorHandler("loud", enable_legacy_zmq=False).report_error("error", "sent")
    [stored] = delivered(shim_env)
    assert assert_native(stored, api="library_a", source="loud").message == "sent"

"""BaseAgent's ``report_error`` through the mixin and through ``busclient.compat.base_agent.BaseAgent``
(a stand-in legacy ``common.core.base_agent`` module), with the legacy call shapes and misuses."""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import types
from typing import Any

import pytest

from busclient.compat import base_agent as shim
from busclient.compat._common import Completed
from busclient.compat.base_agent import ErrorReportingMixin
from busclient.compat.library_a import ErrorCategory
from contracts.messages import Severity
from tests.busclient.conftest import Intake, adelivered, assert_native, delivered


class ErrorSeverity(str, enum.Enum):
    """The shape of ``common.utils.data_models.ErrorSeverity`` the call sites import."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Agent(ErrorReportingMixin):
    def __init__(self, name: str) -> None:
        self.name = name


def test_sync_call_shapes(shim_env: Intake) -> None:
    agent = Agent("DynamicIdentityAgent")
    results = [
        # 59 call sites: the severity in error_type, the details dict in severity
        agent.report_error(ErrorSeverity.ERROR, "Failed to load identity profiles", {"e": "x"}),
        agent.report_error("database_init_error", "no db", ErrorSeverity.CRITICAL),
        agent.report_error(
            "network_error", "Connection failed", "critical", category=ErrorCategory.NETWORK
        ),
        agent.report_error("ctx", "with context", context={"a": 1}, stack_trace="tb"),
        agent.report_error("str_details", "details as a string", details="db down"),
        agent.report_error("Redis connection error: refused"),  # a TypeError before
        agent.report_error("EMPTY_PROMPT", "Empty prompt received", "WARNING"),
    ]
    assert results == [{"legacy": False, "nats": True}] * 7
    stored = delivered(shim_env)
    events = [assert_native(s, api="base_agent", source="DynamicIdentityAgent") for s in stored]
    misuse, enum_sev, category, ctx, text, lone, warning = events
    assert (misuse.severity, misuse.error_type, misuse.message, misuse.details) == (
        Severity.ERROR,
        "",
        "Failed to load identity profiles",
        {"e": "x"},
    )
    assert (enum_sev.severity, enum_sev.error_type, enum_sev.details) == (
        Severity.CRITICAL,
        "database_init_error",
        None,
    )
    assert category.severity is Severity.CRITICAL
    assert category.details == {"details": None, "category": "network"}
    assert ctx.details == {"details": {"a": 1}, "stack_trace": "tb"}
    assert (text.details, text.severity) == ("db down", Severity.ERROR)
    assert (lone.error_type, lone.message) == ("", "Redis connection error: refused")
    assert (warning.severity, warning.error_type) == (Severity.WARNING, "EMPTY_PROMPT")


def test_wait_for_completion_outside_a_loop_waits_for_the_ack(shim_env: Intake) -> None:
    agent = Agent("Waiter")
    assert agent.report_error("sync", "stored before return", wait_for_completion=True) == {
        "legacy": False,
        "nats": True,
    }
    [stored] = shim_env.read()  # no flush: the PubAck came before report_error returned
    assert assert_native(stored, api="base_agent", source="Waiter").message == (
        "stored before return"
    )


async def test_inside_a_running_loop(shim_env: Intake) -> None:
    agent = Agent("AsyncAgent")
    task_like = agent.report_error(ErrorSeverity.WARNING, "Context analysis failed", {"k": 1})
    assert isinstance(task_like, Completed) and task_like.done()
    assert await task_like == {"legacy": False, "nats": True}
    # the legacy code raised "This event loop is already running" here; the loop is not blocked
    assert agent.report_error("sync_in_loop", "m", wait_for_completion=True) == {
        "legacy": False,
        "nats": True,
    }
    agent.report_error(ErrorSeverity.CRITICAL, "never awaited", {"k": 2})
    stored = await adelivered(shim_env)
    events = [assert_native(s, api="base_agent", source="AsyncAgent") for s in stored]
    assert [(e.severity, e.error_type, e.details) for e in events] == [
        (Severity.WARNING, "", {"k": 1}),
        (Severity.ERROR, "sync_in_loop", None),
        (Severity.CRITICAL, "", {"k": 2}),
    ]


@pytest.fixture
def legacy_base_agent(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A stand-in ``common.core.base_agent`` with the legacy class's relevant behaviour."""
    seen: dict[str, Any] = {}

    class BaseAgent:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.name = kwargs.get("name") or self.__class__.__name__
            self.unified_error_handler = None  # as the legacy __init__ does
            seen["kwargs"] = kwargs

        def report_error(self, *args: Any, **kwargs: Any) -> None:
            raise AssertionError("the legacy report_error must not be reached")

    module = types.ModuleType(shim.LEGACY_BASE_AGENT_MODULE)
    module.BaseAgent = BaseAgent  # type: ignore[attr-defined]
    module.logger = logging.getLogger("legacy.base_agent")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, shim.LEGACY_BASE_AGENT_MODULE, module)
    monkeypatch.setattr(shim, "_native", None)
    return seen


def test_base_agent_drop_in(shim_env: Intake, legacy_base_agent: dict[str, Any]) -> None:
    from busclient.compat.base_agent import BaseAgent, logger  # the one-line change

    class ProactiveAgent(BaseAgent):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__(name="ProactiveAgent", port=7000)

    agent = ProactiveAgent()
    assert logger.name == "legacy.base_agent"
    assert legacy_base_agent["kwargs"] == {
        "name": "ProactiveAgent",
        "port": 7000,
        "enable_nats_errors": False,  # the legacy library A connection is not opened
    }
    assert agent.report_error(ErrorSeverity.WARNING, "Relevance evaluation failed", {"k": 1}) == {
        "legacy": False,
        "nats": True,
    }
    # a hub's inherited handler, called with error= and never awaited
    agent.unified_error_handler.report_error(
        error=RuntimeError("start failed"), severity="CRITICAL", context={"phase": "startup"}
    )
    agent.unified_error_handler = object()  # the legacy init thread's assignment is ignored
    asyncio.run(agent.unified_error_handler.close())
    first, second = delivered(shim_env)
    report = assert_native(first, api="base_agent", source="ProactiveAgent")
    assert (report.severity, report.details) == (Severity.WARNING, {"k": 1})
    hub = assert_native(second, api="library_a", source="ProactiveAgent")
    assert (hub.severity, hub.error_type, hub.message) == (
        Severity.CRITICAL,
        "RuntimeError",
        "start failed",
    )

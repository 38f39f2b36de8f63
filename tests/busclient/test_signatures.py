"""Every shim keeps its legacy API's signature (voice-assistant-prod @598f63af), so migrating is an
import change only. The legacy signatures are written down here as stubs; a shim may add a
default to a parameter the legacy API required, and keyword-only extras (``client``), nothing
else. Enum members and values are the legacy ones."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from busclient.compat import base_agent, error_publisher, library_a, library_b
from busclient.compat import pc2_error_publisher as pc2

# ---------------------------------------------------------------- legacy signatures (stubs)


def errpub_init(self, source, *, endpoint=None, context=None): ...
def errpub_publish(
    self, *, error_type, severity="error", details=None, message_type="error_report"
): ...
def mainpc_factory(agent_name): ...
def pc2_init(self, source, *, endpoint=None, context=None, propagate_to_mainpc=True): ...
def pc2_publish(
    self,
    *,
    error_type,
    severity="error",
    details=None,
    message_type="error_report",
    category="pc2_service",
    send_to_mainpc=None,
): ...
def pc2_specific(
    self, *, error_type, pc2_component, severity="error", details=None, performance_impact=None
): ...
def pc2_factory(agent_name, **kwargs): ...
def a_bus_init(self, nats_servers=None, agent_name="unknown", max_reconnect_attempts=10): ...
def a_publish(
    self, severity, category, message, details=None, stack_trace=None, correlation_id=None
): ...
def a_create_bus(agent_name, nats_servers=None): ...
def a_adapter_init(self, nats_error_bus): ...
def a_adapter_report(self, error_type, message, details=None): ...
def a_handler_init(
    self, agent_name, enable_legacy_zmq=True, enable_nats=True, nats_servers=None
): ...
def a_handler_report(
    self,
    severity,
    message,
    error_type="system_error",
    details=None,
    category=None,
    stack_trace=None,
    related_task_id=None,
): ...
def a_create_handler(agent_name, enable_legacy=True, enable_nats=True, nats_servers=None): ...
def b_bus_init(self, nats_servers=None, agent_name="unknown"): ...
def b_publish(
    self, error_type, message, severity="ERROR", stack_trace=None, context=None, correlation_id=None
): ...
def b_init(agent_name, nats_servers=None): ...
def b_get(): ...
def b_report(error_type, message, severity="ERROR", **kwargs): ...
def b_report_level(message, **kwargs): ...
def b_handler(error_type=None, severity="ERROR"): ...
def b_context_init(self, correlation_id=None, context=None): ...
def agent_report(
    self,
    error_type,
    message,
    severity=None,
    context=None,
    details=None,
    category=None,
    stack_trace=None,
    related_task_id=None,
    wait_for_completion=False,
    **kwargs,
): ...


CASES: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
    (errpub_init, error_publisher.ErrorPublisher.__init__),
    (errpub_publish, error_publisher.ErrorPublisher.publish_error),
    (mainpc_factory, error_publisher.create_mainpc_error_publisher),
    (pc2_init, pc2.PC2ErrorPublisher.__init__),
    (pc2_publish, pc2.PC2ErrorPublisher.publish_error),
    (pc2_specific, pc2.PC2ErrorPublisher.publish_pc2_specific_error),
    (pc2_factory, pc2.create_pc2_error_publisher),
    (a_bus_init, library_a.NATSErrorBus.__init__),
    (a_publish, library_a.NATSErrorBus.publish_error),
    (a_create_bus, library_a.create_error_bus),
    (a_adapter_init, library_a.ErrorBusAdapter.__init__),
    (a_adapter_report, library_a.ErrorBusAdapter.report_error),
    (a_handler_init, library_a.UnifiedErrorHandler.__init__),
    (a_handler_report, library_a.UnifiedErrorHandler.report_error),
    (a_create_handler, library_a.create_unified_error_handler),
    (b_bus_init, library_b.NATSErrorBus.__init__),
    (b_publish, library_b.NATSErrorBus.publish_error),
    (b_init, library_b.init_error_bus),
    (b_get, library_b.get_error_bus),
    (b_report, library_b.report_error),
    (b_report_level, library_b.report_critical),
    (b_report_level, library_b.report_warning),
    (b_report_level, library_b.report_info),
    (b_handler, library_b.error_bus_handler),
    (b_context_init, library_b.ErrorContext.__init__),
    (agent_report, base_agent.ErrorReportingMixin.report_error),
]


@pytest.mark.parametrize(("legacy", "shim"), CASES, ids=[c[1].__qualname__ for c in CASES])
def test_shim_keeps_the_legacy_signature(
    legacy: Callable[..., Any], shim: Callable[..., Any]
) -> None:
    old = list(inspect.signature(legacy).parameters.values())
    new = list(inspect.signature(shim).parameters.values())
    for before, after in zip(old, new, strict=False):
        assert (after.name, after.kind) == (before.name, before.kind)
        if before.default is not inspect.Parameter.empty:
            assert after.default == before.default, after.name
    for extra in new[len(old) :]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY, extra.name
        assert extra.default is not inspect.Parameter.empty, extra.name
    assert len(new) >= len(old)


def test_library_a_enums_are_the_legacy_ones() -> None:
    assert {m.name: m.value for m in library_a.ErrorSeverity} == {
        "DEBUG": "debug",
        "INFO": "info",
        "WARNING": "warning",
        "ERROR": "error",
        "CRITICAL": "critical",
        "FATAL": "fatal",
    }
    assert [m.value for m in library_a.ErrorCategory] == [
        "system",
        "network",
        "database",
        "authentication",
        "validation",
        "resource",
        "configuration",
        "external_api",
        "user_input",
        "business_logic",
    ]

"""Drop-in for BaseAgent's ``report_error`` (legacy ``common/core/base_agent.py``).

Migrate an agent with one line::

    from common.core.base_agent import BaseAgent               # before
    from busclient.compat.base_agent import BaseAgent          # after

``BaseAgent`` here is the legacy class (imported from ``common.core.base_agent`` on first use,
so it must be importable, as it is in the legacy tree) with ``ErrorReportingMixin`` in front:
the agent keeps everything BaseAgent does, and ``self.report_error(...)`` and
``self.unified_error_handler.report_error(...)`` publish natively (the legacy path connected
library A in a thread whose loop it then closed, and never reached the server). It passes
``enable_nats_errors=False`` to the legacy ``__init__`` unless the agent set it, so the legacy
library A connection is not opened. Any other name (``from ... import BaseAgent, logger``) is
taken from the legacy module. Classes that do not derive from BaseAgent can use the mixin
itself: ``class MyAgent(ErrorReportingMixin, Base)``.

Call shapes handled (``report_error(error_type, message, severity=None, context=None,
details=None, category=None, stack_trace=None, related_task_id=None,
wait_for_completion=False, **kwargs)``):

* ``report_error(ErrorSeverity.X, msg, {dict})`` (59 legacy call sites): severity X, the dict
  as details, error type ``""`` (``busclient.compat._common.untangle_severity``);
* ``report_error("type", msg, ErrorSeverity.X | "critical" | None)``; ``context=`` or
  ``details=`` (``details`` wins), a string or dict;
* ``report_error("only a message")`` (a TypeError before): message as given, error type ``""``;
* ``category``, ``stack_trace``, ``related_task_id`` are kept as extras
  (``busclient.compat._common.with_extras``); other ``kwargs`` are ignored, as before.

Return values keep the legacy shapes: without a running loop, ``{"legacy": False, "nats": ok}``
(``ok``: the client took the event; with ``wait_for_completion=True``: JetStream stored it
within ``report_timeout_secs``); inside a running loop, a ``Completed`` (Task-like, awaitable)
resolving to that dict, or with ``wait_for_completion=True`` the dict at once: the caller's loop
is never blocked (the legacy code raised "This event loop is already running" there).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from busclient.client import BusClient
from busclient.compat._common import (
    Completed,
    legacy_id,
    shared_client,
    untangle_severity,
    with_extras,
)
from busclient.compat.library_a import UnifiedErrorHandler

# BaseAgent is made on first use by the module __getattr__ (it subclasses the legacy class)
__all__ = ["LEGACY_BASE_AGENT_MODULE", "BaseAgent", "ErrorReportingMixin"]  # noqa: F822

log = logging.getLogger("busclient")

_API = "base_agent"
#: where the legacy ``BaseAgent`` is imported from, on first use of ``BaseAgent``
LEGACY_BASE_AGENT_MODULE = "common.core.base_agent"


class ErrorReportingMixin:
    """Gives a class BaseAgent's ``report_error`` publishing natively; see the module docstring.

    The source is ``self.name`` (BaseAgent sets it), else the class name. The client is
    ``self.error_bus_client`` when the instance has one, else the process's shared client.
    ``unified_error_handler`` is a library A ``UnifiedErrorHandler`` shim on the same client
    and source; assignments to it (the legacy ``BaseAgent.__init__`` and its thread make them)
    are ignored.
    """

    #: ``wait_for_completion=True`` outside a loop waits at most this long, in seconds
    report_timeout_secs: float = 5.0

    def _error_source(self) -> str:
        return getattr(self, "name", None) or type(self).__name__

    def _error_client(self) -> BusClient:
        return getattr(self, "error_bus_client", None) or shared_client()

    @property
    def unified_error_handler(self) -> UnifiedErrorHandler:
        handler = self.__dict__.get("_busclient_unified_handler")
        if handler is None:
            handler = UnifiedErrorHandler(self._error_source(), client=self._error_client())
            self.__dict__["_busclient_unified_handler"] = handler
        return handler

    @unified_error_handler.setter
    def unified_error_handler(self, value: Any) -> None:
        """Ignored: the legacy BaseAgent assigns its own handler (or None) from a thread."""

    def report_error(
        self,
        error_type: Any,
        message: Any = None,
        severity: Any = None,
        context: Any = None,
        details: Any = None,
        category: Any = None,
        stack_trace: str | None = None,
        related_task_id: str | None = None,
        wait_for_completion: bool = False,
        **kwargs: Any,
    ) -> dict[str, bool] | Completed:
        """Publish one error natively (``Busbridge-Client-Api: base_agent``); returns the legacy
        shapes (module docstring). Never raises for buffering."""
        if message is None:
            error_type, message = "", error_type
        error_type, severity, details = untangle_severity(
            error_type, severity, context if details is None else details
        )
        ticket = self._error_client().report(
            error_type,
            message,
            severity=severity,
            source=self._error_source(),
            details=with_extras(
                details,
                category=category,
                stack_trace=stack_trace,
                related_task_id=related_task_id,
            ),
            event_id=legacy_id(),
            client_api=_API,
        )
        in_loop = _loop_running()
        ok = ticket.accepted
        if wait_for_completion and not in_loop:
            ok = ticket.wait(self.report_timeout_secs)
        result = {"legacy": False, "nats": ok}
        return Completed(result) if in_loop and not wait_for_completion else result


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_native: type | None = None


def _native_base_agent() -> type:
    global _native
    if _native is None:
        legacy = importlib.import_module(LEGACY_BASE_AGENT_MODULE).BaseAgent

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("enable_nats_errors", False)
            super(_native_base_agent(), self).__init__(*args, **kwargs)

        _native = type(
            "BaseAgent",
            (ErrorReportingMixin, legacy),
            {
                "__init__": __init__,
                "__module__": __name__,
                "__doc__": f"{LEGACY_BASE_AGENT_MODULE}.BaseAgent with native report_error.",
            },
        )
    return _native


def __getattr__(name: str) -> Any:
    """``BaseAgent``: the legacy class with the mixin; other names: the legacy module's."""
    if name == "BaseAgent":
        return _native_base_agent()
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(importlib.import_module(LEGACY_BASE_AGENT_MODULE), name)

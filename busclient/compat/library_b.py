"""Drop-in for legacy NATS library B (WP-10): ``common/error_bus/nats_client.py``, exported by
``common/error_bus/__init__.py``.

Migrate with one line::

    from common.error_bus import init_error_bus, report_error, report_critical, error_bus_handler, ErrorContext
    from busclient.compat.library_b import init_error_bus, report_error, report_critical, error_bus_handler, ErrorContext

Same names, signatures and call shapes: ``NATSErrorBus``, ``get_error_bus``,
``init_error_bus``, ``report_error``, ``report_critical``, ``report_warning``,
``report_info``, ``@error_bus_handler``, ``ErrorContext``, ``ErrorMessage``; environment
``AGENT_NAME`` (default source) and ``NATS_SERVERS`` (comma separated; ``BUSBRIDGE_NATS_URL``
wins, default ``nats://127.0.0.1:4222`` instead of library B's ``nats_coordination``).

Each report is one native ``ErrorEvent`` (``Busbridge-Client-Api: library_b``) on the intake,
instead of ``errors.<severity as given>.<agent>`` with no headers. Mapping: ``error_type`` and
``message`` as given, ``severity`` via the legacy table (``CRITICAL``, ``high``, ...),
``context`` -> ``details``, ``stack_trace``/``correlation_id`` as extras
(``busclient.compat._common.with_extras``), ``source`` = the bus's ``agent_name``.

Differences on purpose: no client-side flood throttling (library B silently dropped
ConnectionError #10+ and TimeoutError #5+; the sidecar's flood control counts and summarises
instead); no consumer (``add_error_handler`` handlers are never called here:
``consumers.legacy_handlers.LibraryBHandlers`` keeps that call shape on a durable consumer); ``connect()``/``init_error_bus()`` never raise (an unreachable
NATS is retried in the background while events are buffered). The ``async`` functions do their
work when called and return a ``Completed`` (awaitable, ``create_task``-able, harmless when
never awaited), so the sync decorator path and ``ErrorContext`` deliver outside any event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from busclient.client import BusClient
from busclient.compat._common import (
    Completed,
    exception_trace,
    flush_on_close,
    legacy_id,
    shared_client,
    with_extras,
)
from busclient.config import ENV_AGENT_NAME

__all__ = [
    "ErrorContext",
    "ErrorMessage",
    "NATSErrorBus",
    "error_bus_handler",
    "get_error_bus",
    "init_error_bus",
    "report_critical",
    "report_error",
    "report_info",
    "report_warning",
]

log = logging.getLogger("busclient")

_API = "library_b"
#: how long ``disconnect()`` waits for reported errors to be stored, in seconds
CLOSE_FLUSH_SECS = 2.0

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class ErrorMessage:
    """Library B's message shape (kept for handlers' type hints; not what is published)."""

    error_id: str
    timestamp: str
    source_agent: str
    error_type: str
    severity: str
    message: str
    stack_trace: str | None = None
    context: dict[str, Any] | None = None
    correlation_id: str | None = None
    retry_count: int = 0


class NATSErrorBus:
    """Stands in for library B's ``NATSErrorBus``; see the module docstring.

    ``nats_servers``: NATS URLs (default: ``busclient.config.resolve_servers``). ``client``: a
    ``BusClient`` to use instead of the process's shared one.
    """

    def __init__(
        self,
        nats_servers: list[str] | None = None,
        agent_name: str = "unknown",
        *,
        client: BusClient | None = None,
    ) -> None:
        self.nats_servers = nats_servers
        self.agent_name = agent_name
        self.error_handlers: list[Callable[[ErrorMessage], Any]] = []
        self._client = client

    @property
    def client(self) -> BusClient:
        return self._client or shared_client(self.nats_servers)

    def connect(self) -> Completed:
        """Open (or share) the client's connection; awaitable; never raises."""
        self.client  # noqa: B018 - creating the shared client starts its connection
        return Completed(None)

    def add_error_handler(self, handler: Callable[[ErrorMessage], Any]) -> None:
        """Accepted for compatibility; handlers are never called (no consumer here)."""
        self.error_handlers.append(handler)
        log.warning(
            "busclient: %s added an error handler; the library B shim does not consume errors "
            "(consumers.legacy_handlers.LibraryBHandlers does)",
            self.agent_name,
        )

    def publish_error(
        self,
        error_type: str,
        message: str,
        severity: str = "ERROR",
        stack_trace: str | None = None,
        context: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> Completed:
        """Publish one error; awaitable, resolving to True when the client took it (False:
        dropped because the buffer is full or the client closed; counted there)."""
        ticket = self.client.report(
            error_type,
            message,
            severity=severity,
            source=self.agent_name,
            details=with_extras(context, stack_trace=stack_trace, correlation_id=correlation_id),
            event_id=legacy_id(),
            client_api=_API,
        )
        return Completed(ticket.accepted)

    def disconnect(self) -> Any:
        """Awaitable: waits (at most ``CLOSE_FLUSH_SECS``) until what was reported is stored.
        The shared client stays open."""
        return flush_on_close(self.client, CLOSE_FLUSH_SECS)


_error_bus: NATSErrorBus | None = None


def get_error_bus() -> NATSErrorBus:
    """The process's bus: the one ``init_error_bus`` made, else one for env ``AGENT_NAME``
    (default ``unknown``) and ``NATS_SERVERS``."""
    global _error_bus
    if _error_bus is None:
        _error_bus = NATSErrorBus(None, os.getenv(ENV_AGENT_NAME, "unknown"))
    return _error_bus


def init_error_bus(agent_name: str, nats_servers: list[str] | None = None) -> Completed:
    """Make the process's bus for ``agent_name``; awaitable, resolving to it. Never raises."""
    global _error_bus
    _error_bus = NATSErrorBus(nats_servers, agent_name)
    _error_bus.connect()
    return Completed(_error_bus)


def report_error(
    error_type: str, message: str, severity: str = "ERROR", **kwargs: Any
) -> Completed:
    """Report through ``get_error_bus()``; ``kwargs``: ``stack_trace``, ``context``,
    ``correlation_id``. Awaitable, resolving to True when the client took the event."""
    return get_error_bus().publish_error(error_type, message, severity, **kwargs)


def report_critical(message: str, **kwargs: Any) -> Completed:
    """``report_error("CRITICAL_ERROR", message, "CRITICAL", **kwargs)``."""
    return report_error("CRITICAL_ERROR", message, "CRITICAL", **kwargs)


def report_warning(message: str, **kwargs: Any) -> Completed:
    """``report_error("WARNING", message, "WARNING", **kwargs)``."""
    return report_error("WARNING", message, "WARNING", **kwargs)


def report_info(message: str, **kwargs: Any) -> Completed:
    """``report_error("INFO", message, "INFO", **kwargs)``."""
    return report_error("INFO", message, "INFO", **kwargs)


def _report_exception(
    error_type: str | None,
    severity: str,
    func: Callable[..., Any],
    exc: BaseException,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    report_error(
        error_type or f"{func.__name__}_error",
        str(exc),
        severity,
        stack_trace=exception_trace(exc),
        context={"function": func.__name__, "args": len(args), "kwargs": list(kwargs)},
    )


def error_bus_handler(error_type: str | None = None, severity: str = "ERROR") -> Callable[[F], F]:
    """Decorator: an exception escaping the function (sync or async) is reported (``error_type``
    default ``<function>_error``, message ``str(exc)``, stack trace, context ``{"function",
    "args": count, "kwargs": names}``) and re-raised. The sync path reports without an event
    loop too (library B's only logged then)."""

    def decorator(func: F) -> F:
        if asyncio.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    return await func(*args, **kwargs)
                except Exception as exc:
                    _report_exception(error_type, severity, func, exc, args, kwargs)
                    raise

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                _report_exception(error_type, severity, func, exc, args, kwargs)
                raise

        return sync_wrapper  # type: ignore[return-value]

    return decorator


class ErrorContext:
    """Context manager: an exception leaving the block is reported (error type = its class
    name, message ``str(exc)``, severity ERROR, stack trace, ``correlation_id``, ``context`` as
    details) and not suppressed. Works with or without a running event loop."""

    def __init__(self, correlation_id: str | None = None, context: dict[str, Any] | None = None):
        self.correlation_id = correlation_id or str(uuid.uuid4())
        self.context = context or {}

    def __enter__(self) -> ErrorContext:
        return self

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        if exc_type is not None:
            report_error(
                exc_type.__name__,
                str(exc_val),
                "ERROR",
                stack_trace=exception_trace(exc_val),
                correlation_id=self.correlation_id,
                context=self.context,
            )
        return False

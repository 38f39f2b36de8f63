"""Drop-in for legacy NATS library A: ``common/error_bus/nats_error_bus.py`` and
``common/error_bus/unified_error_handler.py`` (the one BaseAgent uses).

Migrate with one line (either legacy module)::

    from common.error_bus.unified_error_handler import UnifiedErrorHandler, create_unified_error_handler
    from busclient.compat.library_a import UnifiedErrorHandler, create_unified_error_handler

    from common.error_bus.nats_error_bus import NATSErrorBus, ErrorSeverity, ErrorCategory
    from busclient.compat.library_a import NATSErrorBus, ErrorSeverity, ErrorCategory

Same names, signatures, enums (``ErrorSeverity`` with ``fatal``, ``ErrorCategory``) and call
shapes. Each reported error is **one** native ``ErrorEvent`` (``Busbridge-Client-Api:
library_a``) on the intake, not 2-4 copies on ``errors.>``; severities are mapped by the
legacy table (``ErrorSeverity.CRITICAL`` of either legacy enum -> critical, ``fatal`` ->
critical, ``high`` -> error; library A collapsed them all to ``error``).

The ``async`` methods do their work when called and return a ``Completed`` (awaitable,
``create_task``-able, harmless when never awaited), so the handler keeps working after the
event loop it was created in is closed (BaseAgent's case) and the hubs' un-awaited
``report_error(error=e, severity=..., context=...)`` calls are delivered too.

Mapping: ``NATSErrorBus.publish_error`` -> ``error_type`` = the category value (library A had
no error type), ``details`` as passed, ``stack_trace``/``correlation_id`` as extras;
``UnifiedErrorHandler.report_error`` -> ``error_type`` as given, ``category`` (when given),
``stack_trace``, ``related_task_id`` as extras; ``ErrorBusAdapter.report_error`` -> its
``error_type``, severity error. ``source`` is ``agent_name``. Not provided: consuming
(``register_error_handler`` handlers are never called, ``get_recent_errors`` returns ``[]``):
``consumers.legacy_handlers.LibraryAHandlers`` keeps that call shape on a durable consumer.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from busclient.client import BusClient
from busclient.compat._common import (
    Completed,
    exception_trace,
    flush_on_close,
    legacy_id,
    shared_client,
    untangle_severity,
    with_extras,
)

__all__ = [
    "ErrorBusAdapter",
    "ErrorCategory",
    "ErrorSeverity",
    "NATSErrorBus",
    "UnifiedErrorHandler",
    "create_error_bus",
    "create_unified_error_handler",
]

log = logging.getLogger("busclient")

_API = "library_a"
#: how long ``close()`` waits for reported errors to be stored, in seconds
CLOSE_FLUSH_SECS = 2.0
_DEFAULT_ERROR_TYPE = "system_error"


class ErrorSeverity(enum.Enum):
    """Library A's severities (same members and values)."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
    FATAL = "fatal"


class ErrorCategory(enum.Enum):
    """Library A's categories (same members and values)."""

    SYSTEM = "system"
    NETWORK = "network"
    DATABASE = "database"
    AUTHENTICATION = "authentication"
    VALIDATION = "validation"
    RESOURCE = "resource"
    CONFIGURATION = "configuration"
    EXTERNAL_API = "external_api"
    USER_INPUT = "user_input"
    BUSINESS_LOGIC = "business_logic"


def _value(item: Any) -> Any:
    return item.value if isinstance(item, enum.Enum) else item


class NATSErrorBus:
    """Stands in for library A's ``NATSErrorBus``; see the module docstring.

    ``nats_servers``: NATS URLs (default: ``busclient.config.resolve_servers``: env
    ``BUSBRIDGE_NATS_URL``, ``NATS_SERVERS``, then ``nats://127.0.0.1:4222``).
    ``max_reconnect_attempts``: accepted, unused (the client reconnects forever and buffers).
    ``client``: a ``BusClient`` to use instead of the shared one. ``connected`` is True from
    ``connect()`` to ``close()``; publishing works either way (events are buffered).
    """

    def __init__(
        self,
        nats_servers: list[str] | None = None,
        agent_name: str = "unknown",
        max_reconnect_attempts: int = 10,
        *,
        client: BusClient | None = None,
    ) -> None:
        self.nats_servers = nats_servers
        self.agent_name = agent_name
        self.max_reconnect_attempts = max_reconnect_attempts
        self.connected = False
        self.error_handlers: dict[str, list[Callable[..., Any]]] = {}
        self._client = client

    @property
    def client(self) -> BusClient:
        return self._client or shared_client(self.nats_servers)

    def connect(self) -> Completed:
        """Open (or share) the client's connection; awaitable. Never raises: an unreachable
        NATS is retried in the background while events are buffered."""
        self.client  # noqa: B018 - creating the shared client starts its connection
        self.connected = True
        return Completed(None)

    def publish_error(
        self,
        severity: ErrorSeverity | str,
        category: ErrorCategory | str,
        message: str,
        details: dict[str, Any] | None = None,
        stack_trace: str | None = None,
        correlation_id: str | None = None,
    ) -> Completed:
        """Publish one error; awaitable, resolving to its event id (a uuid4 string, the
        ``Nats-Msg-Id``), or ``None`` when the client dropped it (buffer full, closed)."""
        ticket = self.client.report(
            _value(category) or "system",
            message,
            severity=severity,
            source=self.agent_name,
            details=with_extras(details, stack_trace=stack_trace, correlation_id=correlation_id),
            event_id=legacy_id(),
            client_api=_API,
        )
        return Completed(ticket.event_id if ticket.accepted else None)

    def register_error_handler(self, category: str, handler: Callable[..., Any]) -> None:
        """Accepted for compatibility; handlers are never called (no consuming here)."""
        self.error_handlers.setdefault(category, []).append(handler)
        log.warning(
            "busclient: %s registered an error handler; the library A shim does not consume "
            "errors (consumers.legacy_handlers.LibraryAHandlers does)",
            self.agent_name,
        )

    def get_recent_errors(
        self, hours: int = 24, severity: ErrorSeverity | None = None
    ) -> Completed:
        """Awaitable resolving to ``[]``: the shim does not read errors back."""
        return Completed([])

    def close(self) -> Awaitable[None]:
        """Awaitable: waits (at most ``CLOSE_FLUSH_SECS``) until what was published is stored
        (``busclient.compat._common.flush_on_close``). The shared client stays open."""
        self.connected = False
        return flush_on_close(self.client, CLOSE_FLUSH_SECS)


def create_error_bus(agent_name: str, nats_servers: list[str] | None = None) -> Completed:
    """Awaitable resolving to a connected ``NATSErrorBus`` (never raises)."""
    bus = NATSErrorBus(nats_servers, agent_name)
    bus.connect()
    return Completed(bus)


class ErrorBusAdapter:
    """Stands in for library A's ``ErrorBusAdapter`` (the legacy ZMQ-like interface)."""

    def __init__(self, nats_error_bus: NATSErrorBus) -> None:
        self.error_bus = nats_error_bus

    def report_error(
        self, error_type: str, message: str, details: dict[str, Any] | None = None
    ) -> Completed:
        """Publish one error with severity error and ``error_type`` as given; awaitable,
        resolving to its event id (``None`` when dropped)."""
        bus = self.error_bus
        ticket = bus.client.report(
            error_type,
            message,
            source=bus.agent_name,
            details=details,
            event_id=legacy_id(),
            client_api=_API,
        )
        return Completed(ticket.event_id if ticket.accepted else None)

    def get_errors(self, hours: int = 24) -> Completed:
        """Awaitable resolving to ``[]``."""
        return Completed([])


class UnifiedErrorHandler:
    """Stands in for library A's ``UnifiedErrorHandler``; see the module docstring.

    Publishing natively replaces both legacy halves (the SystemDigitalTwin "legacy" send was a
    logging stub), so an error is published when ``enable_legacy_zmq`` or ``enable_nats`` is
    set, and nothing is sent when both are off. ``client``: a ``BusClient`` instead of the
    shared one.
    """

    def __init__(
        self,
        agent_name: str,
        enable_legacy_zmq: bool = True,
        enable_nats: bool = True,
        nats_servers: list[str] | None = None,
        *,
        client: BusClient | None = None,
    ) -> None:
        self.agent_name = agent_name
        self.enable_legacy_zmq = enable_legacy_zmq
        self.enable_nats = enable_nats
        self.nats_servers = nats_servers
        self.digital_twin_socket = None
        self.legacy_send_method: Callable[..., Any] | None = None
        self.nats_error_bus: NATSErrorBus | None = None
        self.stats = {
            "legacy_sent": 0,
            "legacy_failed": 0,
            "nats_sent": 0,
            "nats_failed": 0,
            "dual_sent": 0,
        }
        self._client = client

    @property
    def client(self) -> BusClient:
        return self._client or shared_client(self.nats_servers)

    def set_legacy_handler(self, send_method: Callable[..., Any]) -> None:
        """Accepted for compatibility; never called (native publishing replaces it)."""
        self.legacy_send_method = send_method

    def initialize_nats(self) -> Completed:
        """Awaitable; makes ``nats_error_bus`` (sharing this handler's client)."""
        if self.enable_nats and self.nats_error_bus is None:
            bus = NATSErrorBus(self.nats_servers, self.agent_name, client=self._client)
            bus.connect()
            self.nats_error_bus = bus
        return Completed(None)

    def report_error(
        self,
        severity: Any = None,
        message: Any = None,
        error_type: Any = "system_error",
        details: Any = None,
        category: ErrorCategory | str | None = None,
        stack_trace: str | None = None,
        related_task_id: str | None = None,
        *,
        error: BaseException | None = None,
        context: Any = None,
    ) -> Completed:
        """Publish one error; awaitable, resolving to ``{"legacy": False, "nats": accepted}``
        (``accepted``: the client took the event; the legacy half is gone).

        Legacy shapes handled: any severity spelling or enum; the BaseAgent misuse
        (``error_type=ErrorSeverity.X`` with the details dict in ``severity``,
        ``busclient.compat._common.untangle_severity``); and the hubs'
        ``report_error(error=e, severity=..., context={...})``: ``error`` gives the message
        (``str(e)``), the error type (its class name, unless one was given) and the stack
        trace; ``context`` is the details when ``details`` is not given.
        """
        if details is None:
            details = context
        if error is not None:
            message = str(error) if message is None else message
            if error_type == _DEFAULT_ERROR_TYPE:
                error_type = type(error).__name__
            stack_trace = stack_trace or exception_trace(error)
        error_type, severity, details = untangle_severity(error_type, severity, details)
        if not (self.enable_nats or self.enable_legacy_zmq):
            return Completed({"legacy": False, "nats": False})
        ticket = self.client.report(
            error_type,
            message,
            severity=severity,
            source=self.agent_name,
            details=with_extras(
                details,
                category=_value(category),
                stack_trace=stack_trace,
                related_task_id=related_task_id,
            ),
            event_id=legacy_id(),
            client_api=_API,
        )
        self.stats["nats_sent" if ticket.accepted else "nats_failed"] += 1
        return Completed({"legacy": False, "nats": ticket.accepted})

    def get_statistics(self) -> dict[str, Any]:
        """The legacy statistics shape; ``nats_connected`` is the client's connection state."""
        sent, failed = self.stats["nats_sent"], self.stats["nats_failed"]
        return {
            "agent_name": self.agent_name,
            "legacy_enabled": self.enable_legacy_zmq,
            "nats_enabled": self.enable_nats,
            "nats_connected": self.client.stats().connected,
            "statistics": dict(self.stats),
            "success_rates": {
                "legacy": 0,
                "nats": sent / (sent + failed) * 100 if sent + failed else 0,
            },
        }

    def close(self) -> Awaitable[None]:
        """Awaitable: waits (at most ``CLOSE_FLUSH_SECS``) until what was reported is stored.
        The shared client stays open (other handlers of the process use it)."""
        return flush_on_close(self.client, CLOSE_FLUSH_SECS)


def create_unified_error_handler(
    agent_name: str,
    enable_legacy: bool = True,
    enable_nats: bool = True,
    nats_servers: Sequence[str] | None = None,
) -> Completed:
    """Awaitable resolving to an initialised ``UnifiedErrorHandler`` (never raises)."""
    handler = UnifiedErrorHandler(
        agent_name=agent_name,
        enable_legacy_zmq=enable_legacy,
        enable_nats=enable_nats,
        nats_servers=list(nats_servers) if nats_servers is not None else None,
    )
    if enable_nats:
        handler.initialize_nats()
    return Completed(handler)

"""Drop-in handler registration of the two legacy NATS error-bus libraries, on ``ErrorBusConsumer``.

What the legacy code did (``common/error_bus/`` of the legacy repository; legacy-bus.md §3):

* **Library A** (``nats_error_bus.NATSErrorBus``): ``register_error_handler(category, handler)``
  appends ``handler`` to a per-category list; a core subscription on
  ``errors.agents.<agent_name>`` (the agent's **own** errors, live only) awaits every handler of
  the message's ``category`` with the decoded JSON dict ``{id, timestamp, agent_name, severity,
  category, message, details, stack_trace, correlation_id, resolved, resolution_notes}``;
  a handler's exception is logged and dropped. ``category`` is one of ``CATEGORIES``, chosen by
  the publisher from ``error_type`` with substring rules (``category_for``).
* **Library B** (``nats_client.NATSErrorBus``): ``add_error_handler(handler)`` appends to one
  list; a pull consumer (durable ``error_consumer_<agent>``, on ``errors.>``) builds an
  ``ErrorMessage`` dataclass ``{error_id, timestamp, source_agent, error_type, severity, message,
  stack_trace, context, correlation_id, retry_count}`` and calls every handler (awaited when a
  coroutine function), skipping the agent's own errors; a handler's exception is logged and
  dropped; a payload that does not fit ``ErrorMessage`` is nak'd without delay, forever.
  ``error_bus_handler(error_type=None, severity="ERROR")`` decorates a function (sync or
  async) so that an exception it raises is reported as an ``ErrorMessage`` (``error_type``
  defaults to ``<function>_error``, ``context`` = ``{function, args: count, kwargs: names}``)
  and re-raised. ``get_error_bus()`` / ``init_error_bus(agent_name, nats_servers)`` give the
  process-wide instance (``AGENT_NAME``, ``NATS_SERVERS`` from the environment).

Publishing (``publish_error``, ``report_error``, ``init_error_bus``, ...) is
``busclient.compat``'s; its ``register_error_handler``/``add_error_handler`` accept handlers
but never call them. Consuming is here:
``LibraryAHandlers`` and ``LibraryBHandlers`` keep those call shapes and handler
arguments, built from the ``ErrorEvent`` contracts of ERRBUS (the timestamp as naive host-local
ISO text, as the legacy publishers wrote it). On purpose different:

* each is a **durable** consumer (``legacy_a_<agent>`` / ``error_consumer_<agent>`` by
  default: one per agent, i.e. fan-out), starting with the messages stored after its creation
  (``deliver="new"``; pass ``deliver="all"`` to read the history) and resuming after a restart;
* a handler's exception is **retried** with backoff and, after ``max_deliver`` attempts,
  dead-lettered on ``<prefix>.consumer_dlq.<durable>`` (``handler_errors="log"`` restores
  the legacy log-and-drop); a retry calls every handler of the message again;
* a message that is not an ``ErrorEvent`` is never handed to these handlers and never nak'd.

Shared with the publisher-side shims (``busclient.compat``), not copied: ``ErrorMessage`` is
``busclient.compat.library_b.ErrorMessage``; ``error_bus_handler`` is
``busclient.compat.library_b.error_bus_handler`` (report through the agent's ``BusClient``,
then re-raise: as a handler here, the re-raised exception is what makes the consumer retry and
dead-letter); the categories are ``busclient.compat.library_a.ErrorCategory``; the server list
comes from ``busclient.config.resolve_servers`` (``BUSBRIDGE_NATS_URL``, ``NATS_SERVERS``).
The legacy fields ``ErrorEvent`` has no slot for (stack trace, correlation id, category) are
read back from ``details`` as those shims write them (``busclient.compat._common.with_extras``:
``{"details": <as passed>, "stack_trace": ..., ...}``), or flat in ``details``.

Both run from asyncio (``await bus.connect()`` ... ``await bus.close()`` / ``disconnect()``,
the legacy names) or from sync code (``bus.start_in_thread()`` ... ``bus.stop()``, or
``with bus.start_in_thread(): ...``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

from busclient.compat.library_a import ErrorCategory
from busclient.compat.library_b import ErrorMessage, error_bus_handler
from busclient.config import resolve_servers
from consumers.bus import DeliveryInfo, ErrorBusConsumer, Subscription
from consumers.bus.records import Item
from contracts.messages import ErrorEvent
from contracts.subjects import sanitise_token

__all__ = [
    "CATEGORIES",
    "ErrorMessage",
    "LibraryAHandlers",
    "LibraryBHandlers",
    "category_for",
    "error_bus_handler",
    "legacy_fields",
    "library_a_payload",
    "library_b_message",
]

log = logging.getLogger(__name__)

#: library A's ``ErrorCategory`` values
CATEGORIES = tuple(c.value for c in ErrorCategory)
#: library A's publisher-side rules: the first whose words occur in ``error_type`` (lower
#: case) gives the category; none: ``system``
_CATEGORY_RULES = (
    (("network", "connection"), "network"),
    (("database", "db"), "database"),
    (("auth", "permission"), "authentication"),
    (("validation", "invalid"), "validation"),
    (("resource", "memory"), "resource"),
    (("config",), "configuration"),
    (("api", "external"), "external_api"),
    (("user", "input"), "user_input"),
    (("business", "logic"), "business_logic"),
)
#: the extra legacy fields the publisher shims put beside ``details``
_EXTRAS = frozenset({"stack_trace", "correlation_id", "category", "related_task_id"})

HandlerErrors = Literal["retry", "log"]


# --- payload shapes ---------------------------------------------------------------


def legacy_fields(details: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(details, extras)`` of an event's ``details``: a publisher shim's wrapper
    ``{"details": d, "stack_trace": ..., ...}`` gives ``d`` (as a dict) and the extras; any
    other value gives itself as a dict (``{}`` for ``None``, ``{"details": v}`` for a non-dict)
    and, for a dict, itself as the place to look for the extras."""
    if isinstance(details, dict) and "details" in details:
        others = set(details) - {"details"}
        if others and others <= _EXTRAS:
            return _as_dict(details["details"]), {k: details[k] for k in others}
    inner = _as_dict(details)
    return inner, inner


def category_for(event: ErrorEvent) -> str:
    """Library A's category of ``event``: a ``category`` extra or ``details["category"]`` that
    is one of ``CATEGORIES``; else ``error_type`` when it is one (library A's shim publishes the
    category as the error type); else the first rule matching ``error_type``; else ``system``."""
    _, extras = legacy_fields(event.details)
    error_type = event.error_type.lower()
    for given in (extras.get("category"), error_type):
        if isinstance(given, str) and given.lower() in CATEGORIES:
            return given.lower()
    for words, category in _CATEGORY_RULES:
        if any(w in error_type for w in words):
            return category
    return "system"


def library_a_payload(event: ErrorEvent) -> dict[str, Any]:
    """The dict library A's handlers received, built from ``event``.

    ``id``: ``event_id``; ``timestamp``: ``occurred_at`` (else ``received_at``) as naive
    host-local ISO text; ``agent_name``: ``source``; ``severity``: the normalised value
    (``debug`` .. ``critical``); ``category``: ``category_for``; ``details``: a dict
    (``{}`` for none, ``{"details": value}`` for a non-dict); ``stack_trace`` and
    ``correlation_id``: from ``details`` when present there, else ``None``; ``resolved``:
    ``False``; ``resolution_notes``: ``None``.
    """
    details, extras = legacy_fields(event.details)
    return {
        "id": event.event_id,
        "timestamp": _legacy_time(event),
        "agent_name": event.source,
        "severity": event.severity.value,
        "category": category_for(event),
        "message": event.message,
        "details": details,
        "stack_trace": _text(extras, "stack_trace", "traceback"),
        "correlation_id": _text(extras, "correlation_id"),
        "resolved": False,
        "resolution_notes": None,
    }


def library_b_message(event: ErrorEvent, info: DeliveryInfo | None = None) -> ErrorMessage:
    """The ``ErrorMessage`` library B's handlers received, built from ``event``.

    ``severity``: upper case (``CRITICAL`` .. ``DEBUG``); ``timestamp``: naive host-local ISO
    text; ``context``: ``details`` as a dict (``legacy_fields``); ``stack_trace`` and
    ``correlation_id``: from the extras; ``retry_count``: earlier deliveries of this message
    to the consumer (0 on the first).
    """
    details, extras = legacy_fields(event.details)
    return ErrorMessage(
        error_id=event.event_id,
        timestamp=_legacy_time(event),
        source_agent=event.source,
        error_type=event.error_type,
        severity=event.severity.value.upper(),
        message=event.message,
        stack_trace=_text(extras, "stack_trace", "traceback"),
        context=details,
        correlation_id=_text(extras, "correlation_id"),
        retry_count=max(0, info.num_delivered - 1) if info is not None else 0,
    )


def _as_dict(details: Any) -> dict[str, Any]:
    if details is None:
        return {}
    return dict(details) if isinstance(details, dict) else {"details": details}


def _text(details: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = details.get(key)
        if isinstance(value, str):
            return value
    return None


def _legacy_time(event: ErrorEvent) -> str:
    at = event.occurred_at or event.received_at
    return at.astimezone().replace(tzinfo=None).isoformat()


# --- the two registries -------------------------------------------------------------


class _LegacyHandlers:
    """One durable consumer of ``ErrorEvent``s dispatching to legacy-shaped handlers."""

    def __init__(
        self,
        nats_servers: list[str] | None,
        subscription: Subscription,
        *,
        handler_errors: HandlerErrors,
        stream: str,
        prefix: str,
        connect_options: dict[str, Any] | None,
    ) -> None:
        servers = list(resolve_servers(nats_servers))
        self.handler_errors = handler_errors
        self.consumer = ErrorBusConsumer(
            subscription,
            servers=servers,
            connect_options=connect_options,
            stream=stream,
            prefix=prefix,
        )
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Start consuming on the running loop (the legacy ``connect``). Raises
        ``ConsumerError`` when NATS, the stream or the durable is not usable."""
        await self.consumer.start()
        self._task = asyncio.create_task(self.consumer.run(self._dispatch))

    async def close(self) -> None:
        """Finish the messages already pulled, then stop (the legacy ``close``)."""
        task, self._task = self._task, None
        self.consumer.stop()
        try:
            if task is not None:
                await task
        finally:
            await self.consumer.close()

    def start_in_thread(self, *, ready_timeout_secs: float = 30.0) -> _LegacyHandlers:
        """Consume on a thread of its own (for sync agents); ``stop()`` ends it."""
        self.consumer.start_in_thread(self._dispatch, ready_timeout_secs=ready_timeout_secs)
        return self

    def stop(self, timeout_secs: float | None = 30.0) -> None:
        """End ``start_in_thread``'s thread (see ``ErrorBusConsumer.stop``)."""
        self.consumer.stop(timeout_secs)

    def __enter__(self) -> _LegacyHandlers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _dispatch(self, item: Item, info: DeliveryInfo) -> None:
        if isinstance(item, ErrorEvent):
            for handler, arg in self._targets(item, info):
                await self._invoke(handler, arg)

    def _targets(self, event: ErrorEvent, info: DeliveryInfo) -> list[tuple[Callable, Any]]:
        raise NotImplementedError

    async def _invoke(self, handler: Callable[[Any], Any], arg: Any) -> None:
        if self.handler_errors == "retry":
            await _invoke(handler, arg)
            return
        try:
            await _invoke(handler, arg)
        except Exception:  # handler_errors="log": the legacy log-and-drop
            log.exception("legacy error handler %r failed", handler)


class LibraryAHandlers(_LegacyHandlers):
    """Library A's ``register_error_handler`` on a durable consumer of the agent's own errors.

    ``nats_servers``: else ``busclient.config.resolve_servers`` (``BUSBRIDGE_NATS_URL``,
    ``NATS_SERVERS``, else ``nats://127.0.0.1:4222``).
    ``agent_name``: whose errors (``ErrorEvent.source``). ``durable``: default
    ``legacy_a_<agent_name>``. ``handler_errors``: ``retry`` (default) or ``log``.
    ``subscription_settings``: further ``Subscription`` fields (``max_deliver``,
    ``backoff_secs``, ``deliver``, ...).
    """

    def __init__(
        self,
        nats_servers: list[str] | None = None,
        agent_name: str = "unknown",
        *,
        durable: str | None = None,
        handler_errors: HandlerErrors = "retry",
        stream: str = "ERRBUS",
        prefix: str = "errbus",
        connect_options: dict[str, Any] | None = None,
        **subscription_settings: Any,
    ) -> None:
        self.agent_name = agent_name
        self.error_handlers: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        settings = {"deliver": "new"} | subscription_settings
        subscription = Subscription(
            durable=durable or f"legacy_a_{sanitise_token(agent_name)}",
            sources=(agent_name,),
            types=("error_event",),
            **settings,
        )
        super().__init__(
            nats_servers,
            subscription,
            handler_errors=handler_errors,
            stream=stream,
            prefix=prefix,
            connect_options=connect_options,
        )

    def register_error_handler(self, category: Any, handler: Callable[[dict], Any]) -> None:
        """Call ``handler(payload)`` (``library_a_payload``; sync or async) for the agent's
        errors of ``category`` (a ``CATEGORIES`` value, or an enum whose ``value`` is one)."""
        key = str(getattr(category, "value", category))
        self.error_handlers.setdefault(key, []).append(handler)

    def _targets(self, event: ErrorEvent, info: DeliveryInfo) -> list[tuple[Callable, Any]]:
        payload = library_a_payload(event)
        return [(h, payload) for h in self.error_handlers.get(payload["category"], [])]


class LibraryBHandlers(_LegacyHandlers):
    """Library B's ``add_error_handler`` on a durable consumer of every machine's errors but
    the agent's own. Arguments as ``LibraryAHandlers``; ``durable`` defaults to the legacy
    ``error_consumer_<agent_name>``."""

    def __init__(
        self,
        nats_servers: list[str] | None = None,
        agent_name: str = "unknown",
        *,
        durable: str | None = None,
        handler_errors: HandlerErrors = "retry",
        stream: str = "ERRBUS",
        prefix: str = "errbus",
        connect_options: dict[str, Any] | None = None,
        **subscription_settings: Any,
    ) -> None:
        self.agent_name = agent_name
        self.error_handlers: list[Callable[[ErrorMessage], Any]] = []
        settings = {"deliver": "new"} | subscription_settings
        subscription = Subscription(
            durable=durable or f"error_consumer_{sanitise_token(agent_name)}",
            types=("error_event",),
            **settings,
        )
        super().__init__(
            nats_servers,
            subscription,
            handler_errors=handler_errors,
            stream=stream,
            prefix=prefix,
            connect_options=connect_options,
        )

    def add_error_handler(self, handler: Callable[[ErrorMessage], Any]) -> None:
        """Call ``handler(error_msg)`` (``library_b_message``; sync or async) for every error
        event whose ``source`` is not this agent."""
        self.error_handlers.append(handler)

    async def disconnect(self) -> None:
        """The legacy name of ``close``."""
        await self.close()

    def _targets(self, event: ErrorEvent, info: DeliveryInfo) -> list[tuple[Callable, Any]]:
        if event.source == self.agent_name:
            return []
        message = library_b_message(event, info)
        return [(h, message) for h in self.error_handlers]


async def _invoke(handler: Callable[[Any], Any], arg: Any) -> None:
    """Await a coroutine handler; run a plain one in a worker thread (the loop stays free)."""
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(type(handler).__call__):
        await handler(arg)
        return
    result = await asyncio.to_thread(handler, arg)
    if inspect.isawaitable(result):
        await result

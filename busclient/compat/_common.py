"""What the legacy shims share: one client per NATS server list, and the legacy call shapes.

Design note
-----------
* **Shared clients.** Legacy code creates publishers freely (one per agent, per module, per
  call site). The shims do not open a NATS connection each: ``shared_client(servers)`` keeps
  one ``BusClient`` per distinct server list per process (``None``: the environment's, see
  ``busclient.config``), created on first use and closed at interpreter exit (its
  ``exit_flush_secs``) or by ``close_shared_clients``; a forked child starts with none. Each
  call names its own ``source`` and ``Busbridge-Client-Api``, so one client serves every shim
  and agent of a process.
* **Async legacy APIs return ``Completed``.** Libraries A and B were ``async``; their callers
  ``await`` them, wrap them in ``loop.create_task``/``asyncio.create_task``, and some never
  await them at all (the hubs' ``report_error(error=e, ...)``). The shims do the work at call
  time (handing an event to the buffer never blocks) and return a ``Completed``: awaitable,
  accepted by ``create_task``/``ensure_future``/``run_until_complete``/``asyncio.run`` (it is
  a ``collections.abc.Coroutine``), Task-like (``done()``, ``result()``), and harmless when
  dropped (no "coroutine was never awaited"). So the event is never lost with a caller's loop.
* **Extra legacy fields.** ``ErrorEvent`` has no field for a stack trace, correlation id,
  related task id or category. When a legacy call sets any of them, ``details`` becomes
  ``{"details": <details as passed>, "stack_trace": ..., ...}`` (only the fields set);
  otherwise ``details`` is exactly what the caller passed.
"""

from __future__ import annotations

import asyncio
import collections.abc
import enum
import os
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any

from busclient.client import BusClient
from busclient.config import resolve_servers
from busclient.events import is_known_severity, json_safe

__all__ = [
    "Completed",
    "close_shared_clients",
    "exception_trace",
    "flush_on_close",
    "legacy_id",
    "shared_client",
    "untangle_severity",
    "with_extras",
]

_lock = threading.Lock()
_clients: dict[tuple[str, ...], BusClient] = {}


def shared_client(servers: str | Sequence[str] | None = None) -> BusClient:
    """The process's ``BusClient`` for ``servers`` (``busclient.config.resolve_servers``)."""
    key = resolve_servers(servers)
    with _lock:
        client = _clients.get(key)
        if client is None or client.closed:
            client = BusClient(servers=key)
            _clients[key] = client
        return client


def _forget_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _clients.clear()  # the parent's publisher threads do not exist here: make fresh clients


os.register_at_fork(after_in_child=_forget_after_fork)


def close_shared_clients(timeout_secs: float = 2.0) -> bool:
    """Close every shared client, each within ``timeout_secs``; True when none abandoned an
    event. The next shim call opens a fresh client (e.g. after the environment changed)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    results = [client.close(timeout_secs) for client in clients]  # close every one, then judge
    return all(results)


def flush_on_close(client: BusClient, timeout_secs: float) -> Awaitable[None]:
    """What a legacy ``async close()`` returns: inside a running loop a coroutine that awaits
    ``client.aflush`` (the loop is not blocked); in sync code the flush is done at once (at
    most ``timeout_secs``) and a ``Completed`` returned."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        client.flush(timeout_secs)
        return Completed(None)
    return _aflush(client, timeout_secs)


async def _aflush(client: BusClient, timeout_secs: float) -> None:
    await client.aflush(timeout_secs)


def legacy_id() -> str:
    """A legacy-style id (``str(uuid.uuid4())``, as libraries A and B and the ZMQ publishers
    made them); used as the event id, hence the ``Nats-Msg-Id``."""
    return str(uuid.uuid4())


def with_extras(details: Any, **extras: Any) -> Any:
    """``details`` as passed when every extra is ``None``; else ``{"details": details, ...}``
    with the extras that are set (enum members as their values)."""
    kept = {name: json_safe(value) for name, value in extras.items() if value is not None}
    if not kept:
        return details
    return {"details": details, **kept}


def exception_trace(exc: BaseException | None) -> str | None:
    """The formatted traceback of ``exc`` (``None`` without an exception)."""
    if exc is None:
        return None
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _is_severity_argument(value: Any) -> bool:
    """A severity passed where an error type belongs: an enum member with a severity value
    (the legacy ``ErrorSeverity`` enums) or its ``str()`` (``"ErrorSeverity.WARNING"``)."""
    if isinstance(value, enum.Enum):
        return is_known_severity(value)
    return isinstance(value, str) and value.lower().startswith("errorseverity.")


def untangle_severity(error_type: Any, severity: Any, details: Any) -> tuple[Any, Any, Any]:
    """``(error_type, severity, details)`` of a BaseAgent-style call, with the misuses undone.

    ``report_error(ErrorSeverity.X, msg, {dict})`` (59 legacy call sites) puts the severity
    into ``error_type`` and the details into ``severity``: the severity is taken from
    ``error_type``, the dict becomes the details (unless details were given) and the error
    type is ``""`` (none was given; the bridge uses ``""`` for a missing type too). A dict or
    list passed as ``severity`` is details as well.
    """
    if _is_severity_argument(error_type):
        severity, misplaced, error_type = error_type, severity, ""
        if misplaced is not None and not is_known_severity(misplaced) and not details:
            details = misplaced
    elif isinstance(severity, Mapping | list | tuple):
        if not details:
            details = severity
        severity = None
    return error_type, severity, details


class Completed(collections.abc.Coroutine):  # type: ignore[type-arg]
    """An already finished call standing in for a legacy coroutine or ``asyncio.Task``.

    ``await`` it for ``result()``; ``create_task``/``ensure_future``/``run_until_complete``
    accept it (it is a ``collections.abc.Coroutine``); ``done()`` is True. Dropping it
    unawaited is fine: the work was done when it was made.
    """

    __slots__ = ("_value",)

    def __init__(self, value: Any = None) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, Any]:
        yield from ()
        return self._value

    def send(self, value: Any) -> Any:
        raise StopIteration(self._value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        return None

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False

    def cancel(self, msg: Any = None) -> bool:
        return False

    def result(self) -> Any:
        return self._value

    def exception(self) -> BaseException | None:
        return None

    def add_done_callback(self, fn: Callable[[Any], Any], *, context: Any = None) -> None:
        fn(self)

    def remove_done_callback(self, fn: Callable[[Any], Any]) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Completed({self._value!r})"

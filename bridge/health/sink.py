"""Where heartbeats and health reports go: the latest per KV key, copies into the stream by policy.

Design note
-----------
``offer(key, msg)`` never blocks and never fails: it records ``msg`` as the
latest value of ``key`` (replacing one not written yet) and wakes the writer.
Memory is bounded by the number of keys (one bridge, its agents).

The writer (``run``) writes pending keys oldest first: a KV put always, then a
stream copy when the message asked for one. A write that fails
(``HealthStoreUnavailable``: NATS down, bucket not yet provisioned) leaves the
key pending - unless a newer value came meanwhile, which then goes instead - and
the writer waits ``retry_secs`` (doubling up to ``retry_max_secs``); a value the
server refuses for good (``HealthStoreRefused``: over ``max_payload``) is logged
and dropped. So a NATS
outage costs nothing but staleness, and the *latest* state goes out once NATS
is back; intermediate states of an outage are not replayed.

Stream policy (the stream keeps ``errbus.>`` for days: no flooding it):

* ``BridgeHeartbeat``: every one (small; one per bridge per interval);
* ``HealthReport``: when the service's status differs from the last one stored
  in the stream, or ``refresh_secs`` after it (a periodic proof of life);
  the KV gets every report.

A stream copy asked for by a value that was replaced before it was written is
carried over to its replacement, so a status change during an outage is
still stored (as the latest state).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import anyio

from bridge.adapters.health_kv import HealthStoreRefused, HealthStoreUnavailable
from contracts.codec import contract_name, encode
from contracts.messages import BridgeHeartbeat, HealthReport, HealthStatus

__all__ = ["HealthSink", "HealthWriter", "OutboundFor"]

log = logging.getLogger(__name__)

HealthMessage = HealthReport | BridgeHeartbeat
#: message -> (subject, headers) of its stream copy
OutboundFor = Callable[[HealthMessage], tuple[str, dict[str, str]]]


class HealthWriter(Protocol):  # bridge.adapters.health_kv.HealthStore
    async def put(self, key: str, payload: bytes) -> None: ...

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None: ...


class _Pending:
    __slots__ = ("msg", "to_stream")

    def __init__(self, msg: HealthMessage, to_stream: bool) -> None:
        self.msg, self.to_stream = msg, to_stream


class HealthSink:
    """Latest-per-key buffer and its writer; see the module note.

    ``on_written(contract, to)`` is called after each successful write (``to``:
    ``kv`` or ``stream``); ``on_failed()`` after each failed one.
    """

    def __init__(
        self,
        writer: HealthWriter,
        outbound_for: OutboundFor,
        *,
        refresh_secs: float,
        retry_secs: float = 0.5,
        retry_max_secs: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        on_written: Callable[[str, str], None] = lambda contract, to: None,
        on_failed: Callable[[], None] = lambda: None,
    ) -> None:
        self._writer, self._outbound_for = writer, outbound_for
        self.refresh_secs = refresh_secs
        self.retry_secs, self.retry_max_secs = retry_secs, retry_max_secs
        self._clock = clock
        self._on_written, self._on_failed = on_written, on_failed
        self._pending: dict[str, _Pending] = {}
        self._streamed: dict[str, tuple[HealthStatus, float]] = {}
        self._wake = anyio.Event()

    @property
    def pending(self) -> int:
        """Keys waiting to be written."""
        return len(self._pending)

    def offer(self, key: str, msg: HealthMessage) -> None:
        """Make ``msg`` the latest value of ``key`` (see the stream policy). Never blocks."""
        to_stream = self._wants_stream(key, msg)
        old = self._pending.pop(key, None)
        self._pending[key] = _Pending(msg, to_stream or (old is not None and old.to_stream))
        self._wake.set()

    async def write_now(self, key: str, msg: HealthMessage) -> bool:
        """Write ``msg`` to ``key`` (and its stream copy, by the policy) at once, replacing any
        value pending for that key. False when the store is unavailable (it is not retried)."""
        self._pending.pop(key, None)
        return await self._write(key, _Pending(msg, self._wants_stream(key, msg)))

    def _wants_stream(self, key: str, msg: HealthMessage) -> bool:
        if isinstance(msg, BridgeHeartbeat):
            return True
        last = self._streamed.get(key)
        return (
            last is None
            or last[0] is not msg.status
            or self._clock() - last[1] >= self.refresh_secs
        )

    async def run(self) -> None:
        """Write pending keys forever (cancel to stop)."""
        delay = self.retry_secs
        while True:
            if not self._pending:
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            key = next(iter(self._pending))
            item = self._pending.pop(key)
            if await self._write(key, item):
                delay = self.retry_secs
                continue
            self._requeue(key, item)
            await anyio.sleep(delay)
            delay = min(delay * 2, self.retry_max_secs)

    async def _write(self, key: str, item: _Pending) -> bool:
        payload, contract = encode(item.msg), contract_name(item.msg)
        try:
            await self._writer.put(key, payload)
            self._on_written(contract, "kv")
            if item.to_stream:
                subject, headers = self._outbound_for(item.msg)
                await self._writer.publish(subject, payload, headers)
                self._on_written(contract, "stream")
                if isinstance(item.msg, HealthReport):
                    self._streamed[key] = (item.msg.status, self._clock())
        except HealthStoreUnavailable as exc:
            self._on_failed()
            log.debug("health write of %s deferred: %s", key, exc)
            return False
        except HealthStoreRefused as exc:
            self._on_failed()
            log.error("health write of %s dropped: %s", key, exc)
        return True

    def _requeue(self, key: str, item: _Pending) -> None:
        """Put ``item`` back unless a newer value came; then the newer one inherits its stream copy."""
        newer = self._pending.get(key)
        if newer is None:
            self._pending[key] = item
        else:
            newer.to_stream = newer.to_stream or item.to_stream

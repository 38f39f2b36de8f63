"""Pipelined JetStream publishing with a bounded in-flight window.

Design note
-----------
nats-py's ``publish_async`` futures have no timeout and one awaited
``js.publish`` per message caps a bridge at ~5k msg/s (DESIGN §7). Here every
message is sent with ``core publish(subject, payload, reply=<inbox>.<token>)``
and all PubAcks arrive on one wildcard subscription (``Transport``), so up to
``max_in_flight`` messages are outstanding at once.

Invariants:

* ``submit`` never blocks and never awaits: the ZMQ reader calls it. When
  ``max_pending`` messages already wait (new or for a retry), it refuses (the
  caller counts a drop, or leaves the message in the spool). Memory is bounded
  by ``max_pending + max_in_flight`` messages.
* Every message leaves in exactly one way: a PubAck (stored or duplicate),
  ``rejected`` after ``max_rejections`` non-transient JetStream errors, or
  still pending at shutdown (``abandoned``). Each is reported to ``on_done``.
* Transient failures (ack timeout, no responders / 503, not connected) are
  retried forever with the *same* ``Nats-Msg-Id`` (the caller put it in the
  headers), so the stream stores a retried message once.
* After a failure the publisher holds all sending for a backoff (exponential
  per round of failures, with jitter, reset by the next success or by
  ``resume()`` when NATS reconnects), then resends failed messages in their
  original submit order before any newer one: a partition does not reorder a
  publisher's messages. (This needs the client's reconnect buffer off, the
  default: a client that buffers while disconnected flushes newer messages
  before older ones are retried.)
* After a failure the window shrinks to one message (a probe: the oldest
  failed one) until a PubAck succeeds. Otherwise JetStream coming back in the
  middle of a pipelined burst could reject an older message (503) and store a
  newer one sent a millisecond later.
* An ack timeout is measured from the send; a late PubAck for a message that
  was already retried is ignored (the retry's PubAck will say duplicate).

The clock is injected (monotonic seconds, the clock asyncio's loop uses; not
``anyio.current_time``, which costs a backend lookup per call) and so is the
random source.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from bridge.metrics import Metrics
from bridge.pipeline.acks import AckOutcome, AckResult, NotConnected, PublishRefused
from bridge.pipeline.wake import WakeUp
from contracts.subjects import HEADER_MSG_ID

__all__ = [
    "MSG_ID_LINE",
    "Outbound",
    "PipelinedPublisher",
    "Transport",
    "WireHeaders",
    "plain_header_value",
]

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What the publisher needs from NATS (``JetStreamLink`` or a fake)."""

    async def publish(
        self, subject: str, payload: bytes, reply: str, headers: dict[str, str]
    ) -> None:
        """Queue a message; raise ``NotConnected`` when it cannot be queued."""


class WireHeaders(dict[str, str]):
    """A message's NATS headers (a plain ``dict`` to every reader) with ``wire``: their header
    section as an ``HPUB`` carries it (``NATS/1.0\r\n``, ``Key: value\r\n`` per header in the
    dict's order, ``\r\n``), made once by ``OutboundBuilder`` so the transport does not build
    it per send; None when a value is not one nats-py would send unchanged (printable, no
    surrounding whitespace, not empty): the transport then goes nats-py's way. Whoever makes
    one sets ``wire`` right after the items (no ``__init__`` of its own: a subclass's Python
    ``__init__`` costs more than the header section saves). Not updated when the dict changes:
    treat it as read-only."""

    __slots__ = ("wire",)
    wire: bytes | None


#: the start of a header section whose first header is ``Nats-Msg-Id``, up to its value (what
#: ``WireHeaders.wire`` and the raw publish path put before the id)
MSG_ID_LINE = f"NATS/1.0\r\n{HEADER_MSG_ID}: ".encode()


def plain_header_value(value: str) -> bool:
    """A header value nats-py sends unchanged: printable (so no CR/LF), no surrounding
    whitespace, not empty (the rule of ``WireHeaders.wire`` and of the raw publish path,
    ``bridge.adapters.jetstream``)."""
    return value.isprintable() and value.strip() == value and value != ""


class Outbound:
    """One message to publish. ``kind`` is a metric label (``error_event``, ``dead_letter``)."""

    __slots__ = (
        "attempts",
        "headers",
        "kind",
        "msg_id",
        "on_settled",
        "payload",
        "rank",
        "rejections",
        "seq",
        "size",
        "spool_seq",
        "subject",
    )

    def __init__(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        kind: str,
        msg_id: str,
        *,
        rank: int = 3,
    ) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.kind = kind
        self.msg_id = msg_id
        self.rank = rank  # severity rank 0 (debug) .. 4 (critical): spool eviction order
        self.seq = 0  # publisher submit order
        self.attempts = 0
        self.rejections = 0
        self.spool_seq = 0  # row in the durable spool, 0 when not spooled
        self.size = 0  # bytes the spool accounts for
        #: called with the outcome once the publisher settled this very object (a message that
        #: came over NATS is acknowledged to its source then); not kept in the spool
        self.on_settled: Callable[[str], None] | None = None


DoneCallback = Callable[[Outbound, str, AckResult | None], None]
#: the same for several messages settled together with one outcome and ack, in submit order
DoneManyCallback = Callable[[list[Outbound], str, AckResult], None]

#: JetStream API error codes that retrying cannot fix (10054: message size exceeds maximum).
#: Every other error (503, insufficient resources, leader changes) is retried forever: a stuck
#: pipeline raises alarms (failures, backlog); deleting spooled messages would lose them.
PERMANENT_ERROR_CODES = frozenset({10054})


class PipelinedPublisher:
    """Windowed publisher over a ``Transport``; see the module note.

    ``on_done(item, outcome, ack)`` is called once per submitted message with
    outcome ``stored``, ``duplicate``, ``rejected`` or ``abandoned``.
    """

    def __init__(
        self,
        transport: Transport,
        ack_prefix: str,
        metrics: Metrics,
        *,
        max_in_flight: int = 1024,
        ack_timeout_secs: float = 5.0,
        max_pending: int = 200_000,
        retry_initial_secs: float = 0.05,
        retry_max_secs: float = 5.0,
        max_rejections: int = 5,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_done: DoneCallback | None = None,
    ) -> None:
        if max_in_flight < 1 or max_pending < 1 or ack_timeout_secs <= 0:
            raise ValueError("max_in_flight, max_pending and ack_timeout_secs must be positive")
        self._transport = transport
        self._ack_prefix = ack_prefix
        self._m = metrics
        self.max_in_flight = max_in_flight
        self.ack_timeout_secs = ack_timeout_secs
        self.max_pending = max_pending
        self.retry_initial_secs = retry_initial_secs
        self.retry_max_secs = retry_max_secs
        self._max_rejections = max_rejections
        self._clock = clock
        self._rng = rng or random.Random()
        self.on_done: DoneCallback = on_done or (lambda item, outcome, ack: None)
        self._pending: deque[Outbound] = deque()
        self._retry: list[tuple[int, Outbound]] = []
        self._in_flight: dict[int, tuple[Outbound, float]] = {}
        self._tokens = itertools.count(1)
        self._seqs = itertools.count(1)
        self._wake = WakeUp()
        self._hold_until = 0.0
        self._failures_in_row = 0
        self._probing = False
        self.last_ack_at: float | None = None
        self.late_acks = 0
        self._published: dict[
            str, Any
        ] = {}  # kind -> counter child (``labels`` costs 3x an ``inc``)
        self._acked: dict[str, Any] = {}

    def reconfigure(
        self,
        *,
        max_in_flight: int,
        max_pending: int,
        ack_timeout_secs: float,
        retry_initial_secs: float,
        retry_max_secs: float,
    ) -> None:
        """Hot reload. A smaller window or pending limit applies to the next send or submit:
        what is already in flight or pending stays."""
        self.max_in_flight, self.max_pending = max_in_flight, max_pending
        self.ack_timeout_secs = ack_timeout_secs
        self.retry_initial_secs, self.retry_max_secs = retry_initial_secs, retry_max_secs

    # -- called by the ingest side (sync, never blocks) ---------------------------------

    def submit(self, item: Outbound) -> bool:
        """Queue ``item``; False (nothing queued) when ``max_pending`` is reached."""
        if len(self._pending) + len(self._retry) >= self.max_pending:
            return False
        item.seq = next(self._seqs)
        self._pending.append(item)
        self._wake.set()
        return True

    @property
    def backlog(self) -> int:
        """Messages not yet acknowledged: pending + waiting for retry + in flight."""
        return len(self._pending) + len(self._retry) + len(self._in_flight)

    @property
    def retrying(self) -> int:
        """Messages waiting for a retry (refused, timed out or not sent while disconnected)."""
        return len(self._retry)

    @property
    def room(self) -> int:
        """How many more messages ``submit`` accepts right now (pending and retries share ``max_pending``)."""
        return self.max_pending - len(self._pending) - len(self._retry)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- called by the transport's ack subscription -------------------------------------

    def on_ack(self, token: int, ack: AckResult) -> None:
        """Settle the message sent with ``token``."""
        entry = self._in_flight.pop(token, None)
        if entry is None:
            self.late_acks += 1
            return
        item, sent_at = entry
        now = self._clock()
        self._m.publish_latency.observe(max(0.0, now - sent_at))
        if ack.outcome in (AckOutcome.STORED, AckOutcome.DUPLICATE):
            self._settled(item, ack, now)
        elif ack.outcome is AckOutcome.NO_RESPONDERS:
            self._failed(item, "no_responders")
        else:
            self._rejected(item, ack)
        self._wake.set()

    def _settled(self, item: Outbound, ack: AckResult, now: float) -> None:
        self.last_ack_at = now
        self._failures_in_row = 0
        self._probing = False
        child = self._acked.get(item.kind) or self._acked.setdefault(
            item.kind, self._m.acked.labels(item.kind)
        )
        child.inc()
        if ack.outcome is AckOutcome.DUPLICATE:
            self._m.duplicates.labels("jetstream").inc()
        self.on_done(item, ack.outcome.value, ack)

    def _rejected(self, item: Outbound, ack: AckResult) -> None:
        """A JetStream API error: transient unless it is known to be permanent."""
        if ack.error_code not in PERMANENT_ERROR_CODES:
            self._failed(item, "jetstream_error")
            return
        item.rejections += 1
        if item.rejections < self._max_rejections:
            self._failed(item, "jetstream_error")
            return
        self._give_up(item, ack)

    def _give_up(self, item: Outbound, ack: AckResult) -> None:
        log.error(
            "giving up on %s %s (%s): it can never be stored",
            item.kind,
            item.msg_id,
            ack.description,
        )
        self._m.dropped.labels("rejected").inc()
        self.on_done(item, "rejected", ack)

    def _failed(self, item: Outbound, reason: str) -> None:
        self._m.publish_failures.labels(reason).inc()
        heapq.heappush(self._retry, (item.seq, item))
        self._probing = True
        now = self._clock()
        if now < self._hold_until:
            return  # already backing off: one round of failures counts once
        self._failures_in_row += 1
        backoff = min(
            self.retry_max_secs, self.retry_initial_secs * 2 ** min(self._failures_in_row - 1, 30)
        )
        self._hold_until = now + backoff / 2 + self._rng.random() * backoff / 2

    def connection_lost(self) -> None:
        """NATS disconnected: whatever is in flight may never be acked; retry it all, in order,
        with a probe first (so newer messages cannot overtake it after the reconnect)."""
        in_flight = [item for item, _ in self._in_flight.values()]
        self._in_flight.clear()
        for item in in_flight:
            self._failed(item, "not_connected")
        self._probing = True
        self._wake.set()

    def resume(self) -> None:
        """End any backoff now (NATS just reconnected): retries go out at once, in order."""
        self._hold_until = 0.0
        self._failures_in_row = 0
        self._wake.set()

    # -- tasks -------------------------------------------------------------------------

    async def run(self) -> None:
        """Send and time out messages until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._expire_loop)
            await self._send_loop()

    async def _send_loop(self) -> None:
        while True:
            delay = self._send_delay()
            if delay > 0:
                await self._wake.sleep(delay)
                continue
            await self._send(self._next_item())

    def _send_delay(self) -> float:
        """0 when a message may be sent now, else how long to wait (inf: until woken)."""
        hold = self._hold_until - self._clock()
        if hold > 0:
            return hold
        window = 1 if self._probing else self.max_in_flight
        if len(self._in_flight) >= window or not (self._retry or self._pending):
            return math.inf
        return 0.0

    def _next_item(self) -> Outbound:
        if self._retry:
            return heapq.heappop(self._retry)[1]
        return self._pending.popleft()

    async def _send(self, item: Outbound) -> None:
        token = next(self._tokens)
        self._in_flight[token] = (item, self._clock())
        item.attempts += 1
        try:
            await self._transport.publish(
                item.subject, item.payload, f"{self._ack_prefix}.{token}", item.headers
            )
        except NotConnected:
            if self._in_flight.pop(token, None) is not None:
                self._failed(item, "not_connected")
            return
        except PublishRefused as exc:
            if self._in_flight.pop(token, None) is not None:
                self._give_up(item, AckResult(AckOutcome.ERROR, description=str(exc)))
            return
        child = self._published.get(item.kind) or self._published.setdefault(
            item.kind, self._m.published.labels(item.kind)
        )
        child.inc()

    async def _expire_loop(self) -> None:
        while True:
            await anyio.sleep(
                max(0.01, self.ack_timeout_secs / 4)
            )  # re-read: hot reload may change it
            self.expire_overdue()
            self._m.in_flight.set(len(self._in_flight))
            self._m.pending.set(len(self._pending) + len(self._retry))

    def expire_overdue(self) -> int:
        """Fail every in-flight message older than the ack timeout; return how many."""
        deadline = self._clock() - self.ack_timeout_secs
        expired = 0
        while self._in_flight:
            token, (item, sent_at) = next(iter(self._in_flight.items()))
            if sent_at > deadline:
                break
            del self._in_flight[token]
            self._failed(item, "timeout")
            expired += 1
        if expired:
            self._wake.set()
        return expired

    def take_unsent(self) -> list[Outbound]:
        """Remove and return every message not sent yet (pending and waiting for a retry), in
        submit order, for another publisher to take over. Raises ``RuntimeError`` while
        messages are in flight (their PubAcks would come here)."""
        if self._in_flight:
            raise RuntimeError("messages are in flight")
        unsent = sorted([*self._retry, *((item.seq, item) for item in self._pending)])
        self._retry.clear()
        self._pending.clear()
        return [item for _, item in unsent]

    def abandon_all(self) -> int:
        """Report every unsettled message to ``on_done`` as ``abandoned``; return how many.

        Whether that is a loss is the caller's business: with the durable spool
        the messages stay on disk for the next start.
        """
        left = (
            [item for _, item in self._retry]
            + list(self._pending)
            + [i for i, _ in self._in_flight.values()]
        )
        self._retry.clear()
        self._pending.clear()
        self._in_flight.clear()
        for item in left:
            self.on_done(item, "abandoned", None)
        return len(left)

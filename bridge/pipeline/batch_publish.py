"""JetStream fast-ingest batch publishing (ADR-50): ``BatchPublisher``, a drop-in alternative to
``PipelinedPublisher`` with the same surface and the same guarantees.

Design note
-----------
``PipelinedPublisher`` gets one PubAck per message; here messages go out as fast-ingest batches
and the server acknowledges every ``flow`` messages (at most 500). The wire format (reply
subjects, ack shapes, what the server answers when) is ``bridge.adapters.fast_ingest``'s module
note, measured on nats-server 2.15.1; this module works on its decoded form, ``BatchReply``.

What the server guarantees, and what we build on it (gap mode ``fail``, always):

* A flow ack for batch sequence ``n`` means messages ``1..n`` of the batch are persisted
  (stored, or already in the stream under their ``Nats-Msg-Id``). The commit PubAck's
  ``count`` means ``1..count`` are persisted and nothing after them ever will be: a message the
  stream refused (too large, no stream for its subject, an API error of its checks) ends the
  batch at the message before it, the rest of the batch is dropped by the server. So within
  one batch the stream never stores a message after one it did not store. (Not measured: a
  store failure after the checks, e.g. a ``discard: new`` byte limit; the bridge's stream
  discards old messages.)
* Hence **one batch open at a time**: the next batch starts only after the previous one ended
  (commit, error or timeout). Two batches in flight would let the second be stored while the
  first's tail is retried, which breaks the order guarantee below. Inside the open batch up to
  ``min(max_in_flight, flow * max_outstanding_acks)`` messages are unacknowledged. The server
  (2.15.1, ``jetstream_batching.go``) acks every ``flow`` messages and does not hold a
  publisher to a number of outstanding acks; ADR-50 suggests 2. With 2 (1,000 messages) a
  burst's publishing waited on each ack's way through the event loop: 4096 in flight and 8
  acks took a 50k burst from 37.7 / 38.4 / 36.4 / 36.9k to 39.1 / 39.1 / 40.4 / 38.3k msg/s
  and the drain after a 30 s outage from 2.05 / 2.46x to 2.46 / 2.81x live (alternating).
* A batch starts with one message and waits for its reply before sending more (ADR-50 asks
  for it: the reply says whether fast ingest is on and sets the flow). It ends with the last
  message sent as a commit (op 2) when it is known to be last (``batch_max_msgs`` reached, the
  batch older than ``max_batch_age_secs``, or, with ``batch_idle_secs`` 0, no more pending),
  else with an empty end-of-batch message (op 3) once nothing more was pending for
  ``batch_idle_secs``. A batch of one message is one op-2 message answered by an ordinary
  PubAck. Batches therefore never idle into the server's 10 s abandon.
* Why a batch stays open while idle (``batch_idle_secs``): fast ingest stores each message as
  it arrives, but a new batch costs a round trip (its first message waits for the reply) and
  ending one another (nothing is sent while its commit is unanswered). Under live traffic the
  writer hands over a few dozen messages at a time, so with no idle time every hand-over paid
  both round trips through a busy event loop while the next messages waited. Kept open,
  messages are sent as they are handed over, and flow acks settle them.

The guarantees of ``bridge.pipeline.publish`` hold unchanged:

* ``submit`` never blocks; memory is bounded by ``max_pending + max_in_flight`` messages (the
  open batch keeps only its unacknowledged messages).
* Every message is settled once through ``on_done``: ``stored`` (flow ack or commit; the
  batch's last message, when the commit covers it, with the commit's stream sequence: the
  spool's anchors for ``bridge.pipeline.stream_loss``),
  ``duplicate`` (a one-message batch's PubAck says so; a commit whose stream sequence is 0
  means nothing of the batch was new; a message repeating a ``Nats-Msg-Id`` sent earlier in
  the same batch is dropped by the server without a word, and settled ``duplicate`` here; a
  copy of a message stored by an earlier batch, inside a batch with new messages, cannot be
  told from a stored one and is reported ``stored``), ``rejected`` (after
  ``max_rejections`` permanent refusals, ``PERMANENT_ERROR_CODES``, or at once when the client
  refuses it: ``PublishRefused``), ``abandoned`` (``abandon_all``).
* Transient failures (no responders / 503, ack timeout, disconnect, batch unknown after a
  server restart, any other API error) are retried forever with the same ``Nats-Msg-Id``; the
  stream's duplicate window collapses what was in fact stored.
* Order: failed messages go back in submit order ahead of everything newer, and since only
  one batch is ever open, nothing newer can be stored before them. After a failure sending
  holds for a backoff (exponential per round of failures, with jitter; ``resume()`` ends it).
* A reply for a batch that already ended is counted in ``late_acks`` and ignored.

Metrics are counted per batch or per acknowledgement, not per message: ``published``,
``acked``, ``duplicates{by="jetstream"}``, ``publish_failures{reason}``, ``dropped{rejected}``,
``publish_latency_seconds`` (one observation per acknowledgement: send of the newest message it
covers to its arrival).

The clock is injected (monotonic seconds) and so is the random source, as in ``publish``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import msgspec

from bridge.metrics import Metrics
from bridge.pipeline.acks import AckOutcome, AckResult, NotConnected, PublishRefused, RunCut
from bridge.pipeline.publish import (
    PERMANENT_ERROR_CODES,
    DoneCallback,
    DoneManyCallback,
    Outbound,
)
from bridge.pipeline.wake import WakeUp

__all__ = [
    "BATCH_DISABLED",
    "BATCH_UNKNOWN",
    "BatchOp",
    "BatchPublisher",
    "BatchReply",
    "BatchTransport",
    "ReplyKind",
    "RunMessage",
]

log = logging.getLogger(__name__)

#: JetStream error codes of fast ingest (nats-server 2.14+): the stream has ``allow_batched``
#: off; the batch is not (or no longer) known to the server (never started, ended, abandoned
#: after 10 s idle, or lost in a server restart).
BATCH_DISABLED = 10205
BATCH_UNKNOWN = 10208

_LOG_INTERVAL_SECS = 30.0
#: messages sent in a row before the send loop lets other tasks run (the client's flusher
#: writes what is queued, replies are read, the ZMQ reader keeps up): one socket write per run
#: while a backlog drains. Each write wakes nats-server, and on a busy 2-core machine the
#: bridge then waits for a core, so fewer, larger writes drain faster: 128 -> 512 took
#: ``nats_outage``'s backlog (8k msg/s D1, 30 s) from a median 2.80x live to 3.09x (7 and 6
#: runs), 2.48x to 2.85x in another window (4 alternating rounds); steady 10k msg/s and the 50k
#: burst unchanged (runs there are short). A run of 512 D1 messages is ~0.5 MB and ~1.5 ms of
#: the event loop.
_YIELD_EVERY = 512


class BatchOp(enum.IntEnum):
    """What a message does to its batch (ADR-50's operation codes)."""

    START = 0
    APPEND = 1
    COMMIT = 2  # store this message and end the batch
    COMMIT_EOB = 3  # end the batch; this (empty) message is not stored
    PING = 4


#: op of a run's message by "is it the batch's last"
_OPS = {False: BatchOp.APPEND, True: BatchOp.COMMIT}


class ReplyKind(enum.Enum):
    """What a reply on the batch inbox says; see ``BatchReply``."""

    FLOW = "flow"
    GAP = "gap"
    COMMIT = "commit"
    ERROR = "error"
    NO_RESPONDERS = "no_responders"


class BatchReply(msgspec.Struct, frozen=True):
    """One reply on the fast-ingest inbox, decoded (``bridge.adapters.fast_ingest``).

    ``seq`` is a batch sequence (1-based position in the batch), by ``kind``:

    * ``FLOW``: messages ``1..seq`` persisted (0: the batch started); ``flow_msgs``: the server
      acks every that many messages from now on.
    * ``COMMIT``: the batch ended, messages ``1..seq`` persisted (``seq`` is the PubAck's
      ``count``); ``stream_seq``: stream sequence of its last stored message, 0 when none was
      new; ``duplicate``: the one message of a one-message batch was already stored.
    * ``GAP``: the server missed messages before ``seq``; the batch ends (a ``COMMIT`` follows).
    * ``ERROR``: the message at ``seq`` was refused (``error_code``: JetStream ``err_code``,
      ``description``), or, with ``BATCH_UNKNOWN``, the batch is gone.
    * ``NO_RESPONDERS``: the message at ``seq`` reached no stream (a 503 status).
    """

    kind: ReplyKind
    batch: str
    seq: int
    flow_msgs: int = 0
    stream_seq: int = 0
    duplicate: bool = False
    error_code: int = 0
    description: str = ""


#: one message of a run: ``(subject, payload, headers, batch sequence, op)``
RunMessage = tuple[str, bytes, dict[str, str], int, BatchOp]


class BatchTransport(Protocol):
    """What ``BatchPublisher`` needs from NATS (``fast_ingest.FastIngestTransport`` or a fake).

    Replies to what it sends must reach ``BatchPublisher.on_reply`` (the transport's reply
    subscription, set up by whoever assembles the pipeline)."""

    async def publish_batched(
        self,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        batch: str,
        flow: int,
        seq: int,
        op: BatchOp,
    ) -> None:
        """Queue message ``seq`` of fast batch ``batch`` (requested ack interval ``flow``).
        Raise ``NotConnected`` when it cannot be queued, ``PublishRefused`` when the client
        refuses the message itself."""

    async def publish_run(self, batch: str, flow: int, messages: list[RunMessage]) -> None:
        """Queue ``messages`` of ``batch``, in order, as ``publish_batched`` would one by one.
        Raise ``RunCut`` when one cannot be queued (``queued``: how many were before it)."""


_STORED = AckResult(AckOutcome.STORED)
_DUPLICATE = AckResult(AckOutcome.DUPLICATE)


class _Batch:
    """The open batch: its id, flow state and unacknowledged messages ``(seq, item, sent_at)``."""

    __slots__ = (
        "acked",
        "broken",
        "closing",
        "copies",
        "created_at",
        "eob_seq",
        "errors",
        "flow",
        "id",
        "ids",
        "last_sent_at",
        "msgs",
        "need_eob",
        "sent",
        "started",
        "subject",
        "unacked",
    )

    def __init__(self, batch_id: str, flow: int, now: float) -> None:
        self.id = batch_id
        self.flow = flow  # what we asked for: the server acks at least this often
        self.msgs = 1  # what the server uses (known from the first reply)
        self.created_at = self.last_sent_at = now
        self.sent = 0  # highest batch sequence sent with a message
        self.acked = 0  # highest batch sequence known persisted
        self.started = False  # the first reply came
        self.closing = False  # commit (op 2) or end-of-batch (op 3) sent
        self.broken = False  # an error or gap: the server ends the batch, send nothing more
        self.need_eob = False  # the failed message was the last one sent: end it ourselves
        self.eob_seq = 0
        self.subject = ""  # of the first message: a subject the stream takes, for op 3
        self.unacked: deque[tuple[int, Outbound, float]] = deque()
        self.errors: dict[int, BatchReply] = {}
        #: Nats-Msg-Ids sent in this batch, and the batch seqs that repeat an earlier one: the
        #: server drops those without a word, so they settle as duplicates here
        self.ids: set[str] = set()
        self.copies: set[int] = set()


class BatchPublisher:
    """Fast-ingest batch publisher over a ``BatchTransport``; see the module note.

    Same surface as ``PipelinedPublisher`` (``submit``, ``backlog``, ``retrying``, ``room``,
    ``in_flight``, ``last_ack_at``, ``late_acks``, ``connection_lost``, ``resume``, ``run``,
    ``expire_overdue``, ``abandon_all``, ``reconfigure`` and the live attributes), with
    ``on_reply`` in place of ``on_ack``. ``on_done(item, outcome, ack)`` is called once per
    submitted message with outcome ``stored``, ``duplicate``, ``rejected`` or ``abandoned``;
    ``ack.seq`` is the stream sequence only for one-message batches (0 otherwise: fast ingest
    acknowledges batch positions, not stream sequences). With ``on_done_many(items, outcome,
    ack)`` the messages a flow ack or commit settles alike are reported in one call instead
    (in order; a copy settled ``duplicate`` inside them goes to ``on_done`` between them).

    ``batch_max_msgs``: messages per batch at most; ``max_batch_age_secs``: a batch older than
    this ends with its next message (the server abandons a batch idle for 10 s);
    ``batch_idle_secs``: how long an open batch waits for more messages before it ends (0: it
    ends as soon as nothing is pending; below 5 s and ``ack_timeout_secs``);
    ``max_outstanding_acks``: flow acks that may be outstanding (ADR-50 suggests 2, the
    bridge's config ``publish.batch_outstanding_acks`` defaults to 8; the server does not
    enforce it).
    ``batch_id_prefix``: the batch ids' prefix (random by default; ids are ``<prefix><n>``, at
    most 64 characters, no dots). ``on_disabled()``: called whenever the stream refuses a batch
    because ``allow_batched`` is off (e.g. the stream was recreated without it): the owner
    switches it on again; the refused messages are retried in order meanwhile.
    """

    def __init__(
        self,
        transport: BatchTransport,
        metrics: Metrics,
        *,
        max_in_flight: int = 1024,
        ack_timeout_secs: float = 5.0,
        max_pending: int = 200_000,
        retry_initial_secs: float = 0.05,
        retry_max_secs: float = 5.0,
        max_rejections: int = 5,
        batch_max_msgs: int = 1000,
        max_batch_age_secs: float = 5.0,
        batch_idle_secs: float = 0.0,
        max_outstanding_acks: int = 2,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_done: DoneCallback | None = None,
        on_done_many: DoneManyCallback | None = None,
        batch_id_prefix: str | None = None,
        on_disabled: Callable[[], None] | None = None,
    ) -> None:
        if max_in_flight < 1 or max_pending < 1 or ack_timeout_secs <= 0:
            raise ValueError("max_in_flight, max_pending and ack_timeout_secs must be positive")
        if batch_max_msgs < 1 or max_outstanding_acks < 1 or max_batch_age_secs <= 0:
            raise ValueError(
                "batch_max_msgs, max_outstanding_acks and max_batch_age_secs must be positive"
            )
        if not 0 <= batch_idle_secs < min(5.0, ack_timeout_secs):
            raise ValueError(
                "batch_idle_secs must be >= 0 and below 5 s (the server abandons an idle batch "
                "at 10 s) and ack_timeout_secs (an idle batch's last messages are acknowledged "
                "when it ends)"
            )
        prefix = batch_id_prefix if batch_id_prefix is not None else secrets.token_hex(8)
        if len(prefix) > 40 or "." in prefix or not prefix.isprintable() or " " in prefix:
            raise ValueError("batch_id_prefix: at most 40 printable characters, no dots or spaces")
        self._transport = transport
        self._m = metrics
        self.max_in_flight = max_in_flight
        self.ack_timeout_secs = ack_timeout_secs
        self.max_pending = max_pending
        self.retry_initial_secs = retry_initial_secs
        self.retry_max_secs = retry_max_secs
        self.batch_max_msgs = batch_max_msgs
        self.max_batch_age_secs = max_batch_age_secs
        self.batch_idle_secs = batch_idle_secs
        self.max_outstanding_acks = max_outstanding_acks
        self._max_rejections = max_rejections
        self._clock = clock
        self._rng = rng or random.Random()
        self.on_done: DoneCallback = on_done or (lambda item, outcome, ack: None)
        self.on_done_many = on_done_many
        self._id_prefix = prefix
        self._on_disabled = on_disabled
        self._batch_numbers = itertools.count(1)
        self._seqs = itertools.count(1)
        self._pending: deque[Outbound] = deque()
        self._retry: list[tuple[int, Outbound]] = []
        self._batch: _Batch | None = None
        self._wake = WakeUp()
        self._hold_until = 0.0
        self._failures_in_row = 0
        self.last_ack_at: float | None = None
        self.late_acks = 0
        self.batches = 0  # batches started (for tests and the benchmark)
        self._disabled_logged_at = -math.inf
        self._published: dict[str, Any] = {}  # kind -> counter child
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
        return len(self._pending) + len(self._retry) + self.in_flight

    @property
    def retrying(self) -> int:
        """Messages waiting for a retry (refused, timed out or cut off with their batch)."""
        return len(self._retry)

    @property
    def room(self) -> int:
        """How many more messages ``submit`` accepts right now (pending and retries share ``max_pending``)."""
        return self.max_pending - len(self._pending) - len(self._retry)

    @property
    def batch_open(self) -> bool:
        """True while a batch is open (started and not yet ended by commit, error or timeout)."""
        return self._batch is not None

    @property
    def in_flight(self) -> int:
        """Messages sent in the open batch and not yet acknowledged."""
        b = self._batch
        return len(b.unacked) if b is not None else 0

    # -- called by the transport's reply subscription -----------------------------------

    def on_reply(self, reply: BatchReply) -> None:
        """Act on one reply of the fast-ingest inbox (never raises, never blocks)."""
        b = self._batch
        if b is None or reply.batch != b.id:
            self.late_acks += 1
            return
        kind = reply.kind
        if kind is ReplyKind.FLOW:
            b.started = True
            b.msgs = max(1, reply.flow_msgs)
            self._acknowledge(b, reply.seq, _STORED)
        elif kind is ReplyKind.COMMIT:
            self._committed(b, reply)
        elif kind is ReplyKind.GAP:
            b.broken = True  # the commit follows (gap mode fail)
        else:
            self._refused(b, reply)
        self._wake.set()

    def _committed(self, b: _Batch, reply: BatchReply) -> None:
        if b.sent == 1 and reply.seq == 1:
            outcome = AckOutcome.DUPLICATE if reply.duplicate else AckOutcome.STORED
            ack = AckResult(outcome, seq=reply.stream_seq)
        elif reply.stream_seq == 0 and reply.seq > 0:
            ack = _DUPLICATE
        else:
            ack = _STORED
            if reply.seq not in b.copies:  # the last message is the last stored: its sequence
                self._acknowledge(b, reply.seq - 1, ack)
                ack = AckResult(AckOutcome.STORED, seq=reply.stream_seq)
        self._acknowledge(b, reply.seq, ack)
        self._end(b, "jetstream_error")

    def _refused(self, b: _Batch, reply: BatchReply) -> None:
        """An error or 503 for one message (or for the whole batch)."""
        if reply.error_code == BATCH_DISABLED:
            self._log_disabled(reply)
            if self._on_disabled is not None:
                self._on_disabled()
        ended = reply.error_code == BATCH_UNKNOWN or (b.eob_seq and reply.seq == b.eob_seq)
        if ended or not b.started:
            # gone, never created (we wait for the first reply), or it cannot be ended
            b.errors.setdefault(reply.seq, reply)
            self._end(b, _reason(reply))
            return
        b.errors[reply.seq] = reply
        b.broken = True
        if reply.seq >= b.sent and not b.eob_seq:
            b.need_eob = True  # nothing after it was sent, so no gap will end the batch

    def _log_disabled(self, reply: BatchReply) -> None:
        now = self._clock()
        if now - self._disabled_logged_at > _LOG_INTERVAL_SECS:
            self._disabled_logged_at = now
            log.error(
                "fast-ingest batch publishing refused by the stream (%s): enable allow_batched "
                "(bridge.adapters.fast_ingest.enable_allow_batched) or use the pipelined "
                "publisher; retrying",
                reply.description,
            )

    def _acknowledge(self, b: _Batch, upto: int, ack: AckResult) -> None:
        """Settle the batch's messages up to batch sequence ``upto``."""
        if upto > b.acked:
            b.acked = upto
        unacked = b.unacked
        if not unacked or unacked[0][0] > upto:
            return
        now = self._clock()
        kinds: dict[str, int] = {}
        outcome = ack.outcome.value
        sent_at = now
        done, done_many = self.on_done, self.on_done_many
        copies = 0
        alike: list[Outbound] = []  # settled with ``ack``, for one ``on_done_many`` call
        check_copies = bool(b.copies) and ack.outcome is AckOutcome.STORED
        while unacked and unacked[0][0] <= upto:
            seq, item, sent_at = unacked.popleft()
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
            if check_copies and seq in b.copies:
                copies += 1
                if alike:
                    done_many(alike, outcome, ack)  # type: ignore[misc]
                    alike = []
                done(item, "duplicate", _DUPLICATE)
            elif done_many is None:
                done(item, outcome, ack)
            else:
                alike.append(item)
        if alike:
            done_many(alike, outcome, ack)  # type: ignore[misc]
        if copies:
            self._m.duplicates.labels("jetstream").inc(copies)
        self.last_ack_at = now
        self._failures_in_row = 0
        self._m.publish_latency.observe(max(0.0, now - sent_at))
        for kind, n in kinds.items():
            self._child(self._acked, self._m.acked, kind).inc(n)
        if ack.outcome is AckOutcome.DUPLICATE:
            self._m.duplicates.labels("jetstream").inc(sum(kinds.values()))

    def _end(self, b: _Batch, reason: str) -> int:
        """The batch is over: what it did not persist is retried (or given up); return how many."""
        if self._batch is b:
            self._batch = None
        failed = list(b.unacked)
        b.unacked.clear()
        if not failed:
            return 0
        default = next((_reason(e) for _, e in sorted(b.errors.items())), reason)
        reasons: dict[str, int] = {}
        for bseq, item, _ in failed:
            error = b.errors.get(bseq)
            if error is not None and error.error_code in PERMANENT_ERROR_CODES:
                item.rejections += 1
                if item.rejections >= self._max_rejections:
                    self._give_up(item, _ack_of(error))
                    continue
            why = _reason(error) if error is not None else default
            reasons[why] = reasons.get(why, 0) + 1
            heapq.heappush(self._retry, (item.seq, item))
        for why, n in reasons.items():
            self._m.publish_failures.labels(why).inc(n)
        if reasons:
            self._hold()
        return len(failed)

    def _give_up(self, item: Outbound, ack: AckResult) -> None:
        log.error(
            "giving up on %s %s (%s): it can never be stored",
            item.kind,
            item.msg_id,
            ack.description,
        )
        self._m.dropped.labels("rejected").inc()
        self.on_done(item, "rejected", ack)

    def _hold(self) -> None:
        """Back off after a round of failures (one round counts once)."""
        now = self._clock()
        if now < self._hold_until:
            return
        self._failures_in_row += 1
        backoff = min(
            self.retry_max_secs, self.retry_initial_secs * 2 ** min(self._failures_in_row - 1, 30)
        )
        self._hold_until = now + backoff / 2 + self._rng.random() * backoff / 2

    def connection_lost(self) -> None:
        """NATS disconnected: the open batch may never be acknowledged; retry what it did not
        persist, in order, in a new batch after the reconnect."""
        b = self._batch
        if b is not None:
            self._end(b, "not_connected")
        self._wake.set()

    def resume(self) -> None:
        """End any backoff now (NATS just reconnected): retries go out at once, in order."""
        self._hold_until = 0.0
        self._failures_in_row = 0
        self._wake.set()

    # -- tasks -------------------------------------------------------------------------

    async def run(self) -> None:
        """Send batches and time them out until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._expire_loop)
            await self._send_loop()

    async def _send_loop(self) -> None:
        while True:
            delay = self._send_delay()
            if delay > 0:
                await self._wake.sleep(delay)
                continue
            await self._send_step()

    def _send_delay(self) -> float:
        """0 when there is something to send now, else how long to wait (inf: until woken)."""
        hold = self._hold_until - self._clock()
        if hold > 0:
            return hold
        b = self._batch
        if b is None:
            return 0.0 if (self._retry or self._pending) else math.inf
        if b.need_eob:
            return 0.0
        if not b.started or b.closing or b.broken:
            return math.inf  # a reply (or the ack timeout) moves it on
        if not (self._retry or self._pending):
            # nothing more to add: end the batch once idle (or too old)
            now = self._clock()
            return max(
                0.0,
                min(
                    b.last_sent_at + self.batch_idle_secs - now,
                    b.created_at + self.max_batch_age_secs - now,
                ),
            )
        if b.sent - b.acked >= self._window(b):
            return math.inf
        return 0.0

    def _window(self, b: _Batch) -> int:
        return max(1, min(self.max_in_flight, b.msgs * self.max_outstanding_acks))

    def _requested_flow(self) -> int:
        return max(1, min(65535, self.max_in_flight // self.max_outstanding_acks))

    async def _send_step(self) -> None:
        b = self._batch
        if b is None:
            await self._start_batch()
        elif b.need_eob or not (self._retry or self._pending):
            await self._end_of_batch(b)
        else:
            await self._send_run(b)

    def _take(self) -> Outbound:
        if self._retry:
            return heapq.heappop(self._retry)[1]
        return self._pending.popleft()

    async def _start_batch(self) -> None:
        now = self._clock()
        b = self._batch = _Batch(
            f"{self._id_prefix}{next(self._batch_numbers)}", self._requested_flow(), now
        )
        self.batches += 1
        item = self._take()
        b.subject = item.subject
        alone = self.batch_max_msgs <= 1 or not (self._retry or self._pending)
        op = BatchOp.COMMIT if alone else BatchOp.START
        if await self._send(b, item, op):
            b.closing = alone
            self._count_published([item])
        elif self._batch is b and b.sent == 0:
            self._batch = None  # refused before anything went out: no batch exists

    async def _send_run(self, b: _Batch) -> None:
        """Append to the open batch while the window, the batch size and the queue allow, in
        runs of at most ``_YIELD_EVERY`` messages handed to the transport at once (one
        ``publish_run``: one write to the connection's buffer per run, not per message)."""
        sent: list[Outbound] = []
        limit = self.batch_max_msgs
        aged = self._clock() - b.created_at >= self.max_batch_age_secs
        window = self._window(b)
        linger = self.batch_idle_secs
        while (
            self._batch is b
            and not (b.closing or b.broken or b.need_eob)
            and (self._retry or self._pending)
            and b.sent - b.acked < window
        ):
            room = min(_YIELD_EVERY, window - (b.sent - b.acked))
            now = self._clock()
            items: list[Outbound] = []
            run: list[RunMessage] = []
            new_ids: list[bool] = []  # per message: its id was new to the batch
            last = False
            while len(run) < room and (self._retry or self._pending) and not last:
                item = self._take()
                last = (
                    aged
                    or b.sent + 1 >= limit
                    or (linger <= 0 and not (self._retry or self._pending))
                )
                seq, new = self._record(b, item, now)
                items.append(item)
                new_ids.append(new)
                run.append((item.subject, item.payload, item.headers, seq, _OPS[last]))
            try:
                await self._transport.publish_run(b.id, b.flow, run)
            except RunCut as cut:
                sent += items[: cut.queued]
                self._cut(b, items, new_ids, cut)
                if isinstance(cut.cause, NotConnected):
                    break
                continue
            sent += items
            b.closing = last
            if len(sent) >= _YIELD_EVERY:
                self._count_published(sent)
                sent = []
                await anyio.lowlevel.checkpoint()
        self._count_published(sent)

    def _record(self, b: _Batch, item: Outbound, now: float) -> tuple[int, bool]:
        """Give ``item`` the batch's next sequence and track it as sent; return the sequence
        and whether its ``Nats-Msg-Id`` was new to the batch (else it is a copy)."""
        seq = b.sent = b.sent + 1
        new = item.msg_id not in b.ids
        if new:
            b.ids.add(item.msg_id)
        else:
            b.copies.add(seq)
        b.unacked.append((seq, item, now))
        b.last_sent_at = now
        item.attempts += 1
        return seq, new

    def _cut(self, b: _Batch, items: list[Outbound], new_ids: list[bool], cut: RunCut) -> None:
        """A run was cut at ``items[cut.queued]``. Not connected: the batch ends (what it did not
        persist is retried). Refused: the batch forgets the messages from that one on (nothing
        went out with their sequences), gives that one up and puts the rest back first in
        line, in their order."""
        if isinstance(cut.cause, NotConnected):
            if self._batch is b:
                self._end(b, "not_connected")
            return
        if self._batch is not b:
            return
        unsent = items[cut.queued :]
        for item, new in zip(reversed(unsent), reversed(new_ids[cut.queued :]), strict=True):
            seq, popped, _ = b.unacked.pop()
            assert popped is item, "a cut run's messages are the batch's last ones"
            b.copies.discard(seq)
            if new:
                b.ids.discard(item.msg_id)
            item.attempts -= 1
        b.sent -= len(unsent)
        refused, rest = unsent[0], unsent[1:]
        refused.attempts += 1
        self._give_up(refused, AckResult(AckOutcome.ERROR, description=str(cut.cause)))
        for item in rest:
            heapq.heappush(self._retry, (item.seq, item))

    async def _send(self, b: _Batch, item: Outbound, op: BatchOp) -> bool:
        """Send ``item`` as the next message of ``b``; False when it did not go out."""
        seq, _ = self._record(b, item, self._clock())
        try:
            await self._transport.publish_batched(
                item.subject, item.payload, item.headers, b.id, b.flow, seq, op
            )
        except NotConnected:
            if self._batch is b:
                self._end(b, "not_connected")
            return False
        except PublishRefused as exc:
            if self._batch is b and b.unacked and b.unacked[-1][1] is item:
                b.unacked.pop()
                b.sent -= 1  # nothing went out with this sequence
                self._give_up(item, AckResult(AckOutcome.ERROR, description=str(exc)))
            return False
        return True

    async def _end_of_batch(self, b: _Batch) -> None:
        """End ``b`` with an empty end-of-batch message (op 3, not stored)."""
        b.need_eob = False
        b.closing = True
        b.eob_seq = seq = b.sent + 1
        b.last_sent_at = self._clock()
        try:
            await self._transport.publish_batched(
                b.subject, b"", {}, b.id, b.flow, seq, BatchOp.COMMIT_EOB
            )
        except NotConnected:
            if self._batch is b:
                self._end(b, "not_connected")
        except PublishRefused:
            if self._batch is b:
                self._end(b, "jetstream_error")

    def _count_published(self, items: Iterable[Outbound]) -> None:
        kinds: dict[str, int] = {}
        for item in items:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
        for kind, n in kinds.items():
            self._child(self._published, self._m.published, kind).inc(n)

    @staticmethod
    def _child(cache: dict[str, Any], series: Any, kind: str) -> Any:
        child = cache.get(kind)
        if child is None:
            child = cache[kind] = series.labels(kind)
        return child

    async def _expire_loop(self) -> None:
        while True:
            await anyio.sleep(max(0.01, self.ack_timeout_secs / 4))  # hot reload may change it
            self.expire_overdue()
            self._m.in_flight.set(self.in_flight)
            self._m.pending.set(len(self._pending) + len(self._retry))

    def expire_overdue(self) -> int:
        """End the open batch when its oldest unacknowledged message (or, with none, its last
        send) is older than the ack timeout: its unacknowledged messages are retried in a new
        batch. Return how many."""
        b = self._batch
        if b is None:
            return 0
        oldest = b.unacked[0][2] if b.unacked else b.last_sent_at
        if oldest > self._clock() - self.ack_timeout_secs:
            return 0
        expired = self._end(b, "timeout")
        self._wake.set()
        return expired

    def abandon_all(self) -> int:
        """Report every unsettled message to ``on_done`` as ``abandoned``; return how many.

        Whether that is a loss is the caller's business: with the durable spool the messages
        stay on disk for the next start."""
        b, self._batch = self._batch, None
        left = [item for _, item, _ in b.unacked] if b is not None else []
        left += [item for _, item in sorted(self._retry, key=lambda e: e[0])]
        left += self._pending
        self._retry.clear()
        self._pending.clear()
        for item in left:
            self.on_done(item, "abandoned", None)
        return len(left)


def _reason(reply: BatchReply | None) -> str:
    """``publish_failures`` label for a refusal (a bounded set, as ``publish`` uses)."""
    if reply is not None and reply.kind is ReplyKind.NO_RESPONDERS:
        return "no_responders"
    return "jetstream_error"


def _ack_of(reply: BatchReply) -> AckResult:
    return AckResult(AckOutcome.ERROR, error_code=reply.error_code, description=reply.description)

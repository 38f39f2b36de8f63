"""Parity checker: what one bridge read on ZMQ vs what JetStream stored, matched by msg id.

Two taps feed one ``ParityLedger``:

* **ZMQ**, by default in-process: the bridge's ingest runner hands every frame
  it decoded to ``ParityTap.observe`` (``IngestRunner.observe``), with the msg id
  the bridge gave it (legacy ``error_id``, else the frame hash with its
  occurrence counter), before dedup and flood control. That costs one dict
  operation per message: the tap used to subscribe to the legacy republish
  socket and decode every frame a second time, which cost the bridge about a
  fifth of its throughput and a second identity table. With
  ``parity.zmq_endpoints`` set, a SUB socket connected to those endpoints (any
  legacy publishers, or the republish socket) is decoded with the bridge's own
  decoder and identity rules instead: an observation of the bus that does not
  go through this bridge's ingest. Frames a bridge re-emitted from NATS are
  skipped either way, as the bridge skips them.
* **JetStream**, by default from this bridge's own **PubAcks** (``parity.nats_side:
  pubacks``): the pipeline hands every error event and dead letter JetStream acknowledged
  as stored (or as a duplicate of a stored one) to ``confirmed``, and every flood event it
  emits to ``observe_flood``. No consumer, no second copy of the traffic through the NATS
  client: the hot process only does one dict operation per message. It catches what is lost
  between ingest and the stream inside the bridge (a sink that drops, a dedup or identity
  mistake, spool eviction, a rejection). It cannot see what the stream loses after the PubAck,
  so every ``readback_every``-th stored message is read back by the sequence its PubAck gave
  (``busbridge_parity_readback_total{result}``: ok, mismatch, missing), off the read loop.
  With fast-ingest batches only a batch's last message learns its sequence: the sample is
  then the first such message once ``readback_every`` were stored (one per batch at most).
  With ``parity.nats_side: consumer``: an ordered consumer (deliver new) on the bridge
  machine's error and dead-letter subjects; only messages whose ``Busbridge-Origin`` header is
  the bridge's id count (native NATS events never crossed ZMQ); flood events on
  ``<prefix>.flood.<machine>.>`` mark fingerprints in flood. It also sees what was stored
  under this bridge's id without this bridge publishing it (``missing_zmq``: a second bridge
  with the same id, a replay tool), and what the stream lost, at the cost of reading every
  message twice (about a fifth of the bridge's CPU at high rates).

Ids JetStream stored before the ZMQ side was live (the in-process feed starts
after the consumer exists; a SUB only receives once its subscription reached
the publisher, ZMQ's slow joiner), plus one second, are not counted as missing
on the ZMQ side.
An id seen on one side waits ``match_window_secs`` for the other; then it
counts as missing on the other side, unless it is a ZMQ event whose
fingerprint was in a flood (suppressed by design: counted as ``suppressed``,
outside the ratio). Ids seen again after a match (the PC2 ``CROSS_MACHINE``
copy, a retry) are ignored: matched ids are remembered for ``match_window_secs``
and at most ``max_matched_ids`` of them (oldest forgotten first), so the table
does not grow with the message rate. The ratio over ``window_secs`` is
``matched / (matched + missing_nats + missing_zmq)``; ``None`` until anything
was compared. Exported as ``busbridge_parity_*`` metrics and read by the
``dual -> nats_primary`` guard (``bridge.phase``).

The bridge runs the tap only while it is not catching up: during a NATS
outage and the spool drain after it the tap is stopped and the ledger reset
(``bridge.phase_runtime``), so the ratio reads "nothing compared" (-1) and the
guard refuses until enough live events were compared again.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import msgspec
import nats.errors
import nats.js.errors
import zmq
from nats.js.api import ConsumerConfig, DeliverPolicy

from bridge.adapters.zmq import read_batches
from bridge.config.model import BridgeConfig, ParityNatsSide
from bridge.legacy.reemit import is_reemitted
from bridge.metrics import Metrics
from bridge.pipeline.acks import AckOutcome, AckResult
from bridge.pipeline.dead_letters import dead_letter_key
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.publish import Outbound
from contracts.codec import decode
from contracts.messages import (
    DeadLetter,
    DeadLetterSummary,
    ErrorEvent,
    FloodEnded,
    FloodEvent,
    FloodStarted,
    FloodSummary,
)
from contracts.subjects import (
    HEADER_CONTRACT,
    HEADER_MSG_ID,
    HEADER_ORIGIN,
    Subjects,
    sanitise_token,
)

__all__ = ["ParityLedger", "ParityStats", "ParityTap"]

log = logging.getLogger(__name__)

_BUCKET_SECS = 1.0
#: after the ZMQ tap's first message, ids already on their way to JetStream may still lack a ZMQ copy
_WARMUP_SECS = 1.0
#: kinds of outbound message the ZMQ side also sees (``Outbound.kind``)
_COMPARED_KINDS = frozenset({"error_event", "dead_letter"})
_STORED = (AckOutcome.STORED, AckOutcome.DUPLICATE)
#: read-back samples waiting at most (older ones are dropped when the read-back falls behind)
_READBACK_QUEUE = 64


@dataclass(frozen=True)
class ParityStats:
    """Results over the last ``window_secs``; ``ratio`` is None when nothing was compared."""

    window_secs: float
    matched: int
    missing_nats: int
    missing_zmq: int
    suppressed: int
    pending: int

    @property
    def compared(self) -> int:
        return self.matched + self.missing_nats + self.missing_zmq

    @property
    def ratio(self) -> float | None:
        return self.matched / self.compared if self.compared else None


class ParityLedger:
    """Matches ids from both sides (synchronous; ``clock`` in monotonic seconds)."""

    def __init__(
        self,
        match_window_secs: float,
        window_secs: float,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        max_matched_ids: int = 100_000,
    ) -> None:
        if max_matched_ids < 1:
            raise ValueError("max_matched_ids must be positive")
        self.match_window_secs = match_window_secs
        self.window_secs = window_secs
        self.max_matched_ids = max_matched_ids
        self._clock = clock
        self._m = metrics
        self.metrics = metrics
        self._zmq: OrderedDict[str, tuple[float, str]] = (
            OrderedDict()
        )  # id -> (seen at, fingerprint)
        self._nats: OrderedDict[str, float] = OrderedDict()
        #: resolved ids (ignored when seen again) -> resolved at, and the same ids oldest first:
        #: up to ``max_matched_ids`` at 10k msg/s, a dict and a deque rather than an
        #: ``OrderedDict`` (``bridge.pipeline.dedup``'s note: its rebuilds held the loop 11-47 ms)
        self._done: dict[str, float] = {}
        self._done_order: deque[str] = deque()
        self._floods: dict[
            str, float
        ] = {}  # fingerprint -> in flood until (monotonic; inf while open)
        self._buckets: deque[list[float]] = (
            deque()
        )  # [bucket start, matched, missing_nats, missing_zmq, suppressed]
        self._zmq_since = float("inf")  # NATS-only ids first seen before this are not counted
        self._matched_unreported = 0  # matches not yet added to the parity_matched counter

    def zmq_tap_live(self, warmup_secs: float) -> None:
        """The ZMQ tap received its first message: a SUB only gets messages once its
        subscription reached the publisher, so ids stored before then (and ``warmup_secs``
        after, for those still in flight) never count as missing on the ZMQ side."""
        if self._zmq_since == float("inf"):
            self._zmq_since = self._clock() + warmup_secs

    def reset(self) -> None:
        """Forget everything (a phase change makes old expectations meaningless)."""
        for d in (self._zmq, self._nats, self._done, self._done_order):
            d.clear()
        self._buckets.clear()
        self._zmq_since = float("inf")

    def saw_zmq(self, msg_id: str, fingerprint: str = "") -> None:
        self.saw_zmq_many(((msg_id, fingerprint),))

    def saw_zmq_many(self, seen: Iterable[tuple[str, str]]) -> None:
        """ZMQ-side ids read together, ``(msg id, fingerprint)`` in read order: one clock
        reading for all of them (the ingest runner hands over a read batch at a time)."""
        now = self._clock()
        done, zmq, nats = self._done, self._zmq, self._nats
        matched = 0
        for msg_id, fingerprint in seen:
            if msg_id in done or msg_id in zmq:
                continue
            if nats.pop(msg_id, None) is not None:
                self._record(msg_id, 1, now)
                matched += 1
            else:
                zmq[msg_id] = (now, fingerprint)
        self._matched_unreported += matched

    def saw_nats(self, msg_id: str) -> None:
        self.saw_nats_many((msg_id,))

    def saw_nats_many(self, msg_ids: Iterable[str]) -> None:
        """JetStream-side ids confirmed together: one clock reading for all of them."""
        now = self._clock()
        done, zmq, nats = self._done, self._zmq, self._nats
        matched = 0
        for msg_id in msg_ids:
            if msg_id in done or msg_id in nats:
                continue
            if zmq.pop(msg_id, None) is not None:
                self._record(msg_id, 1, now)
                matched += 1
            else:
                nats[msg_id] = now
        self._matched_unreported += matched

    def flood(self, fingerprint: str, *, ended: bool) -> None:
        """A flood event for ``fingerprint``: suppressed ids of it are not missing."""
        self._floods[fingerprint] = (
            self._clock() + self.match_window_secs if ended else float("inf")
        )

    def expire(self) -> None:
        """Count ids that waited longer than the match window as missing on the other side."""
        now = self._clock()
        cutoff = now - self.match_window_secs
        while self._zmq:
            msg_id, (at, fp) = next(iter(self._zmq.items()))
            if at > cutoff:
                break
            del self._zmq[msg_id]
            self._resolve(msg_id, 4 if self._floods.get(fp, -1.0) >= at else 2)
        while self._nats:
            msg_id, at = next(iter(self._nats.items()))
            if at > cutoff:
                break
            del self._nats[msg_id]
            if at >= self._zmq_since:
                self._resolve(msg_id, 3)
        done, order = self._done, self._done_order
        while order and done[order[0]] < cutoff:
            del done[order.popleft()]
        self._floods = {fp: until for fp, until in self._floods.items() if until >= cutoff}
        while self._buckets and self._buckets[0][0] < now - self.window_secs:
            self._buckets.popleft()

    def _resolve(self, msg_id: str, column: int) -> None:
        """A missing or suppressed id (``column`` 2, 3 or 4), counted at once."""
        self._record(msg_id, column, self._clock())
        if self._m is not None and column in (2, 3):
            self._m.parity_missing.labels("nats" if column == 2 else "zmq").inc()

    def _record(self, msg_id: str, column: int, now: float) -> None:
        done = self._done
        if msg_id not in done:
            self._done_order.append(msg_id)
        done[msg_id] = now
        if len(done) > self.max_matched_ids:
            del done[self._done_order.popleft()]
        buckets = self._buckets
        if buckets and now - buckets[-1][0] < _BUCKET_SECS:
            buckets[-1][column] += 1
        else:
            bucket = [now - now % _BUCKET_SECS, 0, 0, 0, 0]
            bucket[column] = 1
            buckets.append(bucket)

    def stats(self) -> ParityStats:
        self.expire()
        if self._matched_unreported:
            if self._m is not None:
                self._m.parity_matched.inc(self._matched_unreported)
            self._matched_unreported = 0
        sums = [sum(b[i] for b in self._buckets) for i in range(1, 5)]
        stats = ParityStats(
            self.window_secs, *map(int, sums), pending=len(self._zmq) + len(self._nats)
        )
        if self._m is not None:
            self._m.parity_ratio.set(-1 if stats.ratio is None else stats.ratio)
        return stats


class ParityTap:
    """Runs both taps for one bridge into a ``ParityLedger`` until cancelled.

    ``zmq_endpoints``: where to connect a SUB for the ZMQ side; ``[]``: the caller feeds
    ``observe`` with what it decoded (the bridge's runner), from when ``run`` reports started.
    ``js``: a nats-py JetStream context. ``run`` raises nats errors when the consumer cannot be
    created (the caller retries). ``pubacks``: the JetStream side is fed through ``confirmed``
    and ``observe_flood`` (``parity.nats_side: pubacks``) instead of a consumer.
    """

    def __init__(
        self, cfg: BridgeConfig, ledger: ParityLedger, zmq_endpoints: list[str], js: Any
    ) -> None:
        self.cfg = cfg
        self.ledger = ledger
        self.zmq_endpoints = zmq_endpoints
        self._js = js
        self._subjects = Subjects(cfg.stream.subject_prefix)
        self._decoder: LegacyDecoder | None = None
        if zmq_endpoints:  # the bridge's identity rules on frames it did not decode itself
            identity = EventIdentity(
                cfg.identity.occurrence_window_secs, cfg.identity.max_tracked, time.monotonic
            )
            self._decoder = LegacyDecoder(
                machine=cfg.machine or "",
                identity=identity,
                local_tz=ZoneInfo(cfg.legacy.local_timezone),
            )
        self.zmq_seen = 0
        self.nats_seen = 0
        self.pubacks = cfg.parity.nats_side is ParityNatsSide.PUBACKS
        self._dl_leading_bytes = cfg.dead_letters.leading_bytes
        self._m = ledger.metrics
        self._readback_every = cfg.parity.readback_every
        self._until_readback = self._readback_every
        self._readback: deque[tuple[int, str]] = deque(maxlen=_READBACK_QUEUE)
        self._readback_wake = anyio.Event()

    def confirmed(self, item: Outbound, outcome: str, ack: AckResult | None) -> None:
        """JetStream side from PubAcks: the publisher settled ``item`` with ``outcome``
        (``stored``, ``duplicate``, ``rejected``, ``abandoned``); ``ack`` is the PubAck."""
        self.confirmed_many([item], outcome, ack)

    def confirmed_many(self, items: list[Outbound], outcome: str, ack: AckResult | None) -> None:
        """``confirmed`` for messages settled together with one ``outcome`` and ``ack``, in
        order (``Routing.confirmed``). An ack with a stream sequence settles one message
        (a one-message batch, or a batch's last): only then is a read-back scheduled."""
        if ack is None or ack.outcome not in _STORED:
            return
        ids = [item.msg_id for item in items if item.kind in _COMPARED_KINDS]
        if not ids:
            return
        self.nats_seen += len(ids)
        self.ledger.saw_nats_many(ids)
        if self._readback_every and ack.outcome is AckOutcome.STORED:
            self._until_readback -= len(ids)
            # due: the next one whose PubAck gave its stream sequence (with fast-ingest
            # batches only a batch's last message has one)
            if self._until_readback <= 0 and ack.seq:
                self._until_readback = self._readback_every
                self._readback.append((ack.seq, ids[-1]))
                self._readback_wake.set()

    def observe_flood(self, event: FloodEvent | DeadLetterSummary) -> None:
        """A flood event or dead-letter summary the bridge emitted: the suppressed ids of its
        fingerprint (a dead letter's: ``dead_letter_key``) are not missing."""
        if isinstance(event, DeadLetterSummary):
            self.ledger.flood(event.key, ended=event.ended)
        else:
            self.ledger.flood(event.fingerprint, ended=isinstance(event, FloodEnded))

    def observe(self, msgs: list[ErrorEvent | DeadLetter]) -> None:
        """ZMQ side, in-process: the messages of one read batch the bridge decoded, in read
        order (``Routing.observe``, called by ``IngestRunner.settle``)."""
        self.zmq_seen += len(msgs)
        self.ledger.zmq_tap_live(_WARMUP_SECS)  # again after a reset (phase change)
        leading = self._dl_leading_bytes
        self.ledger.saw_zmq_many(
            (msg.event_id, msg.fingerprint)
            if msg.__class__ is ErrorEvent
            else (msg.event_id, dead_letter_key(msg, leading))  # type: ignore[arg-type]
            for msg in msgs
        )

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Subscribe the JetStream side, then report started (the ZMQ side may begin) and run
        until cancelled."""
        subs = [] if self.pubacks else await self._subscribe()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._expire_loop)
                if self.pubacks and self._readback_every:
                    tg.start_soon(self._readback_loop)
                if self.zmq_endpoints:
                    await tg.start(self._run_sub)
                task_status.started()
        finally:
            for sub in subs:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await sub.unsubscribe()

    async def _run_sub(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 1_000_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            for endpoint in self.zmq_endpoints:
                sock.connect(
                    endpoint.replace("tcp://*:", "tcp://127.0.0.1:").replace(
                        "tcp://0.0.0.0:", "tcp://127.0.0.1:"
                    )
                )
            task_status.started()
            await read_batches(sock, self._on_batch)  # drained in batches, as the ingest socket is
        finally:
            sock.close(linger=0)
            ctx.term()

    async def _readback_loop(self) -> None:
        """Read sampled stored messages back by sequence; count ok / mismatch / missing."""
        while True:
            if not self._readback:
                self._readback_wake = anyio.Event()
                await self._readback_wake.wait()
                continue
            seq, msg_id = self._readback.popleft()
            try:
                stored = await self._js.get_msg(self.cfg.stream.name, seq=seq)
            except nats.js.errors.NotFoundError:
                result = "missing"
            except (nats.errors.Error, OSError) as exc:  # NATS away: this sample is skipped
                log.debug("parity read-back of seq %d skipped: %r", seq, exc)
                continue
            else:
                found = (stored.headers or {}).get(HEADER_MSG_ID)
                result = "ok" if found == msg_id else "mismatch"
            if result != "ok":
                log.warning("parity read-back: %s at stream seq %d was %s", msg_id, seq, result)
            if self._m is not None:
                self._m.parity_readback.labels(result).inc()

    async def _expire_loop(self) -> None:
        while True:
            await anyio.sleep(1.0)
            self.ledger.stats()

    def _on_batch(self, messages: list[list[bytes]]) -> None:
        decoder = self._decoder
        assert decoder is not None
        now = datetime.now(UTC)
        self.observe(
            [decoder.decode(frames, now) for frames in messages if not is_reemitted(frames)]
        )

    async def _subscribe(self) -> list[Any]:
        machine, s = self.cfg.machine or "", self._subjects
        filters = [
            s.errors(machine),
            s.dead_letters(machine),
            f"{s.prefix}.flood.{sanitise_token(machine)}.>",
        ]
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW, filter_subjects=filters)
        sub = await self._js.subscribe(
            filters[0],
            stream=self.cfg.stream.name,
            config=config,
            ordered_consumer=True,
            cb=self._on_nats,
            inactive_threshold=30.0,
        )
        return [sub]

    async def _on_nats(self, msg: Any) -> None:
        headers = msg.headers or {}
        if headers.get(HEADER_ORIGIN) != (self.cfg.bridge_id or ""):
            return
        summary = headers.get(HEADER_CONTRACT) == "dead_letter_summary"
        if ".flood." in msg.subject or summary:
            try:
                ev = decode(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return
            if isinstance(ev, FloodStarted | FloodSummary | FloodEnded | DeadLetterSummary):
                self.observe_flood(ev)
            return
        self.nats_seen += 1
        msg_id = headers.get(HEADER_MSG_ID)
        if msg_id:
            self.ledger.saw_nats(msg_id)

"""The ingest runner: the stages from a ZMQ message to the sink, called synchronously by the
ingest loop with each batch read (the stage order is in ``bridge.pipeline.assemble``).
The stages decide; this module acts on their decisions and counts every
outcome (DESIGN §1): dropped as a loop (a frame a bridge re-emitted from NATS,
``busbridge_loop_dropped_total``), decoded by dialect or dead-lettered by reason,
not published in the ``zmq_only`` phase (shadow decode: ``to_jetstream`` off), dropped as
a duplicate (``busbridge_duplicates_total{by="bridge"}``), suppressed by a flood
rule (``busbridge_flood_suppressed_total{rule}``, accounted in flood
summaries), accepted by the sink, or dropped because the sink is full.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.legacy.reemit import is_reemitted
from bridge.metrics import INVENTORY_MAX_SOURCES, Metrics
from bridge.migration import TRANSPORTS, SourceInventory
from bridge.pipeline.acks import AckResult
from bridge.pipeline.dead_letters import DeadLetterGate
from bridge.pipeline.dedup import DedupWindow
from bridge.pipeline.flood import FloodGate, Verdict
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import Outbound
from contracts.codec import contract_name
from contracts.messages import DeadLetter, DeadLetterSummary, ErrorEvent, FloodEvent, Message
from contracts.severity import normalise_severity

__all__ = ["IngestRunner", "Routing", "Sink"]


@dataclass(frozen=True, slots=True)
class Routing:
    """What the cutover phase in force does with each ingested message (set by
    ``bridge.phase_runtime`` as one value, swapped atomically between two batches).

    ``to_jetstream``: decoded messages go on to dedup, flood control and the sink (off in
    ``zmq_only``: shadow decode and inventory only). ``republish``: called with every
    ingested message's frames, byte for byte (legacy republish), or None. ``observe``: the
    parity tap's ZMQ side, called once per batch with its decoded messages (read order) before
    dedup and flood control, or None. ``observe_flood``: the parity tap's flood side, called with every flood event and
    dead-letter summary the bridge emits, or None. ``confirmed``: the parity tap's JetStream side from PubAcks,
    called by the pipeline with the messages the publisher settled, a list at a time with
    their one outcome and ack (``items, outcome, ack``), or None.
    """

    to_jetstream: bool = True
    republish: Callable[[list[bytes]], None] | None = None
    observe: Callable[[list[ErrorEvent | DeadLetter]], None] | None = None
    observe_flood: Callable[[FloodEvent | DeadLetterSummary], None] | None = None
    confirmed: Callable[[list[Outbound], str, AckResult | None], None] | None = None


class _Decoder(Protocol):  # bridge.pipeline.decode.LegacyDecoder
    def decode(self, frames: list[bytes], received_at: datetime) -> ErrorEvent | DeadLetter: ...


class Sink(Protocol):
    """Where outbound messages go: the spooled queue, or the publisher without a spool."""

    def submit(self, item: Outbound) -> bool: ...


class IngestRunner:
    """``runner(frames)``: handle one legacy ZMQ message; ``runner.handle_batch(messages)``: handle
    several read in one go (the ZMQ reader's way: the per-message counters are added to Prometheus
    once per batch, before it returns). Never raises, never blocks.

    ``emit(msg)`` sends a bridge-made message (flood events) down the same path.
    ``route(routing)`` switches what the phase does with messages (``Routing``);
    ``set_flood(gate)`` swaps the flood gate (hot reload; None: flood control off).
    ``last_frame_at``: monotonic time of the last frame read (quiet-period guard).
    """

    def __init__(
        self,
        decoder: _Decoder,
        builder: OutboundBuilder,
        sink: Sink,
        metrics: Metrics,
        *,
        dedup: DedupWindow | None = None,
        flood: FloodGate | None = None,
        drop_reason: str = "pending_full",
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        routing: Routing = Routing(),
        inventory: SourceInventory | None = None,
        dead_letters: DeadLetterGate | None = None,
    ) -> None:
        self._decoder = decoder
        self._builder = builder
        self._sink = sink
        self._m = metrics
        self.dedup = dedup
        self.flood = flood
        self._now = wall_clock
        self._dropped = metrics.dropped.labels(drop_reason)
        self._dup_bridge = metrics.duplicates.labels("bridge")
        self._children: dict[tuple[str, str], Any] = {}  # (family, label) -> counter child
        self._inventory: dict[tuple[str, str], Any] = {}
        self._sources: set[str] = set()
        self.received = 0
        self.routing = routing
        self.inventory = inventory
        self.dead_letters = dead_letters
        #: (source, dialect, transport, unknown severity) -> events, expanded per batch
        self._seen: dict[tuple[str, str, str, bool], int] = {}
        self.last_frame_at: float | None = None

    def route(self, routing: Routing) -> None:
        """Switch what the phase does with messages from the next message on."""
        self.routing = routing

    def set_flood(self, gate: FloodGate | None) -> None:
        """Use ``gate`` for flood control from the next message on (None: off)."""
        self.flood = gate

    def __call__(self, frames: list[bytes]) -> None:
        self.handle_batch([frames])

    def handle_batch(self, batch: list[list[bytes]]) -> None:
        """Handle ``batch`` (messages in read order) in this process: ``take``, decode each,
        ``settle``. One wall-clock reading is every message's ``received_at``: the batch was
        read in one go just before."""
        kept, routing, received_at = self.take(batch)
        decode = self._decoder.decode
        self.settle([decode(frames, received_at) for frames in kept], routing)

    def take(self, batch: list[list[bytes]]) -> tuple[list[list[bytes]], Routing, datetime]:
        """The stages before decoding, for ``batch`` (messages in read order): count the frames
        read, drop loops (frames a bridge re-emitted), republish the rest byte for byte when the
        phase says so. Returns the messages to decode, the ``Routing`` in force (the same one
        must ``settle`` them, even if the phase changed meanwhile) and their ``received_at``
        (tz-aware UTC, one reading for the batch). Never raises."""
        received_at = self._now()
        routing = self.routing
        republish = routing.republish
        kept: list[list[bytes]] = []
        nbytes = 0
        try:
            for frames in batch:
                nbytes += sum(map(len, frames))
                if is_reemitted(frames):
                    self._m.loops_dropped.inc()
                    continue
                if republish is not None:
                    republish(frames)
                kept.append(frames)
        finally:
            self.received += len(batch)
            self.last_frame_at = time.monotonic()
            self._m.frames_received.inc(len(batch))
            self._m.frames_received_bytes.inc(nbytes)
        return kept, routing, received_at

    def settle(
        self,
        msgs: list[ErrorEvent | DeadLetter],
        routing: Routing,
        payloads: list[bytes] | None = None,
    ) -> None:
        """The stages after decoding, for ``msgs`` (decoded in read order, under ``routing``
        as ``take`` returned it): count, observe, dead-letter gate, dedup, flood gate, sink;
        the per-message counters go to Prometheus once, before it returns. ``payloads``: each
        message's contract JSON as ``contracts.codec.encode`` makes it, when the decoder made it
        already (the decode worker), so the outbound stage does not encode it again."""
        try:
            if routing.observe is not None:
                routing.observe(msgs)
            for i, msg in enumerate(msgs):
                self._count(msg)
                if not routing.to_jetstream:
                    continue
                if msg.__class__ is ErrorEvent:
                    if not self._admit(msg):  # type: ignore[arg-type]
                        continue
                elif not self._admit_dead_letter(msg):  # type: ignore[arg-type]
                    continue
                self._submit(msg, payloads[i] if payloads is not None else None)
        finally:
            self._flush_counts()

    def _admit(self, ev: ErrorEvent) -> bool:
        if self.dedup is not None and self.dedup.seen(ev.event_id):
            self._dup_bridge.inc()
            return False
        return self._admit_flood(ev)

    def _admit_dead_letter(self, dl: DeadLetter) -> bool:
        gate = self.dead_letters
        if gate is None or gate.check(dl):
            return True
        self._child("dl_suppressed", dl.reason.value).inc()
        return False

    def emit_dead_letter_summaries(self, summaries: list[DeadLetterSummary]) -> None:
        """Send dead-letter summaries (``DeadLetterGate.tick``/``flush``) to the sink; the parity
        tap learns which dead letters were suppressed by design."""
        observe = self.routing.observe_flood
        for summary in summaries:
            if observe is not None:
                observe(summary)
            self._submit(summary)

    def _admit_flood(self, ev: ErrorEvent) -> bool:
        if self.flood is None:
            return True
        decision = self.flood.check(ev)
        for event in decision.events:
            self.emit(event)
        if decision.verdict is Verdict.SUPPRESS:
            self._child("suppressed", decision.rule).inc()
            return False
        return True

    def handle_external(
        self,
        msg: ErrorEvent | DeadLetter,
        settle: Callable[[str], None],
        client_api: str | None = None,
    ) -> None:
        """A message that came over NATS (native intake, the legacy ``errors.>`` streams),
        decoded: counted, deduplicated and flood-controlled together with the ZMQ traffic (one
        agent flooding over two transports is one flood) and submitted, in every phase.

        ``settle(outcome)`` is called exactly once, when the source message may be
        acknowledged or must come again: ``duplicate`` (a copy within the dedup window) and
        ``suppressed`` (counted in a flood summary) at once; ``retry`` at once when the sink is
        full; else by the publisher, with ``stored``, ``duplicate``, ``rejected`` or
        ``abandoned`` (``abandoned``: not stored yet, let the source redeliver it).
        ``client_api``: a native event's ``Busbridge-Client-Api`` header (migration view)."""
        self._count(msg, client_api)
        self._flush_counts()
        if isinstance(msg, ErrorEvent):
            if self.dedup is not None and self.dedup.seen(msg.event_id):
                self._dup_bridge.inc()
                settle("duplicate")
                return
            if not self._admit_flood(msg):
                settle("suppressed")
                return
        elif not self._admit_dead_letter(msg):
            settle("suppressed")  # counted in a DeadLetterSummary
            return
        item = self._builder.build(msg)
        item.on_settled = settle
        if not self._sink.submit(item):
            settle("retry")  # not dropped: the source redelivers it

    def emit(self, msg: FloodEvent) -> None:
        """Send a flood event (from ``check``, ``tick`` or ``flush``) to the sink."""
        self._child("flood_event", contract_name(msg)).inc()
        observe_flood = self.routing.observe_flood
        if observe_flood is not None:
            observe_flood(msg)
        self._submit(msg)

    def publish(self, msg: Message) -> None:
        """Send a bridge event (phase change, ...) to the sink, in every phase."""
        self._submit(msg)

    def _submit(self, msg: Message, payload: bytes | None = None) -> None:
        if not self._sink.submit(self._builder.build(msg, payload)):
            self._dropped.inc()

    def _flush_counts(self) -> None:
        """Add what ``_count`` gathered to Prometheus and the inventory (once per batch)."""
        seen, self._seen = self._seen, {}
        tally: dict[Any, int] = {}  # counter child -> count
        sources: dict[tuple[str, str], int] = {}
        for (source, dialect, transport, unknown), n in seen.items():
            for child in (self._child("decoded", dialect), self._inventory_child(source, dialect)):
                tally[child] = tally.get(child, 0) + n
            key = (source, transport)
            sources[key] = sources.get(key, 0) + n
            if unknown:
                self._m.unknown_severity.inc(n)
        for child, n in tally.items():
            child.inc(n)
        if sources and self.inventory is not None:
            self.inventory.add(sources)

    def _count(self, msg: ErrorEvent | DeadLetter, client_api: str | None = None) -> None:
        """One dict update per event; ``_flush_counts`` expands them once per batch."""
        if msg.__class__ is ErrorEvent:
            legacy = msg.legacy
            if legacy is not None:
                dialect = legacy.dialect.value
                key = (msg.source, dialect, TRANSPORTS[dialect], _unknown(legacy.raw_severity))
            else:
                key = (msg.source, "native", f"native:{client_api or 'native'}", False)
            seen = self._seen
            seen[key] = seen.get(key, 0) + 1
        else:
            self._child("dead_letter", msg.reason.value).inc()

    def _inventory_child(self, source: str, dialect: str) -> Any:
        child = self._inventory.get((source, dialect))
        if child is not None:
            return child
        if source not in self._sources and len(self._sources) >= INVENTORY_MAX_SOURCES:
            return self._m.inventory.labels(
                "_other", dialect
            )  # not cached: the cache stays bounded
        self._sources.add(source)
        child = self._inventory[(source, dialect)] = self._m.inventory.labels(source, dialect)
        return child

    def _child(self, family: str, label: str) -> Any:
        child = self._children.get((family, label))
        if child is None:
            metric = {
                "decoded": self._m.decoded,
                "dead_letter": self._m.dead_letters,
                "suppressed": self._m.flood_suppressed,
                "dl_suppressed": self._m.dead_letters_suppressed,
                "flood_event": self._m.flood_events,
            }[family]
            child = self._children[(family, label)] = metric.labels(label)
        return child


def _unknown(raw_severity: Any) -> bool:
    """A legacy severity was given but is not one the bridge knows (``unknown_severity``)."""
    return raw_severity is not None and not normalise_severity(raw_severity)[1]

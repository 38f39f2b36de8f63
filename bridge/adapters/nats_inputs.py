"""The pipeline's inputs that come over NATS: native intake and the legacy ``errors.>`` half.

Design note
-----------
One ``JetStreamInput`` per input, each a durable **pull** consumer:

* ``native``: stream ``<stream>_INTAKE`` (subjects ``<prefix>_intake.>``, work-queue retention,
  file storage, a 2-minute duplicate window; provisioned here by ``ensure_intake_stream``),
  durable ``busbridge_intake_<machine>`` filtered on ``<prefix>_intake.<machine>.>``: each
  machine's bridge takes its own agents' events, as it does on :7150.
* ``legacy``: whichever stream covers ``errors.>`` (``ERRORS`` of library A or
  ``ERROR_STREAM`` of library B: the one that connected first owns the subjects; looked up by
  subject, not by name, every ``intake.legacy_poll_secs`` until one exists), durable
  ``intake.legacy_durable`` shared by every bridge of the fleet: each legacy message is
  processed by one of them. Deliver policy ``all`` for a new durable: the history the legacy
  stream still holds is brought over once.

Each fetched message is decoded (``LegacyDecoder.decode_legacy_nats`` / ``decode_native``) and
handed to ``IngestRunner.handle_external`` with a ``settle`` callback. The message is
**acknowledged only when its outcome is final**: ERRBUS PubAcked the event (``stored`` or
``duplicate``), it was a copy within the dedup window, it was suppressed and counted in a
flood summary, or JetStream rejected it for good; it is **nak'ed with a delay** when the
pipeline could not take it (``retry``) or gave it up at shutdown (``abandoned``). Acks and naks
are sent by one task, in batches. End to end this is at-least-once (a crash between the
PubAck and the ack redelivers the message; its ``Nats-Msg-Id`` makes the second copy a
duplicate in ERRBUS), unlike the ZMQ side, which has no acks at all.

Poison never loops: decoding never raises (what it cannot read is a dead letter with its
bytes), and a message JetStream delivered ``intake.max_deliveries`` times without an outcome
becomes a ``DeadLetter`` (reason ``redelivered``) that goes through the same path. Nothing is
fetched while the pipeline catches up (NATS down or the spool draining): the sources keep
their messages rather than the spool.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from bridge.adapters.nats_connect import connect_tool
from bridge.config.model import BridgeConfig, IntakeConfig, StorageKind
from bridge.legacy.nats_libraries import LEGACY_SUBJECTS
from bridge.metrics import Metrics
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent
from contracts.subjects import HEADER_CLIENT_API, HEADER_MSG_ID, Subjects, sanitise_token

__all__ = [
    "FINAL_OUTCOMES",
    "JetStreamInput",
    "connect_legacy",
    "ensure_intake_stream",
    "find_legacy_stream",
    "intake_stream_config",
    "msg_id",
    "native_durable",
    "native_filter",
]

log = logging.getLogger(__name__)

#: settle outcomes after which the source message is acknowledged
FINAL_OUTCOMES = frozenset({"stored", "duplicate", "suppressed", "rejected"})
_NAK_DELAY_SECS = 5.0
_FETCH_WAIT_SECS = 1.0
_RETRY_SECS = 2.0

Decode = Callable[[Msg, datetime], ErrorEvent | DeadLetter]
Handle = Callable[[ErrorEvent | DeadLetter, Callable[[str], None], str | None], None]


def intake_stream_config(cfg: BridgeConfig) -> StreamConfig:
    """``<stream>_INTAKE`` on ``<prefix>_intake.>`` (see the module note)."""
    subjects = Subjects(cfg.stream.subject_prefix)
    i = cfg.intake
    return StreamConfig(
        name=f"{cfg.stream.name}_INTAKE",
        subjects=[f"{subjects.intake_prefix}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE if cfg.stream.storage is StorageKind.FILE else StorageType.MEMORY,
        num_replicas=cfg.stream.replicas,
        duplicate_window=120.0,
        max_age=i.intake_max_age_secs,
        max_bytes=i.intake_max_bytes,
    )


async def ensure_intake_stream(js: Any, cfg: BridgeConfig) -> str:
    """Create the intake stream, or leave it as it is when it exists. Returns its name; raises
    nats errors (the caller retries)."""
    wanted = intake_stream_config(cfg)
    try:
        await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        log.info("intake stream %s created on %s", wanted.name, wanted.subjects[0])
    return wanted.name  # type: ignore[return-value]


async def find_legacy_stream(js: Any) -> str | None:
    """The stream that stores ``errors.>`` (``ERRORS`` or ``ERROR_STREAM``), or None."""
    try:
        return await js.find_stream_name_by_subject(LEGACY_SUBJECTS)
    except nats.js.errors.NotFoundError:
        return None


class JetStreamInput:
    """One durable pull consumer feeding the pipeline; see the module note.

    ``name``: ``native`` or ``legacy`` (a metric label). ``stream``: a name, or a coroutine
    function returning it (None: not there yet, asked again after ``poll_secs``).
    ``paused()``: True while the pipeline catches up (nothing is fetched).
    """

    def __init__(
        self,
        name: str,
        *,
        js: Any,
        stream: Callable[[], Any],
        filter_subject: str,
        durable: str,
        decode: Decode,
        handle: Handle,
        paused: Callable[[], bool],
        cfg: IntakeConfig,
        metrics: Metrics,
        machine: str,
        poll_secs: float = 30.0,
    ) -> None:
        self.name = name
        self._js = js
        self._stream = stream
        self.filter_subject = filter_subject
        self.durable = durable
        self._decode = decode
        self._handle = handle
        self._paused = paused
        self.cfg = cfg
        self._m = metrics
        self._machine = machine
        self._poll_secs = poll_secs
        self.stream_name: str | None = None
        self._settled: deque[tuple[Msg, str]] = deque()
        self._settle_wake = anyio.Event()
        self.unsettled = 0
        self._outcomes = {
            o: metrics.intake_messages.labels(name, o)
            for o in (*FINAL_OUTCOMES, "retry", "abandoned", "redelivered")
        }

    async def run(self) -> None:
        """Consume until cancelled; NATS errors are logged and the consumer set up again."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._settle_loop)
            while True:
                try:
                    await self._consume()
                except (nats.errors.Error, OSError) as exc:
                    log.warning("%s intake: %r; retrying in %.0f s", self.name, exc, _RETRY_SECS)
                await anyio.sleep(_RETRY_SECS)

    async def _consume(self) -> None:
        stream = await self._stream()
        while stream is None:
            await anyio.sleep(self._poll_secs)
            stream = await self._stream()
        if stream != self.stream_name:
            log.info(
                "%s intake: consuming %s from stream %s", self.name, self.filter_subject, stream
            )
        self.stream_name = stream
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.cfg.ack_wait_secs,
            max_ack_pending=self.cfg.max_ack_pending,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.filter_subject,
        )
        sub = await self._js.pull_subscribe(
            self.filter_subject, durable=self.durable, stream=stream, config=config
        )
        try:
            while True:
                if self._paused() or self.unsettled >= self.cfg.max_ack_pending:
                    await anyio.sleep(0.1)
                    continue
                try:
                    msgs = await sub.fetch(self.cfg.batch_max, timeout=_FETCH_WAIT_SECS)
                except (nats.errors.TimeoutError, TimeoutError):  # an empty pull: nothing new
                    continue
                self._take(msgs)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await sub.unsubscribe()

    def _take(self, msgs: list[Msg]) -> None:
        now = datetime.now(UTC)
        for msg in msgs:
            self.unsettled += 1
            settle = self._settler(msg)
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            if deliveries > self.cfg.max_deliveries:
                self._handle(self._redelivered(msg, deliveries, now), settle, None)
                self._outcomes["redelivered"].inc()
                continue
            headers = msg.headers or {}
            self._handle(self._decode(msg, now), settle, headers.get(HEADER_CLIENT_API))

    def _settler(self, msg: Msg) -> Callable[[str], None]:
        done = False

        def settle(outcome: str) -> None:
            nonlocal done
            if done:
                return
            done = True
            self._settled.append((msg, outcome))
            self._settle_wake.set()

        return settle

    def _redelivered(self, msg: Msg, deliveries: int, now: datetime) -> DeadLetter:
        seq = msg.metadata.sequence.stream if msg.metadata else 0
        data = msg.data or b""
        return DeadLetter(
            event_id=f"redelivered-{self.stream_name}-{seq}",
            received_at=now,
            machine=self._machine,
            reason=DeadLetterReason.REDELIVERED,
            frames=[data],
            frame_sizes=[len(data)],
            detail=f"{msg.subject} (stream {self.stream_name} seq {seq}) delivered"
            f" {deliveries} times without an outcome",
        )

    async def _settle_loop(self) -> None:
        """Ack final outcomes, nak the rest with a delay, in the order they settled."""
        while True:
            if not self._settled:
                self._settle_wake = anyio.Event()
                await self._settle_wake.wait()
                continue
            msg, outcome = self._settled.popleft()
            self.unsettled -= 1
            self._outcomes.get(outcome, self._outcomes["retry"]).inc()
            try:
                if outcome in FINAL_OUTCOMES:
                    await msg.ack()
                else:
                    await msg.nak(delay=_NAK_DELAY_SECS)
            except (nats.errors.Error, OSError) as exc:  # redelivered after ack_wait: a duplicate
                log.debug("%s intake: cannot settle %s: %r", self.name, msg.subject, exc)


async def connect_legacy(cfg: BridgeConfig) -> Any:
    """A client for ``intake.legacy_servers`` (credentials and TLS of ``nats``), reconnecting
    forever once connected. Raises ``NatsUnreachable`` when it cannot connect at start."""
    return await connect_tool(cfg, name="busbridge-legacy", servers=list(cfg.intake.legacy_servers))


def native_filter(cfg: BridgeConfig) -> str:
    return Subjects(cfg.stream.subject_prefix).intakes(cfg.machine or "")


def native_durable(cfg: BridgeConfig) -> str:
    return f"busbridge_intake_{sanitise_token(cfg.machine or '')}"


def msg_id(msg: Msg) -> str | None:
    return (msg.headers or {}).get(HEADER_MSG_ID)

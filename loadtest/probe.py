"""``StreamProbe``: reads the bridge's stream live and records, per token, when it arrived.

Design note
-----------
One JetStream **ordered push consumer** (nats-py ``ordered_consumer=True``: ephemeral,
no acks, flow control, idle heartbeats) from the stream's first message. Measured on the
2-vCPU dev machine with 100k stored 300-byte messages and the per-message work below: the
ordered push consumer drains ~160k msg/s, a pull consumer (``fetch(1000)`` loop) ~33k msg/s,
so push it is; at 10-20k msg/s the probe is far from the bottleneck.

Per message (the callback; receipt time is ``time.monotonic_ns()``, CLOCK_MONOTONIC is
system-wide on Linux so it compares with the producer's send times in another process; the
time the stream stored it is in the delivery's reply subject, on the server's wall clock, and
is set against the monotonic clock with one offset taken at construction):

* the ``Busbridge-Contract`` header (contracts/subjects.py) names the type without decoding;
* ``error_event``: ``traffic.find_token`` on the raw JSON payload (the token sits in the
  message or details; no decode); the first receipt of a token is kept, later copies counted;
* ``dead_letter``: decoded (rare), token searched in the raw frames;
* ``flood_summary``: decoded: fingerprint, ``suppressed`` and the sample's token;
  ``flood_started``/``flood_ended`` counted; anything else counted as ``other``.

Survives a nats-server restart or the loss of a cluster node: the client reconnects forever
(all ``url``s), and the ordered consumer, when its idle heartbeats stop (2 x
``idle_heartbeat_secs``), recreates itself from the stream sequence after the last one it
delivered. Messages are also de-duplicated by stream sequence, so a re-delivery after such a
reset is never counted as a stored duplicate. The subscription's pending limits are off:
nats-py drops messages past them without the ordered consumer noticing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from contracts.codec import decode
from contracts.messages import DeadLetter, DeadLetterSummary, FloodSummary
from contracts.subjects import HEADER_CONTRACT
from loadtest.load_producer import SentLog
from loadtest.reconcile import Observed, reconcile
from loadtest.results import ProbeReport
from loadtest.traffic import find_token

__all__ = ["StreamProbe"]

log = logging.getLogger(__name__)

_json = msgspec.json.Encoder()


class StreamProbe:
    """Consumes ``stream`` (subjects ``subject``) from its first message and records every message.

    ``url``: one server URL or several (a cluster). ``received``: error events plus dead
    letters delivered so far (every stored copy counts). ``start`` raises ``TimeoutError``
    when the stream does not exist within ``timeout_secs`` (the bridge creates it on start).
    """

    def __init__(
        self,
        url: str | list[str],
        *,
        stream: str = "ERRBUS",
        subject: str = "errbus.>",
        idle_heartbeat_secs: float = 1.0,
    ) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.stream = stream
        self.subject = subject
        self.idle_heartbeat_secs = idle_heartbeat_secs
        self.observed = Observed()
        self.reconnects = 0
        self.errors: Counter[str] = Counter()
        self._last_sseq = 0
        #: the stored time in a delivery's metadata is the server's wall clock (ns since the
        #: epoch); minus this, it is on the monotonic clock the send times use
        self._wall_minus_monotonic_ns = time.time_ns() - time.monotonic_ns()
        self._nc: nats.NATS | None = None
        self._sub: Any = None

    @property
    def received(self) -> int:
        return self.observed.events + len(self.observed.dead_letters)

    async def start(self, timeout_secs: float = 30.0) -> None:
        self._nc = await nats.connect(
            servers=self.urls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            error_cb=self._on_error,
            reconnected_cb=self._on_reconnect,
            name="loadtest-probe",
        )
        js = self._nc.jetstream()
        deadline = time.monotonic() + timeout_secs
        while True:
            try:  # the bridge creates the stream on start; a cluster may still be electing
                await js.stream_info(self.stream)
                self._sub = await js.subscribe(
                    self.subject,
                    stream=self.stream,
                    cb=self._on_msg,
                    ordered_consumer=True,
                    idle_heartbeat=self.idle_heartbeat_secs,
                    deliver_policy=DeliverPolicy.ALL,
                    pending_msgs_limit=0,
                    pending_bytes_limit=0,
                )
                return
            except (NotFoundError, NatsTimeoutError, ServiceUnavailableError) as exc:
                if time.monotonic() > deadline:
                    await self.stop()
                    raise TimeoutError(
                        f"no consumer on stream {self.stream} within {timeout_secs} s: {exc!r}"
                    ) from exc
                await asyncio.sleep(0.2)

    async def wait_for(self, count: int, *, timeout_secs: float, idle_secs: float = 5.0) -> int:
        """Wait until ``received`` >= ``count``, ``timeout_secs`` passed, or nothing new arrived
        for ``idle_secs``; return ``received``."""
        deadline = time.monotonic() + timeout_secs
        last, last_change = self.received, time.monotonic()
        while self.received < count:
            now = time.monotonic()
            if now > deadline or now - last_change > idle_secs:
                break
            await asyncio.sleep(0.05)
            if self.received != last:
                last, last_change = self.received, time.monotonic()
        return self.received

    async def wait_quiet(self, quiet_secs: float = 1.0, *, timeout_secs: float = 30.0) -> int:
        """Wait until no message at all (of any type) arrived for ``quiet_secs``; return
        the stream messages seen."""
        deadline = time.monotonic() + timeout_secs
        last, last_change = self.observed.stream_messages, time.monotonic()
        while time.monotonic() - last_change < quiet_secs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if self.observed.stream_messages != last:
                last, last_change = self.observed.stream_messages, time.monotonic()
        return self.observed.stream_messages

    async def stop(self) -> None:
        """Unsubscribe and close the connection (idempotent)."""
        nc, self._nc = self._nc, None
        sub, self._sub = self._sub, None
        if nc is None:
            return
        try:
            if sub is not None and nc.is_connected:
                await sub.unsubscribe()
        except Exception as exc:  # a dying server must not turn teardown into an error
            log.debug("probe unsubscribe: %r", exc)
        await nc.close()

    def report(self, sent: SentLog) -> ProbeReport:
        """Reconcile what arrived so far against ``sent`` (see ``loadtest.reconcile``)."""
        return reconcile(self.observed, sent)

    # -- callbacks -------------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        now = time.monotonic_ns()
        fields = msg._get_metadata_fields(msg.reply) if msg.reply else None
        sseq = int(fields[5]) if fields else 0
        if sseq and sseq <= self._last_sseq:
            self.observed.redelivered += 1
            return
        self._last_sseq = sseq
        obs = self.observed
        obs.stream_messages += 1
        kind = msg.headers.get(HEADER_CONTRACT, "") if msg.headers else ""
        if kind == "error_event":
            stored = int(fields[7]) - self._wall_minus_monotonic_ns if fields else None
            obs.add_event(find_token(msg.data), now, stored)
        else:
            try:
                self._other(kind, msg.data, now)
            except Exception as exc:  # a message we cannot read is counted, never fatal
                self.errors[f"decode_{kind}"] += 1
                log.debug("probe could not read a %s message: %r", kind, exc)

    def _other(self, kind: str, data: bytes, now: int) -> None:
        obs = self.observed
        if kind == "dead_letter":
            dead = decode(data)
            assert isinstance(dead, DeadLetter)
            tokens = (find_token(frame) for frame in dead.frames)
            obs.dead_letters.append(next((t for t in tokens if t is not None), None))
        elif kind == "dead_letter_summary":
            summary = decode(data)
            assert isinstance(summary, DeadLetterSummary)
            obs.dead_letters_summarised += summary.suppressed
        elif kind == "flood_summary":
            summary = decode(data)
            assert isinstance(summary, FloodSummary)
            sample = find_token(summary.sample.message.encode()) or find_token(
                _json.encode(summary.sample.details)
            )
            obs.flood_summaries.append((summary.fingerprint, summary.suppressed, sample))
        elif kind == "flood_started":
            obs.flood_started += 1
        elif kind == "flood_ended":
            obs.flood_ended += 1
        else:
            obs.other[kind or "unknown"] += 1

    async def _on_error(self, exc: Exception) -> None:
        self.errors[type(exc).__name__] += 1
        log.debug("probe connection error: %r", exc)

    async def _on_reconnect(self) -> None:
        self.reconnects += 1

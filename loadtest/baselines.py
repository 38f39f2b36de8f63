"""Shared parts of the throughput baselines (``loadtest.ceiling``, ``loadtest.naive_bridge``) and
the ``throughput`` scenario: one message set, one encoder, one stream, one way to time a run.

* ``message_frames``: the message set of a run, D1 frames (legacy-bus.md §1 D1, ``ERROR:`` + JSON,
  ~300 B with ``pad_bytes=120``) with a unique legacy ``error_id`` each, so every message is one
  event and its ``Nats-Msg-Id`` is that id. Deterministic: every baseline sends the same bytes.
* ``BridgeEncoder``: legacy frames -> ``Outbound`` (subject, JSON payload, headers) with the
  bridge's own decoder, identity and outbound builder, built as ``bridge.app`` builds them,
  so the baselines pay the same decode cost and store the same bytes as busbridge.
* ``create_stream``: the stream as busbridge provisions it (default ``StreamConfig``: file
  storage, 600 s duplicate window) through ``bridge.adapters.jetstream.stream_config_for``.
* ``stream_state``: message count under a subject filter and the server's time of the last
  store (``state.last_ts`` of the JetStream stream info, wall clock, ns).
* ``ZmqSender``: a child process (multiprocessing spawn, its own GIL) that connects ``publishers``
  XPUB sockets to an endpoint like the legacy agents, waits for the subscriber, and sends the
  message set as fast as it can or at a fixed rate; its send times are wall clock (ns), so they
  compare with the server's store times on the same machine.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing as mp
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import nats

from bridge.adapters.jetstream import stream_config_for
from bridge.config.model import BridgeConfig
from bridge.config.model import StreamConfig as StreamSettings
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.publish import Outbound
from contracts.subjects import Subjects

__all__ = [
    "MACHINE",
    "BridgeEncoder",
    "StreamState",
    "ThroughputRun",
    "ZmqSender",
    "create_stream",
    "message_frames",
    "stream_state",
    "wait_stored",
]

#: the machine name busbridge runs under in the load tests (``loadtest.harness.BridgeProcess``)
MACHINE = "LoadPC"
#: events only: the subject filter that leaves out bridge events (phase changes, ...)
EVENT_SUBJECTS = "errbus.error.>"


def message_frames(
    count: int, publishers: int, pad_bytes: int = 120
) -> list[tuple[int, list[bytes]]]:
    """``count`` messages as ``(publisher, frames)``, message k from publisher ``k % publishers``;
    D1 frames whose legacy ``error_id`` is unique per (publisher, n)."""
    build = _d1_builder()
    return [
        (k % publishers, build(k % publishers, k // publishers, pad_bytes)) for k in range(count)
    ]


def _d1_builder() -> Any:
    """``loadtest.traffic.frames`` (its token is the error_id), else ``loadtest.producer.envelope``."""
    try:
        from loadtest.traffic import frames
    except ImportError:
        from loadtest.producer import envelope

        return lambda pub, n, pad: [envelope(pub, n, pad=pad)]
    return lambda pub, n, pad: frames(
        "D1", pub, n, source=f"Agent{pub:03d}", error_type="memory_scheduler_timeout", pad_bytes=pad
    )


class BridgeEncoder:
    """``encode(frames) -> Outbound``: decode + identity + outbound, as ``bridge.app`` wires them
    for a default config of machine ``machine`` (bridge id = machine)."""

    def __init__(self, machine: str = MACHINE, cfg: BridgeConfig | None = None) -> None:
        cfg = cfg or BridgeConfig(machine=machine, bridge_id=machine)
        identity = EventIdentity(
            cfg.identity.occurrence_window_secs, cfg.identity.max_tracked, time.monotonic
        )
        self.decoder = LegacyDecoder(
            machine=machine,
            identity=identity,
            local_tz=ZoneInfo(cfg.legacy.local_timezone),
            max_frame_bytes=cfg.zmq.max_frame_bytes,
            oversized_keep_bytes=cfg.zmq.oversized_keep_bytes,
        )
        self.builder = OutboundBuilder(
            Subjects(cfg.stream.subject_prefix),
            cfg.bridge_id or machine,
            cfg.nats.embedded.max_payload_bytes,
        )

    def encode(self, frames: list[bytes], received_at: datetime | None = None) -> Outbound:
        return self.builder.build(self.decoder.decode(frames, received_at or datetime.now(UTC)))


async def create_stream(url: str, settings: StreamSettings | None = None) -> None:
    """Create the stream busbridge would provision (default settings: ERRBUS, file storage)."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(stream_config_for(settings or StreamSettings()))
    finally:
        await nc.close()


class StreamState(msgspec.Struct, frozen=True):
    """``messages`` under the filter; ``last_ts_ns``: wall-clock time of the stream's last store."""

    messages: int
    last_ts_ns: int


class _Info(msgspec.Struct):
    state: dict[str, Any] = {}


async def stream_state(
    nc: nats.NATS, stream: str = "ERRBUS", subjects: str = EVENT_SUBJECTS
) -> StreamState:
    """Count of messages on ``subjects`` (JetStream ``subjects_filter``) and the last store time."""
    req = msgspec.json.encode({"subjects_filter": subjects})
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", req, timeout=5)
    state = msgspec.json.decode(reply.data, type=_Info).state
    count = sum((state.get("subjects") or {}).values())
    return StreamState(count, _rfc3339_ns(state.get("last_ts", "")))


def _rfc3339_ns(text: str) -> int:
    """``2026-11-21T08:02:16.503872123Z`` -> epoch ns (0 for the zero time or garbage)."""
    if not text or text.startswith("0001-"):
        return 0
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        secs = datetime.fromisoformat(head + "+00:00").timestamp()
    except ValueError:
        return 0
    return int(secs) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)


async def wait_stored(
    url: str, expected: int, *, timeout_secs: float, idle_secs: float = 5.0
) -> StreamState:
    """Poll until ``expected`` events are stored, or no progress for ``idle_secs``, or the timeout."""
    nc = await nats.connect(url)
    try:
        deadline, last, moved_at = time.monotonic() + timeout_secs, -1, time.monotonic()
        while True:
            state = await stream_state(nc)
            if state.messages != last:
                last, moved_at = state.messages, time.monotonic()
            now = time.monotonic()
            if state.messages >= expected or now > deadline or now - moved_at > idle_secs:
                return state
            await asyncio.sleep(0.02)
    finally:
        await nc.close()


class ThroughputRun(msgspec.Struct, frozen=True, kw_only=True):
    """One baseline run. ``throughput_per_sec`` = ``stored`` / ``elapsed_secs``; ``elapsed_secs``:
    first send -> last store (ZMQ targets) or first publish -> last PubAck (the ceiling).
    ``lossless``: every message stored exactly once (``stored == sent``, dropped 0; copies are
    impossible: unique ``Nats-Msg-Id`` values within the stream's duplicate window)."""

    target: str
    sent: int
    stored: int
    elapsed_secs: float
    throughput_per_sec: float
    lossless: bool
    send_rate_per_sec: float = 0.0
    extra: dict[str, Any] = {}


# --- the ZMQ sender (child process) ---------------------------------------------------------


class ZmqSender:
    """Sends ``message_frames(count, publishers, pad_bytes)`` to ``endpoint`` from a child process.

    ``rate_per_sec`` 0: as fast as possible; else paced to that total rate. ``start()`` returns
    once every socket saw the subscriber (raises ``TimeoutError`` otherwise); ``sent`` is a live
    counter; ``wait()`` joins the child and returns ``(first_send_ns, last_send_ns)`` (wall clock).
    ``stop()`` ends the child early (by its PID) and is idempotent.
    """

    def __init__(
        self,
        endpoint: str,
        count: int,
        publishers: int,
        *,
        pad_bytes: int = 120,
        rate_per_sec: float = 0.0,
    ) -> None:
        ctx = mp.get_context("spawn")
        self._sent = ctx.Value(ctypes.c_long, 0, lock=False)
        self._times = ctx.Array(ctypes.c_longlong, 2, lock=False)
        self._ready, self._go, self._halt = ctx.Event(), ctx.Event(), ctx.Event()
        self._proc = ctx.Process(
            target=_send_main,
            args=(
                endpoint,
                count,
                publishers,
                pad_bytes,
                rate_per_sec,
                self._sent,
                self._times,
                self._ready,
                self._go,
                self._halt,
            ),
            name="zmq-sender",
            daemon=True,
        )

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def start(self, timeout_secs: float = 30.0) -> None:
        """Start the child; return once it is connected (frames built, subscriptions seen)."""
        self._proc.start()
        if not self._ready.wait(timeout_secs) or not self._proc.is_alive():
            self.stop()
            raise TimeoutError("the ZMQ sender did not connect (is the subscriber bound?)")

    def go(self) -> None:
        """Start sending."""
        self._go.set()

    def wait(self, timeout_secs: float | None = None) -> tuple[int, int]:
        self._proc.join(timeout_secs)
        if self._proc.is_alive():
            raise TimeoutError("the ZMQ sender is still sending")
        return int(self._times[0]), int(self._times[1])

    def stop(self) -> None:
        self._halt.set()
        self._go.set()
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


def _send_main(endpoint, count, publishers, pad_bytes, rate, sent, times, ready, go, halt) -> None:  # type: ignore[no-untyped-def]
    import zmq

    from loadtest.replay import connect_publishers

    messages = message_frames(count, publishers, pad_bytes)
    with zmq.Context() as ctx:
        socks = connect_publishers(ctx, endpoint, publishers, timeout_secs=20.0)
        ready.set()
        go.wait()
        times[0] = time.time_ns()
        start, interval = time.perf_counter(), 1.0 / rate if rate > 0 else 0.0
        for k, (pub, frames) in enumerate(messages):
            socks[pub].send_multipart(frames)
            if interval or k % 1024 == 1023:  # paced: a live count; full speed: cheap
                sent.value = k + 1
                if halt.is_set():
                    break
            if interval:
                ahead = start + (k + 1) * interval - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
        else:
            sent.value = len(messages)
        times[1] = time.time_ns()
        for s in socks:
            s.close(linger=30_000)

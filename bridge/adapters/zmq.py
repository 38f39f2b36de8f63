"""Legacy ZMQ ingest (with ``bridge.adapters.zmq_curve`` for CURVE): the only ingest code importing ``zmq``.

A SUB socket subscribed to everything (``""``: an ``ERROR:`` filter would lose
D2, D5 and D6), either **bound** on ``tcp://*:7150`` (the legacy agents
connect; nothing else ever bound a SUB there) or **connected** to publishers
that bind (pooled ``ErrorPublisher``/``PC2ErrorPublisher`` sockets). RCVHWM is
raised (libzmq's default 1000 silently loses bursts) and every message is read
with ``recv_multipart`` because the same topic comes in one or two frames.

The receive loop is a plain drain of the socket (``NOBLOCK``) in batches of at
most ``batch_max`` messages or ``batch_max_secs``, calling a synchronous
handler with the messages read, up to 32 at a time, in read order (so per-message
counters are added once per call); between batches it yields to the event loop (publishing
and PubAcks keep flowing under a burst). A turn that took messages and left the socket
empty is followed by a pause of ``gather_secs`` before the next read, so what arrives
meanwhile is taken in one turn: each turn sets off one pass of everything behind the reader
(spool commit and WAL sync, publisher, flush), and under steady traffic those passes, not
the messages, were the larger part of the bridge's CPU (10k msg/s D1: 78 -> 68 us per
message with 2 ms; loadtest/README.md). A message that finds the reader idle is read at
once. When the socket is empty it waits on the ZMQ file descriptor (edge-triggered:
``EVENTS`` is checked before every wait). It never awaits anything else, so it never waits
on NATS.

A socket monitor counts open publisher connections (``ACCEPTED``/``CONNECTED``
add the connection's fd, ``DISCONNECTED``/``CLOSED`` remove it); handshake
successes and failures are reported as events (libzmq gives no fd with them).
A peer of the wrong kind (a PUB connecting to a PUB) fails its handshake and is
disconnected at once, so it does not stay counted. Failed handshakes are
reported by cause: ``handshake_failed_auth`` (ZAP refused the client: CURVE
allowlist), ``handshake_failed_protocol`` (e.g. a plain client on a CURVE
socket, a wrong socket type), ``handshake_failed_no_detail``.

Optional CURVE (``zmq.curve``): ``bridge.adapters.zmq_curve`` supplies the keys,
the ZAP allowlist and the "no handshake" warning, checked by the monitor loop.

Frame size: libzmq hands over a message only once it has received all of it, so
the bridge cannot refuse a big frame before it is in memory. Two limits:
``zmq.max_frame_bytes`` is read-side (the decoder dead-letters the message as
``oversized`` keeping the first ``oversized_keep_bytes`` of each frame and the
sizes; the publisher stays connected), ``zmq.hard_max_frame_bytes`` is
``ZMQ_MAXMSGSIZE`` (libzmq disconnects a peer whose frame is bigger, while
receiving it: nothing is read, nothing dead-lettered, the frame is lost). Worst
case memory: the hard cap times the messages queued in libzmq (``rcvhwm``);
the read loop drains the queue continuously, so one or two big frames are held
at a time in practice, each freed as soon as it is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

import anyio
import anyio.lowlevel
import zmq
from zmq.utils.monitor import parse_monitor_message

from bridge.adapters.zmq_curve import CurveServer, HandshakeWatch
from bridge.config.model import ZmqConfig, ZmqMode

__all__ = ["Admission", "BatchHandler", "IngestSocket", "Readable", "read_batches"]

log = logging.getLogger(__name__)

_MONITOR_EVENTS = {
    zmq.EVENT_ACCEPTED: "accepted",
    zmq.EVENT_CONNECTED: "connected",
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "handshake_succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake_failed_no_detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake_failed_protocol",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake_failed_auth",
    zmq.EVENT_DISCONNECTED: "disconnected",
    zmq.EVENT_CLOSED: "closed",
}
_OPENED = {"accepted", "connected"}
_GONE = {"disconnected", "closed"}

BatchHandler = Callable[
    [list[list[bytes]]], None
]  # messages (each a list of frames), in read order
EventHandler = Callable[[str, int], None]


class Admission(Protocol):
    """Backpressure from the handler (``bridge.adapters.decode_worker.DecodeWorker``): while
    ``ready()`` is False nothing more is read (libzmq's RCVHWM queue holds it);
    ``wait_ready()`` returns once it may be True again."""

    def ready(self) -> bool: ...

    async def wait_ready(self) -> None: ...


class IngestSocket:
    """The bridge's SUB socket. ``open()`` then ``run(handler)``; ``close()`` releases the port.

    ``on_event(name, publishers_connected)`` is called for each monitor event.
    """

    def __init__(self, cfg: ZmqConfig, on_event: EventHandler | None = None) -> None:
        self.cfg = cfg
        self._on_event = on_event or (lambda name, connected: None)
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self._monitor: zmq.Socket[bytes] | None = None
        self._open_fds: set[int] = set()
        self.endpoints: list[str] = []
        self.curve: CurveServer | None = None
        self._watch: HandshakeWatch | None = None

    @property
    def publishers_connected(self) -> int:
        return len(self._open_fds)

    def open(self) -> list[str]:
        """Create, configure and bind/connect the socket; return its endpoints.

        Raises ``zmq.ZMQError`` (e.g. EADDRINUSE when another process holds 7150), or
        ``ConfigError`` when CURVE key files are unusable.
        """
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.cfg.rcvhwm)
        if self.cfg.rcvbuf_bytes:
            sock.setsockopt(zmq.RCVBUF, self.cfg.rcvbuf_bytes)
        sock.setsockopt(zmq.MAXMSGSIZE, self.cfg.hard_max_frame_bytes)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._monitor = sock.get_monitor_socket()
        self._sock = sock
        try:
            self._secure(sock)
            self.endpoints = self._attach(sock)
        except BaseException:
            self.close()
            raise
        return self.endpoints

    def _secure(self, sock: zmq.Socket[bytes]) -> None:
        """CURVE server + ZAP allowlist, when configured (the ZAP handler runs before the bind)."""
        if not self.cfg.curve.enabled:
            return
        self.curve = CurveServer(self._ctx, self.cfg.curve)
        self.curve.start()
        self.curve.apply(sock)
        self._watch = HandshakeWatch(self.cfg.curve.handshake_warn_secs, time.monotonic)

    def _attach(self, sock: zmq.Socket[bytes]) -> list[str]:
        if self.cfg.mode is ZmqMode.BIND:
            sock.bind(self.cfg.bind_endpoint)
            endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            log.info("ZMQ SUB bound on %s (RCVHWM %d)", endpoint, self.cfg.rcvhwm)
            return [endpoint]
        for endpoint in self.cfg.connect_endpoints:
            sock.connect(endpoint)
        log.info("ZMQ SUB connecting to %s", ", ".join(self.cfg.connect_endpoints))
        return list(self.cfg.connect_endpoints)

    async def run(self, handler: BatchHandler, admission: Admission | None = None) -> None:
        """Read until cancelled, calling ``handler(messages)`` with up to 32 messages at a time
        (only while ``admission.ready()``, when given)."""
        sock = self._sock
        assert sock is not None, "open() first"
        cfg = self.cfg
        await read_batches(
            sock, handler, cfg.batch_max, cfg.batch_max_secs, admission, cfg.gather_secs
        )

    async def run_monitor(self) -> None:
        """Track handshakes and disconnects until cancelled."""
        mon = self._monitor
        assert mon is not None, "open() first"
        with Readable(mon) as readable:
            while True:
                while mon.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    self._on_monitor(parse_monitor_message(mon.recv_multipart(zmq.NOBLOCK)))
                warning = self._watch.due() if self._watch is not None else None
                if warning:
                    log.warning("%s", warning)
                await readable.wait()

    def _on_monitor(self, event: dict) -> None:
        name = _MONITOR_EVENTS.get(event["event"])
        if name is None:
            return
        fd = int(event["value"])
        if name in _OPENED:
            self._open_fds.add(fd)
        elif name in _GONE:
            self._open_fds.discard(fd)
        if self._watch is not None:
            self._watch.observe(name)
        self._on_event(name, len(self._open_fds))

    def close(self) -> None:
        """Close the sockets (linger 0) and release the port. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.disable_monitor()
            sock.close(linger=0)
        mon, self._monitor = self._monitor, None
        if mon is not None:
            mon.close(linger=0)
        curve, self.curve = self.curve, None
        if curve is not None:  # after the socket: never a moment without the allowlist
            curve.stop()
        self._open_fds.clear()
        if not self._ctx.closed:
            self._ctx.term()


_CHUNK = 32


async def read_batches(
    sock: zmq.Socket[bytes],
    handler: BatchHandler,
    batch_max: int = 2048,
    batch_max_secs: float = 0.01,
    admission: Admission | None = None,
    gather_secs: float = 0.0,
) -> None:
    """Read ``sock`` until cancelled, as ``IngestSocket.run`` does (see the module note): drain it
    in turns of at most ``batch_max`` messages or ``batch_max_secs``, ``handler`` called with up to
    32 messages at a time, yielding to the event loop between turns, pausing ``gather_secs``
    after a turn that took messages and emptied the socket, waiting on its FD when empty;
    with ``admission``, reading only while ``admission.ready()``."""
    ready = admission.ready if admission is not None else None
    with Readable(sock) as readable:
        while True:
            if ready is not None and not ready():
                await admission.wait_ready()  # type: ignore[union-attr]
                continue
            more, took = _drain(sock, handler, batch_max, time.monotonic() + batch_max_secs, ready)
            if more:
                await anyio.lowlevel.checkpoint()  # more is waiting: let the other tasks run first
            elif took and gather_secs > 0:
                await anyio.sleep(gather_secs)  # then read again: an empty read waits on the FD
            else:
                await readable.wait()


def _drain(
    sock: zmq.Socket[bytes],
    handler: BatchHandler,
    batch_max: int,
    deadline: float,
    ready: Callable[[], bool] | None = None,
) -> tuple[bool, int]:
    """Handle waiting messages until the socket is empty, or until ``batch_max`` messages or
    the ``deadline`` (monotonic seconds, checked every 32) are reached or ``ready()`` says no.
    Returns (more may be waiting, messages handled)."""
    recv = sock.recv_multipart
    left = batch_max
    while left > 0:
        if ready is not None and not ready():
            return True, batch_max - left
        chunk: list[list[bytes]] = []
        for _ in range(min(_CHUNK, left)):
            try:
                chunk.append(recv(zmq.NOBLOCK))
            except zmq.Again:
                if chunk:
                    handler(chunk)
                return False, batch_max - left + len(chunk)
        handler(chunk)
        left -= len(chunk)
        if time.monotonic() > deadline:
            return True, batch_max - left
    return True, batch_max


class Readable:
    """Waits until a ZMQ socket may have input: one reader callback on its FD for as long as
    the ``with`` block runs (``loop.add_reader``, as pyzmq's own asyncio sockets do), setting
    an ``asyncio.Event``. ``anyio.wait_readable`` with ``move_on_after`` per wait added and
    removed the reader every time: 12% of the bridge's GIL time at 1k msg/s (``py-spy --gil``).

    The FD is edge-triggered: ``wait`` clears the event, then checks ``EVENTS`` (which also
    resets the FD), then waits; a signal after the check sets the event again, so none is
    missed. A timer (``safety_secs``) is the safety net. The bridge runs on asyncio (nats-py
    needs it). The callback reads ``EVENTS`` too: asyncio's selector is level-triggered, and
    libzmq keeps the FD readable until ``EVENTS`` or a receive resets it, so while nobody
    waits (the reader pausing, or held back by ``admission``) the loop would otherwise
    find the FD ready at every turn and never sleep."""

    def __init__(self, sock: zmq.Socket[bytes], safety_secs: float = 1.0) -> None:
        self._sock = sock
        self._safety_secs = safety_secs
        self._fd = sock.getsockopt(zmq.FD)
        self._event = asyncio.Event()
        self._woken = False
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> Readable:
        self._loop.add_reader(self._fd, self._on_fd)
        return self

    def _on_fd(self) -> None:
        self._sock.getsockopt(zmq.EVENTS)  # resets the FD (see the class note)
        self._event.set()

    def __exit__(self, *exc: object) -> None:
        self._loop.remove_reader(self._fd)

    def wake(self) -> None:
        """End the current (or next) ``wait`` now, e.g. when something else needs a look."""
        self._woken = True
        self._event.set()

    async def wait(self) -> None:
        self._event.clear()
        if self._woken:
            self._woken = False
            return
        if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            return
        timer = self._loop.call_later(self._safety_secs, self._event.set)
        try:
            await self._event.wait()
        finally:
            timer.cancel()

"""Health-check I/O towards legacy agents: ZMQ REQ and HTTP GET (legacy-bus.md §4).

The ingest socket (``bridge.adapters.zmq``) and this module are the two users
of ``zmq``; admin HTTP and this module the two of ``aiohttp``: the probe
clients live apart from the 7150 ingest path so a slow agent can never touch it.

``ProbeClient`` (``async with``) owns one ZMQ context and one HTTP session.

* ``zmq_session(endpoint, timeout_secs)``: an async context manager around a
  fresh REQ socket (``LINGER 0``) connected to ``endpoint``; ``await
  session.request(data) -> Answer`` sends one frame and waits for the reply.
  No reply within ``timeout_secs`` raises ``NoAnswer``, and the socket - stuck
  in REQ's send/receive lockstep - is useless from then on: it is closed when the
  session ends, and the next probe connects a new one (the legacy "lazy pirate"
  reset). A socket monitor tells why there was no answer: ``connection_refused``
  (no listener: connect retried), ``protocol_mismatch`` (TCP connected but no
  ZMTP handshake completed: not a ZMQ socket there, e.g. an HTTP server; libzmq
  does the handshake in its I/O thread, so even a hung agent completes it) or
  ``timeout`` (a ZMQ peer that did not answer).
* ``http_get(url, timeout_secs)``: ``GET`` without keep-alive; any HTTP status is
  an ``Answer`` (the caller judges it); ``NoAnswer`` with ``connection_refused``,
  ``timeout`` or ``http_failure`` (reset, not HTTP) otherwise.

Bodies and replies are read up to ``max_reply_bytes`` + 1 bytes (the caller cuts
them for storage). Nothing here blocks the event loop: sockets are
non-blocking and waited on through their file descriptors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import NamedTuple

import aiohttp
import anyio
import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = ["Answer", "NoAnswer", "ProbeClient", "ZmqSession"]

_MONITOR_MASK = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
)
#: a bigger reply makes libzmq drop the peer (memory bound against a runaway agent); real ones are small
_MAX_ZMQ_MESSAGE_BYTES = 16 * 1024 * 1024
_HANDSHAKE_FAILED = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL


class Answer(NamedTuple):
    """A reply: ``payload`` bytes, ``http_status`` (``None`` over ZMQ), ``latency_secs`` request to reply."""

    payload: bytes
    http_status: int | None
    latency_secs: float


class NoAnswer(Exception):
    """No reply; ``reason`` is one of ``timeout``, ``connection_refused``, ``protocol_mismatch``, ``http_failure``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ZmqSession:
    """One REQ socket's exchanges with one agent (see the module note)."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        timeout_secs: float,
        max_bytes: int,
    ) -> None:
        self._sock, self._monitor = sock, monitor
        self._timeout = timeout_secs
        self._max_bytes = max_bytes
        self._events = 0
        self._broken = False

    async def request(self, data: bytes) -> Answer:
        """Send ``data``, return the reply. Raises ``NoAnswer``."""
        if self._broken:
            raise NoAnswer("timeout", "socket reset after an earlier timeout")
        started = time.monotonic()
        self._sock.send(data, zmq.NOBLOCK)
        with anyio.move_on_after(self._timeout):
            while True:
                if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    frames = self._sock.recv_multipart(zmq.NOBLOCK)
                    payload = b"".join(frames)[: self._max_bytes + 1]
                    return Answer(payload, None, time.monotonic() - started)
                with anyio.move_on_after(0.05):  # FD is edge-triggered: re-check EVENTS often
                    await anyio.wait_readable(self._sock.getsockopt(zmq.FD))
        self._broken = True
        raise NoAnswer(self._why(), f"no reply within {self._timeout:g} s")

    def _why(self) -> str:
        while self._monitor.poll(0):
            self._events |= parse_monitor_message(self._monitor.recv_multipart())["event"]
        if self._events & zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return "timeout"
        if self._events & (
            _HANDSHAKE_FAILED | zmq.EVENT_CONNECTED
        ):  # TCP accepted, no ZMTP handshake
            return "protocol_mismatch"
        if self._events & zmq.EVENT_CONNECT_RETRIED:
            return "connection_refused"
        return "timeout"


class ProbeClient:
    """ZMQ context and HTTP session for probes; use as ``async with ProbeClient(...) as client``."""

    def __init__(self, max_reply_bytes: int = 16384, max_connections: int = 64) -> None:
        self.max_reply_bytes = max_reply_bytes
        self._max_connections = max_connections
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ProbeClient:
        self._ctx = zmq.Context()
        connector = aiohttp.TCPConnector(limit=self._max_connections, force_close=True)
        self._http = aiohttp.ClientSession(
            connector=connector, headers={"User-Agent": "busbridge-health"}
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):
            if self._http is not None:
                await self._http.close()
        if self._ctx is not None:
            self._ctx.destroy(linger=0)  # closes any socket left open, never waits

    @asynccontextmanager
    async def zmq_session(self, endpoint: str, timeout_secs: float) -> AsyncIterator[ZmqSession]:
        """A fresh REQ socket connected to ``endpoint``; closed (``LINGER 0``) on exit."""
        assert self._ctx is not None, "use ProbeClient in 'async with'"
        sock = self._ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, _MAX_ZMQ_MESSAGE_BYTES)
        monitor = sock.get_monitor_socket(_MONITOR_MASK)
        try:
            sock.connect(endpoint)
            yield ZmqSession(sock, monitor, timeout_secs, self.max_reply_bytes)
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)

    async def http_get(self, url: str, timeout_secs: float) -> Answer:
        """``GET url``; any status is an answer. Raises ``NoAnswer``."""
        assert self._http is not None, "use ProbeClient in 'async with'"
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=timeout_secs)
        try:
            async with self._http.get(url, timeout=timeout, allow_redirects=False) as resp:
                payload = await resp.content.read(self.max_reply_bytes + 1)
                return Answer(payload, resp.status, time.monotonic() - started)
        except aiohttp.ClientConnectorError as exc:
            raise NoAnswer("connection_refused", str(exc)) from exc
        except TimeoutError as exc:
            raise NoAnswer("timeout", f"no reply within {timeout_secs:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NoAnswer("http_failure", f"{type(exc).__name__}: {exc}") from exc

"""Legacy republish: a ZMQ PUB that legacy subscribers connect to (DESIGN §4).

The bridge's SUB holds :7150, so legacy subscribers move to this socket
(default ``tcp://*:17150``). It carries, depending on the phase, the frames read
on :7150 byte for byte and NATS-native events encoded as D1
(``bridge.legacy.reemit``). PUB semantics as on the legacy bus: ``send``
never blocks; a subscriber more than ``sndhwm`` messages behind loses
messages (libzmq drops them without telling the sender).
"""

from __future__ import annotations

import logging

import zmq

from bridge.config.model import RepublishConfig

__all__ = ["LegacyRepublisher"]

log = logging.getLogger(__name__)


class LegacyRepublisher:
    """``open()`` binds and returns the endpoint; ``send(frames)``; ``close()`` releases the port."""

    def __init__(self, cfg: RepublishConfig) -> None:
        self.cfg = cfg
        self._ctx = zmq.Context()
        self._sock: zmq.Socket[bytes] | None = None
        self.endpoint = ""

    def open(self) -> str:
        """Bind the PUB socket. Raises ``zmq.ZMQError`` (e.g. EADDRINUSE)."""
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.cfg.sndhwm)
        try:
            sock.bind(self.cfg.bind_endpoint)
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self._sock = sock
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        log.info("legacy republish PUB bound on %s", self.endpoint)
        return self.endpoint

    def send(self, frames: list[bytes]) -> None:
        """Send one message (1+ frames) to every subscriber; never blocks."""
        sock = self._sock
        if sock is None:
            return
        if len(frames) == 1:  # most legacy messages: half of send_multipart's cost (0.5 us)
            sock.send(frames[0], zmq.NOBLOCK)
        else:
            sock.send_multipart(frames, zmq.NOBLOCK)

    def close(self) -> None:
        """Close the socket (linger 0) and release the port. Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(linger=0)
        if not self._ctx.closed:
            self._ctx.term()

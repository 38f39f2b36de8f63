"""Legacy-style load producer: N ZMQ publisher sockets sending D1 envelopes at a target rate.

Every message carries a unique legacy ``error_id`` ``p<publisher>-<n>`` (so the
stored msg id tells who sent it and in which order) and a ~300-byte envelope
like ``ErrorPublisher.publish_error`` sends (legacy-bus.md D1). Runs in a
thread; ``sent`` lists ``(publisher, n)`` in send order per publisher.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import zmq

from loadtest.replay import connect_publishers

__all__ = ["SteadyProducer", "envelope", "parse_id"]


def envelope(publisher: int, n: int, severity: str = "error", pad: int = 120) -> bytes:
    """One D1 frame (``ERROR:`` + JSON) with error_id ``p<publisher>-<n>``."""
    payload = {
        "message_type": "error_report",
        "source": f"Agent{publisher:03d}",
        "timestamp": "2026-11-21T08:02:16.503872",
        "error_data": {
            "error_id": f"p{publisher:03d}-{n:09d}",
            "error_type": "memory_scheduler_timeout",
            "severity": severity,
            "details": {
                "endpoint": "tcp://192.168.100.17:7140",
                "attempt": n % 7,
                "pad": "x" * pad,
            },
        },
    }
    return b"ERROR:" + json.dumps(payload).encode()


def parse_id(msg_id: str) -> tuple[int, int]:
    """``p007-000000042`` -> ``(7, 42)``."""
    pub, n = msg_id.split("-")
    return int(pub[1:]), int(n)


class SteadyProducer:
    """Sends from ``publishers`` sockets at ``rate`` messages/s in total until ``stop()``.

    ``severities`` cycles per message. Thread-safe ``sent_count``; ``sent`` per publisher.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        publishers: int = 4,
        rate: float = 1000.0,
        severities: Sequence[str] = ("error",),
    ) -> None:
        self.endpoint = endpoint
        self.publishers = publishers
        self.rate = rate
        self.severities = list(severities)
        self.sent: list[list[int]] = [[] for _ in range(publishers)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-producer", daemon=True)
        self._ready = threading.Event()
        self.error: BaseException | None = None

    @property
    def sent_count(self) -> int:
        return sum(len(s) for s in self.sent)

    def start(self, timeout_secs: float = 10.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout_secs):
            raise TimeoutError(f"producer could not connect: {self.error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            with zmq.Context() as ctx:
                socks = connect_publishers(ctx, self.endpoint, self.publishers)
                self._ready.set()
                self._send_until_stopped(socks)
                for s in socks:
                    s.close(linger=10_000)
        except BaseException as exc:  # surfaced through .error and start()
            self.error = exc
            self._ready.set()

    def _send_until_stopped(self, socks: list[zmq.Socket]) -> None:
        start, k = time.perf_counter(), 0
        while not self._stop.is_set():
            pub = k % self.publishers
            n = len(self.sent[pub])
            socks[pub].send(envelope(pub, n, self.severities[k % len(self.severities)]))
            self.sent[pub].append(n)
            k += 1
            ahead = start + k / self.rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)

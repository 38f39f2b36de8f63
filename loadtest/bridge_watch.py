"""Watching a ``busbridge run`` child from outside: RSS and CPU time from /proc, metrics and
readiness from its admin HTTP port, the backlog drain after a NATS outage.

Shared by ``loadtest.outage_bench`` and the chaos scenarios (loadtest/scenarios/chaos.py).
All calls are blocking (urllib, /proc); async callers run them in a worker thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

import nats
from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "BridgeSampler",
    "Drain",
    "measure_drain",
    "metric",
    "process_cpu_secs",
    "ready",
    "status_kib",
    "stream_count",
]


def status_kib(pid: int, key: str, *, children: bool = True) -> int:
    """``VmRSS``/``RssAnon``/... of ``pid`` in KiB from /proc/<pid>/status, plus the same of its
    child processes when ``children`` (the bridge's decode worker: the sidecar's memory is both;
    ``VmHWM`` sums each one's peak); 0 when the process is gone."""
    total = _status_kib(pid, key)
    if children:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        total += sum(_status_kib(int(kid), key) for kid in kids)
    return total


def process_cpu_secs(pid: int | None, *, children: bool = True) -> float:
    """User + system CPU seconds ``pid`` has used so far (/proc/<pid>/stat ``utime`` +
    ``stime``), plus its live child processes' when ``children`` (the bridge's decode worker);
    0.0 when the process is gone or ``pid`` is None. Clock ticks: 10 ms on this Linux."""
    if pid is None:
        return 0.0
    total = _stat_ticks(pid)
    if children:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        total += sum(_stat_ticks(int(kid)) for kid in kids)
    return total / _TICKS_PER_SEC


_TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")


def _stat_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))


def _status_kib(pid: int, key: str) -> int:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def metric(admin_port: int, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``, from the bridge's
    ``/metrics`` (counters by their ``_total`` name); 0.0 when the bridge does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(_sample_lines(text, name))
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _sample_lines(text: str, name: str) -> str:
    """The lines of an exposition ``text`` that are samples called ``name``. The parser then
    reads a few lines instead of all (~540 lines of the bridge's: ~6 ms of this process's GIL,
    shared with the probe, whose receipt times it would delay)."""
    cut = len(name)
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(name) and line[cut : cut + 1] in ("{", " ")
    )


def ready(admin_port: int) -> bool:
    """True when the bridge's ``/readyz`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


async def stream_count(url: str, stream: str = "ERRBUS") -> int:
    """Messages ``stream`` holds now."""
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


class Drain(NamedTuple):
    """A backlog drain: from the NATS restart until the bridge is ready again (spool empty)."""

    secs: float  # restart -> /readyz 200
    stored: int  # messages the stream gained meanwhile (backlog and live traffic)
    drained: bool  # False: still not ready after max_secs

    @property
    def rate_per_sec(self) -> float:
        return self.stored / self.secs if self.secs > 0 else 0.0


def measure_drain(
    url: str,
    admin_port: int,
    max_secs: float,
    poll_secs: float = 0.1,
    stored_before: int | None = None,
) -> Drain:
    """Call right after the nats-server came back: wait for ``/readyz`` (NATS connected, no
    backlog waiting in the spool) and count what the stream gained meanwhile.
    ``stored_before``: the stream's count taken before the server stopped (it stores nothing
    while down); without it the count is taken here, after the restart, and a bridge that
    reconnects and drains a small backlog before that count is taken shows nothing gained."""
    t0 = time.monotonic()
    c0 = asyncio.run(stream_count(url)) if stored_before is None else stored_before
    while not ready(admin_port) and time.monotonic() - t0 < max_secs:
        time.sleep(poll_secs)
    t1, c1 = time.monotonic(), asyncio.run(stream_count(url))
    return Drain(t1 - t0, c1 - c0, t1 - t0 < max_secs)


class BridgeSampler(threading.Thread):
    """Samples the bridge's RSS and spool depth every ``interval_secs`` until ``stop()``."""

    def __init__(self, pid: int, admin_port: int, interval_secs: float = 0.25) -> None:
        super().__init__(daemon=True, name="bridge-sampler")
        self.pid, self.admin_port, self.interval_secs = pid, admin_port, interval_secs
        self.rss_kib: list[int] = []
        self.spool_peak = 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        while not self._stop_flag.wait(self.interval_secs):
            self.rss_kib.append(status_kib(self.pid, "VmRSS"))
            self.spool_peak = max(
                self.spool_peak, int(metric(self.admin_port, "busbridge_spool_messages"))
            )

    def stop(self) -> None:
        self._stop_flag.set()
        if self.is_alive():
            self.join(5)

"""Where a bridge's memory goes under steady load: the bridge in this process, sampled from inside.

``python -m loadtest.memory_probe --rate 5000 --duration 300`` starts a nats-server (temp dir,
free port), runs ``bridge.app.Bridge`` in this process with the load-test bridge config
(``loadtest.harness.BridgeProcess``: phase ``dual``, spool on, flood control off) and a
``LoadProducer`` child sending the workload (all seven dialects by default), and prints a JSON
line every ``--interval`` seconds with:

* ``rss_mib`` / ``anon_mib``: VmRSS / RssAnon of this process;
* ``heap_used_mib`` / ``heap_free_mib`` / ``mmap_mib`` / ``arenas``: glibc ``mallinfo2``
  (in-use and free bytes in the malloc heaps of every arena, bytes in mmapped chunks, the
  number of malloc arenas the threads use): free bytes that stay in the heaps are
  fragmentation (``malloc_trim`` may give them back), used bytes are live;
* ``py_blocks``: ``sys.getallocatedblocks()`` (live Python objects' memory blocks);
  ``pymalloc_arenas_mib`` / ``pymalloc_used_mib``: CPython's small-object allocator
  (``sys._debugmallocstats``): bytes in its 1 MiB arenas vs bytes in blocks in use; an arena
  goes back to the OS only when every block in it is free, so arenas >> used is fragmentation;
* ``sizes``: ``len()`` of every bounded structure on the data path (identity window, dedup
  window, parity ledger, flood states, publisher queues, spool staging);
* ``unread``: messages the producer sent that the bridge has not read yet (in the kernel's
  and libzmq's receive queues: libzmq's take memory in its I/O thread's malloc arena);
* ``gc``: collections of the cyclic GC since the previous sample per generation, and the
  longest and total pause of generation 2 in ms (a full collection walks every tracked
  object: the event loop, and so the ZMQ reader, stands still meanwhile);
* ``arenas``: per glibc malloc arena, MiB taken from the system and MiB free in it;
* with ``--trim``: RSS just after ``malloc_trim(0)`` (``trimmed_rss_mib``) on every sample.

With ``--types`` every sample also counts the objects the cyclic GC tracks by type and prints
the 12 types that grew most since the previous sample (``type_growth``; takes a second or two
with millions of objects). With ``--tracemalloc SECS`` tracing starts at SECS and the last sample prints the 15 biggest
growths (by line) since then. The bridge's internals are read with ``getattr`` (a diagnostic,
not a seam: a renamed attribute shows as ``null``). Every process started here is stopped by
its handle at the end, also on Ctrl-C. See loadtest/README.md "Soak" for what it found.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import load_config
from loadtest.bridge_watch import status_kib
from loadtest.harness import BridgeProcess
from loadtest.load_producer import LoadProducer
from loadtest.workload import Burst, Workload

__all__ = ["main", "malloc_stats", "structure_sizes"]

ALL_DIALECTS = dict.fromkeys(("D1", "D2", "D3", "D4", "D5", "D6", "D7"), 1.0)
_MIB = 1024 * 1024


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def malloc_stats() -> dict[str, float]:
    """glibc heap totals over every arena, in MiB, and the arena count (``mallinfo2``)."""
    if not hasattr(_libc, "mallinfo2"):
        return {}
    _libc.mallinfo2.restype = _Mallinfo2
    m = _libc.mallinfo2()
    return {
        "heap_used_mib": round(m.uordblks / _MIB, 1),
        "heap_free_mib": round(m.fordblks / _MIB, 1),
        "mmap_mib": round(m.hblkhd / _MIB, 1),
        "heap_total_mib": round(m.arena / _MIB, 1),
    }


_PYMALLOC_KEYS = {
    "# arenas allocated current": "pymalloc_arenas",
    "# bytes in allocated blocks": "pymalloc_used_mib",
}


def malloc_arenas() -> list[dict[str, float]]:
    """Per glibc malloc arena (``malloc_info``): MiB taken from the system and MiB free in it.
    Arena 0 is the main thread's; threads (libzmq's I/O thread, SQLite worker threads) get others.
    """
    if not hasattr(_libc, "malloc_info"):
        return []
    libc_fdopen = _libc.fdopen
    libc_fdopen.restype = ctypes.c_void_p
    with tempfile.TemporaryFile() as out:
        stream = libc_fdopen(os.dup(out.fileno()), b"w")
        _libc.malloc_info(0, ctypes.c_void_p(stream))
        _libc.fclose(ctypes.c_void_p(stream))
        out.seek(0)
        text = out.read().decode()
    arenas = []
    for heap in re.findall(r'<heap nr="\d+">(.*?)</heap>', text, re.S):
        current = re.search(r'<system type="current" size="(\d+)"', heap)
        free = sum(
            int(x)
            for x in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', heap)
        )
        arenas.append(
            {
                "system_mib": round(int(current.group(1)) / _MIB, 1) if current else 0.0,
                "free_mib": round(free / _MIB, 1),
            }
        )
    return arenas


def pymalloc_stats() -> dict[str, float]:
    """Arenas in use and bytes in allocated blocks of CPython's pymalloc (parsed from
    ``sys._debugmallocstats``, which writes to file descriptor 2)."""
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    stats: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = _PYMALLOC_KEYS.get(key.strip())
        if name and value.strip():
            stats[name] = int(value.strip().replace(",", ""))
    if "pymalloc_arenas" in stats:
        stats["pymalloc_arenas_mib"] = stats.pop("pymalloc_arenas")  # 1 MiB arenas (3.10+)
    if "pymalloc_used_mib" in stats:
        stats["pymalloc_used_mib"] = round(stats["pymalloc_used_mib"] / _MIB, 1)
    return stats


def _len(obj: Any, *path: str) -> int | None:
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    try:
        return len(obj)
    except TypeError:
        return None


def structure_sizes(bridge: Any) -> dict[str, int | None]:
    """``len()`` of the bounded structures of a running ``Bridge`` (None: not there)."""
    pipeline, phases = getattr(bridge, "pipeline", None), getattr(bridge, "phases", None)
    runner = getattr(pipeline, "runner", None)
    return {
        "identity": _len(pipeline, "identity", "_seen"),
        "dedup": _len(runner, "dedup", "_first_seen"),
        "flood_states": _len(runner, "flood", "_states"),
        "parity_zmq": _len(phases, "parity", "_zmq"),
        "parity_nats": _len(phases, "parity", "_nats"),
        "parity_done": _len(phases, "parity", "_done"),
        "parity_buckets": _len(phases, "parity", "_buckets"),
        "publisher_pending": _len(pipeline, "publisher", "_pending"),
        "publisher_in_flight": _len(pipeline, "publisher", "_in_flight"),
        "staging": _len(pipeline, "queue", "_staging"),
        "acked_to_delete": _len(pipeline, "queue", "_acked"),
    }


async def _sample(bridge: Any, t0: float, trim: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t_secs": round(time.monotonic() - t0, 1),
        "rss_mib": round(status_kib(os.getpid(), "VmRSS", children=False) / 1024, 1),
        "anon_mib": round(status_kib(os.getpid(), "RssAnon", children=False) / 1024, 1),
        "py_blocks": sys.getallocatedblocks(),
        **malloc_stats(),
        **pymalloc_stats(),
        "sizes": structure_sizes(bridge),
    }
    if trim:
        started = time.perf_counter()
        _libc.malloc_trim(0)
        out["trim_ms"] = round((time.perf_counter() - started) * 1000, 1)
        out["trimmed_rss_mib"] = round(status_kib(os.getpid(), "VmRSS", children=False) / 1024, 1)
    return out


class _GcTimes:
    """Collections and generation-2 pauses of the cyclic GC, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.gen2_ms: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.counts[info["generation"]] += 1
        if info["generation"] == 2:
            self.gen2_ms.append((time.perf_counter() - self._started) * 1000)

    def take(self) -> dict[str, Any]:
        out = {
            "collections": self.counts,
            "gen2_max_ms": round(max(self.gen2_ms, default=0.0), 1),
            "gen2_total_ms": round(sum(self.gen2_ms), 1),
            "tracked_objects": len(gc.get_objects()),
        }
        self.counts, self.gen2_ms = [0, 0, 0], []
        return out


def _type_census() -> Counter[str]:
    return Counter(type(o).__qualname__ for o in gc.get_objects())


def _type_growth(before: Counter[str], after: Counter[str], limit: int = 12) -> dict[str, int]:
    grown = {k: after[k] - before.get(k, 0) for k in after}
    return dict(sorted(grown.items(), key=lambda kv: -kv[1])[:limit])


def _top_growth(first: tracemalloc.Snapshot, limit: int = 15) -> list[str]:
    stats = tracemalloc.take_snapshot().compare_to(first, "lineno")
    return [str(s) for s in stats[:limit]]


async def _run(args: argparse.Namespace, workdir: Path) -> None:
    from bridge.app import Bridge

    server = NatsServerProcess(workdir / "nats")
    await anyio.to_thread.run_sync(server.start)
    try:
        rig = BridgeProcess(workdir, server.url, log_level="WARNING")  # writes bridge.yaml only
        bridge = Bridge(load_config(rig.config))
        workload = Workload(
            rate_per_sec=args.rate,
            duration_secs=args.duration,
            publishers=args.publishers,
            dialects=ALL_DIALECTS,
            burst=_burst(args.burst),
        )
        async with anyio.create_task_group() as tg:
            await tg.start(bridge.serve)
            await bridge.nats_ready.wait()
            if args.gc_freeze:
                gc.freeze()
            producer = LoadProducer(rig.endpoint, workload)
            try:
                await anyio.to_thread.run_sync(producer.start)
                await _watch(args, bridge, producer)
            finally:
                await anyio.to_thread.run_sync(producer.stop)
                bridge.request_stop()
    finally:
        await anyio.to_thread.run_sync(server.stop)


async def _watch(args: argparse.Namespace, bridge: Any, producer: LoadProducer) -> None:
    t0 = time.monotonic()
    snapshot: tracemalloc.Snapshot | None = None
    census = _type_census() if args.types else None
    gc_times = _GcTimes()
    n = 0
    while not producer.finished:
        elapsed = time.monotonic() - t0
        if args.tracemalloc is not None and snapshot is None and elapsed >= args.tracemalloc:
            tracemalloc.start(1)
            snapshot = tracemalloc.take_snapshot()
        sample = await _sample(bridge, t0, args.trim)
        sample["unread"] = producer.sent_count - getattr(bridge.runner, "received", 0)
        sample["gc"] = gc_times.take()
        sample["arenas"] = malloc_arenas()
        if census is not None and n:
            now = _type_census()
            sample["type_growth"], census = _type_growth(census, now), now
        print(json.dumps(sample), flush=True)
        n += 1
        await anyio.sleep(max(0.0, t0 + n * args.interval - time.monotonic()))
    last = await _sample(bridge, t0, False)
    last["arenas"] = malloc_arenas()
    if snapshot is not None:
        last["tracemalloc_top_growth"] = _top_growth(snapshot)
    _libc.malloc_trim(0)  # the last sample trims: what is reclaimable
    last["trimmed_rss_mib"] = round(status_kib(os.getpid(), "VmRSS", children=False) / 1024, 1)
    last["final"] = True
    print(json.dumps(last), flush=True)


def _burst(text: str | None) -> Burst | None:
    if not text:
        return None
    every, length, factor = (float(x) for x in text.split(":"))
    return Burst(every_secs=every, length_secs=length, factor=factor)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.memory_probe", description=__doc__)
    p.add_argument("--rate", type=float, default=5000.0, help="msg/s, all seven dialects")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of traffic")
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--trim", action="store_true", help="malloc_trim(0) at every sample")
    p.add_argument("--burst", metavar="EVERY:LENGTH:FACTOR", help="bursts, as in loadtest")
    p.add_argument(
        "--gc-threshold",
        metavar="G0,G1,G2",
        help="gc.set_threshold for the run (default: CPython's)",
    )
    p.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() once the bridge is up (before load)"
    )
    p.add_argument("--types", action="store_true", help="GC-tracked objects by type, growth")
    p.add_argument(
        "--tracemalloc", type=float, metavar="SECS", help="trace allocations from SECS on"
    )
    args = p.parse_args(argv)
    sys.setswitchinterval(0.001)  # as `busbridge run`
    if args.gc_threshold:
        gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
    with tempfile.TemporaryDirectory(prefix="busbridge-memprobe-") as tmp:
        anyio.run(_run, args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Flood benchmark: one agent sends the same error ``--rate`` times a second for ``--duration`` s.

The bridge (its own process, flood control on, external nats-server) must store only the
flood rule's first N plus flood summaries, never block its ZMQ reader, and account for
every message: stored + sum(summary.suppressed) == sent.

Reported (JSON): sent, read by the bridge (``busbridge_frames_received_total``: reader
drops = sent - read), stored error events, flood events by kind, accounting check,
bridge CPU (user+sys seconds, and as % of one core over the run) and peak RSS.

Usage: ``python -m loadtest.flood_bench --rate 16667 --duration 60`` (1M per minute)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bridge.adapters.nats_server import NatsServerProcess
from contracts.codec import decode
from contracts.messages import FloodSummary
from loadtest.bridge_watch import metric
from loadtest.harness import BridgeProcess
from loadtest.producer import SteadyProducer
from loadtest.stream import read_all

__all__ = ["main"]


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run(args: argparse.Namespace, workdir: Path) -> dict:
    server = NatsServerProcess(workdir / "nats")
    server.start()
    bridge = BridgeProcess(workdir, server.url, flood=True, log_level="WARNING")
    try:
        bridge.start()
        pid = bridge.pid or 0
        producer = SteadyProducer(bridge.endpoint, publishers=1, rate=args.rate)
        producer.start()
        cpu0, t0 = _cpu_secs(pid), time.monotonic()
        time.sleep(args.duration)
        producer.stop()
        time.sleep(2.0)
        cpu, wall = _cpu_secs(pid) - cpu0, time.monotonic() - t0
        read = metric(bridge.admin_port, "busbridge_frames_received_total")
        dropped = metric(bridge.admin_port, "busbridge_dropped_total")
        hwm = _hwm_mib(pid)
        assert bridge.stop() == 0  # SIGTERM: open floods are closed with their last summary
        stored = [decode(m.data) for m in asyncio.run(read_all(server.url))]
    finally:
        bridge.kill()
        server.stop()
    kinds = Counter(type(m).__name__ for m in stored)
    suppressed = sum(m.suppressed for m in stored if isinstance(m, FloodSummary))
    sent = producer.sent_count
    return {
        "sent": sent,
        "read_by_bridge": int(read),
        "reader_drops": sent - int(read),
        "bridge_dropped": int(dropped),
        "stored_total": len(stored),
        "stored_by_type": dict(kinds),
        "summaries_suppressed_sum": suppressed,
        "accounted": kinds["ErrorEvent"] + suppressed == sent,
        "bridge_cpu_secs": round(cpu, 1),
        "bridge_cpu_pct_of_one_core": round(100 * cpu / wall, 1),
        "bridge_peak_rss_mib": round(hwm, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1_000_000 / 60)
    p.add_argument("--duration", type=float, default=60.0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="busbridge-flood-") as tmp:
        result = run(args, Path(tmp))
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "workload": {
            "rate_per_sec": round(args.rate),
            "duration_secs": args.duration,
            "publishers": 1,
        },
        "result": result,
    }
    print(json.dumps(report, indent=2))
    return 0 if result["reader_drops"] == 0 and result["accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""NATS outage benchmark: steady legacy traffic, the nats-server stopped for a while, then back.

Timeline: ``--warmup`` s of traffic at ``--rate`` msg/s, the nats-server stopped for
``--outage`` s (traffic continues; the bridge spools to disk), the server restarted on
the same store dir, traffic continues until the bridge has drained its backlog (its
``/readyz`` says ready again) plus ``--tail`` s, then the producer stops and the stream
is read back.

Reported (JSON): sent, stored (unique ids), lost (sent - stored), duplicated (stream
messages - unique ids), out-of-order per publisher, peak spool backlog, drain time and
drain rate (messages stored per second from the restart until the backlog is gone, live
traffic included) as a multiple of the live rate, and the bridge's RSS before the outage
and at its peak (VmHWM). The bridge runs as its own process (``busbridge run``) against
an external nats-server, both on this machine.

Usage: ``python -m loadtest.outage_bench --rate 10000 --outage 60``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import nats

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.harness import BridgeProcess
from loadtest.producer import SteadyProducer, envelope, parse_id
from loadtest.stream import read_all

__all__ = ["main"]


class _Sampler(threading.Thread):
    """Samples the bridge's RSS and spool depth every 0.25 s."""

    def __init__(self, pid: int, admin_port: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.admin_port = pid, admin_port
        self.rss_kib: list[int] = []
        self.spool_peak = 0
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.wait(0.25):
            self.rss_kib.append(_status_kib(self.pid, "VmRSS"))
            self.spool_peak = max(self.spool_peak, int(_metric(self.admin_port, "busbridge_spool_messages")))


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _metric(admin_port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def _ready(admin_port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2).status == 200
    except (urllib.error.URLError, OSError):
        return False


async def _stream_count(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info("ERRBUS")).state.messages
    finally:
        await nc.close()


async def _read_ids(url: str) -> list[str]:
    """Every stored Nats-Msg-Id in stream order."""
    return [m.headers["Nats-Msg-Id"] for m in await read_all(url)]


def _order_violations(ids: list[str]) -> int:
    last: dict[int, int] = defaultdict(lambda: -1)
    bad = 0
    for i in ids:
        pub, n = parse_id(i)
        bad += n < last[pub]
        last[pub] = max(last[pub], n)
    return bad


def run(args: argparse.Namespace, workdir: Path) -> dict:
    server = NatsServerProcess(workdir / "nats")
    server.start()
    bridge = BridgeProcess(workdir, server.url, extra=args.extra, log_level="WARNING")
    bridge.start()
    sampler = _Sampler(bridge.pid or 0, bridge.admin_port)
    producer = SteadyProducer(bridge.endpoint, publishers=args.publishers, rate=args.rate)
    try:
        producer.start()
        sampler.start()
        time.sleep(args.warmup)
        rss_before = _status_kib(bridge.pid or 0, "VmRSS")
        server.stop()
        time.sleep(args.outage)
        server = NatsServerProcess(workdir / "nats", port=server.port)
        server.start()
        t_restart, c_restart = time.monotonic(), asyncio.run(_stream_count(server.url))
        while not _ready(bridge.admin_port) and time.monotonic() - t_restart < args.max_drain:
            time.sleep(0.1)
        t_drained, c_drained = time.monotonic(), asyncio.run(_stream_count(server.url))
        time.sleep(args.tail)
        producer.stop()
        time.sleep(3.0)
        rss_peak = _status_kib(bridge.pid or 0, "VmHWM")
        sampler.stop_flag.set()
        bridge.stop()
        ids = asyncio.run(_read_ids(server.url))
    finally:
        producer.stop()
        bridge.kill()
        server.stop()
    sent = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
    unique = set(ids)
    drain_secs = t_drained - t_restart
    drain_rate = (c_drained - c_restart) / drain_secs if drain_secs > 0 else 0.0
    return {
        "sent": len(sent),
        "stored_unique": len(unique & sent),
        "lost": len(sent - unique),
        "duplicated": len(ids) - len(unique),
        "out_of_order": _order_violations(ids),
        "spool_peak_messages": sampler.spool_peak,
        "drain_secs": round(drain_secs, 2),
        "drained": drain_secs < args.max_drain,
        "drain_rate_per_sec": round(drain_rate),
        "drain_rate_x_live": round(drain_rate / args.rate, 2),
        "rss_before_outage_mib": round(rss_before / 1024, 1),
        "rss_max_sampled_mib": round(max(sampler.rss_kib or [0]) / 1024, 1),
        "rss_peak_hwm_mib": round(rss_peak / 1024, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--outage", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--tail", type=float, default=3.0)
    p.add_argument("--max-drain", type=float, default=600.0)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument("--extra", default="", help="extra YAML for the bridge config")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="busbridge-outage-") as tmp:
        result = run(args, Path(tmp))
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "workload": {"rate_per_sec": args.rate, "outage_secs": args.outage, "publishers": args.publishers,
                     "message_bytes": len(envelope(0, 0))},
        "result": result,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

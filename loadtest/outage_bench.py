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
import time
from collections import defaultdict
from pathlib import Path

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.bridge_watch import BridgeSampler, measure_drain, status_kib
from loadtest.harness import BridgeProcess
from loadtest.producer import SteadyProducer, envelope, parse_id
from loadtest.stream import read_all

__all__ = ["main"]


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
    sampler = BridgeSampler(bridge.pid or 0, bridge.admin_port)
    producer = SteadyProducer(bridge.endpoint, publishers=args.publishers, rate=args.rate)
    try:
        producer.start()
        sampler.start()
        time.sleep(args.warmup)
        rss_before = status_kib(bridge.pid or 0, "VmRSS")
        server.stop()
        time.sleep(args.outage)
        server = NatsServerProcess(workdir / "nats", port=server.port)
        server.start()
        drain = measure_drain(server.url, bridge.admin_port, args.max_drain)
        time.sleep(args.tail)
        producer.stop()
        time.sleep(3.0)
        rss_peak = status_kib(bridge.pid or 0, "VmHWM")
        sampler.stop()
        bridge.stop()
        ids = asyncio.run(_read_ids(server.url))
    finally:
        producer.stop()
        bridge.kill()
        server.stop()
    sent = {f"p{p:03d}-{n:09d}" for p, ns in enumerate(producer.sent) for n in ns}
    unique = set(ids)
    return {
        "sent": len(sent),
        "stored_unique": len(unique & sent),
        "lost": len(sent - unique),
        "duplicated": len(ids) - len(unique),
        "out_of_order": _order_violations(ids),
        "spool_peak_messages": sampler.spool_peak,
        "drain_secs": round(drain.secs, 2),
        "drained": drain.drained,
        "drain_rate_per_sec": round(drain.rate_per_sec),
        "drain_rate_x_live": round(drain.rate_per_sec / args.rate, 2),
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
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "workload": {
            "rate_per_sec": args.rate,
            "outage_secs": args.outage,
            "publishers": args.publishers,
            "message_bytes": len(envelope(0, 0)),
        },
        "result": result,
    }
    print(json.dumps(report, indent=2))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""First throughput figure: the corpus replayed at full speed into a real bridge process.

Each run starts ``busbridge run`` (its own embedded nats-server, file storage,
``Nats-Msg-Id`` on) as a child process on free loopback ports, replays the
corpus ``--repeat`` times with fresh legacy ids over ``--publishers`` ZMQ
sockets as fast as they go, and waits until the stream holds every expected
message. Reported per run: sent, expected, stored, dropped by the bridge,
send rate, and **end-to-end throughput** = stored / (time of the last store -
time of the first send). A run is lossless when stored == expected and the
bridge dropped nothing. The median of ``--runs`` runs is printed as JSON.

Usage: ``python -m loadtest.replay_bench --repeat 500 --runs 3 [--small-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import zmq

from loadtest.corpus import CorpusRow, default_corpus_path, load_corpus
from loadtest.harness import free_port
from loadtest.replay import connect_publishers, replay

__all__ = ["main"]


def _expected_per_rep(rows: list[CorpusRow]) -> int:
    ids: set[bytes] = set()
    copies = 0
    for r in rows:
        for f in r.frames:
            for m in re.finditer(rb'"error_id": "([^"]+)"', f):
                copies += m.group(1) in ids
                ids.add(m.group(1))
    return len(rows) - copies


def _start_bridge(
    workdir: Path, nats_port: int, zmq_port: int, admin_port: int
) -> subprocess.Popen[bytes]:
    cfg = workdir / "bench.yaml"
    cfg.write_text(
        f"machine: Bench\ndata_dir: {workdir}\nlog_level: INFO\n"
        f"zmq: {{bind_endpoint: 'tcp://127.0.0.1:{zmq_port}'}}\n"
        f"nats: {{embedded: {{port: {nats_port}}}}}\nadmin: {{port: {admin_port}}}\n"
        "flood: {enabled: false}\n"  # the repeated corpus is a flood by design; measure the pipeline
        "health: {enabled: false}\n"  # heartbeats would count as stored messages
    )
    exe = Path(sys.executable).with_name("busbridge")
    with (workdir / "bridge.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([str(exe), "run", "-c", str(cfg)], stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((workdir / "bridge.log").read_text()) from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("bridge did not start")


def _stream_count(nats_port: int) -> int:
    import asyncio

    import nats

    async def count() -> int:
        nc = await nats.connect(f"nats://127.0.0.1:{nats_port}")
        try:
            return (await nc.jetstream().stream_info("ERRBUS")).state.messages
        finally:
            await nc.close()

    return asyncio.run(count())


def _dropped(admin_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics").read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("busbridge_dropped_total{")
    )


def one_run(rows: list[CorpusRow], repeat: int, publishers: int, timeout_secs: float) -> dict:
    expected = _expected_per_rep(rows) * repeat
    stored = -1
    nats_port, zmq_port, admin_port = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="busbridge-bench-") as tmp:
        proc = _start_bridge(Path(tmp), nats_port, zmq_port, admin_port)
        try:
            with zmq.Context() as ctx:
                socks = connect_publishers(ctx, f"tcp://127.0.0.1:{zmq_port}", publishers)
                t0 = time.perf_counter()
                sent = replay(socks, rows, repeat=repeat, fresh_ids=True)
                stored, t_last = _wait_stored(nats_port, expected, timeout_secs)
                for s in socks:
                    s.close(linger=0)
            dropped = _dropped(admin_port)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if stored != expected:
                sys.stderr.write((Path(tmp) / "bridge.log").read_text()[-4000:])
    elapsed = t_last - t0
    return {
        "sent": sent.sent,
        "expected": expected,
        "stored": stored,
        "dropped": dropped,
        "lossless": stored == expected and dropped == 0,
        "send_rate_per_sec": round(sent.rate_per_sec),
        "throughput_per_sec": round(stored / elapsed) if elapsed > 0 else 0,
        "elapsed_secs": round(elapsed, 3),
    }


def _wait_stored(nats_port: int, expected: int, timeout_secs: float) -> tuple[int, float]:
    deadline = time.perf_counter() + timeout_secs
    last, t_last = -1, time.perf_counter()
    while time.perf_counter() < deadline:
        n = _stream_count(nats_port)
        if n != last:
            last, t_last = n, time.perf_counter()
        if n >= expected:
            break
        if time.perf_counter() - t_last > 5:  # no progress for 5 s: loss
            break
        time.sleep(0.02)
    return last, t_last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default=str(default_corpus_path()))
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--publishers", type=int, default=4)
    p.add_argument(
        "--small-only", action="store_true", help="only rows under 4 KiB (no 64 KiB contexts)"
    )
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    rows = load_corpus(args.corpus)
    if args.small_only:
        rows = [r for r in rows if sum(map(len, r.frames)) < 4096]
    runs = [one_run(rows, args.repeat, args.publishers, args.timeout) for _ in range(args.runs)]
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "workload": {
            "rows": len(rows),
            "repeat": args.repeat,
            "publishers": args.publishers,
            "mean_bytes": round(statistics.mean(sum(map(len, r.frames)) for r in rows)),
        },
        "runs": runs,
        "median_throughput_per_sec": statistics.median(r["throughput_per_sec"] for r in runs),
        "all_lossless": all(r["lossless"] for r in runs),
    }
    print(json.dumps(report, indent=2))
    return 0 if report["all_lossless"] else 1


if __name__ == "__main__":
    sys.exit(main())

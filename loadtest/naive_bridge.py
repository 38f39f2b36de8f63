"""The naive bridge baseline: ZMQ SUB -> decode -> one awaited ``js.publish`` per message.

What a first bridge would look like (DESIGN §7 measured ~4-6k msg/s): a SUB socket bound on
``--endpoint`` (subscribed to everything, RCVHWM as busbridge's default, so a burst waits in
the socket rather than being dropped), every message decoded with busbridge's own decoder,
identity and outbound builder (``loadtest.baselines.BridgeEncoder``: the same decode cost and
the same stored bytes), then ``await js.publish(subject, payload, headers=...)`` with the
``Nats-Msg-Id``, one at a time. No spool, no pipelining, no dedup, no flood control. A publish
that fails (timeout, no responders) is retried with the same msg id until it is stored.

The stream must exist (``baselines.create_stream``). The process writes ``--ready-file`` once
NATS is connected and the socket bound, runs until SIGTERM/SIGINT, then writes
``--stats-file`` (JSON: received, published, retries). ``NaiveBridgeProcess`` runs it as a
child process and stops it by its PID.

Usage: ``python -m loadtest.naive_bridge --endpoint tcp://127.0.0.1:7150 --url nats://127.0.0.1:4222``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import zmq
import zmq.asyncio

from bridge.adapters.nats_server import terminate
from bridge.config.model import ZmqConfig
from loadtest.baselines import BridgeEncoder
from loadtest.harness import free_port

__all__ = ["NaiveBridgeProcess", "serve"]


async def serve(endpoint: str, url: str, ready_file: Path | None, stats: dict[str, int]) -> None:
    """Bridge until cancelled, counting into ``stats``."""
    encoder = BridgeEncoder()
    nc = await nats.connect(url)
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.SUB)
    try:
        js = nc.jetstream()
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, ZmqConfig().rcvhwm)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.bind(endpoint)
        if ready_file is not None:
            ready_file.write_text(sock.getsockopt_string(zmq.LAST_ENDPOINT))  # noqa: ASYNC240 (once, before traffic)
        while True:
            out = encoder.encode(await sock.recv_multipart())
            stats["received"] += 1
            while True:
                try:
                    await js.publish(out.subject, out.payload, headers=out.headers)
                    break
                except (
                    nats.errors.TimeoutError,
                    nats.errors.NoRespondersError,
                    nats.js.errors.APIError,
                ):
                    stats["retries"] += 1
                    await asyncio.sleep(0.05)
            stats["published"] += 1
    finally:
        sock.close(linger=0)
        ctx.term()
        await nc.close()


async def _main(args: argparse.Namespace) -> None:
    stats = {"received": 0, "published": 0, "retries": 0}
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await serve(
            args.endpoint, args.url, Path(args.ready_file) if args.ready_file else None, stats
        )
    except asyncio.CancelledError:
        pass
    finally:
        if args.stats_file:
            Path(args.stats_file).write_text(json.dumps(stats))  # noqa: ASYNC240 (at exit)


class NaiveBridgeProcess:
    """``python -m loadtest.naive_bridge`` on a free loopback port; ``start()`` waits until it is
    bound and connected; ``stop()`` sends SIGTERM (SIGKILL after ``timeout_secs``) and returns
    its stats (``received``, ``published``, ``retries``)."""

    def __init__(self, workdir: Path, nats_url: str) -> None:
        self.workdir = workdir
        self.nats_url = nats_url
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self._ready = workdir / "naive.ready"
        self._stats = workdir / "naive.stats.json"
        self.log = workdir / "naive.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout_secs: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "loadtest.naive_bridge",
            "--endpoint",
            self.endpoint,
            "--url",
            self.nats_url,
            "--ready-file",
            str(self._ready),
            "--stats-file",
            str(self._stats),
        ]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(cmd, stderr=err)
        deadline = time.monotonic() + timeout_secs
        while not self._ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"naive bridge did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self, timeout_secs: float = 10.0) -> dict[str, int]:
        """Stop the child (idempotent); its stats, or ``{}`` when it left none."""
        if self.proc is not None:
            terminate(self.proc, timeout_secs)
        try:
            return json.loads(self._stats.read_text())
        except (OSError, ValueError):
            return {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--endpoint", default="tcp://127.0.0.1:7150", help="ZMQ endpoint to bind the SUB socket on"
    )
    p.add_argument("--url", required=True, help="NATS server URL (the stream must exist)")
    p.add_argument("--ready-file", help="written once bound and connected")
    p.add_argument("--stats-file", help="JSON counts written at exit")
    asyncio.run(_main(p.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

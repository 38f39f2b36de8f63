"""Phase walk under load: every cutover phase and back, with steady legacy traffic.

Timeline (config-file source, reloaded as on SIGHUP): ``zmq_only`` -> ``dual``
-> (parity guard passes) ``nats_primary`` -> traffic stops, the quiet-period
guard passes -> ``nats_only`` (the ingest port is released: checked by binding
it) -> rollback to ``dual`` with traffic again -> rollback to ``zmq_only``.
Each phase holds ``--hold`` seconds of traffic at ``--rate`` msg/s.

``PhaseWindows`` records, at the exact moment of every switch, how many
messages each publisher had sent; messages sent within ``margin_secs`` of a
switch may fall either side (socket buffers) and are only checked for "at
most once". Reported (JSON and a table): per phase window, sent / stored /
expected; lost (sent in a publishing phase, not stored), leaked (sent in
zmq_only, stored), duplicated; the parity figures at the ``nats_primary``
guard; every ``PhaseChanged``. Exit status 1 when anything was lost, leaked or
duplicated.

Usage: ``python -m loadtest.phase_walk --rate 2000 --hold 5``
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import msgspec
import yaml
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from bridge.app import Bridge
from bridge.config.load import parse_config
from bridge.config.reload import ConfigReloader
from bridge.phase import Phase
from contracts.codec import decode
from contracts.messages import ErrorEvent, PhaseChanged
from loadtest.producer import SteadyProducer, parse_id
from loadtest.stream import read_all

__all__ = ["PhaseWindows", "WalkStopped", "main", "walk"]


class WalkStopped(SystemExit):
    """A phase switch was refused, so the walk stopped (its text names the phase and the reason)."""


@dataclass
class Window:
    phase: Phase
    start: list[int]  # per publisher: messages sent when the phase came into force
    end: list[int]


class PhaseWindows:
    """Which phase was in force for which range of each publisher's messages.

    Hooks the bridge's cutover controller so the boundaries are taken at the
    switch itself. ``producer`` may be replaced (``restart``) as long as it keeps
    the same publisher numbering and continues its counters.
    """

    def __init__(
        self, producer: SteadyProducer, bridge: Bridge, rate: float, margin_secs: float = 0.5
    ) -> None:
        self.producer, self.bridge = producer, bridge
        self.margin = int(rate / producer.publishers * margin_secs)
        self.windows: list[Window] = []
        self._mark(bridge.phases.phase)
        controller = bridge.phases.controller
        inner = controller.on_change

        def on_change(old: Phase, new: Phase) -> None:
            self._mark(new)
            inner(old, new)

        controller.on_change = on_change

    def _sent(self) -> list[int]:
        return [len(s) for s in self.producer.sent]

    def _mark(self, phase: Phase) -> None:
        now = self._sent()
        if self.windows:
            self.windows[-1].end = now
        self.windows.append(Window(phase, now, now))

    def close(self) -> None:
        self.windows[-1].end = self._sent()

    def check(self, stored_ids: list[str]) -> dict[str, Any]:
        """Counts per window and in total; ``lost``/``leaked``/``duplicated`` list offenders."""
        unique = set(stored_ids)
        stored = {parse_id(i) for i in unique if i.startswith("p")}
        report: dict[str, Any] = {
            "windows": [],
            "lost": [],
            "leaked": [],
            "duplicated": len(stored_ids) - len(unique),
        }
        for w in self.windows:
            delivers = w.phase.behaviour.to_jetstream
            sent = checked = hit = 0
            for pub in range(len(w.start)):
                sent += w.end[pub] - w.start[pub]
                for n in range(w.start[pub] + self.margin, w.end[pub] - self.margin):
                    checked += 1
                    if (pub, n) in stored:
                        hit += 1
                        if not delivers:
                            report["leaked"].append(f"p{pub:03d}-{n:09d}")
                    elif delivers:
                        report["lost"].append(f"p{pub:03d}-{n:09d}")
            report["windows"].append(
                {"phase": w.phase.value, "sent": sent, "checked": checked, "stored": hit}
            )
        return report


async def walk(rate: float, hold_secs: float, publishers: int, workdir: Path) -> dict[str, Any]:
    server = NatsServerProcess(workdir / "nats", port=0)
    url = await anyio.to_thread.run_sync(server.start, 15.0)
    try:
        return await _walk(url, rate, hold_secs, publishers, workdir)
    finally:
        await anyio.to_thread.run_sync(server.stop)


def _config_doc(url: str, workdir: Path, phase: str) -> dict[str, Any]:
    return {
        "machine": "LoadPC",
        "data_dir": str(workdir / "bridge"),
        "zmq": {"bind_endpoint": "tcp://127.0.0.1:*"},
        "republish": {"bind_endpoint": "tcp://127.0.0.1:*"},
        "nats": {"servers": [url]},
        "admin": {"port": 0},
        "flood": {"enabled": False},
        "phase": {"current": phase, "guards": {"min_parity_events": 500, "quiet_period_secs": 2.0}},
        "parity": {"match_window_secs": 5.0, "window_secs": 600.0},
    }


async def _walk(
    url: str, rate: float, hold: float, publishers: int, workdir: Path
) -> dict[str, Any]:
    path = workdir / "bridge.yaml"
    doc = _config_doc(url, workdir, "zmq_only")
    path.write_text(yaml.safe_dump(doc))
    cfg = parse_config(msgspec.json.encode(doc).decode(), str(path))
    bridge = Bridge(cfg)
    reloader = ConfigReloader(path, cfg, bridge.apply_config)
    decisions: list[dict[str, Any]] = []

    def switch(phase: str) -> None:
        doc["phase"]["current"] = phase
        path.write_text(yaml.safe_dump(doc))
        reloader.reload()
        d = bridge.phases.controller.last
        decisions.append(
            {"to": phase, "result": d.result if d else "?", "reason": d.reason if d else ""}
        )
        if bridge.phases.phase.value != phase:
            raise WalkStopped(f"phase walk stopped: {phase} refused: {d.reason if d else '?'}")

    async with anyio.create_task_group() as tg:
        await tg.start(_serve, bridge)
        with anyio.fail_after(30):
            await bridge.nats_ready.wait()
        endpoint = bridge.zmq_endpoints[0]
        producer = SteadyProducer(endpoint, publishers=publishers, rate=rate)
        await anyio.to_thread.run_sync(producer.start)
        windows = PhaseWindows(producer, bridge, rate)
        started = time.monotonic()
        await anyio.sleep(hold)
        switch("dual")
        with anyio.fail_after(120):
            while bridge.phases.parity.stats().compared < 500:
                await anyio.sleep(0.2)
        await anyio.sleep(hold)
        parity = bridge.phases.parity.stats()
        switch("nats_primary")
        await anyio.sleep(hold)
        await anyio.to_thread.run_sync(producer.stop)
        await anyio.sleep(3.0)  # quiet period (2 s) + margin; the producer's sockets are closed
        switch("nats_only")
        released = False
        with anyio.move_on_after(3.0):  # the socket closes when the phase's tasks are re-armed
            while not (released := _port_is_free(endpoint)):
                await anyio.sleep(0.05)
        await anyio.sleep(1.0)
        producer2 = SteadyProducer(endpoint, publishers=publishers, rate=rate)
        producer2.sent = producer.sent  # same publisher numbering, counters continue
        windows.producer = producer2
        switch("dual")  # rollback: binds the same port again
        await anyio.to_thread.run_sync(producer2.start)
        await anyio.sleep(hold)
        switch("zmq_only")
        await anyio.sleep(hold)
        await anyio.to_thread.run_sync(producer2.stop)
        windows.close()
        with anyio.fail_after(60):
            while bridge.pipeline.backlog:
                await anyio.sleep(0.1)
        elapsed = time.monotonic() - started
        bridge.request_stop()
    msgs = await _read_stream(url)
    report = windows.check([m.event_id for m in msgs if isinstance(m, ErrorEvent)])
    report.update(
        machine=f"{platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, python {platform.python_version()}",
        rate=rate,
        hold_secs=hold,
        publishers=publishers,
        elapsed_secs=round(elapsed, 1),
        sent=producer2.sent_count,
        stored_events=sum(isinstance(m, ErrorEvent) for m in msgs),
        parity_at_guard={
            "ratio": parity.ratio,
            "compared": parity.compared,
            "missing_nats": parity.missing_nats,
            "missing_zmq": parity.missing_zmq,
        },
        port_released_in_nats_only=released,
        decisions=decisions,
        phase_changes=[
            f"{m.from_phase}->{m.to_phase} ({m.by})" for m in msgs if isinstance(m, PhaseChanged)
        ],
    )
    return report


async def _serve(bridge: Bridge, *, task_status: anyio.abc.TaskStatus[Bridge]) -> None:
    await bridge.serve(task_status=task_status)


def _port_is_free(endpoint: str) -> bool:
    with zmq.Context() as ctx:
        s = ctx.socket(zmq.SUB)
        try:
            s.bind(endpoint)
            return True
        except zmq.ZMQError:
            return False
        finally:
            s.close(linger=0)


async def _read_stream(url: str) -> list[Any]:
    return [decode(m.data) for m in await read_all(url)]


def _table(report: dict[str, Any]) -> str:
    lines = [f"{'phase':<13} {'sent':>8} {'checked':>8} {'stored':>8}"]
    for w in report["windows"]:
        lines.append(f"{w['phase']:<13} {w['sent']:>8} {w['checked']:>8} {w['stored']:>8}")
    lines.append(
        f"sent {report['sent']}, events stored {report['stored_events']}, lost {len(report['lost'])}, "
        f"leaked {len(report['leaked'])}, duplicated {report['duplicated']}, "
        f"port released in nats_only: {report['port_released_in_nats_only']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="messages/s in total (default 2000)")
    ap.add_argument(
        "--hold", type=float, default=5.0, help="seconds of traffic per phase (default 5)"
    )
    ap.add_argument("--publishers", type=int, default=4)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="phase-walk-") as tmp:
        report = anyio.run(walk, args.rate, args.hold, args.publishers, Path(tmp))
    sys.stderr.write(_table(report) + "\n")
    short = {**report, "lost": report["lost"][:20], "leaked": report["leaked"][:20]}
    print(json.dumps(short, indent=2))
    return 1 if report["lost"] or report["leaked"] or report["duplicated"] else 0


if __name__ == "__main__":
    sys.exit(main())

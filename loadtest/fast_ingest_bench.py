"""Fast-ingest batches vs per-message PubAcks: ``BatchPublisher`` against ``PipelinedPublisher``
in the same run, on a fresh nats-server (DESIGN §7: a ratio within one run is the figure to trust).

Each run publishes ``--messages`` messages of 300 B (JSON payload, the bridge's headers with a
unique ``Nats-Msg-Id``) into the stream busbridge provisions (file storage, 600 s duplicate
window; ``allow_batched`` switched on with ``bridge.adapters.fast_ingest.enable_allow_batched``),
once with each publisher, over a ``JetStreamLink`` as the bridge uses it. The order of the two
alternates between runs. Messages are built before the clock starts; the time is from the
first ``submit`` to the last message settled (``on_done``). A run counts only when every
message was settled ``stored`` and the stream grew by exactly ``--messages``.

Prints a table: msg/s per run, the median of each publisher, and the ratio of the medians.

Usage: ``python -m loadtest.fast_ingest_bench --messages 100000 --runs 3``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from bridge.adapters.fast_ingest import FastInbox, FastIngestTransport, enable_allow_batched
from bridge.adapters.jetstream import JetStreamLink
from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.model import BridgeConfig
from bridge.metrics import Metrics
from bridge.pipeline.batch_publish import BatchPublisher
from bridge.pipeline.publish import Outbound, PipelinedPublisher
from loadtest.baselines import create_stream

__all__ = ["main", "run_bench"]

PAYLOAD_BYTES = 300
STREAM = "ERRBUS"
PUBLISHERS = ("PipelinedPublisher", "BatchPublisher")


def _messages(count: int, tag: str) -> list[Outbound]:
    """``count`` messages of ``PAYLOAD_BYTES`` with unique ``Nats-Msg-Id`` values (``tag``)."""
    items = []
    for n in range(count):
        msg_id = f"{tag}-{n:09d}"
        body = b'{"type":"error_event","event_id":"%s","message":"' % msg_id.encode()
        payload = body + b"x" * (PAYLOAD_BYTES - len(body) - 2) + b'"}'
        headers = {
            "Nats-Msg-Id": msg_id,
            "Busbridge-Contract": "error_event",
            "Busbridge-Contract-Version": "1",
            "Busbridge-Origin": "BenchPC",
        }
        subject = f"errbus.error.BenchPC.error.Agent{n % 8:03d}"
        items.append(Outbound(subject, payload, headers, "error_event", msg_id))
    return items


async def _stream_count(link: JetStreamLink) -> int:
    assert link.nc is not None
    return (await link.nc.jetstream().stream_info(STREAM)).state.messages


async def _timed(
    run: Callable[[], Awaitable[None]],
    submit: Callable[[Outbound], bool],
    items: list[Outbound],
    done: list[int],
) -> float:
    """Submit everything, wait until every message is settled; seconds taken."""
    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        for item in items:
            submit(item)
        while done[0] < len(items):
            await anyio.sleep(0.001)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed


async def _one(
    url: str, kind: str, items: list[Outbound], max_in_flight: int, batch_max: int
) -> float:
    """One publisher run; msg/s. Raises ``RuntimeError`` unless the run was lossless."""
    cfg = BridgeConfig(machine="BenchPC")
    link = JetStreamLink(cfg.nats, [url], name=f"bench-{kind}")
    await link.connect()
    outcomes: dict[str, int] = {}
    done = [0]

    def on_done(item: Outbound, outcome: str, ack: object) -> None:
        done[0] += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    try:
        before = await _stream_count(link)
        prefix = f"_INBOX.bench.{uuid.uuid4().hex[:12]}"
        common = {"max_in_flight": max_in_flight, "max_pending": len(items), "on_done": on_done}
        if kind == "BatchPublisher":
            transport = FastIngestTransport(link, FastInbox(f"{prefix}.fi"))
            pub = BatchPublisher(transport, Metrics(), batch_max_msgs=batch_max, **common)
            await transport.subscribe(pub.on_reply)
        else:
            pub = PipelinedPublisher(link, prefix, Metrics(), **common)  # type: ignore[assignment]
            await link.subscribe_acks(prefix, pub.on_ack)  # type: ignore[attr-defined]
        elapsed = await _timed(pub.run, pub.submit, items, done)
        grown = await _stream_count(link) - before
    finally:
        await link.close()
    if outcomes != {"stored": len(items)} or grown != len(items):
        raise RuntimeError(f"{kind}: not lossless: outcomes {outcomes}, stream grew by {grown}")
    return len(items) / elapsed


async def run_bench(
    messages: int, runs: int, *, max_in_flight: int = 1024, batch_max: int = 1000
) -> dict[str, list[float]]:
    """Start a fresh nats-server, run both publishers ``runs`` times; msg/s per publisher."""
    rates: dict[str, list[float]] = {k: [] for k in PUBLISHERS}
    with tempfile.TemporaryDirectory(prefix="fast-ingest-bench-") as tmp:
        server = NatsServerProcess(Path(tmp) / "nats")
        url = await anyio.to_thread.run_sync(server.start)
        try:
            await create_stream(url)
            link = JetStreamLink(BridgeConfig().nats, [url], name="bench-provision")
            await link.connect()
            try:
                assert link.nc is not None
                await enable_allow_batched(link.nc, STREAM)
                version = repr(link.nc.connected_server_version)
            finally:
                await link.close()
            print(f"nats-server {version}, {messages} x {PAYLOAD_BYTES} B", file=sys.stderr)
            for r in range(runs):
                order = PUBLISHERS if r % 2 == 0 else PUBLISHERS[::-1]
                for kind in order:
                    items = _messages(messages, f"r{r}{kind[0]}")
                    rate = await _one(url, kind, items, max_in_flight, batch_max)
                    rates[kind].append(rate)
                    print(f"run {r + 1}/{runs} {kind}: {rate:,.0f} msg/s", file=sys.stderr)
        finally:
            await anyio.to_thread.run_sync(server.stop)
    return rates


def render(rates: dict[str, list[float]]) -> str:
    """The result table: msg/s per run, medians, ratio of the medians."""
    runs = len(rates[PUBLISHERS[0]])
    head = ["publisher", *(f"run {i + 1}" for i in range(runs)), "median msg/s"]
    rows = [head]
    for kind in PUBLISHERS:
        values = rates[kind]
        rows.append([kind, *(f"{v:,.0f}" for v in values), f"{statistics.median(values):,.0f}"])
    ratio_runs = [
        b / p for b, p in zip(rates["BatchPublisher"], rates["PipelinedPublisher"], strict=True)
    ]
    ratio = statistics.median(rates["BatchPublisher"]) / statistics.median(
        rates["PipelinedPublisher"]
    )
    rows.append(["ratio batch/pipelined", *(f"{x:.2f}x" for x in ratio_runs), f"{ratio:.2f}x"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.fast_ingest_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages per publisher and run"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=1024, help="both publishers' window")
    parser.add_argument("--batch-max", type=int, default=1000, help="BatchPublisher.batch_max_msgs")
    parser.add_argument("--json", metavar="FILE", help="also write the rates as JSON")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.runs < 1:
        parser.error("--messages and --runs must be positive")
    rates = asyncio.run(
        run_bench(
            args.messages, args.runs, max_in_flight=args.max_in_flight, batch_max=args.batch_max
        )
    )
    print(render(rates))
    if args.json:
        Path(args.json).write_text(json.dumps(rates, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

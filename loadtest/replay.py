"""Replay captured legacy frames at the bridge over ZMQ, like the legacy agents.

Each of ``--publishers`` sockets **connects** to the bridge's endpoint (as the
legacy PUBs connect to :7150) and sends its share of the rows with
``send_multipart``, preserving per-socket order. The sockets are XPUB, which
is the same wire socket type for the SUB on the other side but also tells us
when the bridge's subscription has arrived, so nothing is lost to the slow
joiner problem (legacy-bus.md trap 8). SNDHWM is unlimited and close lingers,
so the replay itself drops nothing.

``--fresh-ids`` gives every repetition new legacy ``error_id`` values (same
length, so frames stay byte-valid), so ``--repeat`` sends N distinct events
rather than copies the stream's duplicate window would collapse.

Output (stdout, JSON): sent, per-origin counts, elapsed seconds, rate.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import uuid
from collections.abc import Iterator, Sequence

import msgspec
import zmq

from loadtest.corpus import CorpusRow, default_corpus_path, load_corpus

__all__ = ["ReplayResult", "add_arguments", "connect_publishers", "replay", "run_replay"]

_ERROR_ID = re.compile(
    rb'"error_id": "([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
)


class ReplayResult(msgspec.Struct):
    sent: int
    sent_legacy: int
    sent_synthetic: int
    publishers: int
    elapsed_secs: float
    rate_per_sec: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default=str(default_corpus_path()), help="corpus JSONL file")
    p.add_argument(
        "--endpoint", default="tcp://127.0.0.1:7150", help="the bridge's ZMQ endpoint to connect to"
    )
    p.add_argument(
        "--publishers", type=int, default=4, help="number of PUB sockets (legacy agents)"
    )
    p.add_argument("--repeat", type=int, default=1, help="send the corpus this many times")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="messages per second in total; 0 = as fast as possible",
    )
    p.add_argument(
        "--fresh-ids", action="store_true", help="new error_id per repetition (avoid dedup)"
    )
    p.add_argument("--legacy-only", action="store_true", help="skip synthetic (malformed) rows")


def run_replay(args: argparse.Namespace) -> int:
    rows = load_corpus(args.corpus)
    if args.legacy_only:
        rows = [r for r in rows if r.origin == "legacy"]
    with zmq.Context() as ctx:
        socks = connect_publishers(ctx, args.endpoint, args.publishers)
        result = replay(socks, rows, repeat=args.repeat, rate=args.rate, fresh_ids=args.fresh_ids)
        for s in socks:
            s.close(linger=30_000)
    sys.stdout.write(msgspec.json.encode(result).decode() + "\n")
    return 0


def connect_publishers(
    ctx: zmq.Context, endpoint: str, n: int, timeout_secs: float = 10.0
) -> list[zmq.Socket]:
    """``n`` XPUB sockets connected to ``endpoint``, each with the bridge's subscription received.

    Raises ``TimeoutError`` when no subscription arrives in time (is the bridge running?).
    """
    socks = []
    for _ in range(n):
        s = ctx.socket(zmq.XPUB)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.LINGER, 30_000)
        s.connect(endpoint)
        socks.append(s)
    for s in socks:
        if not s.poll(int(timeout_secs * 1000), zmq.POLLIN):
            raise TimeoutError(f"no subscriber on {endpoint} after {timeout_secs} s")
        s.recv()  # the subscription message (b"\x01" for subscribe "")
    return socks


def replay(
    socks: Sequence[zmq.Socket],
    rows: Sequence[CorpusRow],
    *,
    repeat: int = 1,
    rate: float = 0.0,
    fresh_ids: bool = False,
) -> ReplayResult:
    """Send ``rows`` ``repeat`` times, row k on socket ``k % len(socks)``; return counts."""
    sent = legacy = 0
    start = time.perf_counter()
    interval = 1.0 / rate if rate > 0 else 0.0
    for frames, row, k in _schedule(rows, repeat, fresh_ids):
        socks[k % len(socks)].send_multipart(frames)
        sent += 1
        legacy += row.origin == "legacy"
        if interval:
            _pace(start, sent, interval)
    elapsed = time.perf_counter() - start
    return ReplayResult(
        sent, legacy, sent - legacy, len(socks), elapsed, sent / elapsed if elapsed else 0.0
    )


def _schedule(
    rows: Sequence[CorpusRow], repeat: int, fresh_ids: bool
) -> Iterator[tuple[list[bytes], CorpusRow, int]]:
    for rep in range(repeat):
        ids: dict[bytes, bytes] = {}
        for k, row in enumerate(rows):
            frames = (
                row.frames if not (fresh_ids and rep) else [_renew_ids(f, ids) for f in row.frames]
            )
            yield frames, row, k


def _renew_ids(frame: bytes, ids: dict[bytes, bytes]) -> bytes:
    """Replace each error_id with a new uuid, the same one for the same old id (PC2 copies)."""

    def swap(m: re.Match[bytes]) -> bytes:
        new = ids.setdefault(m.group(1), str(uuid.uuid4()).encode())
        return b'"error_id": "' + new + b'"'

    return _ERROR_ID.sub(swap, frame)


def _pace(start: float, sent: int, interval: float) -> None:
    ahead = start + sent * interval - time.perf_counter()
    if ahead > 0.001:
        time.sleep(ahead)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run_replay(parser.parse_args()))

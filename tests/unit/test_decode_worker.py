"""The decode worker (``bridge.adapters.decode_worker``) with real child processes: what it
settles equals the bridge's own decoding, in read order, exactly once, through a killed child,
a message that kills it, a child that never starts and a child that stops answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel

from bridge.adapters import decode_worker
from bridge.adapters.decode_worker import DecodeWorker, WorkerSettings
from bridge.metrics import Metrics
from bridge.pipeline.identity import frames_digest
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.runner import IngestRunner
from contracts.codec import decode
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent
from contracts.subjects import Subjects
from tests.support.corpus import load_corpus
from tests.support.fakes import RecordingSink
from tests.support.frames import d1_frame

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = WorkerSettings(machine="MainPC", local_timezone="Asia/Manila")
WALL = datetime(2026, 12, 4, 9, 0, 0, 123456, tzinfo=UTC)


def _runner(metrics: Metrics) -> tuple[IngestRunner, RecordingSink]:
    sink = RecordingSink()
    runner = IngestRunner(
        SETTINGS.decoder(SETTINGS.identity()),
        OutboundBuilder(Subjects("errbus"), "b1", 1024 * 1024),
        sink,
        metrics,
        wall_clock=lambda: WALL,
    )
    return runner, sink


def _worker(metrics: Metrics, **kwargs: object) -> tuple[DecodeWorker, RecordingSink]:
    runner, sink = _runner(metrics)
    fallback = SETTINGS.decoder(SETTINGS.identity())
    return DecodeWorker(SETTINGS, runner, fallback, metrics, **kwargs), sink  # type: ignore[arg-type]


async def _feed(worker: DecodeWorker, messages: list[list[bytes]], chunk: int = 32) -> None:
    """What the ZMQ reader does: chunks of at most 32, only while the worker is ready."""
    for i in range(0, len(messages), chunk):
        while not worker.ready():
            await worker.wait_ready()
        worker.handle_batch(messages[i : i + chunk])


def _d1(n: int, tag: str = "ev") -> list[list[bytes]]:
    return [[d1_frame(f"{tag}-{i:06d}", f"agent{i % 7}")] for i in range(n)]


def _ids(sink: RecordingSink) -> list[str]:
    return [item.msg_id for item in sink.items]


async def test_what_the_worker_settles_equals_the_bridge_decoding_in_its_own_process() -> None:
    messages = [row.frames for row in load_corpus()] * 3  # identical repeats: D7 occurrence ids
    metrics = Metrics()
    worker, sink = _worker(metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _feed(worker, messages)
        await worker.flush(30.0)
        assert metrics.decode_worker_up._value.get() == 1
        tg.cancel_scope.cancel()
    here, expected = _runner(Metrics())
    for i in range(0, len(messages), 32):
        here.handle_batch(messages[i : i + 32])
    assert not worker.in_process and worker.restarts == 0
    assert len(sink.items) == len(expected.items) == len(messages)
    for got, want in zip(sink.items, expected.items, strict=True):
        assert (got.subject, got.headers, got.payload) == (want.subject, want.headers, want.payload)
    assert {type(decode(item.payload)) for item in sink.items} == {ErrorEvent, DeadLetter}
    assert metrics.decoded.labels("prefix_text")._value.get() > 0  # D7


def _auto_worker(metrics: Metrics, **kwargs: object) -> tuple[DecodeWorker, RecordingSink]:
    """``zmq.decode_worker: auto``: the fallback decoder's identity is shared with the child."""
    runner, sink = _runner(metrics)
    identity = SETTINGS.identity()
    fallback = SETTINGS.decoder(identity)
    worker = DecodeWorker(
        SETTINGS,
        runner,
        fallback,
        metrics,
        identity=identity,
        inline_max=64,
        **kwargs,  # type: ignore[arg-type]
    )
    return worker, sink


async def _settled(worker: DecodeWorker) -> None:
    with anyio.fail_after(30):
        while worker.in_flight:
            await anyio.sleep(0.005)


async def _child_up(worker: DecodeWorker, metrics: Metrics, restarts: int = 0) -> None:
    with anyio.fail_after(30):
        while worker.restarts < restarts or metrics.decode_worker_up._value.get() != 1:
            await anyio.sleep(0.01)


async def test_auto_decodes_small_turns_here_and_the_rest_of_a_big_one_in_the_child() -> None:
    """``inline_max``: a reader turn's first messages are decoded here while nothing is out to
    the child, the rest of the turn goes to it, and so does every turn while it has something
    unanswered. Repeats of identical frames (D7: occurrence ids) are numbered across both
    processes as the bridge alone numbers them, and everything is settled once, in order."""
    messages = [row.frames for row in load_corpus()] * 6
    metrics = Metrics()
    worker, sink = _auto_worker(metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _child_up(worker, metrics)
        i, turn = 0, 0
        while i < len(messages):
            if turn % 2:  # a big turn: 64 here, 96 to the child, no yield in between
                for _ in range(5):
                    worker.handle_batch(messages[i : i + 32])
                    i += 32
                turn_sent = worker.in_flight
                assert turn_sent <= 1  # gathered into one chunk, sent when the turn ends
                await anyio.lowlevel.checkpoint()
                worker.handle_batch(messages[i : i + 8])  # next turn: the child is busy
                i += 8
                await _settled(worker)
            else:  # small turns: decoded here
                for _ in range(3):
                    before = worker.decoded_here
                    worker.handle_batch(messages[i : i + 10])
                    assert worker.decoded_here == before + len(messages[i : i + 10])
                    i += 10
                    await anyio.lowlevel.checkpoint()
            turn += 1
        await worker.flush(30.0)
        tg.cancel_scope.cancel()
    here, expected = _runner(Metrics())
    for j in range(0, len(messages), 32):
        here.handle_batch(messages[j : j + 32])
    assert 0 < worker.decoded_here < len(messages) - 300
    assert worker.restarts == 0 and not worker.in_process
    assert len(sink.items) == len(expected.items) == len(messages)
    assert _ids(sink) == _ids(expected)
    for got, want in zip(sink.items, expected.items, strict=True):
        assert (got.subject, got.payload) == (want.subject, want.payload)


async def test_a_restarted_child_gets_the_whole_identity_table_and_goes_on_counting() -> None:
    """After a restart the new child starts from the bridge's table (sent with its first
    chunk), not only from what the bridge counted since: a message repeated byte for byte
    keeps getting new occurrence ids, none reused."""
    frame, other = [b"ERROR: disk full on /var (no id)"], [b"ERROR: another one (no id)"]
    metrics = Metrics()
    worker, sink = _auto_worker(metrics)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _child_up(worker, metrics)
        for _ in range(10):  # one turn of 320: 64 here, 256 in the child
            worker.handle_batch([frame] * 32)
        await anyio.lowlevel.checkpoint()
        await _settled(worker)
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        await _child_up(worker, metrics, restarts=1)
        worker.handle_batch([other] * 32)  # here: the only change since the last chunk
        worker.handle_batch([other] * 32)
        for _ in range(8):  # the new child's first chunk
            worker.handle_batch([frame] * 32)
        await anyio.lowlevel.checkpoint()
        await worker.flush(30.0)
        tg.cancel_scope.cancel()
    assert worker.decoded_here == 128
    ids = [i for i in _ids(sink) if i.startswith(frames_digest(frame))]
    assert [int(i.rsplit("-", 1)[1]) for i in ids] == list(range(1, 577))


async def test_steady_traffic_decoded_here_sends_its_identity_changes_on_as_it_goes() -> None:
    """While the bridge decodes steady traffic itself, its identity changes go to the child
    in requests of their own (at most ``_TABLE_SYNC_ENTRIES`` waiting): memory stays bounded
    and a later burst in the child numbers repeats from the bridge's counts."""
    frames = [[f"ERROR: steady message {i} (no id)".encode()] for i in range(3000)]
    metrics = Metrics()
    worker, sink = _auto_worker(metrics)
    identity = worker._identity
    assert identity is not None
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _child_up(worker, metrics)
        for i in range(0, len(frames), 20):  # small turns: all decoded here
            worker.handle_batch(frames[i : i + 20])
            assert identity.changes_waiting() < decode_worker._TABLE_SYNC_ENTRIES + 20
            await anyio.lowlevel.checkpoint()
        assert worker.decoded_here == len(frames) and worker.in_flight == 0
        for i in range(0, 320, 32):  # one turn: 64 here, 256 in the child, repeats of the first
            worker.handle_batch(frames[i : i + 32])
        await anyio.lowlevel.checkpoint()
        await worker.flush(30.0)
        tg.cancel_scope.cancel()
    assert metrics.decode_worker_messages._value.get() == 256
    repeats = _ids(sink)[len(frames) :]
    assert [i.rsplit("-", 1)[1] for i in repeats] == ["2"] * 320


async def test_a_killed_worker_is_restarted_and_every_message_is_settled_once_in_order() -> None:
    messages = _d1(4000)
    metrics = Metrics()
    worker, sink = _worker(metrics, max_in_flight=4)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _feed(worker, messages[:1000])
        with anyio.fail_after(30):
            while worker.pid is None or not sink.items:
                await anyio.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
        await _feed(worker, messages[1000:])
        await worker.flush(30.0)
        tg.cancel_scope.cancel()
    assert worker.restarts == 1 and not worker.in_process
    assert metrics.decode_worker_restarts._value.get() == 1
    assert _ids(sink) == [f"ev-{i:06d}" for i in range(4000)]


async def test_a_message_that_kills_the_worker_twice_is_dead_lettered_with_its_bytes() -> None:
    poison = [b"POISON frame \xff", b"second"]
    messages = _d1(40)
    messages[5] = poison
    worker, sink = _worker(
        Metrics(), command=[sys.executable, "-m", "tests.support.poison_decode_worker"]
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _feed(worker, messages)
        await worker.flush(60.0)
        tg.cancel_scope.cancel()
    # the chunk of 32 kills it twice -> split; the poison alone twice more -> dead letter
    assert worker.restarts == 4 and not worker.in_process
    msgs = [decode(item.payload) for item in sink.items]
    assert len(msgs) == 40
    letter = msgs[5]
    assert isinstance(letter, DeadLetter) and letter.reason is DeadLetterReason.INVALID_JSON
    assert letter.frames == poison and "died twice" in letter.detail
    events = [m for i, m in enumerate(msgs) if i != 5]
    assert all(isinstance(m, ErrorEvent) for m in events)
    assert [m.event_id for m in events] == [f"ev-{i:06d}" for i in range(40) if i != 5]


async def test_a_worker_that_never_starts_leaves_the_decoding_to_the_bridge() -> None:
    messages = _d1(200)
    metrics = Metrics()
    worker, sink = _worker(
        metrics,
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        max_in_flight=2,
        hello_timeout_secs=0.3,
        max_failed_starts=2,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        worker.handle_batch(messages[:32])
        await anyio.lowlevel.checkpoint()  # the reader's turn ends: its messages go as one chunk
        worker.handle_batch(messages[32:64])
        await anyio.lowlevel.checkpoint()
        assert not worker.ready()  # backpressure: the reader stops reading
        with anyio.fail_after(30):
            await worker.wait_ready()
        assert worker.in_process and worker.pid is None
        await _feed(worker, messages[64:])
        tg.cancel_scope.cancel()
    assert worker.restarts == 1  # one restart after the first failed start, none after the second
    assert metrics.decode_worker_up._value.get() == 0
    assert _ids(sink) == [f"ev-{i:06d}" for i in range(200)]


async def test_what_a_hung_worker_holds_at_stop_is_decoded_by_the_bridge() -> None:
    messages = _d1(300)
    worker, sink = _worker(Metrics())
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await _feed(worker, messages[:100])
        await worker.flush(30.0)
        assert worker.pid is not None
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            await _feed(worker, messages[100:])
            await worker.flush(0.5)
            assert worker.in_process and worker.in_flight == 0
        finally:
            os.kill(pid, signal.SIGCONT)
        tg.cancel_scope.cancel()
    assert _ids(sink) == [f"ev-{i:06d}" for i in range(300)]


def test_the_worker_exits_when_the_bridge_process_dies(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import anyio, sys
            sys.path.insert(0, sys.argv[1])
            from tests.unit.test_decode_worker import _worker
            from bridge.metrics import Metrics

            async def main():
                worker, _ = _worker(Metrics())
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    while worker.pid is None or not worker.ready():
                        await anyio.sleep(0.01)
                    print(worker.pid, flush=True)
                    await anyio.sleep(60)

            anyio.run(main)
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(script), str(ROOT)], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
        finally:
            parent.kill()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited and not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

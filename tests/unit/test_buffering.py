"""SpooledQueue with a real SQLite spool and a publisher over a fake transport."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from bridge.metrics import Metrics
from bridge.pipeline import buffering
from bridge.pipeline.acks import AckOutcome, AckResult
from bridge.pipeline.buffering import SpooledQueue, _to_row
from bridge.pipeline.publish import Outbound, PipelinedPublisher
from bridge.pipeline.spool import Spool
from tests.support.fakes import FakeClock, FakeTransport


def _item(n: int, rank: int = 3) -> Outbound:
    return Outbound(
        "errbus.error.m.error.s",
        b"x%d" % n,
        {"Nats-Msg-Id": f"id-{n}"},
        "error_event",
        f"id-{n}",
        rank=rank,
    )


def _queue(
    path: Path, max_pending: int = 100, synchronous: str = "NORMAL", **kw
) -> tuple[SpooledQueue, PipelinedPublisher, Metrics]:
    metrics = Metrics()
    pub = PipelinedPublisher(
        FakeTransport(), "_INBOX.t", metrics, max_pending=max_pending, clock=FakeClock()
    )
    queue = SpooledQueue(Spool(path, synchronous), pub, metrics, **kw)
    pub.on_done = queue.on_done
    return queue, pub, metrics


async def test_reader_stops_where_the_publisher_refuses_and_resumes_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_to_row(_item(n), 1.0) for n in range(5)])
    spool.close()
    queue, pub, _ = _queue(tmp_path / "s.db", max_pending=2)
    assert queue.draining and queue.rows == 5
    assert await queue._feed(10) == 2 and queue.cursor == 2
    pub._pending.clear()  # the publisher sent them
    assert await queue._feed(10) == 2 and queue.cursor == 4
    pub._pending.clear()
    assert await queue._feed(10) == 1 and await queue._feed(10) == 0
    assert not queue.draining


async def test_rows_left_by_a_previous_run_are_published_first_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_to_row(_item(n), 1.0) for n in range(3)])
    spool.close()
    queue, pub, metrics = _queue(tmp_path / "s.db")
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        tg.start_soon(pub.run)
        queue.submit(_item(100))
        with anyio.fail_after(5):
            while len(pub._transport.sent) < 4:
                await anyio.sleep(0.01)
        sent = [s[3]["Nats-Msg-Id"] for s in pub._transport.sent]
        assert sent == ["id-0", "id-1", "id-2", "id-100"]
        for i in range(4):
            pub.on_ack(pub._transport.token(i), AckResult(AckOutcome.STORED))
        with anyio.fail_after(5):
            while queue.rows:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    # the live message arrived behind the backlog, so it too was read back from disk
    assert metrics.spool_replayed._value.get() == 4 and metrics.spool_acks._value.get() == 4
    await queue.flush_acks()


async def test_abandoned_messages_stay_in_the_spool(tmp_path: Path) -> None:
    queue, pub, _ = _queue(tmp_path / "s.db")
    queue.submit(_item(1))
    await queue.flush_staging()
    assert pub.abandon_all() == 1
    await queue.flush_acks()
    assert Spool(tmp_path / "s.db").stats()[0] == 1


@pytest.mark.parametrize("retain_secs", [0.0, 60.0])
async def test_messages_settled_together_leave_the_spool_as_one_by_one(
    tmp_path: Path, retain_secs: float
) -> None:
    """``on_done_many`` (the batch publisher's flow acks and commits) does what ``on_done``
    does per message: stored rows deleted (or retained), abandoned ones kept."""
    queue, _, _ = _queue(tmp_path / "s.db", retain_acked_secs=retain_secs)
    items = [_item(n) for n in range(6)]
    for item in items:
        queue.submit(item)
    await queue.flush_staging()
    assert [item.spool_seq for item in items] == [1, 2, 3, 4, 5, 6]
    queue.on_done_many(items[:3], "stored", AckResult(AckOutcome.STORED))
    queue.on_done_many(items[3:4], "duplicate", AckResult(AckOutcome.DUPLICATE))
    queue.on_done_many(items[4:], "abandoned", AckResult(AckOutcome.STORED))
    await queue.flush_acks()
    spool = Spool(tmp_path / "s.db")
    unacked, _, _, _ = spool.stats()
    retained, _, last_retained = spool.retained_stats()
    assert unacked == 2  # the abandoned two stay for the next start
    assert (retained, last_retained) == ((3, 3) if retain_secs else (0, 0))
    assert queue.rows == 2


def test_staging_is_bounded(tmp_path: Path) -> None:
    queue, _, _ = _queue(tmp_path / "s.db", staging_max=2)
    assert [queue.submit(_item(n)) for n in range(3)] == [True, True, False]


async def test_replays_older_than_the_duplicate_window_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_to_row(_item(n), at) for n, at in enumerate([100.0, 100.0, 990.0])])
    spool.close()
    queue, _, metrics = _queue(
        tmp_path / "s.db", duplicate_window_secs=60.0, wall_clock=lambda: 1000.0
    )
    assert await queue._feed(10) == 3
    assert metrics.spool_duplicate_risk._value.get() == 2
    assert "older than the stream's duplicate window" in caplog.text


async def test_drain_catches_up_while_live_batches_keep_landing(tmp_path: Path) -> None:
    """Under steady live traffic a batch is committed between any two reads, so a read never
    comes back empty: catching up means the cursor reached the writer's last row. From then on
    live batches are handed to the publisher directly (not read back from disk), in order."""
    spool = Spool(tmp_path / "s.db")
    spool.append([_to_row(_item(n), 1.0) for n in range(500)])
    spool.close()
    queue, pub, metrics = _queue(tmp_path / "s.db", max_pending=100_000, batch_max=50)
    live = iter(range(1000, 2000))
    io = queue._io

    async def live_batch_before_every_read(fn, *args):  # type: ignore[no-untyped-def]
        if fn == queue._read_committed:
            queue.submit(_item(next(live)))
            await anyio.lowlevel.checkpoint()  # the writer takes the spool first
        return await io(fn, *args)

    queue._io = live_batch_before_every_read  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        with anyio.fail_after(5):
            while queue.draining:
                await anyio.sleep(0.001)
        replayed = metrics.spool_replayed._value.get()
        for _ in range(100):
            queue.submit(_item(next(live)))
            await anyio.sleep(0.001)
        with anyio.fail_after(5):  # every live message written and with the publisher
            while queue._staging or len(pub._pending) < 500 + metrics.spool_appends._value.get():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert metrics.spool_replayed._value.get() == replayed  # the last 100 were handed off directly
    ids = [int(item.msg_id.removeprefix("id-")) for item in pub._pending]
    assert ids[:500] == list(range(500))  # backlog first
    assert ids[500:] == list(range(1000, 1000 + len(ids) - 500))  # then live, in order, each once
    assert len(ids) == 500 + metrics.spool_appends._value.get()
    await queue.flush_acks()


async def test_what_the_publisher_had_no_room_for_is_fed_from_memory_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Committed rows the publisher refused stay in memory while they follow the cursor: fed
    from there, not read back; beyond the memory cap they are read from disk, after them."""
    monkeypatch.setattr(buffering, "_UNFED_MAX_BYTES", 5 * _to_row(_item(0), 1.0).size)
    queue, pub, metrics = _queue(tmp_path / "s.db", max_pending=2)
    reads = []
    read_after = queue.spool.read_after
    queue.spool.read_after = lambda seq, *rest: reads.append(seq) or read_after(seq, *rest)  # type: ignore[method-assign]
    for n in range(4):
        queue.submit(_item(n))
    await queue.flush_staging()  # one batch: 2 to the publisher, 2 kept in memory
    for n in range(4, 10):
        queue.submit(_item(n))
    await queue.flush_staging()  # 3 more fit the cap of 5, the other 3 only on disk
    assert [item.spool_seq for item in queue._unfed] == [3, 4, 5, 6, 7]
    fed: list[str] = []
    while queue.draining:
        fed += [item.msg_id for item in pub._pending]
        pub._pending.clear()  # the publisher sent them
        await queue._feed(10)
    fed += [item.msg_id for item in pub._pending]
    assert fed == [f"id-{n}" for n in range(10)]
    assert reads and min(reads) == 7  # only the rows beyond the cap were read back
    assert metrics.spool_replayed._value.get() == 3
    await queue.flush_acks()


async def test_an_eviction_drops_the_rows_kept_in_memory(tmp_path: Path) -> None:
    size = _to_row(_item(0), 1.0).size
    queue, pub, _ = _queue(tmp_path / "s.db", max_pending=1, max_bytes=int(2.5 * size))
    for n in range(3):
        queue.submit(_item(n, rank=4 if n == 1 else 0))
    await queue.flush_staging()  # over max_bytes: the lowest rank above the cursor goes
    assert queue.rows == 2 and not queue._unfed
    pub._pending.clear()
    await queue._feed(10)
    assert [item.msg_id for item in pub._pending] == ["id-1"]  # read from disk: 2 was evicted
    await queue.flush_acks()


async def test_rows_in_memory_behind_the_cursor_are_not_fed_again(tmp_path: Path) -> None:
    """The reader may feed rows from disk that the writer also kept in memory (it committed
    them while the read waited): memory is used only when it holds the very next row."""
    queue, pub, _ = _queue(tmp_path / "s.db", max_pending=2)
    for n in range(4):
        queue.submit(_item(n))
    await queue.flush_staging()
    assert [item.spool_seq for item in queue._unfed] == [3, 4]
    pub._pending.clear()
    queue.cursor = 3  # row 3 went to the publisher from disk meanwhile
    await queue._feed(10)
    assert [item.msg_id for item in pub._pending] == ["id-3"]  # row 4, read from disk
    assert not queue._unfed and not queue.draining
    await queue.flush_acks()


async def test_appends_go_on_while_a_wal_checkpoint_runs(tmp_path: Path) -> None:
    """The maintenance task's checkpoint runs on its own connection, outside the spool's call
    limiter: a batch submitted meanwhile is committed and handed on at once, not after it."""
    queue, pub, _ = _queue(tmp_path / "s.db")
    started, release = threading.Event(), threading.Event()
    checkpoint = queue.spool.checkpoint

    def slow_checkpoint() -> tuple[int, int]:
        started.set()
        release.wait(10)
        return checkpoint()

    queue.spool.checkpoint = slow_checkpoint  # type: ignore[method-assign]
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue._checkpoint)
            with anyio.fail_after(5):
                while not started.is_set():
                    await anyio.sleep(0.01)
            queue.submit(_item(1))
            tg.start_soon(queue._write_batch)  # shielded: a timeout cannot cut it short
            deadline = anyio.current_time() + 5
            while queue.rows < 1 and anyio.current_time() < deadline:
                await anyio.sleep(0.01)
            written_meanwhile = queue.rows == 1 and len(pub._pending) == 1
            release.set()
    finally:
        release.set()
    assert written_meanwhile, "the append waited for the checkpoint"
    assert [row[4] for row in queue.spool.read_after(0, 10)] == ["id-1"]
    queue.spool.close()


@pytest.mark.parametrize(
    "wal_pages", [buffering._WAL_RESTART_PAGES - 1, buffering._WAL_RESTART_PAGES]
)
async def test_a_large_wal_gets_its_checkpoint_completed_between_two_appends(
    tmp_path: Path, wal_pages: int
) -> None:
    """From ``_WAL_RESTART_PAGES`` on, the maintenance checkpoint is followed by
    ``complete_checkpoint`` inside the spool's call limiter (no append runs alongside it)."""
    queue, _, _ = _queue(tmp_path / "s.db")
    calls: list[bool] = []
    queue.spool.checkpoint = lambda: (wal_pages, wal_pages)  # type: ignore[method-assign]
    complete = queue.spool.complete_checkpoint

    def completing() -> tuple[int, int]:
        calls.append(queue._io_limiter.borrowed_tokens == 1)
        return complete()

    queue.spool.complete_checkpoint = completing  # type: ignore[method-assign]
    await queue._checkpoint()
    assert calls == ([True] if wal_pages >= buffering._WAL_RESTART_PAGES else [])
    queue.spool.close()


_R = buffering._WAL_RESTART_PAGES


@pytest.mark.parametrize(
    ("answers", "passes"),
    [
        ([(_R, _R - 400), (_R + 150, _R + 100), (_R + 160, _R + 160)], 3),
        ([(_R, _R), (_R + 90, _R + 90 - buffering._COMPLETE_LEFT_PAGES)], 2),
        ([(_R, 0)] * 10, 1 + buffering._CATCH_UP_PASSES),
    ],
)
async def test_before_completing_the_database_is_flushed_and_passes_copy_what_came_meanwhile(
    tmp_path: Path, answers: list[tuple[int, int]], passes: int
) -> None:
    """The completion holds appends for as long as it copies and fsyncs: the database file is
    flushed first, then passes (one at least) run until at most ``_COMPLETE_LEFT_PAGES`` are
    left, ``_CATCH_UP_PASSES`` at most; all outside the limiter, on worker threads."""
    queue, _, _ = _queue(tmp_path / "s.db")
    results = iter(answers)
    calls: list[tuple[str, bool, bool]] = []

    def record(name: str) -> None:
        loop_thread = threading.current_thread() is threading.main_thread()
        calls.append((name, queue._io_limiter.borrowed_tokens == 1, loop_thread))

    def checkpoint() -> tuple[int, int]:
        record("pass")
        return next(results)

    def complete() -> tuple[int, int]:
        record("complete")
        return 0, 0

    queue.spool.checkpoint = checkpoint  # type: ignore[method-assign]
    queue.spool.sync_database = lambda: record("flush")  # type: ignore[method-assign]
    queue.spool.complete_checkpoint = complete  # type: ignore[method-assign]
    await queue._checkpoint()
    outside = ("pass", False, False)
    assert calls == [
        outside,
        ("flush", False, False),
        *[outside] * (passes - 1),
        ("complete", True, False),
    ]
    queue.spool.close()


async def test_under_full_a_batch_is_published_after_its_commit_while_the_wal_is_synced(
    tmp_path: Path,
) -> None:
    """The writer commits a batch without its fsync and hands it on at once; the syncer fsyncs
    the WAL on a worker thread (the event loop runs on meanwhile) and again for what was
    committed during that sync: ``synced_seq`` ends at the last commit."""
    queue, pub, _ = _queue(tmp_path / "s.db", synchronous="FULL")
    spool = queue.spool
    entered, release = threading.Event(), threading.Event()
    sync_wal = spool.sync_wal
    began_after: list[int] = []  # rows committed when each sync began

    def held_sync() -> None:
        began_after.append(len(spool.read_after(0, 100)))
        entered.set()
        release.wait(10)
        sync_wal()

    spool.sync_wal = held_sync  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        for n in range(3):
            queue.submit(_item(n))
        with anyio.fail_after(5):
            while not entered.is_set() or len(pub._pending) < 3:
                await anyio.sleep(0.001)
        for n in range(3, 5):  # committed and published while the first sync is held
            queue.submit(_item(n))
        with anyio.fail_after(5):
            while len(pub._pending) < 5:
                await anyio.sleep(0.001)
        assert queue.synced_seq == 0
        release.set()
        with anyio.fail_after(5):
            while queue.synced_seq < 5:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert [item.msg_id for item in pub._pending] == [f"id-{n}" for n in range(5)]
    assert began_after[0] >= 3 and began_after[-1] == 5
    await queue.flush_acks()


async def test_under_full_the_wal_is_synced_at_most_every_sync_interval_and_covers_every_commit(
    tmp_path: Path,
) -> None:
    """Batches committed every millisecond or so: the syncer starts an fsync of the WAL at most
    every ``_SYNC_MIN_INTERVAL_SECS`` (each covers every commit before it began), and the
    last one covers the last commit."""
    queue, pub, _ = _queue(tmp_path / "s.db", max_pending=1000, synchronous="FULL")
    sync_wal, starts = queue.spool.sync_wal, []

    def timed_sync() -> None:
        starts.append(time.monotonic())
        sync_wal()

    queue.spool.sync_wal = timed_sync  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.run)
        for n in range(150):
            queue.submit(_item(n))
            await anyio.sleep(0.001)
        with anyio.fail_after(5):
            while queue.synced_seq < 150:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) >= 2 and min(gaps) >= buffering._SYNC_MIN_INTERVAL_SECS / 2  # timer slack
    assert queue.synced_seq == 150 and len(pub._pending) == 150
    await queue.flush_acks()

"""Retention of acknowledged rows and the stream-loss check (bridge.pipeline.stream_loss,
Spool.retire/restore_after, SpooledQueue.restore_lost), against a scripted stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.load import parse_config
from bridge.errors import ConfigError
from bridge.pipeline import buffering
from bridge.pipeline.acks import AckOutcome, AckResult
from bridge.pipeline.buffering import _to_row
from bridge.pipeline.spool import Anchor, Spool
from bridge.pipeline.stream_loss import DELETED, holder, last_held
from tests.unit.test_buffering import _item, _queue


class Stream:
    """A stream as the check sees it: sequence -> Nats-Msg-Id, and its bounds."""

    def __init__(self, ids: dict[int, str], first: int = 1, last: int | None = None) -> None:
        self.ids = ids
        self.first = first
        self.last = max(ids, default=0) if last is None else last
        self.gets: list[int] = []

    async def stream_bounds(self, stream: str) -> tuple[int, int]:
        return self.first, self.last

    async def msg_id_at(self, stream: str, seq: int) -> str:
        self.gets.append(seq)
        return self.ids.get(seq, DELETED)


def _anchors(n: int) -> list[Anchor]:
    return [Anchor(seq=i + 1, stream_seq=100 + i, msg_id=f"id-{i}") for i in range(n)]


async def _last_held(stream: Stream, anchors: list[Anchor]) -> int | None:
    return await last_held(anchors, holder(stream, "S", stream.first, stream.last))


async def test_nothing_lost_costs_one_request() -> None:
    anchors = _anchors(1000)
    stream = Stream({a.stream_seq: a.msg_id for a in anchors})
    assert await _last_held(stream, anchors) is None
    assert stream.gets == [1099]


async def test_a_lost_suffix_is_found_by_binary_search() -> None:
    anchors = _anchors(1000)
    stream = Stream({a.stream_seq: a.msg_id for a in anchors[:637]})  # the rest went back
    assert await _last_held(stream, anchors) == 636
    assert len(stream.gets) <= 11


async def test_sequences_given_again_to_other_messages_count_as_lost() -> None:
    """After the restart another publisher got the lost sequence numbers before the check."""
    anchors = _anchors(100)
    ids = {a.stream_seq: a.msg_id for a in anchors[:40]}
    ids.update({a.stream_seq: f"other-{a.stream_seq}" for a in anchors[40:]})
    ids[300] = "other-300"
    assert await _last_held(Stream(ids), anchors) == 39


async def test_everything_lost_and_purged_or_deleted_messages() -> None:
    anchors = _anchors(10)
    assert await _last_held(Stream({}, first=0, last=0), anchors) == -1  # an empty store
    # purged (first sequence moved past them) or deleted: not a loss, nothing to restore
    assert await _last_held(Stream({}, first=500, last=499), anchors) is None
    deleted = Stream({a.stream_seq: a.msg_id for a in anchors[:5]}, last=109)
    assert await _last_held(deleted, anchors) is None


def test_spool_retires_prunes_and_restores_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    seqs = spool.append([_to_row(_item(n), 1.0) for n in range(10)])
    spool.retire(seqs[:6], 100.0, [(seqs[2], 502), (seqs[5], 505)])
    assert spool.stats()[0] == 4
    assert spool.retained_stats()[0] == 6
    assert spool.anchors() == [Anchor(seqs[2], 502, "id-2"), Anchor(seqs[5], 505, "id-5")]
    rows, _, last = spool.restore_after(seqs[2], seqs[5])  # id-3..5 lost: behind id-6..9
    assert rows == 3 and spool.retained_stats()[0] == 3
    order = [row[4] for row in spool.read_after(0, 100)]
    assert order == [f"id-{n}" for n in (6, 7, 8, 9, 3, 4, 5)] and last > seqs[-1]
    assert spool.prune_retained(seqs[-1], 100.5) == 3 and spool.retained_stats()[0] == 0
    spool.close()


async def test_queue_retains_stored_rows_and_restores_the_lost_ones(tmp_path: Path) -> None:
    queue, _, metrics = _queue(tmp_path / "s.db", retain_acked_secs=60.0)
    items = [_item(n) for n in range(6)]
    seqs = queue.spool.append([_to_row(i, 1.0) for i in items])
    for item, seq in zip(items, seqs, strict=True):
        item.spool_seq, item.size = seq, 10
    queue.rows, queue.bytes, queue.cursor = 6, 60, seqs[-1]
    for n, item in enumerate(items[:5]):
        queue.on_done(item, "stored", AckResult(AckOutcome.STORED, seq=200 + n))
    queue.on_done(items[5], "duplicate", AckResult(AckOutcome.DUPLICATE, seq=3))
    await queue._delete_acked()
    assert (queue.rows, queue.retained_rows) == (0, 5)  # the duplicate was not retained
    queue.connection_lost()  # the server restarts, having lost 202 and after
    # acknowledged by the restarted server before the check ran: 202 given again, held
    (seq,) = queue.spool.append([_to_row(_item(9), 1.0)])
    late = _item(9)
    late.spool_seq, late.size = seq, 10
    queue.rows += 1
    queue.on_done(late, "stored", AckResult(AckOutcome.STORED, seq=202))
    stream = Stream({200: "id-0", 201: "id-1", 202: "id-9"})
    assert await queue.restore_lost(stream, "ERRBUS") == 3  # id-9 is not taken for a held one
    assert queue.rows == 3 and queue.retained_rows == 3 and queue.draining
    assert metrics.spool_restored._value.get() == 3
    assert [r[4] for r in queue.spool.read_after(queue.cursor, 10)] == ["id-2", "id-3", "id-4"]
    queue.connection_lost()
    assert await queue.restore_lost(Stream({200: "id-0", 201: "id-1", 202: "id-9"}), "S") == 0
    await queue.flush_acks()


async def test_retention_window_and_byte_cap(tmp_path: Path) -> None:
    now = [1000.0]
    queue, _, _ = _queue(tmp_path / "s.db", retain_acked_secs=60.0, retain_max_bytes=25)
    queue._wall = lambda: now[0]
    for n in range(3):  # three retire calls of one 10-byte row each, 10 s apart
        (seq,) = queue.spool.append([_to_row(_item(n), now[0])])
        item = _item(n)
        item.spool_seq, item.size = seq, 10
        queue.rows += 1
        queue.on_done(item, "stored", None)
        await queue._delete_acked()
        now[0] += 10
    await queue._prune_retained()  # 30 B > 25 B: the oldest goes
    assert (queue.retained_rows, queue.retained_bytes) == (2, 20)
    now[0] += 60
    await queue._prune_retained()  # older than 60 s, but the stream was not checked yet
    assert queue.retained_rows == 2
    queue.connection_lost()
    assert await queue.restore_lost(Stream({}, first=5000, last=4999), "ERRBUS") == 0
    assert queue.retention_checked
    await queue._prune_retained()  # all older than 60 s, and checked
    assert queue.retained_rows == 0 and queue.spool.retained_stats()[0] == 0
    await queue.flush_acks()


async def test_retained_rows_are_pruned_in_bounded_transactions(tmp_path: Path) -> None:
    """Three retire units of 600 rows: pruned in two transactions (units are not split; a
    transaction ends once it holds ``_PRUNE_BATCH_ROWS``), every row gone, the counts right."""
    now = [1000.0]
    queue, _, _ = _queue(tmp_path / "s.db", retain_acked_secs=60.0)
    queue._wall = lambda: now[0]
    for unit in range(3):
        seqs = queue.spool.append([_to_row(_item(unit * 600 + n), now[0]) for n in range(600)])
        queue.rows += 600
        for seq in seqs:
            item = _item(seq)
            item.spool_seq, item.size = seq, 10
            queue.on_done(item, "stored", None)
        await queue._delete_acked()
    assert queue.retained_rows == 1800 and buffering._PRUNE_BATCH_ROWS == 1024
    pruned: list[int] = []
    prune = queue.spool.prune_retained

    def counting(upto: int, cutoff: float) -> int:
        pruned.append(prune(upto, cutoff))
        return pruned[-1]

    queue.spool.prune_retained = counting  # type: ignore[method-assign]
    queue.retention_checked = True
    now[0] += 61
    await queue._prune_retained()
    assert pruned == [1200, 600]
    assert (queue.retained_rows, queue.retained_bytes) == (0, 0)
    assert queue.spool.retained_stats()[0] == 0
    await queue.flush_acks()


def test_retention_longer_than_the_duplicate_window_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"spool\.retain_acked_secs"):
        parse_config("spool: {retain_acked_secs: 700}\nstream: {duplicate_window_secs: 600}")

"""The SQLite spool: order, no seq reuse, eviction order, age eviction, corrupt file recovery."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import pytest

from bridge.pipeline.spool import (
    _CHUNK_ROWS,
    AUTOCHECKPOINT_PAGES,
    Anchor,
    Spool,
    SpoolRow,
    _chunks,
)


def _row(n: int, rank: int = 3, at: float = 1000.0, size: int = 100) -> SpoolRow:
    return SpoolRow(
        rank, at, "error_event", f"id-{n}", f"errbus.error.m.error.s{n}", b"{}", b"x%d" % n, size
    )


def test_append_read_delete_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    seqs = spool.append([_row(n) for n in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    assert [r[4] for r in spool.read_after(2, 10)] == ["id-2", "id-3", "id-4"]
    spool.delete([1, 2])
    assert spool.stats()[:2] == (3, 300)
    spool.close()


def test_large_append_in_multi_row_chunks_keeps_order_seqs_and_content(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(0)])
    rows = [
        _row(n, rank=n % 5, at=1000.0 + n, size=n) for n in range(1, 1100)
    ]  # 512+512+64+11 rows: several statements, one transaction
    seqs = spool.append(rows)
    assert seqs == list(range(2, 1101))
    assert [SpoolRow(*r[1:]) for r in spool.read_after(1, 2000)] == rows
    assert spool.stats()[:2] == (1100, 100 + sum(range(1, 1100)))
    spool.close()


def test_every_size_up_to_512_rows_takes_at_most_four_statements_from_a_bounded_set() -> None:
    sizes = {n: _chunks(n) for n in range(1, 2001)}
    assert all(sum(chunks) == n for n, chunks in sizes.items())
    assert max(len(sizes[n]) for n in range(1, 513)) == 4
    assert all(len(sizes[n]) == 1 for n in (*range(1, 17), 24, 32, 48, 64, 96, 128, 256, 512))
    assert len({size for chunks in sizes.values() for size in chunks}) == len(_CHUNK_ROWS) <= 26


def test_insert_then_commit_or_rollback(tmp_path: Path) -> None:
    """The writer's two halves: nothing is visible to another connection before ``commit``;
    ``rollback`` leaves no row and no used ``seq``; a failing insert rolls itself back."""
    spool = Spool(tmp_path / "s.db")
    other = Spool(tmp_path / "s.db")
    assert spool.insert([_row(n) for n in range(3)]) == [1, 2, 3]
    assert other.read_after(0, 10) == []
    spool.commit()
    assert [r[0] for r in other.read_after(0, 10)] == [1, 2, 3]
    assert spool.insert([_row(3)]) == [4]
    spool.rollback()
    with pytest.raises(sqlite3.IntegrityError):
        spool.insert([_row(5), _row(6)._replace(kind=None)])  # type: ignore[arg-type]  # NOT NULL
    assert spool.append([_row(7)]) == [4]
    assert spool.append([]) == []
    with pytest.raises(ValueError):
        spool.insert([])
    assert [r[4] for r in other.read_after(0, 10)] == ["id-0", "id-1", "id-2", "id-7"]
    spool.close()
    other.close()


def test_seq_is_never_reused_even_when_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(1), _row(2)])
    spool.delete([1, 2])
    assert spool.append([_row(3)]) == [3]
    spool.close()
    reopened = Spool(tmp_path / "s.db")
    assert reopened.append([_row(4)]) == [4]
    reopened.close()


def test_rows_survive_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(n) for n in range(3)])
    spool.close()
    again = Spool(tmp_path / "s.db", synchronous="FULL")
    assert [r[4] for r in again.read_after(0, 10)] == ["id-0", "id-1", "id-2"]
    again.close()


def test_evict_lowest_severity_first_then_oldest_and_never_at_or_below_cursor(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "s.db")
    ranks = [1, 4, 1, 0, 3, 0, 2]  # seq 1..7
    spool.append([_row(n, rank=r) for n, r in enumerate(ranks)])
    victims = spool.evict_lowest(after_seq=1, bytes_needed=350)
    assert [(v.seq, v.rank) for v in victims] == [
        (4, 0),
        (6, 0),
        (3, 1),
        (7, 2),
    ]  # seq 1 is at the cursor: kept
    assert [r[0] for r in spool.read_after(0, 10)] == [1, 2, 5]
    spool.close()


def test_retired_rows_stay_retained_until_pruned_and_are_never_read_or_evicted_as_pending(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(n, at=1000.0 + n) for n in range(10)])  # seq 1..10
    spool.retire([1, 2, 3, 4], 2000.0, [(4, 77)])
    spool.retire([6, 7], 2500.0)
    assert [r[0] for r in spool.read_after(0, 100)] == [5, 8, 9, 10]
    assert spool.stats() == (4, 400, 1004.0, 10)
    assert spool.oldest_enqueued_at() == 1004.0
    assert spool.retained_stats() == (6, 600, 7)
    assert spool.anchors() == [Anchor(4, 77, "id-3")]
    assert [v.seq for v in spool.evict_older_than(0, 1009.0)] == [5, 8, 9]
    assert [v.seq for v in spool.evict_lowest(0, 10**9)] == [10]
    assert spool.retained_stats() == (6, 600, 7)  # retained rows are never evicted
    assert spool.prune_retained(7, 2100.0) == 4  # only the run acknowledged at 2000
    assert spool.retained_stats() == (2, 200, 7) and spool.anchors() == []
    spool.close()
    again = Spool(tmp_path / "s.db")
    assert again.retained_stats() == (2, 200, 7) and again.stats()[:2] == (0, 0)
    assert again.append([_row(10)]) == [11]
    assert again.prune_retained(7, 3000.0) == 2 and again.retained_stats() == (0, 0, 0)
    again.close()


#: the spool's first on-disk format (until user_version 2): ``spool`` held only pending rows,
#: acknowledged ones moved to ``retained``
_FIRST_FORMAT = """
CREATE TABLE spool (seq INTEGER PRIMARY KEY AUTOINCREMENT, rank INTEGER NOT NULL,
    enqueued_at REAL NOT NULL, kind TEXT NOT NULL, msg_id TEXT NOT NULL, subject TEXT NOT NULL,
    headers BLOB NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL);
CREATE INDEX spool_by_rank ON spool(rank, seq);
CREATE TABLE retained (seq INTEGER PRIMARY KEY, rank INTEGER NOT NULL, enqueued_at REAL NOT NULL,
    kind TEXT NOT NULL, msg_id TEXT NOT NULL, subject TEXT NOT NULL, headers BLOB NOT NULL,
    payload BLOB NOT NULL, size INTEGER NOT NULL, acked_at REAL NOT NULL, stream_seq INTEGER);
"""


def test_a_spool_file_of_the_first_format_is_converted_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as db:
        db.executescript(_FIRST_FORMAT)
        values = "(?, 3, 1000.0, 'error_event', ?, 'errbus.error.m.error.s', '{}', ?, 100)"
        for seq in (1, 2, 3, 5, 6):  # acknowledged (4 was a duplicate: deleted)
            db.execute(
                f"INSERT INTO retained VALUES {values[:-1]}, ?, ?)",
                (seq, f"id-{seq}", b"p", 2000.0 + seq, 900 + seq if seq == 3 else None),
            )
        for seq in (7, 8, 9):  # pending
            db.execute(f"INSERT INTO spool VALUES {values}", (seq, f"id-{seq}", b"p"))
    spool = Spool(path)
    assert [r[4] for r in spool.read_after(0, 10)] == ["id-7", "id-8", "id-9"]
    assert spool.stats()[:2] == (3, 300)
    assert spool.retained_stats() == (5, 500, 6)
    assert spool.anchors() == [Anchor(3, 903, "id-3")]
    assert spool.prune_retained(3, 2003.5) == 3  # run 1-3 (acknowledged at 2003 at the latest)
    assert spool.append([_row(10)]) == [10]
    assert spool._db.execute("PRAGMA user_version").fetchone()[0] == 2
    spool.close()
    again = Spool(path)  # opening again changes nothing
    assert [r[0] for r in again.read_after(0, 10)] == [7, 8, 9, 10]
    assert again.retained_stats() == (2, 200, 6)
    again.close()


def test_evict_older_than_stops_at_the_first_young_row(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(0, at=10.0), _row(1, at=20.0), _row(2, at=30.0), _row(3, at=40.0)])
    victims = spool.evict_older_than(after_seq=0, cutoff_epoch=25.0, chunk=1)
    assert [v.seq for v in victims] == [1, 2]
    spool.close()


def test_corrupt_file_is_moved_aside_and_a_fresh_spool_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    spool = Spool(path)
    assert spool.recovered_from is not None and spool.recovered_from.read_bytes().startswith(
        b"this is not"
    )
    assert spool.append([_row(1)]) == [1]
    assert "moved aside" in caplog.text
    spool.close()


def test_synchronous_is_checked() -> None:
    with pytest.raises(ValueError):
        Spool("/nonexistent/x.db", synchronous="OFF")


def test_delete_by_ranges_deletes_exactly_the_given_rows(tmp_path: Path) -> None:
    from bridge.pipeline.spool import _ranges

    assert _ranges([5, 3, 4, 9, 1, 10, 4]) == [(1, 1), (3, 5), (9, 10)]
    spool = Spool(tmp_path / "s.db")
    spool.append([_row(n) for n in range(10)])
    spool.delete([5, 3, 4, 9, 1, 10])
    assert [r[0] for r in spool.read_after(0, 20)] == [2, 6, 7, 8]
    spool.close()


def test_commits_leave_checkpoints_to_the_owner_up_to_the_safety_net(tmp_path: Path) -> None:
    """Commits do not checkpoint below ``AUTOCHECKPOINT_PAGES``: the WAL keeps every page until
    ``checkpoint`` copies them all into the database file (which then holds every row)."""
    spool = Spool(tmp_path / "s.db", synchronous="FULL")
    big = [
        SpoolRow(3, 1000.0, "error_event", f"id-{n}", "s", b"{}", b"x" * 4000, 4000)
        for n in range(2500)
    ]
    for start in range(0, len(big), 500):  # ~2,500 pages: SQLite's default would checkpoint
        spool.append(big[start : start + 500])
    pages, copied = spool.checkpoint()
    assert AUTOCHECKPOINT_PAGES > pages > 2000
    assert copied == pages
    assert spool.checkpoint() == (pages, pages)  # nothing new since: nothing left to copy
    spool.close()


def test_a_completed_checkpoint_lets_the_next_append_write_the_wal_from_its_beginning(
    tmp_path: Path,
) -> None:
    """Pages committed after ``checkpoint`` keep the WAL from starting over: it grows with each
    append. ``complete_checkpoint`` copies them; the next append then writes the WAL from its
    beginning (the file does not grow) and every row is still there."""
    spool = Spool(tmp_path / "s.db", synchronous="FULL")
    wal = tmp_path / "s.db-wal"
    rows = [
        SpoolRow(3, 1000.0, "error_event", f"id-{n}", "s", b"{}", b"x" * 4000, 4000)
        for n in range(700)
    ]
    spool.append(rows[:300])
    first, _ = spool.checkpoint()
    spool.append(rows[300:600])  # committed while the checkpoint ran, in the bridge
    before = wal.stat().st_size
    spool.append(rows[600:650])
    assert wal.stat().st_size > before, "the WAL started over without a complete checkpoint"
    pages, copied = spool.complete_checkpoint()
    assert pages > first and copied == pages
    before = wal.stat().st_size
    spool.append(rows[650:])
    assert wal.stat().st_size == before
    assert spool.checkpoint()[0] < first // 4  # the WAL holds the last append only
    assert len(spool.read_after(0, 1000)) == 700
    spool.close()


def test_sync_database_fdatasyncs_the_database_file_alongside_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sync_database`` flushes the database file (not the WAL) through its own descriptor,
    while the writer holds a transaction open; ``close`` closes that descriptor."""
    spool = Spool(tmp_path / "s.db", synchronous="FULL")
    spool.append([_row(n) for n in range(50)])
    spool.checkpoint()
    synced: list[int] = []
    fdatasync = os.fdatasync
    monkeypatch.setattr(
        os, "fdatasync", lambda fd: synced.append(os.fstat(fd).st_ino) or fdatasync(fd)
    )
    spool.insert([_row(50)])  # a transaction open on the spool's connection
    spool.sync_database()
    spool.commit()
    spool.sync_database()
    assert synced == [(tmp_path / "s.db").stat().st_ino] * 2
    fd = spool._db_fd
    spool.close()
    with pytest.raises(OSError):
        os.fstat(fd)  # type: ignore[arg-type]


def test_a_checkpoint_runs_while_the_writer_holds_a_transaction_open(tmp_path: Path) -> None:
    """``checkpoint`` has its own connection: another thread can run it in the middle of an
    ``insert`` ... ``commit`` on the spool's connection (on that connection SQLite refused it:
    "database table is locked"), and it copies what was committed before."""
    spool = Spool(tmp_path / "s.db", "FULL")
    spool.append([_row(n) for n in range(50)])
    spool.insert([_row(n) for n in range(50, 60)])
    result: list[tuple[int, int]] = []
    thread = threading.Thread(target=lambda: result.append(spool.checkpoint()))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and result, "the checkpoint failed or hung"
    pages, copied = result[0]
    assert pages > 0 and copied == pages
    spool.commit()
    assert [row[0] for row in spool.read_after(0, 100)] == list(range(1, 61))
    spool.close()


def test_deletes_zero_only_what_costs_no_extra_io(tmp_path: Path) -> None:
    """The connection runs ``secure_delete=FAST`` whatever the build's default (Debian's is ON,
    which zeroes every freed page and so logs it: twice the WAL pages per delete)."""
    spool = Spool(tmp_path / "s.db")
    assert spool._db.execute("PRAGMA secure_delete").fetchone()[0] == 2  # 0 OFF, 1 ON, 2 FAST
    spool.close()


def _synchronous(spool: Spool) -> int:
    return spool._db.execute("PRAGMA synchronous").fetchone()[0]  # 1 NORMAL, 2 FULL


def test_only_appends_pay_an_fsync_of_their_own_under_full(tmp_path: Path) -> None:
    """Under FULL the connection runs at SQLite's NORMAL and the spool fsyncs the WAL itself
    (``sync_wal``) after the transactions that must survive a power cut: appends, evictions.
    Deleting, retiring and pruning acknowledged rows do not (a power cut may undo them
    harmlessly); no transaction switches the connection's level; a failed one syncs nothing."""
    spool = Spool(tmp_path / "s.db", "FULL")
    statements: list[str] = []
    spool._db.set_trace_callback(statements.append)
    syncs: list[int] = []
    sync_wal = spool.sync_wal

    def counted_sync() -> None:
        syncs.append(1)
        sync_wal()

    spool.sync_wal = counted_sync  # type: ignore[method-assign]

    def fsyncs(call: object) -> int:
        statements.clear()
        syncs.clear()
        call()  # type: ignore[operator]
        assert _synchronous(spool) == 1
        assert [s for s in statements if s.startswith(("BEGIN", "COMMIT"))] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ]
        assert not [s for s in statements if s.startswith("PRAGMA synchronous=")]
        return len(syncs)

    assert fsyncs(lambda: spool.append([_row(n) for n in range(10)])) == 1
    assert fsyncs(lambda: spool.append([_row(n) for n in range(2)], synced=False)) == 0
    assert fsyncs(lambda: spool.delete([1, 2])) == 0
    assert fsyncs(lambda: spool.retire([3, 4, 5], 2000.0, [(5, 77)])) == 0
    assert fsyncs(lambda: spool.prune_retained(5, 3000.0)) == 0
    assert fsyncs(lambda: spool.evict_older_than(0, 5000.0)) == 1
    spool.append([_row(n) for n in range(3)])
    assert fsyncs(lambda: spool.evict_lowest(0, 1)) == 1

    spool._db.execute("DROP TABLE acked")  # the next retire fails inside its transaction
    syncs.clear()
    with pytest.raises(sqlite3.OperationalError):
        spool.retire([12], 2000.0)
    assert not syncs and not spool._db.in_transaction
    spool.close()


def test_a_normal_spool_stays_normal(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", "NORMAL")
    spool.append([_row(n) for n in range(3)])
    spool.retire([1, 2], 2000.0)
    spool.delete([3])
    assert _synchronous(spool) == 1
    spool.close()


def test_an_unsynced_append_skips_the_fsync_that_sync_wal_then_makes_on_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``append(synced=False)`` under FULL commits (the connection runs at NORMAL) without an
    fsync; ``sync_wal`` then fsyncs the WAL file itself, reopening it when it was replaced."""
    spool = Spool(tmp_path / "s.db", "FULL")
    statements: list[str] = []
    spool._db.set_trace_callback(statements.append)
    assert spool.append([_row(n) for n in range(5)], synced=False) == [1, 2, 3, 4, 5]
    levels = [s for s in statements if s.startswith(("PRAGMA synchronous=", "BEGIN", "COMMIT"))]
    assert levels == ["BEGIN IMMEDIATE", "COMMIT"]
    assert _synchronous(spool) == 1
    wal = tmp_path / "s.db-wal"
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_ino) or fsync(fd))
    spool.sync_wal()
    spool.sync_wal()
    assert synced == [wal.stat().st_ino] * 2
    aside = tmp_path / "old-wal"
    wal.rename(aside)  # what SQLite does not do while open; the descriptor must follow the name
    wal.write_bytes(aside.read_bytes())
    spool.sync_wal()
    assert synced[-1] == wal.stat().st_ino != aside.stat().st_ino
    aside.rename(wal)
    assert [r[0] for r in spool.read_after(0, 10, upto=3)] == [1, 2, 3]
    spool.close()

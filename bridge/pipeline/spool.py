"""Durable spool: the on-disk queue between ingest and JetStream (SQLite, WAL).

Design note
-----------
On-disk format (``PRAGMA user_version`` 2): one SQLite database (stdlib ``sqlite3``) in WAL
mode with three tables::

    spool(seq INTEGER PRIMARY KEY AUTOINCREMENT, rank INTEGER, enqueued_at REAL,
          kind TEXT, msg_id TEXT, subject TEXT, headers BLOB, payload BLOB, size INTEGER,
          stream_seq INTEGER NULL)
    pending(seq INTEGER PRIMARY KEY, rank INTEGER, size INTEGER)   -- not yet acknowledged
    acked(first_seq INTEGER PRIMARY KEY, last_seq INTEGER, acked_at REAL)  -- retained runs

Every ``spool`` row is either **pending** (its ``seq`` in ``pending``: to be published) or
**retained** (inside one ``acked`` run: JetStream acknowledged it at ``acked_at``). A row never
moves: an acknowledgement deletes a few small ``pending`` keys and adds one ``acked`` run per
contiguous range, where moving the rows to a table of their own cost ~10 us per 1 KB row on
the event loop (measured: 512-row batches of 1 KB, append + acknowledge 14-18 -> 7 us per row).
Files of the first format (``spool`` holding the pending rows, ``retained`` the acknowledged
ones) are converted when opened.

* ``seq`` is the spool order: AUTOINCREMENT guarantees a deleted ``seq`` is
  never reused, so a reader's cursor stays valid. Rows are appended in ZMQ read
  order, so per-connection order is ``seq`` order.
* ``rank`` is the severity rank (0 debug .. 4 critical): eviction order.
* ``enqueued_at`` is wall-clock epoch seconds (it must survive a restart).
* ``headers`` is the JSON of the NATS headers (``Nats-Msg-Id`` included), so a
  replay after a restart publishes the very same message.
* ``size`` is the bytes a row accounts for (payload + subject + headers).

* Retained rows are those JetStream already acknowledged, kept for a while
  (``retire``: their ``pending`` keys deleted and their run recorded in ``acked``, one
  transaction; ``prune_retained``: dropped once older than the retention window). A PubAck
  means "in the server's memory", not "on its disk": a nats-server syncs its file
  store every ``sync_interval`` (2 min by default), so a power cut of the NATS
  host can lose what it acknowledged last. ``stream_seq`` is the stream sequence
  the PubAck gave (None when the publisher did not learn it: inside a fast-ingest
  batch only the commit carries one); ``bridge.pipeline.stream_loss`` uses those
  as anchors and ``restore_after`` appends the rows found lost again as pending rows
  (new ``seq`` values, same ``Nats-Msg-Id``; the old ones deleted), to be published again.

WAL checkpoints (copying the WAL back into the database file, an fsync of it
under FULL) are the slow part of writing; ``wal_autocheckpoint`` is raised to
``AUTOCHECKPOINT_PAGES`` so commits rarely run one, and the owner calls
``checkpoint`` regularly from a thread that may block (``SpooledQueue``: every
second, on a worker thread, while appends go on over the main connection).
SQLite writes the WAL from its beginning again only once a checkpoint copied all of it,
and one that runs while appends go on never does: the WAL grows until a commit runs the
auto-checkpoint inline. ``complete_checkpoint``, on the main connection between two
appends, copies what was committed during ``checkpoint`` and so lets the next append start
the WAL over. It ends with an fsync of the database file, which SQLite makes only for a
checkpoint that copies the whole WAL: that one flushes every page the passes copied since the
last completion too. Its time is what it copies plus that flush: right after a pass of ~6 s
of WAL, ~150 pages, 39-74 ms; after passes that leave a few pages (``SpooledQueue``) still
28-58 ms, nearly all the flush (strace: ``fdatasync`` of the database file 36 ms); with
``sync_database`` on a worker thread before the last pass, 0.8-3.2 ms. Measured at 10k msg/s
D1 without any completion: every 3 s a commit took 32-40 ms (the auto-checkpoint, then at
16,384 pages), on the event loop.

Invariants: a row is appended (committed, pending) before its message is published and
leaves ``pending`` only after its PubAck. ``synchronous`` NORMAL survives a process kill
(``kill -9``); FULL also survives power loss. The connection itself always runs at SQLite's
``synchronous=NORMAL`` (no fsync at commit); FULL is this class's policy: a transaction that
must survive a power cut is followed by ``sync_wal`` (an ``os.fsync`` of the WAL file, no
SQLite call), which is what SQLite's FULL does at each commit, and may run later on any
thread: ``append(synced=False)`` leaves it to the caller (``SpooledQueue`` runs it on a
worker thread). Switching the connection's level around each transaction instead cost two
``PRAGMA`` statements per transaction (22-36 us of an 18-row append's 161-184 us). Under FULL only
appends, evictions and restores pay an fsync of their own: ``delete``, ``retire`` and
``prune_retained`` do not. A power cut
may undo those, and that is harmless: an acknowledged row that comes back as pending is
published again under its ``Nats-Msg-Id`` (collapsed by the stream's duplicate window, or
counted as a duplicate risk beyond it), a retained row that comes back is pruned again. The
WAL is one file written in order, so the next append's fsync makes them durable too.
``SpooledQueue`` runs ``retire`` on the event loop's thread for every ~512 acknowledgements:
a few key deletions and one insert per contiguous run, whatever the rows' size.

Every method but ``checkpoint`` runs on one thread at a time (the caller serialises them;
``check_same_thread`` is off for that reason); ``checkpoint`` has its own connection and may
run alongside any of them. None touches the event loop.

A file that is not a database, is malformed or fails ``PRAGMA quick_check``
is renamed to ``<name>.corrupt-<epoch>`` and a fresh spool is started
(``recovered_from`` tells where the old file went). Operational errors (locked,
read-only, I/O) are raised instead: that spool may be fine and is not discarded.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

__all__ = ["AUTOCHECKPOINT_PAGES", "Anchor", "Spool", "SpoolRow", "StoredRow"]

#: WAL pages (4 KiB each, 256 MiB) after which a commit checkpoints by itself: a safety net for
#: an owner that does not call ``checkpoint`` and ``complete_checkpoint`` in time (SQLite's
#: default is 1,000). The WAL file keeps its largest size on disk.
AUTOCHECKPOINT_PAGES = 65_536

log = logging.getLogger(__name__)

#: ``sqlite3`` binds int, float, str and bytearray directly but looks every ``bytes`` parameter
#: up as an adaptable object first: two failed attribute lookups, each building and dropping an
#: AttributeError (~0.2 us per parameter; a row has two). A registered adapter is found in its
#: table at once; this one returns the object itself (``bytes(b) is b`` for exact bytes), so
#: what is bound does not change, in this module or any other of the process.
sqlite3.register_adapter(bytes, bytes)

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rank INTEGER NOT NULL,
    enqueued_at REAL NOT NULL,
    kind TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    headers BLOB NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    stream_seq INTEGER
);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    rank INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_by_rank ON pending(rank, seq);
CREATE TABLE IF NOT EXISTS acked (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    acked_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_anchors ON spool(seq) WHERE stream_seq IS NOT NULL;
"""
_COLUMNS = "rank, enqueued_at, kind, msg_id, subject, headers, payload, size"
_S_COLUMNS = ", ".join(f"s.{c}" for c in _COLUMNS.split(", "))
#: pending rows with their data, in ``seq`` order: ``FROM`` clause of every read of them
_PENDING = "pending p JOIN spool s ON s.seq = p.seq"


class Anchor(NamedTuple):
    """A retained row whose stream sequence is known: ``(seq, stream_seq, msg_id)``."""

    seq: int
    stream_seq: int
    msg_id: str


class SpoolRow(NamedTuple):
    """One message to store; ``headers`` is JSON bytes, ``size`` in bytes."""

    rank: int
    enqueued_at: float
    kind: str
    msg_id: str
    subject: str
    headers: bytes
    payload: bytes
    size: int


#: a row as read back: ``(seq, rank, enqueued_at, kind, msg_id, subject, headers, payload, size)``,
#: i.e. ``seq`` then the ``SpoolRow`` fields, as the plain tuple SQLite returns. Not a NamedTuple:
#: building one per row cost more than the read itself (2.3 vs 1.4 us per 1 KB row, 2,000-row reads).
StoredRow = tuple[int, int, float, str, str, str, bytes, bytes, int]


class Evicted(NamedTuple):
    seq: int
    rank: int
    size: int


class Spool:
    """The SQLite spool file at ``path``. ``synchronous``: ``NORMAL`` or ``FULL``."""

    def __init__(self, path: str | Path, synchronous: str = "NORMAL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.path = Path(path)
        self.synchronous = synchronous
        self.recovered_from: Path | None = None
        #: ``checkpoint``'s own connection (opened on first use): a WAL checkpoint then needs
        #: no turn on the writer's connection, and appends go on while it copies pages
        self._checkpoint_db: sqlite3.Connection | None = None
        self._wal_fd: int | None = None  # ``sync_wal``'s descriptor of the WAL file
        self._db_fd: int | None = None  # ``sync_database``'s descriptor of the database file
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.OperationalError:
            raise  # locked, read-only, I/O error: not corrupt; refuse to start rather than discard it
        except sqlite3.DatabaseError as exc:  # not a database, malformed, failed quick_check
            self._db = self._start_fresh(exc)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # FULL: sync_wal after commits (module note)
            db.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            # Debian's SQLite (and others) is built with SECURE_DELETE: it zeroes every deleted
            # row and freed page, and so logs them to the WAL. Deleting or pruning acknowledged
            # rows wrote twice the pages (3,421 against 1,755 for 10k 1.2 KB rows) and took
            # 1.5-2x as long (retire 10.8 -> 6.2 ms, prune 31.8 -> 16.7 ms). FAST zeroes deleted
            # content only where that costs no I/O; the spool promises no erasure (its rows are
            # bound for the stream, and kept there).
            db.execute("PRAGMA secure_delete=FAST")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("quick_check failed")
            if db.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
                _upgrade(db)
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _start_fresh(self, exc: Exception) -> sqlite3.Connection:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        self.path.rename(aside)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(aside.with_name(aside.name + suffix))
        log.error(
            "spool %s is unreadable (%s): moved aside to %s, starting a fresh spool",
            self.path,
            exc,
            aside,
        )
        self.recovered_from = aside
        return self._open()

    def append(self, rows: Sequence[SpoolRow], *, synced: bool = True) -> list[int]:
        """Insert ``rows`` in one transaction; return their ``seq`` values (contiguous, in
        order). ``insert`` then ``commit``, on the calling thread. ``synced=False``: committed
        without an fsync of its own even under FULL; the rows survive a process kill, and a
        power cut only after ``sync_wal`` returned (the caller's job: ``SpooledQueue`` runs it
        on a worker thread right after the commit)."""
        if not rows:
            return []
        seqs = self.insert(rows)
        self.commit()
        if synced and self.synchronous == "FULL":
            self.sync_wal()
        return seqs

    def sync_wal(self) -> None:
        """fsync the WAL file: every transaction committed so far (on any connection) then
        survives a power cut, as ``synchronous=FULL`` makes each commit survive one. Blocks on
        the disk; touches no SQLite connection, so it may run on another thread alongside any
        call. Raises ``OSError`` when the file cannot be opened or synced."""
        wal = self.path.with_name(self.path.name + "-wal")
        fd = self._wal_fd
        if fd is None or os.fstat(fd).st_ino != os.stat(wal).st_ino:  # new file: reopen
            if fd is not None:
                os.close(fd)
            fd = self._wal_fd = os.open(wal, os.O_RDONLY)
        os.fsync(fd)

    def insert(self, rows: Sequence[SpoolRow]) -> list[int]:
        """Begin a transaction and insert ``rows`` in it; return their ``seq`` values
        (contiguous, in order). The caller ends it with ``commit`` (or ``rollback``) before
        any other call. Raises ``ValueError`` for no rows, ``sqlite3.Error`` when SQLite
        refuses (the transaction is rolled back first).

        The inserts are few statements: multi-row ``INSERT ... VALUES (..),(..)`` of sizes
        from ``_CHUNK_ROWS`` (one to four statements up to 512 rows; a bounded set, so
        SQLite's statement cache holds them all). Few, because ``sqlite3`` releases the GIL
        around every prepare and step, and on a thread that shares the GIL with a busy one
        each step waits for it (up to the switch interval): measured, 108 1 KB rows appended
        from a thread while another ran Python took 12 ms in 13 statements, 4.8 ms in 4."""
        if not rows:
            raise ValueError("no rows to insert")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            start = 0
            for size in _chunks(len(rows)):
                last = self._insert(self._db, rows[start : start + size])
                start += size
            first = last - len(rows) + 1
            self._db.execute(
                "INSERT INTO pending (seq, rank, size) "
                "SELECT seq, rank, size FROM spool WHERE seq BETWEEN ? AND ?",
                (first, last),
            )
        except BaseException:
            self.rollback()
            raise
        return list(range(first, last + 1))

    def commit(self) -> None:
        """Commit the transaction ``insert`` began; on an error it is rolled back and the
        error (``sqlite3.Error``) raised."""
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def checkpoint(self) -> tuple[int, int]:
        """Copy what the WAL holds into the database file without waiting for readers or the
        writer (``PRAGMA wal_checkpoint(PASSIVE)``, on a connection of its own: callable from
        another thread while a call on the spool's connection, even an open ``insert``
        transaction, is in progress); may block on disk I/O. Returns ``(WAL pages, pages
        copied)``; (-1, -1) when the database is not in WAL mode."""
        if self._checkpoint_db is None:
            self._checkpoint_db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            self._checkpoint_db.execute(f"PRAGMA synchronous={self.synchronous}")
        _, pages, copied = self._checkpoint_db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return pages, copied

    def sync_database(self) -> None:
        """fdatasync the database file through a descriptor of its own: flushes what
        ``checkpoint`` passes copied into it, which SQLite syncs only when a checkpoint copies
        the whole WAL (the passes alongside appends never do: ``complete_checkpoint`` would
        pay that flush, ~30-50 ms after ~6 s of passes at 10k msg/s D1, while appends wait).
        Durability does not depend on it: the WAL keeps every page until a completed checkpoint
        synced the file. Blocks on the disk; touches no SQLite connection, so it may run on
        another thread alongside any call. Raises ``OSError`` when the file cannot be opened
        or synced."""
        if self._db_fd is None:
            self._db_fd = os.open(self.path, os.O_RDONLY)
        os.fdatasync(self._db_fd)

    def complete_checkpoint(self) -> tuple[int, int]:
        """Copy the rest of the WAL into the database file on the spool's own connection
        (``PRAGMA wal_checkpoint(PASSIVE)``; like every call but ``checkpoint``, not alongside
        another one). Right after ``checkpoint`` only the pages committed meanwhile are left to
        copy; with no reader and no transaction open, all of them are, and the next write
        transaction then writes the WAL from its beginning instead of growing it (see the module
        note). SQLite syncs the WAL before and the database file after it, at either
        ``synchronous`` level. Returns ``(WAL pages, pages copied)``; (-1, -1) when the database
        is not in WAL mode. Raises ``sqlite3.Error`` when SQLite refuses."""
        _, pages, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return pages, copied

    def rollback(self) -> None:
        """Abandon the transaction ``insert`` began (no-op when none is open)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    @staticmethod
    def _insert(db: sqlite3.Connection, chunk: Sequence[SpoolRow]) -> int:
        """One multi-row INSERT; the last row's ``seq``."""
        cur = db.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])
        return cur.lastrowid  # type: ignore[return-value]  # an INSERT always sets it

    def read_after(self, seq: int, limit: int, upto: int | None = None) -> list[StoredRow]:
        """Up to ``limit`` pending rows with a ``seq`` greater than ``seq`` (and at most
        ``upto``), in ``seq`` order (``StoredRow``)."""
        if upto is None:
            return self._db.execute(
                f"SELECT p.seq, {_S_COLUMNS} FROM {_PENDING} WHERE p.seq > ? "
                "ORDER BY p.seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return self._db.execute(
            f"SELECT p.seq, {_S_COLUMNS} FROM {_PENDING} WHERE p.seq > ? AND p.seq <= ? "
            "ORDER BY p.seq LIMIT ?",
            (seq, upto, limit),
        ).fetchall()

    def delete(self, seqs: Iterable[int]) -> None:
        """Delete acknowledged rows (one transaction, without an fsync of its own: see the
        module note; contiguous runs as one range each)."""
        self._delete(seqs, synced=False)

    def _delete(self, seqs: Iterable[int], *, synced: bool) -> None:
        ranges = _ranges(seqs)
        if ranges:
            with self._transaction(synced=synced) as db:
                db.executemany(_DELETE_PENDING_RANGE, ranges)
                db.executemany(_DELETE_RANGE, ranges)

    def retire(
        self, seqs: Iterable[int], acked_at: float, stream_seqs: Sequence[tuple[int, int]] = ()
    ) -> None:
        """Mark acknowledged pending rows retained (one transaction): their ``pending`` keys
        go, one ``acked`` run per contiguous range records ``acked_at`` (wall-clock epoch
        seconds); ``stream_seqs``: ``(seq, stream_seq)`` of the rows whose PubAck gave a
        stream sequence (the anchors)."""
        ranges = _ranges(seqs)
        if not ranges:
            return
        with self._transaction(synced=False) as db:
            db.executemany(_DELETE_PENDING_RANGE, ranges)
            db.executemany(
                "INSERT OR REPLACE INTO acked (first_seq, last_seq, acked_at) VALUES (?, ?, ?)",
                [(first, last, acked_at) for first, last in ranges],
            )
            if stream_seqs:
                db.executemany(
                    "UPDATE spool SET stream_seq = ? WHERE seq = ?",
                    [(stream_seq, seq) for seq, stream_seq in stream_seqs],
                )

    def prune_retained(self, upto_seq: int, cutoff_epoch: float) -> int:
        """Drop the retained runs that end at or before ``upto_seq`` and were acknowledged
        before ``cutoff_epoch``; return how many rows went."""
        with self._transaction(synced=False) as db:
            bounds = (upto_seq, cutoff_epoch)
            runs = db.execute(
                "SELECT first_seq, last_seq FROM acked WHERE last_seq <= ? AND acked_at < ?",
                bounds,
            ).fetchall()
            if not runs:
                return 0
            gone = db.executemany(_DELETE_RANGE, runs).rowcount
            db.execute("DELETE FROM acked WHERE last_seq <= ? AND acked_at < ?", bounds)
            return gone

    def retained_stats(self) -> tuple[int, int, int]:
        """``(rows, bytes, last seq)`` of the retained rows."""
        rows, size, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(s.size), 0), COALESCE(MAX(s.seq), 0) "
            "FROM acked a JOIN spool s ON s.seq BETWEEN a.first_seq AND a.last_seq"
        ).fetchone()
        return rows, size, last

    def anchors(self) -> list[Anchor]:
        """Retained rows with a known stream sequence, in ``seq`` order."""
        return [
            Anchor(*row)
            for row in self._db.execute(
                "SELECT seq, stream_seq, msg_id FROM spool "
                "WHERE stream_seq IS NOT NULL ORDER BY seq"
            )
        ]

    def restore_after(self, seq: int, upto_seq: int) -> tuple[int, int, int]:
        """Append the retained rows with ``seq < row seq <= upto_seq`` again as pending rows,
        in order, under new ``seq`` values, and delete the old ones (one transaction); return
        ``(rows, bytes, last seq)``."""
        bounds = (seq, upto_seq)
        retained = (
            "FROM spool WHERE seq > ? AND seq <= ? "
            "AND NOT EXISTS (SELECT 1 FROM pending p WHERE p.seq = spool.seq)"
        )
        with self._transaction() as db:
            rows, size = db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(size), 0) {retained}", bounds
            ).fetchone()
            if rows:
                before = db.execute("SELECT COALESCE(MAX(seq), 0) FROM spool").fetchone()[0]
                db.execute(
                    f"INSERT INTO spool ({_COLUMNS}) SELECT {_COLUMNS} {retained} ORDER BY seq",
                    bounds,
                )
                db.execute(
                    "INSERT INTO pending (seq, rank, size) "
                    "SELECT seq, rank, size FROM spool WHERE seq > ?",
                    (before,),
                )
                db.execute(f"DELETE {retained}", bounds)
                db.execute(
                    "DELETE FROM acked WHERE first_seq > ? AND last_seq <= ?", bounds
                )  # runs partly outside the bounds stay: they still cover rows
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM spool").fetchone()[0]
        return rows, size, last

    def evict_lowest(self, after_seq: int, bytes_needed: int) -> list[Evicted]:
        """Delete pending rows after ``after_seq``, lowest rank first then oldest, until
        ``bytes_needed`` bytes are freed or none are left; return what went."""
        victims: list[Evicted] = []
        freed = 0
        for rank in range(5):
            cur = self._db.execute(
                "SELECT seq, rank, size FROM pending WHERE rank = ? AND seq > ? ORDER BY seq",
                (rank, after_seq),
            )
            for row in cur:
                victims.append(Evicted(*row))
                freed += row[2]
                if freed >= bytes_needed:
                    break
            if freed >= bytes_needed:
                break
        self._delete((v.seq for v in victims), synced=True)  # not acknowledged: keep FULL
        return victims

    def evict_older_than(
        self, after_seq: int, cutoff_epoch: float, chunk: int = 10_000
    ) -> list[Evicted]:
        """Delete pending rows after ``after_seq`` enqueued before ``cutoff_epoch``; return what
        went.

        Rows are enqueued in ``seq`` order, so the scan stops at the first young row.
        """
        first = self._db.execute(
            f"SELECT s.enqueued_at FROM {_PENDING} WHERE p.seq > ? ORDER BY p.seq LIMIT 1",
            (after_seq,),
        ).fetchone()
        if first is None or first[0] >= cutoff_epoch:
            return []
        victims: list[Evicted] = []
        cursor = after_seq
        while True:
            rows = self._db.execute(
                f"SELECT p.seq, p.rank, p.size, s.enqueued_at FROM {_PENDING} WHERE p.seq > ? "
                "ORDER BY p.seq LIMIT ?",
                (cursor, chunk),
            ).fetchall()
            expired = [
                Evicted(seq, rank, size) for seq, rank, size, at in rows if at < cutoff_epoch
            ]
            victims += expired
            if len(expired) < len(rows) or len(rows) < chunk:
                break
            cursor = rows[-1][0]
        self._delete((v.seq for v in victims), synced=True)  # not acknowledged: keep FULL
        return victims

    def stats(self) -> tuple[int, int, float | None, int]:
        """``(pending rows, their bytes, oldest enqueued_at of them or None, last seq of any
        row)``."""
        rows, size, oldest = self._db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(p.size), 0), MIN(s.enqueued_at) FROM {_PENDING}"
        ).fetchone()
        last = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM spool").fetchone()[0]
        return rows, size, oldest, last

    def oldest_enqueued_at(self) -> float | None:
        """``enqueued_at`` of the first pending row, or None."""
        row = self._db.execute(
            f"SELECT s.enqueued_at FROM {_PENDING} ORDER BY p.seq LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        for fd in (self._wal_fd, self._db_fd):
            if fd is not None:
                os.close(fd)
        self._wal_fd = self._db_fd = None
        if self._checkpoint_db is not None:
            self._checkpoint_db.close()
        self._db.close()

    def _transaction(self, *, synced: bool = True) -> _Transaction:
        """A write transaction; under FULL followed by ``sync_wal`` unless ``synced=False``
        (see the module note: only for changes a power cut may undo harmlessly)."""
        return _Transaction(
            self._db, self.sync_wal if synced and self.synchronous == "FULL" else None
        )


#: rows per multi-row INSERT, largest first: ``n`` rows take one statement for ``n`` <= 16 and
#: for the sizes listed, at most four up to 512 rows. 8 columns x 512 = 4096 parameters: under
#: every SQLite's SQLITE_MAX_VARIABLE_NUMBER since 3.32 (999 before: 64 rows at most there).
#: A prepared statement costs ~1.7 KB per row in SQLite's statement cache: ~3 MiB for all.
_CHUNK_ROWS = tuple(
    size
    for size in (512, 384, 256, 192, 128, 96, 64, 48, 32, 24, *range(16, 0, -1))
    if sqlite3.sqlite_version_info >= (3, 32) or size <= 64
)
_DELETE_RANGE = "DELETE FROM spool WHERE seq BETWEEN ? AND ?"
_DELETE_PENDING_RANGE = "DELETE FROM pending WHERE seq BETWEEN ? AND ?"


@functools.lru_cache(maxsize=4096)
def _chunks(n: int) -> tuple[int, ...]:
    """``n`` rows as chunk sizes from ``_CHUNK_ROWS`` (greedy: at most a few statements);
    remembered, as writer batches repeat a few sizes."""
    out: list[int] = []
    for size in _CHUNK_ROWS:
        k, n = divmod(n, size)
        out += [size] * k
    return tuple(out)


@functools.cache
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO spool ({_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?)"] * rows)


def _ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ``seqs`` as inclusive ``(first, last)`` runs: PubAcks arrive nearly in order."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(seq, out[-1][1]))
        else:
            out.append((seq, seq))
    return out


def _upgrade(db: sqlite3.Connection) -> None:
    """Convert a spool file of the first format (no ``user_version``: ``spool`` = pending rows,
    ``retained`` = acknowledged ones with ``acked_at`` and ``stream_seq``) in one transaction;
    a new file only gets its version. Raises ``sqlite3.Error`` (nothing changed then)."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.execute("BEGIN IMMEDIATE")
    try:
        if "spool" in tables:
            db.execute("ALTER TABLE spool ADD COLUMN stream_seq INTEGER")
            for statement in _SCHEMA.split(";"):  # not executescript: it would commit first
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO pending (seq, rank, size) SELECT seq, rank, size FROM spool")
            db.execute("DROP INDEX IF EXISTS spool_by_rank")
        if "retained" in tables:
            db.execute(
                f"INSERT INTO spool (seq, {_COLUMNS}, stream_seq) "
                f"SELECT seq, {_COLUMNS}, stream_seq FROM retained"
            )
            runs: list[list[float]] = []  # [first, last, acked_at]: one per contiguous range
            for seq, acked_at in db.execute("SELECT seq, acked_at FROM retained ORDER BY seq"):
                if runs and seq == runs[-1][1] + 1:
                    runs[-1][1] = seq
                    runs[-1][2] = max(runs[-1][2], acked_at)
                else:
                    runs.append([seq, seq, acked_at])
            db.executemany(
                "INSERT INTO acked (first_seq, last_seq, acked_at) VALUES (?, ?, ?)", runs
            )
            db.execute("DROP TABLE retained")
        db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error); ``sync()`` after a commit,
    when given."""

    def __init__(self, db: sqlite3.Connection, sync: Callable[[], None] | None = None) -> None:
        self.db = db
        self.sync = sync

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        if exc_type is None and self.sync is not None:
            self.sync()

"""Spooled queue: every accepted message goes to the disk spool before it is
published, and leaves it only after its PubAck (DESIGN §2).

Design note
-----------
Three tasks around one ``Spool``, whose SQLite work runs one call at a time
(``_io_limiter``), except WAL checkpoints (their own connection, see below).
The short calls (append, read, delete, retire: a few statements each, bounded
by ``batch_max`` rows) run on the event loop's thread; the long ones
(evictions, pruning retained rows, restoring lost ones, WAL checkpoints,
close) on a worker thread. Why: ``sqlite3`` releases the GIL
around every statement step, and on a worker thread each step then waits for
the busy loop to hand the GIL back, and the result for the loop's next turn.
Measured (steady 5k msg/s D1, 3 rounds alternating): every call on a worker
thread cost 6% more bridge CPU and p50 latency 24 ms against 10 ms. The fsync
is the exception: under ``synchronous=FULL`` the writer commits each batch without it
(``Spool.append(synced=False)``) and the *syncer* task then runs ``Spool.sync_wal`` (one
``os.fsync`` of the WAL, no SQLite call: one GIL hand-off, not one per statement step) on a
worker thread, as soon as rows were committed since its last one but at most every 10 ms
(a sync covers every commit made before it began: the next covers all batches committed
meanwhile; at 10k msg/s D1 bridge CPU per message -6%, ``_SYNC_MIN_INTERVAL_SECS``). The
batch is handed to the publisher right after its commit, not after its fsync. This loses
nothing a power cut would have spared: a message is published only once committed (so a
``kill -9`` loses nothing), and whether a power cut of the bridge host keeps it depends only
on whether its fsync finished first, in both orders; published before, it may even have
been stored by a NATS server on another host. Measured at 10k msg/s D1 (fsync in the
writer, batches handed on after it, against the syncer; 6 alternating rounds): p50 5.0-5.5
-> 4.2-5.0 ms, send-to-stored p99 21-30 -> 16-19 ms (an fsync behind a checkpoint's takes
up to 30-48 ms here). Moving the fsync off the event loop in the first place took the time
in appends on the loop from 3.3-3.8 to 1.5 s per 150k messages. WAL checkpoints,
the slow part of writing, are taken off the commits (``Spool``'s
``wal_autocheckpoint`` is a safety net only) and run every second by the
maintenance task on a worker thread, on a connection of their own
(``Spool.checkpoint``), so appends do not wait for them. The price: a
disk that stalls a commit (not its fsync) stalls the event loop too (ingest, PubAcks, the
admin endpoints) for that long.
A short call made while no call is in progress runs at once without taking the
limiter (it never awaits, so nothing can start meanwhile): the limiter's acquire
and release cost ~8 us per call.

* **writer**: drains the in-memory staging deque that ``submit`` fills (the
  ZMQ reader calls it: it never blocks, never awaits), commits each batch (and syncs the
  WAL, under FULL), and when the publisher is caught up hands the batch straight to it (no
  read back). While a sync runs, staging fills: the next batch is larger (group commit).
  What the publisher has no room for stays in memory as well as on disk (the
  *unfed* deque, up to ``_UNFED_MAX_BYTES``) while its rows directly follow the
  cursor, so a burst the publisher falls behind on is fed from memory rather
  than read back and decoded again (measured: the read-back was ~5% of the
  bridge's time in a 50k burst). Anything else (rows from a previous run, after
  an outage beyond the cap, restored rows) is read from disk.
* **reader**: when the spool holds rows the publisher has not seen (after a
  restart, or while NATS was down and the publisher's window was full), reads
  them in ``seq`` order and feeds the publisher, at most ``max_replay_rate``
  rows per second, until it catches up with the writer: its cursor reaches the
  last row the writer committed (not: a read comes back empty, which under
  steady live traffic almost never happens, as a new batch lands between any
  two reads). Backlog drains before live traffic, so per-connection order holds
  across an outage.
* **deleter**: deletes acknowledged rows in batches; with ``retain_acked_secs`` > 0 rows
  stored by JetStream stay in the spool marked retained instead (``Spool.retire``) and
  the maintenance loop drops them once older than that (or beyond ``retain_max_bytes``,
  oldest first). ``restore_lost`` (after every connect) asks the stream whether it still
  holds them (``bridge.pipeline.stream_loss``) and puts the lost ones back in the spool.
  Age alone drops nothing between a disconnect (``connection_lost``) or a start and the
  next check that succeeded: a NATS host that stays down longer than the window must still
  find its lost messages retained when it comes back.

``cursor`` is the highest ``seq`` handed to the publisher. Rows at or below it
are in the publisher's memory (bounded by its ``max_pending``) and are never
evicted; rows above it live only on disk. The reader and the evictions hold
``_cursor_lock``; the writer's direct hand-off moves the cursor without it,
which is safe because it only runs while caught up (nothing above the cursor
to evict or read) and never awaits. When the spool exceeds ``max_bytes``
rows above the cursor are evicted lowest severity first (debug/info first,
critical last), and rows older than ``max_age_secs`` are evicted too; every
eviction is counted by reason and severity and reported in a summary message
appended to the spool, so it is published once NATS is reachable.

Rows left by a previous run that are older than the stream's duplicate window
when replayed can be stored twice (if they were stored but not yet deleted
before a crash): they are counted as a duplicate risk.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import anyio
import msgspec

from bridge.metrics import Metrics
from bridge.pipeline.acks import AckResult
from bridge.pipeline.publish import Outbound
from bridge.pipeline.spool import Evicted, Spool, SpoolRow, StoredRow
from bridge.pipeline.stream_loss import StreamReader, holder, last_held
from bridge.pipeline.wake import WakeUp
from contracts.messages import Severity

__all__ = ["EvictionTally", "SpooledQueue"]

log = logging.getLogger(__name__)

_headers_encoder = msgspec.json.Encoder()
_headers_decoder = msgspec.json.Decoder(dict[str, str])
_SEVERITY_BY_RANK = {s.rank: s.value for s in Severity}
#: acknowledgements gathered this long before one delete (or retire) transaction, or until
#: this many are waiting: fewer, larger transactions, but none that holds the event loop long
#: (a retire costs ~10 us per 1 KB row here; at 10k msg/s D1, 0.1 s alone made it ~1,700 rows
#: and 20 ms every 170 ms; with the row cap ~600 rows and 5-6 ms, p99 912/166/603 ms ->
#: 365/183/174 ms in three runs each, steady 10k msg/s D1)
_DELETE_GATHER_SECS = 0.1
_DELETE_BATCH_ROWS = 512
#: memory for committed rows the publisher had no room for yet (``_keep_unfed``), in the
#: spool's accounted bytes (payload + subject + headers); the Python objects take about twice
#: that, held at most while the publisher is behind (all of it while NATS is down)
_UNFED_MAX_BYTES = 32 * 1024**2
#: retained rows dropped per transaction at most (plus one retire unit, <= ``_DELETE_BATCH_ROWS``
#: rows): at 10k msg/s D1 one prune of a second's rows held appends 41 ms (median), max 64 ms;
#: in these transactions (and ``secure_delete=FAST``, see ``Spool``) 6.3 ms, max 20 ms
_PRUNE_BATCH_ROWS = 1024
#: WAL size in 4 KiB pages (128 MiB) from which a checkpoint is completed on the spool's
#: connection (``_checkpoint``): ~6 s of appends at 10k msg/s D1 (5,500 pages/s), half the
#: spool's ``AUTOCHECKPOINT_PAGES``...
_WAL_RESTART_PAGES = 32_768
#: ...after up to this many more checkpoint passes outside the limiter, until at most
#: ``_COMPLETE_LEFT_PAGES`` are left uncopied: the completion's time, during which appends
#: wait, grows with what it copies (the two fsyncs alone are ~1 ms). One pass of ~6 s of WAL
#: takes ~30 ms, and left ~150 pages committed meanwhile: completing then held appends 39-74
#: ms (median 54, 8 completions at 10k msg/s D1); after two more passes 1-3 ms
_CATCH_UP_PASSES = 3
_COMPLETE_LEFT_PAGES = 16
#: under FULL, the syncer starts an fsync of the WAL at most this often: each one costs the
#: event loop a hand-off to a worker thread and back, and right after one a batch is
#: committed again (at 10k msg/s D1, ~290 fsyncs a second of ~0.5 ms each, back to back). A
#: power cut may so lose this much more of what was committed last; the writer's gathering
#: of a batch (``zmq.batch_max_secs``, 10 ms) already holds messages as long
_SYNC_MIN_INTERVAL_SECS = 0.01


class EvictionTally:
    """What was evicted since the last summary: counts by severity and by reason."""

    def __init__(self) -> None:
        self.by_severity: Counter[str] = Counter()
        self.by_reason: Counter[str] = Counter()
        self.bytes = 0
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None

    def add(self, victims: list[Evicted], reason: str, now: datetime) -> None:
        for v in victims:
            self.by_severity[_SEVERITY_BY_RANK[v.rank]] += 1
            self.bytes += v.size
        self.by_reason[reason] += len(victims)
        self.first_at = self.first_at or now
        self.last_at = now

    def __bool__(self) -> bool:
        return bool(self.by_reason)


SummaryFactory = Callable[[EvictionTally], Outbound]


class Feed(Protocol):
    """What the queue needs of the publisher it feeds."""

    def submit(self, item: Outbound) -> bool: ...

    @property
    def room(self) -> int: ...


class SpooledQueue:
    """Disk-backed queue feeding a publisher (``submit`` and ``room`` of
    ``bridge.pipeline.publish.PipelinedPublisher``); see the module note.

    ``submit(item) -> bool`` is the ingest side (False: staging full, the caller
    counts a drop). Install ``on_done`` as the publisher's completion callback.
    """

    def __init__(
        self,
        spool: Spool,
        publisher: Feed,
        metrics: Metrics,
        *,
        staging_max: int = 100_000,
        batch_max: int = 2_000,
        max_bytes: int = 1024**3,
        max_age_secs: float = 7 * 86400.0,
        max_replay_rate: float = 0.0,
        duplicate_window_secs: float | None = None,
        summary_factory: SummaryFactory | None = None,
        summary_interval_secs: float = 10.0,
        retain_acked_secs: float = 0.0,
        retain_max_bytes: int = 256 * 1024**2,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if staging_max < 1 or batch_max < 1 or max_bytes < 1:
            raise ValueError("staging_max, batch_max and max_bytes must be positive")
        self.spool = spool
        self.publisher = publisher
        self._m = metrics
        self.staging_max = staging_max
        self.batch_max = batch_max
        self.max_bytes = max_bytes
        self.max_age_secs = max_age_secs
        self.max_replay_rate = max_replay_rate
        self.duplicate_window_secs = duplicate_window_secs
        self._summary_factory = summary_factory
        self.summary_interval_secs = summary_interval_secs
        self._wall = wall_clock
        self.retain_acked_secs = retain_acked_secs
        self.retain_max_bytes = retain_max_bytes
        self._staging: deque[Outbound] = deque()
        self._acked: list[Outbound] = []
        self._stored: list[tuple[Outbound, int]] = []  # acked as stored: (item, stream seq or 0)
        #: retained rows by retire call: [acked_at, last seq, rows, bytes], oldest first
        self._retained: deque[list[Any]] = deque()
        self.retained_rows, self.retained_bytes = 0, 0
        self.retention_checked = False  # the stream was compared since the last disconnect
        #: highest spool seq acknowledged as stored so far, and the highest the next check must
        #: cover: rows acknowledged before the last disconnect (or start), by the server as it
        #: was then; rows acknowledged after the reconnect are held by the server as it is now
        self._max_stored_seq = 0
        self._check_upto = 0
        self._io_limiter = anyio.CapacityLimiter(1)
        self._cursor_lock = anyio.Lock()
        self._retained_lock = anyio.Lock()  # pruning and restoring retained rows
        self._write_wake = WakeUp()
        self._read_wake = WakeUp()
        self._ack_wake = WakeUp()
        self._sync_wake = WakeUp()
        self.tally = EvictionTally()
        self._risk_logged_at = -math.inf
        self.rows, self.bytes = 0, 0
        self.cursor = 0
        self._last_written = 0  # highest seq committed: the reader stops there
        self.synced_seq = 0  # under FULL: highest seq whose commit the WAL's fsync covers
        self._writing = 0
        self.caught_up = True
        #: committed rows not handed to the publisher yet, also kept in memory: consecutive
        #: ``spool_seq`` values (the first is ``cursor + 1`` while they are current)
        self._unfed: deque[Outbound] = deque()
        self._unfed_bytes = 0
        self._load_state()

    def _load_state(self) -> None:
        self.rows, self.bytes, oldest, self._inherited_seq = self.spool.stats()
        self._reload_retained()
        self._last_written = self._inherited_seq
        self.caught_up = self.rows == 0
        if self.rows:
            age = self._wall() - (oldest or self._wall())
            log.warning(
                "spool holds %d unacknowledged messages (%d B, oldest %.0f s): replaying first",
                self.rows,
                self.bytes,
                age,
            )
        if self.spool.recovered_from is not None:
            self._m.spool_recovered.inc()

    def _reload_retained(self) -> None:
        """Retained rows on disk as one unit of the retention accounting (start, restore)."""
        rows, size, last = self.spool.retained_stats()
        self._max_stored_seq = max(self._max_stored_seq, last)
        self._check_upto = max(self._check_upto, last)
        self._retained.clear()
        if rows:
            self._retained.append([self._wall(), last, rows, size])
        self.retained_rows, self.retained_bytes = rows, size

    def reconfigure(
        self,
        *,
        max_bytes: int,
        max_age_secs: float,
        max_replay_rate: float,
        summary_interval_secs: float,
        retain_acked_secs: float | None = None,
        retain_max_bytes: int | None = None,
    ) -> None:
        """Hot reload: new caps and rates apply from the next eviction check, read and summary."""
        if retain_acked_secs is not None:
            self.retain_acked_secs = retain_acked_secs
        if retain_max_bytes is not None:
            self.retain_max_bytes = retain_max_bytes
        self.max_bytes, self.max_age_secs = max_bytes, max_age_secs
        self.max_replay_rate, self.summary_interval_secs = max_replay_rate, summary_interval_secs

    def set_duplicate_window(self, secs: float | None) -> None:
        """The stream's duplicate window in seconds, as the server reported it (None: unknown):
        replayed rows older than it are counted as a duplicate risk."""
        self.duplicate_window_secs = secs

    # -- ingest side ---------------------------------------------------------------------

    def submit(self, item: Outbound) -> bool:
        """Stage ``item`` for the spool; never blocks. False when staging is full."""
        if len(self._staging) >= self.staging_max:
            return False
        self._staging.append(item)
        self._write_wake.set()
        return True

    @property
    def backlog(self) -> int:
        """Messages accepted but not yet acknowledged (staged, being written, in the spool)."""
        return len(self._staging) + self._writing + self.rows

    @property
    def draining(self) -> bool:
        """True while rows wait on disk that the publisher has not been given yet."""
        return not self.caught_up

    # -- publisher side --------------------------------------------------------------------

    def on_done(self, item: Outbound, outcome: str, ack: AckResult | None) -> None:
        """Publisher completion: rows stored by JetStream are retained (``retain_acked_secs``
        > 0) or deleted, duplicate and rejected ones deleted; abandoned ones stay."""
        if outcome == "abandoned" or not item.spool_seq:
            return
        if outcome == "stored" and self.retain_acked_secs > 0:
            self._stored.append((item, ack.seq if ack is not None else 0))
            self._max_stored_seq = max(self._max_stored_seq, item.spool_seq)
        else:
            self._acked.append(item)
        self._ack_wake.set()

    def on_done_many(self, items: list[Outbound], outcome: str, ack: AckResult) -> None:
        """``on_done`` for several messages settled with one outcome and ack (in order)."""
        if outcome == "abandoned":
            return
        spooled = [item for item in items if item.spool_seq]
        if not spooled:
            return
        if outcome == "stored" and self.retain_acked_secs > 0:
            self._stored += [(item, ack.seq) for item in spooled]
            self._max_stored_seq = max(self._max_stored_seq, spooled[-1].spool_seq)
        else:
            self._acked += spooled
        self._ack_wake.set()

    async def restore_lost(self, reader: StreamReader, stream: str) -> int:
        """Compare the retained rows with ``stream`` (see ``bridge.pipeline.stream_loss``) and
        put those it lost back into the spool, to be published again in their order; return
        how many. Only rows acknowledged before the last disconnect (or this process's start)
        are checked: the server that acknowledged later ones is the one answering now.
        Raises what ``reader`` raises (``NotConnected``; the caller tries again)."""
        async with self._retained_lock:
            return await self._restore_lost(reader, stream)

    async def _restore_lost(self, reader: StreamReader, stream: str) -> int:
        if self._stored:  # acknowledged before the disconnect, not yet marked retained
            await self._delete_acked()
        upto = self._check_upto
        if not self.retained_rows or not upto:
            self.retention_checked = True
            return 0
        anchors = [a for a in await self._io_thread(self.spool.anchors) if a.seq <= upto]
        first_seq, last_seq = await reader.stream_bounds(stream)
        index = await last_held(anchors, holder(reader, stream, first_seq, last_seq))
        if index is None:
            self._checked(upto)
            return 0
        after = anchors[index].seq if index >= 0 else 0
        async with self._cursor_lock:
            rows, size, last = await self._io_thread(self.spool.restore_after, after, upto)
            await self._io_thread(self._reload_retained)
            self.rows += rows
            self.bytes += size
            self._last_written = max(self._last_written, last)
            if rows:
                self.caught_up = False
                self._read_wake.set()
        self._checked(upto)
        self._m.spool_restored.inc(rows)
        log.error(
            "stream %s lost messages it had acknowledged (its last sequence is %d, the newest "
            "acknowledged one the bridge retained was %d): publishing again the %d retained "
            "after the last one it still holds",
            stream,
            last_seq,
            anchors[-1].stream_seq,
            rows,
        )
        return rows

    # -- tasks -----------------------------------------------------------------------------

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._write_loop)
            if self.spool.synchronous == "FULL":
                tg.start_soon(self._sync_loop)
            tg.start_soon(self._read_loop)
            tg.start_soon(self._delete_loop)
            tg.start_soon(self._maintain_loop)

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A short spool call, on the event loop's thread, after any call in progress."""
        if not self._io_limiter.borrowed_tokens:  # nothing in progress, and fn never awaits
            return fn(*args)
        async with self._io_limiter:
            return fn(*args)

    async def _io_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A long spool call (scans, large deletes, checkpoints), on a worker thread."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._io_limiter)

    async def _append(self, rows: list[SpoolRow]) -> list[int]:
        """``Spool.append`` without its fsync (``_write_batch`` syncs the WAL after it)."""
        return await self._io(functools.partial(self.spool.append, rows, synced=False))

    async def _write_loop(self) -> None:
        while True:
            await self._write_wake.wait_for(lambda: bool(self._staging))
            await self._write_batch()

    async def _write_batch(self) -> None:
        n = min(len(self._staging), self.batch_max)
        batch = [self._staging.popleft() for _ in range(n)]
        self._writing = n
        now = self._wall()
        rows = [_to_row(item, now) for item in batch]
        with anyio.CancelScope(shield=True):  # a batch taken from staging is always written
            if not self._io_limiter.borrowed_tokens:  # no await between taking and writing
                seqs = self.spool.append(rows, synced=False)
            else:
                seqs = await self._append(rows)
        self._sync_wake.set()
        for item, row, seq in zip(batch, rows, seqs, strict=True):
            item.spool_seq, item.size = seq, row.size
        self.rows += n
        self.bytes += sum(r.size for r in rows)
        self._writing = 0
        self._last_written = max(self._last_written, seqs[-1])  # restore_lost may have appended
        self._m.spool_appends.inc(n)
        self._hand_off(batch)
        if self.bytes > self.max_bytes:
            await self._evict_for_bytes()

    async def _sync_loop(self) -> None:
        """Under FULL: fsync the WAL (``Spool.sync_wal``, a worker thread) whenever rows were
        committed since the last one, at most every ``_SYNC_MIN_INTERVAL_SECS``; each sync
        covers every commit made before it began."""
        while True:
            await self._sync_wake.wait_for(lambda: self._last_written > self.synced_seq)
            began, upto = time.monotonic(), self._last_written
            await anyio.to_thread.run_sync(self.spool.sync_wal)
            self.synced_seq = upto
            await anyio.sleep(max(0.0, began + _SYNC_MIN_INTERVAL_SECS - time.monotonic()))

    def _hand_off(self, batch: list[Outbound]) -> None:
        if self.caught_up:
            for i, item in enumerate(batch):
                if not self.publisher.submit(item):
                    self.caught_up = False
                    self._keep_unfed(batch[i:])
                    break
                self.cursor = item.spool_seq
        else:
            self._keep_unfed(batch)
        if not self.caught_up:
            self._read_wake.set()

    def _keep_unfed(self, items: list[Outbound]) -> None:
        """Keep ``items`` (committed, consecutive) in memory for the reader when they directly
        follow what it will feed next, as many as the cap allows; the rest is read from disk."""
        unfed = self._unfed
        if items[0].spool_seq != (unfed[-1].spool_seq if unfed else self.cursor) + 1:
            return
        for item in items:  # the leading ones that fit: the rest follow them on disk
            if self._unfed_bytes + item.size > _UNFED_MAX_BYTES:
                return
            unfed.append(item)
            self._unfed_bytes += item.size

    def _drop_unfed(self) -> None:
        self._unfed.clear()
        self._unfed_bytes = 0

    async def _read_loop(self) -> None:
        while True:
            await self._read_wake.wait_for(lambda: not self.caught_up)
            room = self.publisher.room
            if room <= 0:
                await anyio.sleep(0.005)
                continue
            async with self._cursor_lock:
                fed = await self._feed(min(room, self.batch_max))
            if fed and self.max_replay_rate > 0:
                await anyio.sleep(fed / self.max_replay_rate)

    async def _feed(self, limit: int) -> int:
        """Feed up to ``limit`` rows after the cursor to the publisher, from the unfed deque
        when it holds the next one, else read from disk; return how many."""
        if self._unfed:
            if self._unfed[0].spool_seq == self.cursor + 1:
                return self._feed_unfed(limit)
            self._drop_unfed()  # behind the cursor (fed from disk meanwhile) or evicted
        stored: list[StoredRow] = await self._io(self._read_committed, limit)
        if not stored:  # nothing committed above the cursor (the writer hands it off)
            self.caught_up = True
            self._drop_unfed()
            return 0
        now, fed, risky = self._wall(), 0, 0
        for row in stored:
            if not self.publisher.submit(_from_row(row)):
                break  # room shrank while we read (retries): the rest is read again later
            seq = self.cursor = row[0]
            risky += self._beyond_duplicate_window(seq, row[2], now)
            fed += 1
        self._m.spool_replayed.inc(fed)
        if fed == len(stored) and self.cursor >= self._last_written:
            # everything committed so far is with the publisher: the writer hands off from here.
            # An empty read is not needed (and never comes while live batches keep arriving).
            self.caught_up = True
            self._drop_unfed()
        if risky:
            self._m.spool_duplicate_risk.inc(risky)
            self._warn_duplicate_risk(risky)
        return fed

    def _read_committed(self, limit: int) -> list[StoredRow]:
        """Up to ``limit`` rows after the cursor that are committed: the bound is read when
        the call runs, not when it was queued behind another."""
        return self.spool.read_after(self.cursor, limit, self._last_written)

    def _feed_unfed(self, limit: int) -> int:
        """Feed from the unfed deque (its first row is ``cursor + 1``); return how many."""
        unfed, fed = self._unfed, 0
        while unfed and fed < limit and self.publisher.submit(unfed[0]):
            item = unfed.popleft()
            self._unfed_bytes -= item.size
            self.cursor = item.spool_seq
            fed += 1
        if not unfed and self.cursor >= self._last_written:
            self.caught_up = True
        return fed

    def _beyond_duplicate_window(self, seq: int, enqueued_at: float, now: float) -> bool:
        """Only rows left by a previous run may already be stored (PubAck'd, not yet deleted)."""
        window = self.duplicate_window_secs
        return window is not None and seq <= self._inherited_seq and now - enqueued_at > window

    def _warn_duplicate_risk(self, risky: int) -> None:
        now = time.monotonic()
        if now - self._risk_logged_at > 30:
            self._risk_logged_at = now
            log.warning(
                "replaying %d spooled messages older than the stream's duplicate window (%.0f s): "
                "any of them already stored before a crash will be stored twice "
                "(busbridge_spool_duplicate_risk_total counts them all)",
                risky,
                self.duplicate_window_secs,
            )

    async def _delete_loop(self) -> None:
        while True:
            await self._ack_wake.wait_for(lambda: bool(self._acked or self._stored))
            deadline = time.monotonic() + _DELETE_GATHER_SECS
            while len(self._acked) + len(self._stored) < _DELETE_BATCH_ROWS:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self._ack_wake.sleep(left)
            with anyio.CancelScope(shield=True):  # acked rows taken are always deleted
                await self._delete_acked()

    async def _delete_acked(self) -> None:
        done, self._acked = self._acked, []
        stored, self._stored = self._stored, []
        if stored:
            now = self._wall()
            await self._io(
                self.spool.retire,
                [item.spool_seq for item, _ in stored],
                now,
                [(item.spool_seq, seq) for item, seq in stored if seq],
            )
            size = sum(item.size for item, _ in stored)
            self._retained.append(
                [now, max(item.spool_seq for item, _ in stored), len(stored), size]
            )
            self.retained_rows += len(stored)
            self.retained_bytes += size
            self.rows -= len(stored)
            self.bytes -= size
        if done:
            await self._io(self.spool.delete, [item.spool_seq for item in done])
            self.rows -= len(done)
            self.bytes -= sum(item.size for item in done)
        self._m.spool_acks.inc(len(done) + len(stored))

    def connection_lost(self) -> None:
        """NATS went away: keep every retained row until the next ``restore_lost`` succeeds,
        which checks every row acknowledged until now."""
        self.retention_checked = False
        self._check_upto = max(self._check_upto, self._max_stored_seq)

    def _checked(self, upto: int) -> None:
        self.retention_checked = True
        if self._check_upto == upto:  # no disconnect since the check began
            self._check_upto = 0

    async def _prune_retained(self) -> None:
        """Drop retained rows older than ``retain_acked_secs`` (only once the stream was
        checked since the last disconnect), and the oldest beyond ``retain_max_bytes``, in
        transactions of about ``_PRUNE_BATCH_ROWS`` rows: the spool's call limiter is free
        between two, so an append waits for one of them, not for all (``restore_lost``, which
        reloads the accounting, waits for all: ``_retained_lock``)."""
        async with self._retained_lock:
            cutoff = self._wall() - self.retain_acked_secs if self.retention_checked else -math.inf
            units = self._retained
            while True:
                upto, rows, size = 0, 0, 0
                while (
                    units
                    and rows < _PRUNE_BATCH_ROWS
                    and (units[0][0] < cutoff or self.retained_bytes - size > self.retain_max_bytes)
                ):
                    acked_at, last, n, b = units.popleft()
                    if acked_at >= cutoff:
                        cutoff = acked_at + 1e-6  # over the byte cap: this unit goes too
                    upto, rows, size = max(upto, last), rows + n, size + b
                if not rows:
                    return
                await self._io_thread(self.spool.prune_retained, upto, cutoff)
                self.retained_rows -= rows
                self.retained_bytes -= size

    async def _maintain_loop(self) -> None:
        last_summary = time.monotonic()
        while True:
            await anyio.sleep(1.0)
            await self._evict_expired()
            if self._retained:
                await self._prune_retained()
            if self.tally and time.monotonic() - last_summary >= self.summary_interval_secs:
                self._emit_summary()
                last_summary = time.monotonic()
            await self._checkpoint()
            await self._update_gauges()

    async def _checkpoint(self) -> None:
        """``Spool.checkpoint`` on a worker thread, outside ``_io_limiter``: it has its own
        connection, so appends go on meanwhile (holding the limiter, its 20-55 ms every second
        held the writer up as long: p99.9 of a write batch 31 vs 9.7 ms at 5k msg/s). Once the
        WAL holds ``_WAL_RESTART_PAGES``, more such passes (one at least) copy what was
        committed during the last one until at most ``_COMPLETE_LEFT_PAGES`` are left
        (``_CATCH_UP_PASSES`` at most), then ``Spool.complete_checkpoint`` copies the rest (a
        worker thread, inside the limiter: appends wait for it), so the next append starts the
        WAL over (``bridge.pipeline.spool``'s note). Before those passes
        ``Spool.sync_database`` flushes what the passes copied since the last completion,
        outside the limiter: the completion's own fsync of the database file then flushes only
        the pages copied after it (10k msg/s D1: a completion held appends 28-58 ms without
        it, 0.8-3.2 ms with it)."""
        pages, copied = await anyio.to_thread.run_sync(self.spool.checkpoint)
        if pages < _WAL_RESTART_PAGES:
            return
        # the completion fsyncs the database file: flush what the passes copied here first
        await anyio.to_thread.run_sync(self.spool.sync_database)
        for _ in range(_CATCH_UP_PASSES):
            pages, copied = await anyio.to_thread.run_sync(self.spool.checkpoint)
            if pages - copied <= _COMPLETE_LEFT_PAGES:
                break
        await self._io_thread(self.spool.complete_checkpoint)

    async def _evict_for_bytes(self) -> None:
        excess = self.bytes - int(self.max_bytes * 0.95)  # 5% hysteresis: evict in chunks
        async with self._cursor_lock:
            victims = await self._io_thread(self.spool.evict_lowest, self.cursor, excess)
            if victims:
                self._drop_unfed()  # some may have been evicted: the disk decides
        self._evicted(victims, "max_bytes")

    async def _evict_expired(self) -> None:
        async with self._cursor_lock:
            victims = await self._io_thread(
                self.spool.evict_older_than, self.cursor, self._wall() - self.max_age_secs
            )
            if victims:
                self._drop_unfed()  # some may have been evicted: the disk decides
        self._evicted(victims, "max_age")

    def _evicted(self, victims: list[Evicted], reason: str) -> None:
        if not victims:
            return
        self.rows -= len(victims)
        self.bytes -= sum(v.size for v in victims)
        self.tally.add(victims, reason, datetime.now(UTC))
        for v in victims:
            self._m.spool_evictions.labels(reason, _SEVERITY_BY_RANK[v.rank]).inc()
        log.debug("spool %s: evicted %d messages", reason, len(victims))

    def _emit_summary(self) -> None:
        t = self.tally
        log.warning(
            "spool evicted %d messages (%d B) since %s: by severity %s, by reason %s",
            sum(t.by_severity.values()),
            t.bytes,
            t.first_at,
            dict(t.by_severity),
            dict(t.by_reason),
        )
        if self._summary_factory is None:
            self.tally = EvictionTally()
            return
        if self.submit(self._summary_factory(self.tally)):
            self.tally = EvictionTally()

    async def _update_gauges(self) -> None:
        oldest = await self._io(self.spool.oldest_enqueued_at)
        self._m.spool_rows.set(self.rows)
        self._m.spool_bytes.set(self.bytes)
        self._m.spool_retained_rows.set(self.retained_rows)
        self._m.spool_retained_bytes.set(self.retained_bytes)
        self._m.spool_oldest_age.set(max(0.0, self._wall() - oldest) if oldest else 0.0)

    # -- shutdown --------------------------------------------------------------------------

    async def flush_staging(self) -> None:
        """Write everything staged to disk (call after ingest stopped), synced under FULL."""
        while self._staging:
            await self._write_batch()
        if self.spool.synchronous == "FULL" and self._last_written > self.synced_seq:
            upto = self._last_written
            await anyio.to_thread.run_sync(self.spool.sync_wal)
            self.synced_seq = upto

    async def flush_acks(self) -> None:
        """Delete (or retain) every row acknowledged so far, then close the spool file."""
        if self._acked or self._stored:
            await self._delete_acked()
        await self._io_thread(self.spool.close)


def _to_row(item: Outbound, now: float) -> SpoolRow:
    headers = _headers_encoder.encode(item.headers)
    size = len(item.payload) + len(item.subject) + len(headers)
    return SpoolRow(
        item.rank, now, item.kind, item.msg_id, item.subject, headers, item.payload, size
    )


def _from_row(row: StoredRow) -> Outbound:
    seq, rank, _, kind, msg_id, subject, headers, payload, size = row
    item = Outbound(subject, payload, _headers_decoder.decode(headers), kind, msg_id, rank=rank)
    item.spool_seq, item.size = seq, size
    return item

"""The decode worker: legacy ZMQ messages decoded in a child process, beside the event loop
(``zmq.decode_worker``: ``auto`` by default, ``true``, ``false``).

Design note. Decoding (dialects, timestamps, fingerprint, event identity) was the largest
stage of the event loop's work per ZMQ message, and that thread is the bridge's bottleneck
(``loadtest/README.md``). This module moves the stage into one child process
(``python -m bridge.adapters.decode_worker``), so it can run on another core:

* **Where a message is decoded** (``inline_max``): under ``auto`` (``INLINE_MAX``) a reader
  turn's first 128 messages are decoded in the bridge's own process while no chunk is out
  to the child (and every message while the child is not up yet); the rest of the turn
  goes to the child, and so does every turn while a chunk is unanswered. So steady traffic
  (a turn every ``zmq.gather_secs``, ~20 messages at 10k msg/s) pays no round trip, and a
  burst or a backlog (after a stall of the event loop) gets a second core; order holds, as
  a message is decoded here only when everything read before it is settled. Under ``true``
  every message goes to the child.
* **Parent** (``DecodeWorker``, the ZMQ reader's handler): ``IngestRunner.take`` (loop check,
  republish, frame counters) runs at read time; what one turn of the reader took (up to
  ``_GATHER_MAX`` messages) is sent when the turn ends, as one msgpack frame
  ``(seq, received_at, [frames, ...], identity entries)`` over a ZMQ ``PAIR`` socket on
  ``ipc://`` in a private (0700) temporary directory. The reply, ``(seq, evicted_in_window,
  [contract JSON, ...], identity entries)`` (entries: see Identity),
  is decoded with typed msgspec and handed to ``IngestRunner.settle`` with the ``Routing``
  captured at read time; the JSON bytes are reused as the outbound payload (no second
  encode). Replies come back in request order (the child is one loop): order is kept. A
  chunk's ``received_at`` is its first read (a turn lasts at most ``zmq.batch_max_secs``).
* **Child** (``main``): owns a ``LegacyDecoder`` and its ``EventIdentity``, decodes each
  request in order and answers it. It exits when its parent goes away (checked every second)
  and ignores SIGINT (a Ctrl-C in the terminal stops the parent, which drains through it).
  Its settings come as JSON on its command line (``WorkerSettings``).
* **Backpressure**: at most ``max_in_flight`` chunks are unanswered; ``ready()`` is then False
  and the ZMQ reader stops reading (libzmq's RCVHWM queue holds the rest, as when the event
  loop is busy).
* **Nothing is lost**: a chunk leaves the in-flight queue only when its reply has been
  settled. When the child dies, a new one is started on a new socket and every unanswered
  chunk is sent again, in order. A death is blamed on the oldest unanswered chunk (the
  replies the child sent before dying are read first, but a crash can lose replies it had
  queued, so the blame may be wrong): after two deaths on it, it is split into single
  messages sent *alone* (nothing else out until each is answered, so a death then is surely
  theirs), and a single message that kills the child twice alone becomes a dead letter
  (reason ``invalid_json``, its bytes kept) decoded nowhere: bounded retries (a chunk of n
  messages costs at most 2 + 2n deaths), never an endless loop, and no message
  dead-lettered for another's crash. A reply that cannot be read restarts the child; one
  that is not a contract is decoded here instead. A child that dies ``max_failed_starts``
  times in a row before answering its hello makes the bridge decode in its own process
  from then on (``busbridge_decode_worker_up`` 0, logged).
* **Identity**: one ``EventIdentity`` table for both processes (DESIGN §3): the parent's
  (shared with its fallback decoder and the NATS inputs) and the child's take turns, since
  each decodes only while the other has nothing unanswered, and pass their changes each time
  (``EventIdentity.take_changes``/``apply``): a request carries the parent's changes since
  the last one, a reply the child's; while the parent decodes steady traffic itself, its
  changes go on in requests of their own (``_TABLE``, no reply) every ``_TABLE_SYNC_ENTRIES``.
  A new child gets the parent's whole table with its first request (``snapshot``), so a
  legacy message repeated byte for byte gets a new occurrence id across a restart too. The
  one race left: a NATS input's payload with the same digest as a ZMQ message's frames,
  counted by the parent while the child decodes that message, can give both the same count
  (a single-frame ZMQ message byte for byte equal to a legacy NATS payload). Restarts are
  counted (``busbridge_decode_worker_restarts_total``).
* **What it buys** (2 vCPU shared with nats-server and the load generator,
  ``loadtest/README.md``): a 50k-message D1 burst (``throughput``) went 30-31k -> 39-40k msg/s
  with ``auto`` (37-40k with ``true``); steady 10k msg/s D1 and 5k msg/s of all seven
  dialects, where ``auto`` sends 0.5-2% of the messages to the child, and the drain after an
  outage stayed as they were. ``true`` at 10k msg/s D1: the parent's CPU -9%, the child's
  +3.0 s per 150k messages, latency unchanged within the noise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import msgspec
import zmq

from bridge.adapters.zmq import Readable
from bridge.metrics import Metrics
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.runner import IngestRunner, Routing
from contracts.codec import encode
from contracts.messages import DeadLetter, ErrorEvent

__all__ = ["INLINE_MAX", "DecodeWorker", "WorkerSettings", "main"]

log = logging.getLogger(__name__)

_HELLO = -1  # the seq of the child's first message: ready to decode
_TABLE = -2  # the seq of a request that only carries identity entries (no reply)
#: identity changes counted in this process sent on to the child once this many are waiting,
#: even with no chunk to send (steady traffic decoded here): each message stays small, and
#: what waits stays bounded (a minute of steady traffic at 3.5k digest ids/s held 3M changed
#: hashes, and the next chunk carried them all)
_TABLE_SYNC_ENTRIES = 512
_PARENT_CHECK_SECS = 1.0
_RESTART_PAUSE_SECS = 0.2
_LAST_REPLIES_QUIET_SECS = 0.05
_LAST_REPLIES_MAX_SECS = 1.0
_STOP_GRACE_SECS = 2.0
_GATHER_MAX = 2048  # messages per chunk, at most
#: ``zmq.decode_worker: auto``: messages of one reader turn decoded in the bridge's process
#: while the child has nothing unanswered (steady traffic: a turn every ``zmq.gather_secs``
#: brings ~20 at 10k msg/s); the rest of the turn, and every turn while it is busy, go to it
INLINE_MAX = 128

_Entries = list[tuple[str, float, int]]  # EventIdentity entries: hash, last seen, occurrences
_Request = tuple[int, datetime, list[list[bytes]], _Entries]  # seq, received_at, messages, ...
_Reply = tuple[int, int, list[bytes], _Entries]  # seq, evicted_in_window, contract JSON, ...
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # received_at of a _TABLE request (unused)
_request_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(_Reply)
_event_decoder = msgspec.json.Decoder(ErrorEvent | DeadLetter)


class WorkerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What the child needs to decode as the bridge would (``zmq.*``, ``legacy.*``,
    ``identity.*`` of the bridge config); sent as JSON on the child's command line."""

    machine: str
    local_timezone: str = "UTC"
    max_frame_bytes: int | None = None
    oversized_keep_bytes: int = 64 * 1024
    occurrence_window_secs: float = 300.0
    max_tracked: int = 100_000
    #: give the heap's free pages back to the OS this often while idle (glibc
    #: ``malloc_trim``, the bridge's ``malloc_trim_interval_secs``); 0: never
    malloc_trim_interval_secs: float = 10.0

    def decoder(self, identity: EventIdentity) -> LegacyDecoder:
        """The ``LegacyDecoder`` these settings describe, with ``identity`` for event ids."""
        return LegacyDecoder(
            machine=self.machine,
            identity=identity,
            local_tz=ZoneInfo(self.local_timezone),
            max_frame_bytes=self.max_frame_bytes,
            oversized_keep_bytes=self.oversized_keep_bytes,
        )

    def identity(self) -> EventIdentity:
        return EventIdentity(self.occurrence_window_secs, self.max_tracked, time.monotonic)


@dataclass(slots=True)
class _Chunk:
    seq: int
    frames: list[list[bytes]]
    received_at: datetime
    routing: Routing
    deaths: int = 0  # child deaths while this chunk was the oldest unanswered one
    alone: bool = False  # split off after deaths: sent only with nothing else out


class _ProtocolError(Exception):
    """A reply that does not answer the oldest unanswered chunk."""


class DecodeWorker:
    """The ZMQ reader's handler when decoding runs in a child process (see the module note).

    ``handle_batch(messages)``: take the messages (``IngestRunner.take``) and send them to the
    child; never blocks, never raises. ``ready()``: False while ``max_in_flight`` chunks are
    unanswered (the reader waits in ``wait_ready``). ``run()``: start, watch and restart the
    child, settle its replies, until cancelled (the child is then stopped). ``flush(secs)``:
    wait until every chunk is settled, decoding here what the child has not answered after
    ``secs``. ``fallback``: the decoder used in this process when the child cannot be used.
    ``command``: the child's argv before its three arguments (endpoint, settings JSON, this
    process's pid); default ``python -m bridge.adapters.decode_worker``. ``identity``: the
    ``EventIdentity`` of ``fallback`` (and of the NATS inputs), shared with the child's table
    (see the module note); None: the two tables stay apart. ``inline_max``: 0, every message
    goes to the child; > 0 (needs ``identity``), up to that many messages of a reader turn
    are decoded here while no chunk is unanswered, the rest go to the child.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        runner: IngestRunner,
        fallback: LegacyDecoder,
        metrics: Metrics,
        *,
        max_in_flight: int = 16,
        command: Sequence[str] | None = None,
        hello_timeout_secs: float = 30.0,
        max_failed_starts: int = 3,
        identity: EventIdentity | None = None,
        inline_max: int = 0,
    ) -> None:
        if inline_max > 0 and identity is None:
            raise ValueError("decoding here as well as in the child needs the shared identity")
        self._settings_json = msgspec.json.encode(settings).decode()
        self._runner = runner
        self._fallback = fallback
        self._m = metrics
        self._max_in_flight = max(1, max_in_flight)
        self._command = list(command or [sys.executable, "-m", __name__])
        self._hello_timeout_secs = hello_timeout_secs
        self._max_failed_starts = max_failed_starts
        self._pending: deque[_Chunk] = deque()
        self._gather: _Chunk | None = None  # this reader turn's messages, sent when it ends
        self._next_seq = 0
        self._sock: zmq.Socket[bytes] | None = None  # the live child's, once it said hello
        self._sent = 0  # the first chunks of _pending sent to the live child
        self._bound: zmq.Socket[bytes] | None = None
        self._readable: Readable | None = None
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._dir: str | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_process = False
        self._identity = identity
        if identity is not None:
            identity.track_changes()
        self._resync = True  # the next request carries the whole table (a new child)
        self._inline_max = inline_max
        self._inline_turn = 0  # messages decoded here in this reader turn
        self.decoded_here = 0  # messages decoded in this process (inline_max, fallback)
        self.pid: int | None = None
        self.restarts = 0
        #: the child's ``EventIdentity.evicted_in_window`` as last reported
        self.evicted_in_window = 0
        metrics.decode_worker_up.set(0)

    # -- the reader's side ---------------------------------------------------------------

    @property
    def in_process(self) -> bool:
        """True once the bridge decodes in its own process (the child could not be used)."""
        return self._in_process

    @property
    def in_flight(self) -> int:
        """Chunks sent and not yet settled."""
        return len(self._pending)

    def ready(self) -> bool:
        return self._in_process or len(self._pending) < self._max_in_flight

    async def wait_ready(self) -> None:
        await self._room.wait()

    def handle_batch(self, batch: list[list[bytes]]) -> None:
        """Take ``batch`` (messages in read order) and send the rest to the child."""
        kept, routing, received_at = self._runner.take(batch)
        if not kept:
            return
        if self._in_process:
            self._decode_here(kept, received_at, routing)
            return
        if (
            self._inline_max
            and not self._pending
            and self._gather is None
            and (self._inline_turn + len(kept) <= self._inline_max or self._sock is None)
        ):
            if not self._inline_turn:
                asyncio.get_running_loop().call_soon(self._end_turn)
            self._inline_turn += len(kept)
            self._decode_here(kept, received_at, routing)
            return
        gather = self._gather
        if gather is not None and gather.routing is routing and len(gather.frames) < _GATHER_MAX:
            gather.frames += kept
            return
        self._close_gather()
        self._gather = _Chunk(self._next_seq, kept, received_at, routing)
        self._next_seq += 1
        self._idle.clear()
        asyncio.get_running_loop().call_soon(self._close_gather)

    def _end_turn(self) -> None:
        self._inline_turn = 0

    def _close_gather(self) -> None:
        """Send what this turn of the reader gathered, as one chunk (one request, one reply,
        one ``settle``: the per-chunk costs are paid once per turn, not per 32 messages)."""
        chunk, self._gather = self._gather, None
        if chunk is None:
            return
        self._pending.append(chunk)
        self._idle.clear()
        if len(self._pending) >= self._max_in_flight:
            self._room.clear()
        self._pump()

    def _pump(self) -> None:
        """Send the chunks not yet sent to the live child, in order. A chunk split off for a
        death (``alone``) goes only as the oldest unanswered one, and nothing after it until
        it is answered: a death while it is out is its own (a crash may lose replies the child
        had queued, so with more out the oldest could be blamed for a later one)."""
        sock, pending = self._sock, self._pending
        while sock is not None and self._sent < len(pending):
            chunk = pending[self._sent]
            if chunk.alone and self._sent:
                return
            entries = self._table_entries()
            try:
                sock.send(
                    _request_encoder.encode((chunk.seq, chunk.received_at, chunk.frames, entries)),
                    zmq.NOBLOCK,
                )
            except zmq.ZMQError:  # the child is gone: the next one gets it (and the table)
                self._sock = None
                return
            self._resync = False
            self._sent += 1
            if chunk.alone:
                break
        # the FD is edge-triggered and a send may consume the edge of a reply that came in
        readable = self._readable
        if sock is not None and readable is not None and sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            readable.wake()

    def _decode_here(
        self, frames: list[list[bytes]], received_at: datetime, routing: Routing
    ) -> None:
        decode = self._fallback.decode
        self.decoded_here += len(frames)
        self._runner.settle([decode(f, received_at) for f in frames], routing)
        identity = self._identity
        if identity is not None and identity.changes_waiting() >= _TABLE_SYNC_ENTRIES:
            self._send_table()

    def _table_entries(self) -> list[tuple[str, float, int]]:
        """The identity entries the next request carries: the changes counted here since the
        last one, or the whole table for a child that has not had it yet; [] unshared."""
        identity = self._identity
        if identity is None:
            return []
        entries = identity.take_changes()
        return identity.snapshot() if self._resync else entries

    def _send_table(self) -> None:
        """Send the child the identity changes counted here (the whole table to a new child)
        with no chunk; only while nothing is out to it (the changes must reach it before any
        chunk that follows, and a chunk out may be sent again to a new child)."""
        sock = self._sock
        if sock is None or self._identity is None or self._pending or self._in_process:
            return
        entries = self._table_entries()
        try:
            sock.send(_request_encoder.encode((_TABLE, _EPOCH, [], entries)), zmq.NOBLOCK)
        except zmq.ZMQError:  # gone: the next child gets the whole table
            self._sock = None
            return
        self._resync = False

    # -- the child's side ----------------------------------------------------------------

    async def run(self) -> None:
        """Start the child and settle its replies until cancelled; restart it when it dies."""
        failed_starts = 0
        try:
            while not self._in_process:
                answered = await self._run_child()
                if self._in_process:
                    break
                if answered:
                    failed_starts = 0
                    self._after_death()
                else:
                    failed_starts += 1
                    if failed_starts >= self._max_failed_starts:
                        self._give_up(
                            f"the decode worker died {failed_starts} times before it was ready"
                        )
                        break
                self.restarts += 1
                self._m.decode_worker_restarts.inc()
                await anyio.sleep(_RESTART_PAUSE_SECS)
        finally:
            self._close()

    async def _run_child(self) -> bool:
        """One child, from start to death; True when it said hello."""
        self._m.decode_worker_up.set(0)
        sock = self._open_socket()
        argv = [sock.getsockopt_string(zmq.LAST_ENDPOINT), self._settings_json, str(os.getpid())]
        try:
            proc = await anyio.open_process(
                [*self._command, *argv],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=None,
            )
        except OSError as exc:  # a failed start, like a child that dies before its hello
            log.error("the decode worker cannot be started: %s", exc)
            self._close_socket()
            return False
        self.pid = proc.pid
        hello = False
        try:
            with Readable(sock) as readable:
                self._readable = readable

                async def watch_exit() -> None:
                    await proc.wait()
                    readable.wake()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch_exit)
                    hello = await self._serve(sock, readable, proc)
                    tg.cancel_scope.cancel()
        finally:
            self._sock = None
            self._sent = 0
            self._readable = None
            self._m.decode_worker_up.set(0)
            with anyio.CancelScope(shield=True):
                await _stop(proc)
            self.pid = None
            self._close_socket()
        if not self._in_process:
            log.warning(
                "the decode worker (pid %d) exited with %s; %d chunks to send again",
                proc.pid,
                proc.returncode,
                len(self._pending),
            )
        return hello

    async def _serve(
        self, sock: zmq.Socket[bytes], readable: Readable, proc: anyio.abc.Process
    ) -> bool:
        """Settle replies until the child exits (or must be replaced); True once it said hello."""
        hello = False
        deadline = time.monotonic() + self._hello_timeout_secs
        try:
            while not self._in_process:
                if proc.returncode is not None:
                    hello |= await self._read_last_replies(sock, readable)
                    break
                hello |= self._read_replies(sock)
                if not hello and time.monotonic() > deadline:
                    log.error(
                        "the decode worker did not start within %.0f s", self._hello_timeout_secs
                    )
                    break
                await readable.wait()
        except _ProtocolError as exc:
            log.error("decode worker: %s; restarting it", exc)
        return hello

    async def _read_last_replies(self, sock: zmq.Socket[bytes], readable: Readable) -> bool:
        """Settle what a dead child sent before it died: everything it wrote is in the kernel,
        but libzmq's I/O thread may not have handed all of it over yet; read until nothing came
        for ``_LAST_REPLIES_QUIET_SECS`` (so the death is not blamed on a chunk it answered)."""
        hello = False
        with anyio.move_on_after(_LAST_REPLIES_MAX_SECS):
            while not self._in_process:
                hello |= self._read_replies(sock)
                with anyio.move_on_after(_LAST_REPLIES_QUIET_SECS) as quiet:
                    await readable.wait()
                if quiet.cancelled_caught and not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    break
        return hello

    def _read_replies(self, sock: zmq.Socket[bytes]) -> bool:
        """Settle every reply waiting in ``sock``; True when the hello was among them."""
        said_hello = False
        while not self._in_process:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                seq, evicted, payloads, entries = _reply_decoder.decode(raw)
            except msgspec.DecodeError as exc:
                raise _ProtocolError(f"unreadable reply ({exc})") from exc
            if seq == _HELLO:
                said_hello = True
                self._sock = sock
                self._sent = 0
                self._resync = True
                self._m.decode_worker_up.set(1)
                self._pump()
                continue
            self._settle(seq, evicted, payloads, entries)
        return said_hello

    def _settle(
        self,
        seq: int,
        evicted: int,
        payloads: list[bytes],
        entries: list[tuple[str, float, int]],
    ) -> None:
        head = self._pending[0] if self._pending else None
        if head is None or head.seq != seq or len(payloads) != len(head.frames):
            raise _ProtocolError(f"reply {seq} does not answer chunk {head.seq if head else None}")
        self._pending.popleft()
        self._sent -= 1
        self.evicted_in_window = evicted
        try:
            msgs = [_event_decoder.decode(p) for p in payloads]
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("decode worker: a reply is not a contract (%s); decoded here instead", exc)
            self._decode_here(head.frames, head.received_at, head.routing)
        else:
            if self._identity is not None and entries:  # (decoded here instead: counted here)
                self._identity.apply(entries)
            self._m.decode_worker_messages.inc(len(msgs))
            self._runner.settle(msgs, head.routing, payloads)
        self._after_settle()

    def _after_settle(self) -> None:
        self._pump()
        if len(self._pending) < self._max_in_flight:
            self._room.set()
        if not self._pending:
            self._idle.set()

    def _after_death(self) -> None:
        """Bounded retries for the chunk the child died on (see the module note)."""
        if not self._pending:
            return
        head = self._pending[0]
        head.deaths += 1
        if head.deaths < 2:
            return
        self._pending.popleft()
        if not head.alone:  # even a chunk of one: the blame is only sure for a chunk alone
            singles = []
            for frames in head.frames:
                singles.append(
                    _Chunk(self._next_seq, [frames], head.received_at, head.routing, alone=True)
                )
                self._next_seq += 1
            self._pending.extendleft(reversed(singles))
            return
        log.error("the decode worker died twice decoding one message; dead-lettered undecoded")
        detail = "the decode worker process died twice decoding this message; not decoded"
        letter = self._fallback.reject(head.frames[0], head.received_at, detail)
        self._runner.settle([letter], head.routing)
        self._after_settle()

    def _give_up(self, why: str) -> None:
        """Decode in this process from now on; settle what the child has not answered."""
        log.error("%s; decoding in the bridge's own process from now on", why)
        self._close_gather()
        self._in_process = True
        self._sent = 0
        self._m.decode_worker_up.set(0)
        while self._pending:
            chunk = self._pending.popleft()
            self._decode_here(chunk.frames, chunk.received_at, chunk.routing)
        self._after_settle()

    async def flush(self, timeout_secs: float) -> None:
        """Wait until every chunk sent is settled; after ``timeout_secs`` decode the rest here
        (and every later batch: the bridge is stopping)."""
        self._close_gather()
        with anyio.move_on_after(timeout_secs):
            await self._idle.wait()
        if self._pending:
            self._give_up(f"the decode worker left {len(self._pending)} chunks unanswered at stop")

    # -- sockets -------------------------------------------------------------------------

    def _open_socket(self) -> zmq.Socket[bytes]:
        """A new PAIR socket for the next child (a new endpoint: nothing of the last one's
        conversation can reach it)."""
        if self._ctx is None:
            self._ctx = zmq.Context()
            self._dir = tempfile.mkdtemp(prefix="busbridge-decode-")  # 0700: ours alone
        sock = self._bound = self._ctx.socket(zmq.PAIR)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(f"ipc://{self._dir}/worker-{self.restarts}.sock")
        return sock

    def _close_socket(self) -> None:
        sock, self._bound = self._bound, None
        if sock is not None:
            sock.close(linger=0)

    def _close(self) -> None:
        self._close_socket()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


async def _stop(proc: anyio.abc.Process) -> None:
    """End the child: SIGTERM, then SIGKILL after ``_STOP_GRACE_SECS``."""
    if proc.returncode is None:
        proc.terminate()
        with anyio.move_on_after(_STOP_GRACE_SECS):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
    await proc.aclose()


# -- the child process -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The child: ``python -m bridge.adapters.decode_worker ENDPOINT SETTINGS_JSON PARENT_PID``.

    Connects a ``PAIR`` socket to ``ENDPOINT``, says hello, then answers each request
    ``(seq, received_at, [frames, ...], identity entries)`` with ``(seq, evicted_in_window,
    [contract JSON, ...], identity entries)`` (entries: ``EventIdentity.take_changes``)
    until ``PARENT_PID`` is no longer its parent (the bridge died, even before this process
    got this far) or it is terminated. Returns the exit status."""
    endpoint, settings_json, parent_pid = argv if argv is not None else sys.argv[1:4]
    parent = int(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = msgspec.json.decode(settings_json, type=WorkerSettings)
    identity = settings.identity()
    decode = settings.decoder(identity).decode
    requests = msgspec.msgpack.Decoder(_Request)
    replies = msgspec.msgpack.Encoder()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(endpoint)
    sock.send(replies.encode((_HELLO, 0, [], [])))
    identity.track_changes()
    trim_every = settings.malloc_trim_interval_secs
    malloc_trim = _malloc_trim() if trim_every > 0 else None
    next_trim = time.monotonic() + trim_every
    try:
        while True:
            if malloc_trim is not None and time.monotonic() >= next_trim and not sock.poll(0):
                malloc_trim(0)  # a few ms, with no request waiting
                next_trim = time.monotonic() + trim_every
            if not sock.poll(int(_PARENT_CHECK_SECS * 1000)):
                if os.getppid() != parent:
                    return 0
                continue
            seq, received_at, batch, entries = requests.decode(sock.recv())
            identity.apply(entries)
            if seq == _TABLE:
                continue
            payloads = [encode(decode(frames, received_at)) for frames in batch]
            sock.send(
                replies.encode((seq, identity.evicted_in_window, payloads, identity.take_changes()))
            )
    finally:
        sock.close()
        ctx.term()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere): after a burst, the child's RSS otherwise stays
    at its peak (a 15-minute soak: 92 -> 129 MiB in steps, one per burst it decoded)."""
    import ctypes

    return getattr(ctypes.CDLL(None), "malloc_trim", None)


if __name__ == "__main__":
    sys.exit(main())

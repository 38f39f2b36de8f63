"""Legacy-style load over ZMQ from a child process: ``LoadProducer`` sends a ``Workload``, ``SentLog`` says what went out.

Design note
-----------
The sending loop runs in its own process (multiprocessing, spawn context) so
it never competes for a GIL with the probe or the scenario driving it. It
opens ``workload.publishers`` XPUB sockets that **connect** to the bridge's
endpoint like the legacy PUBs (legacy-bus.md §0) and waits for the bridge's
subscription on each (``loadtest.replay.connect_publishers``; no message is
lost to the slow joiner, trap 8). SNDHWM is unlimited, so the producer itself
never drops; what the bridge cannot take queues in the producer.

Pacing: slot ``k`` is due once ``workload.slots_until(elapsed) > k`` (bursts
included); due slots are sent in a batch, then the loop sleeps until the next
one is due (at most 50 ms), so rates of tens of thousands per second are held
without a sleep per message. Each socket numbers the messages carrying its
own token (``traffic.token(socket, n)``: events, malformed, flood) 0, 1, 2 ...
in send order. A duplicate copy (``message_mix.KIND_DUPLICATE``) carries the
original's token, goes out from another socket right after the original (D1:
the same bytes; D2: the ``CROSS_MACHINE_ERROR:PC2:`` copy) and is logged on
the socket that sent it with the original's ``n`` and ``token_publisher``.

Shared state: ``sent_count`` (a shared int64 the child updates every batch)
and a stop flag. The log travels back through a pipe once, as packed int64/
int8 arrays (msgpack): 600k messages cost a few MB and milliseconds. The send
time of each message is ``time.monotonic_ns()`` just before the send:
CLOCK_MONOTONIC is system-wide on Linux, so it compares with receipt times
taken in other processes.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
from array import array
from collections.abc import Iterator
from typing import Any

import msgspec
import zmq

from loadtest import traffic
from loadtest.message_mix import KIND_DUPLICATE, KIND_EVENT, KIND_FLOOD, KIND_MALFORMED, message_mix
from loadtest.replay import connect_publishers
from loadtest.workload import Workload

__all__ = ["EVENT_ERROR_TYPE", "LoadProducer", "SentLog", "source_name"]

EVENT_ERROR_TYPE = "load_test_error"
_LINGER_MS = 10_000  # at the end, how long queued messages may still take to reach the bridge
_BATCH_MAX = 2_000  # slots sent between two looks at the stop flag
_MAX_SLEEP_SECS = 0.05
_MIN_SLEEP_SECS = 0.0002
_BOOT_SECS = 60.0  # allowance for the spawned interpreter to start on a loaded machine


def source_name(publisher: int) -> str:
    """The legacy agent name of socket ``publisher`` (``LoadAgent007``)."""
    return f"LoadAgent{publisher:03d}"


class SentLog(msgspec.Struct, kw_only=True):
    """What a ``LoadProducer`` sent, per publisher socket in send order.

    ``n[p][i]``, ``kind[p][i]``, ``sent_ns[p][i]``: the i-th message socket ``p``
    sent: its token's ``n``, kind (0 event, 1 duplicate copy, 2 malformed,
    3 flood; ``message_mix.KIND_*``) and ``time.monotonic_ns()`` at send.
    ``token_publisher[p][i]``: the publisher in its token (``p`` except for
    duplicate copies, which carry the original's token). For kinds 0/2/3,
    ``n`` increases by one per message on each socket. ``started_ns``: the
    monotonic time the sending started (0 if unknown).
    """

    publishers: int
    n: list[list[int]]
    kind: list[list[int]]
    sent_ns: list[list[int]]
    token_publisher: list[list[int]] = msgspec.field(default_factory=list)
    started_ns: int = 0

    def _count(self, wanted: int) -> int:
        return sum(kinds.count(wanted) for kinds in self.kind)

    def tokens(self, kind: int = KIND_EVENT) -> set[tuple[int, int]]:
        """``(publisher, n)`` of every message of ``kind`` (for duplicates: the original's token)."""
        out: set[tuple[int, int]] = set()
        for p in range(self.publishers):
            pubs = self.token_publisher[p] if self.token_publisher else None
            for i, (n, k) in enumerate(zip(self.n[p], self.kind[p], strict=True)):
                if k == kind:
                    out.add((pubs[i] if pubs else p, n))
        return out

    def expected_events(self) -> set[tuple[int, int]]:
        """Tokens that must be stored exactly once as events (kind 0)."""
        return self.tokens(KIND_EVENT)

    def send_times(self) -> dict[tuple[int, int], int]:
        """Token -> ``monotonic_ns`` at its first send, for events, malformed and flood (not copies)."""
        out: dict[tuple[int, int], int] = {}
        for p in range(self.publishers):
            for n, k, t in zip(self.n[p], self.kind[p], self.sent_ns[p], strict=True):
                if k != KIND_DUPLICATE:
                    out[(p, n)] = t
        return out

    def flood_sent(self) -> int:
        return self._count(KIND_FLOOD)

    def malformed_sent(self) -> int:
        return self._count(KIND_MALFORMED)

    def duplicates_sent(self) -> int:
        return self._count(KIND_DUPLICATE)

    def total(self) -> int:
        """Every message sent, copies included."""
        return sum(len(kinds) for kinds in self.kind)

    def start_ns(self) -> int:
        """``started_ns``, else the earliest send time (0 for an empty log)."""
        if self.started_ns:
            return self.started_ns
        firsts = [times[0] for times in self.sent_ns if times]
        return min(firsts) if firsts else 0

    def per_second(self) -> list[int]:
        """Messages sent in each second since ``start_ns()`` (index 0 = the first second)."""
        start = self.start_ns()
        counts: list[int] = []
        for times in self.sent_ns:
            for t in times:
                second = (t - start) // 1_000_000_000
                if second >= len(counts):
                    counts.extend([0] * (second + 1 - len(counts)))
                counts[second] += 1
        return counts


class LoadProducer:
    """Sends ``workload`` to ``endpoint`` (the bridge's ZMQ bind, e.g. ``tcp://127.0.0.1:7150``) from a child process.

    ``start`` returns once every socket has the bridge's subscription and the
    child is sending (``TimeoutError`` if not within ``timeout_secs``);
    ``wait`` blocks until the workload's slots are all sent; ``stop`` ends the
    run early if needed, joins the child and returns the ``SentLog``
    (idempotent; ``RuntimeError`` if the child failed). Also a context manager
    (``stop`` on exit).
    """

    def __init__(self, endpoint: str, workload: Workload) -> None:
        self.endpoint = endpoint
        self.workload = workload
        self._mp = multiprocessing.get_context("spawn")
        self._counter = self._mp.RawValue("q", 0)
        self._stop_flag = self._mp.RawValue("b", 0)
        self._process: Any = None
        self._conn: Any = None
        self._log: SentLog | None = None

    def __enter__(self) -> LoadProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def sent_count(self) -> int:
        """Messages sent so far (live, updated by the child every batch)."""
        return int(self._counter.value)

    @property
    def pid(self) -> int | None:
        """The child's PID once started (None before ``start``)."""
        return self._process.pid if self._process is not None else None

    @property
    def finished(self) -> bool:
        """True once the child has sent every slot (or failed or was stopped)."""
        if self._log is not None:
            return True
        conn = self._conn
        return conn is not None and (conn.closed or conn.poll(0))

    def start(self, timeout_secs: float = 10.0) -> None:
        if self._process is not None:
            raise RuntimeError("LoadProducer.start called twice")
        recv_conn, send_conn = self._mp.Pipe(duplex=False)
        args = (
            self.endpoint,
            msgspec.json.encode(self.workload),
            timeout_secs,
            send_conn,
            self._counter,
            self._stop_flag,
        )
        self._process = self._mp.Process(
            target=_child_main, args=args, name="load-producer", daemon=True
        )
        self._conn = recv_conn
        self._process.start()
        send_conn.close()
        if not self._poll(timeout_secs + _BOOT_SECS):
            self._kill()
            raise TimeoutError(f"load producer not ready after {timeout_secs + _BOOT_SECS} s")
        first = self._recv()
        if first != b"ready":
            self._kill()
            raise _child_error(first, timeout_secs)

    def wait(self) -> None:
        """Block until every slot of the workload is sent (about ``duration_secs`` after ``start``)."""
        if self._log is None:
            self._poll(float("inf"))

    def stop(self) -> SentLog:
        if self._log is not None:
            return self._log
        if self._process is None:
            raise RuntimeError("LoadProducer.stop before start")
        self._stop_flag.value = 1
        try:
            if not self._poll(_LINGER_MS / 1000 + 30):
                raise RuntimeError("load producer did not return its log")
            payload = self._recv()
            if payload.startswith(b"error:"):
                raise _child_error(payload, 0)
            self._log = _decode_log(payload)
        finally:
            self._process.join(_LINGER_MS / 1000 + 10)
            self._kill()
        return self._log

    def _poll(self, timeout_secs: float) -> bool:
        """True once the child has something to say (or is gone); False after ``timeout_secs``."""
        deadline = time.monotonic() + timeout_secs
        while not self._conn.poll(0.2):
            if not self._process.is_alive() or time.monotonic() > deadline:
                return not self._process.is_alive()
        return True

    def _recv(self) -> bytes:
        try:
            return self._conn.recv_bytes()
        except EOFError:
            return f"error:child exited with {self._process.exitcode} before answering".encode()

    def _kill(self) -> None:
        """End the child (our own process handle, so its PID) and close our pipe end."""
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._conn.close()


def _child_error(payload: bytes, timeout_secs: float) -> Exception:
    text = payload.removeprefix(b"error:").decode(errors="replace")
    if text.startswith("TimeoutError"):
        return TimeoutError(f"load producer: {text} (timeout {timeout_secs} s)")
    return RuntimeError(f"load producer failed: {text}")


# --------------------------------------------------------------------------- the child process


class _Arrays:
    """Per-socket packed columns of the log (no per-message objects)."""

    def __init__(self, sockets: int) -> None:
        self.n = [array("q") for _ in range(sockets)]
        self.kind = [array("b") for _ in range(sockets)]
        self.sent_ns = [array("q") for _ in range(sockets)]
        self.token_publisher = [array("h") for _ in range(sockets)]

    def encode(self, started_ns: int) -> bytes:
        cols = {
            name: [a.tobytes() for a in getattr(self, name)]
            for name in ("n", "kind", "sent_ns", "token_publisher")
        }
        return msgspec.msgpack.encode({"started_ns": started_ns, **cols})


def _decode_log(payload: bytes) -> SentLog:
    raw = msgspec.msgpack.decode(payload)
    cols = {name: [array(code, b).tolist() for b in raw[name]] for name, code in _CODES.items()}
    return SentLog(publishers=len(cols["n"]), started_ns=raw["started_ns"], **cols)


_CODES = {"n": "q", "kind": "b", "sent_ns": "q", "token_publisher": "h"}


def _child_main(
    endpoint: str, workload_json: bytes, timeout_secs: float, conn: Any, counter: Any, stop: Any
) -> None:
    """Entry point of the spawned child: connect, report ready, send, return the log, then linger."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    workload = msgspec.json.decode(workload_json, type=Workload)
    ctx = zmq.Context()
    linger = 0
    try:
        socks = connect_publishers(ctx, endpoint, workload.publishers, timeout_secs)
        conn.send_bytes(b"ready")
        log, started_ns = _send_all(socks, workload, counter, stop)
        conn.send_bytes(log.encode(started_ns))
        linger = _LINGER_MS
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send_bytes(f"error:{type(exc).__name__}: {exc}".encode())
    finally:
        conn.close()
        ctx.destroy(linger=linger)


def _send_all(
    socks: list[zmq.Socket], workload: Workload, counter: Any, stop: Any
) -> tuple[_Arrays, int]:
    """Send the workload's slots paced to its rate; stop early when ``stop.value`` is set."""
    log = _Arrays(len(socks))
    sender = _Sender(socks, workload, log)
    slots = message_mix(workload)
    total = workload.expected_slots()
    started_ns = time.monotonic_ns()
    k = 0
    while k < total and not stop.value:
        elapsed = (time.monotonic_ns() - started_ns) / 1e9
        due = min(int(workload.slots_until(elapsed)), total, k + _BATCH_MAX)
        if due <= k:
            time.sleep(_sleep_secs(workload, elapsed, k))
            continue
        sender.send(slots, due - k)
        k = due
        counter.value = sender.sent
    return log, started_ns


def _sleep_secs(workload: Workload, elapsed: float, k: int) -> float:
    """Roughly until slot ``k`` is due (bounded, so bursts and stop requests are seen soon)."""
    ahead = (k + 1 - workload.slots_until(elapsed)) / workload.rate_at(elapsed)
    return min(max(ahead, _MIN_SLEEP_SECS), _MAX_SLEEP_SECS)


class _Sender:
    """Builds and sends slots, numbering each socket's own tokens and logging every send."""

    def __init__(self, socks: list[zmq.Socket], workload: Workload, log: _Arrays) -> None:
        self.socks = socks
        self.workload = workload
        self.log = log
        self.next_n = [0] * len(socks)
        self.sent = 0
        flood = workload.flood
        self.flood_source = flood.source if flood else ""
        self.flood_type = flood.error_type if flood else ""

    def send(self, slots: Iterator[Any], count: int) -> None:
        at = time.time()  # the legacy timestamp fields: one wall-clock read per batch
        for _ in range(count):
            self._one(next(slots), at)

    def _one(self, slot: Any, at: float) -> None:
        kind, p, dialect, dup = slot
        n = self.next_n[p]
        self.next_n[p] = n + 1
        pad = self.workload.pad_bytes
        if kind == KIND_EVENT:
            severity = "high" if dup >= 0 and dialect == "D2" else "error"
            msg = traffic.frames(
                dialect,
                p,
                n,
                source=source_name(p),
                error_type=EVENT_ERROR_TYPE,
                severity=severity,
                pad_bytes=pad,
                at=at,
            )
        elif kind == KIND_MALFORMED:
            msg = traffic.malformed(p, n)
        else:
            msg = traffic.flood_frames(
                p, n, source=self.flood_source, error_type=self.flood_type, pad_bytes=pad, at=at
            )
        self._send(p, p, n, kind, msg)
        if dup >= 0:
            copy = (
                msg
                if dialect == "D1"
                else traffic.cross_machine_copy(
                    p,
                    n,
                    source=source_name(p),
                    error_type=EVENT_ERROR_TYPE,
                    severity="high",
                    pad_bytes=pad,
                    at=at,
                )
            )
            self._send(dup, p, n, KIND_DUPLICATE, copy)

    def _send(self, socket: int, token_publisher: int, n: int, kind: int, msg: list[bytes]) -> None:
        log = self.log
        log.n[socket].append(n)
        log.kind[socket].append(kind)
        log.token_publisher[socket].append(token_publisher)
        log.sent_ns[socket].append(time.monotonic_ns())
        self.socks[socket].send_multipart(msg)
        self.sent += 1

"""``busbridge tail``: print the events stored in the bridge's JetStream stream.

What it shows
-------------
``ErrorEvent`` messages (``<prefix>.error.>``), and with ``--dlq`` also
``DeadLetter`` messages (``<prefix>.dlq.>``; ``--dlq-only``: only those), one
line each, oldest first::

    2026-11-21T08:02:16.503Z  MainPC  ERROR     SystemDigitalTwin  vram_exhausted: Failed to connect ...
    2026-11-21T08:02:17.001Z  DLQ  MainPC  invalid_json frames=1 sizes=[37] Expecting value ...

The time is ``occurred_at`` (else ``received_at``) in UTC with milliseconds.
Text is kept on one line (newlines shown as ``⏎``, control characters as
``�``) and cut to ``MESSAGE_MAX_CHARS`` with ``…``. Severities are coloured
only when the output is a terminal and ``NO_COLOR`` is unset. ``--json``
prints the stored contract as-is plus ``"stream_seq"``, one object per line.
A message that is not a contract is shown as ``?? undecodable message on
<subject> (<n> bytes)`` (in ``--json``: ``{"type": "undecodable", ...}``).

Filters
-------
``--machine``, ``--source`` and ``--severity LIST`` / ``--min-severity LEVEL``
become consumer subject filters (``Subjects.errors``/``Subjects.dead_letters``):
one ``filter_subject`` when one pattern suffices, several ``filter_subjects``
otherwise (servers >= 2.10; older servers get ``<prefix>.>`` and the filtering
happens here only). Every delivered message is also matched against the same
patterns client-side, so the output is right whatever the server applied.
``--machine`` applies to dead letters too; ``--severity``/``--source`` do not.

Start and exit
--------------
Default: everything stored. ``--last N``: the last N matching messages (the
start sequence is found by a binary search over throw-away consumers' pending
counts). ``--new``: only messages stored after the stream's last sequence at
start (implies ``--follow``). Messages before the start sequence are never
printed, even when nats-py restarts the ordered consumer from the beginning.
Without ``--follow`` the run ends, returning 0, once caught up with the stream
as it was at start: a delivered message's stream sequence reaches the last
sequence read from ``stream_info``, or the consumer has nothing left pending
(an empty stream, or no match, ends at once). ``--limit N`` ends after N lines.
Returns 1, with a message on stderr, when NATS cannot be reached (the first
connect is bounded by ``nats.connect_timeout_secs``; later drops reconnect and
the ordered consumer resumes) or the stream does not exist.

Delivery uses an ordered consumer (ephemeral, push, flow-controlled, no acks,
in memory): nothing is acknowledged or changed in the stream.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamState

from bridge.adapters.nats_connect import NatsUnreachable, connect_tool
from contracts import DeadLetter, ErrorEvent, Message, Severity, Subjects, decode
from contracts.severity import LEGACY_SEVERITY

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from bridge.config.model import BridgeConfig

__all__ = [
    "MESSAGE_MAX_CHARS",
    "add_arguments",
    "format_message",
    "run_tail",
    "selected_severities",
    "subject_filters",
]

MESSAGE_MAX_CHARS = 200
FIELD_MAX_CHARS = 64
SEVERITY_WIDTH = max(len(s.name) for s in Severity)
#: catching up: after this long without a message, ask the server whether anything is left.
IDLE_CHECK_SECS = 1.0
#: the server removes our consumers this long after the tail went away.
INACTIVE_THRESHOLD_SECS = 5.0
REQUEST_TIMEOUT_SECS = 5.0
_MULTI_FILTER_SINCE = (2, 10)

_COLOURS = {
    Severity.DEBUG: "2",
    Severity.INFO: "36",
    Severity.WARNING: "33",
    Severity.ERROR: "31",
    Severity.CRITICAL: "1;31",
}
_DLQ_COLOUR = "35"
_ONE_LINE = dict.fromkeys([*range(32), 127, *range(128, 160)], "�")
_ONE_LINE.update({0x0A: "⏎", 0x0D: "⏎", 0x09: " "})


class _TailError(Exception):
    """A failure reported on stderr with exit status 1."""


# --- command line -----------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``tail`` options to ``p``.

    Resulting attributes: ``machine_filter: str | None``, ``severity:
    list[Severity] | None``, ``min_severity: Severity | None``, ``source: str |
    None``, ``dlq``/``dlq_only``/``new``/``follow``/``json: bool``, ``last``/
    ``limit: int | None``. (``machine_filter``, not ``machine``: the CLI reads
    ``args.machine`` as the config override of ``busbridge run``.)
    """
    p.add_argument("--machine", dest="machine_filter", metavar="NAME", help="only this machine")
    sev = p.add_mutually_exclusive_group()
    sev.add_argument(
        "--severity", type=_severity_list, metavar="LIST", help="only these, e.g. error,critical"
    )
    sev.add_argument(
        "--min-severity", type=_severity, metavar="LEVEL", help="this severity and above"
    )
    p.add_argument("--source", metavar="NAME", help="only this source (agent)")
    dlq = p.add_mutually_exclusive_group()
    dlq.add_argument("--dlq", action="store_true", help="also show dead letters")
    dlq.add_argument("--dlq-only", action="store_true", help="show only dead letters")
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--last", type=_positive_int, metavar="N", help="start with the last N matching messages"
    )
    start.add_argument(
        "--new", action="store_true", help="only messages stored from now on (implies --follow)"
    )
    p.add_argument("-f", "--follow", action="store_true", help="keep waiting for new messages")
    p.add_argument(
        "--json", action="store_true", help="one JSON object per line (contract + stream_seq)"
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N printed messages")


def _severity(text: str) -> Severity:
    found = LEGACY_SEVERITY.get(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"unknown severity {text!r} (one of {', '.join(s.value for s in Severity)})"
        )
    return found


def _severity_list(text: str) -> list[Severity]:
    return [_severity(part) for part in text.split(",") if part.strip()] or [_severity(text)]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# --- filters ----------------------------------------------------------------


def selected_severities(args: argparse.Namespace) -> list[Severity] | None:
    """The severities asked for, least severe first; ``None`` means all of them."""
    if args.severity:
        wanted = set(args.severity)
    elif args.min_severity is not None:
        wanted = {s for s in Severity if s.rank >= args.min_severity.rank}
    else:
        return None
    return None if len(wanted) == len(Severity) else sorted(wanted, key=lambda s: s.rank)


def subject_filters(subjects: Subjects, args: argparse.Namespace) -> list[str]:
    """Non-overlapping subject patterns selecting what ``args`` asks for, e.g.
    ``["errbus.error.PC2.error.*", "errbus.error.PC2.critical.*", "errbus.dlq.PC2"]``."""
    machine = args.machine_filter or "*"
    filters = []
    if not args.dlq_only:
        severities = selected_severities(args) or [None]
        source = args.source or "*"
        filters = [subjects.errors(machine, s.value if s else "*", source) for s in severities]
    if args.dlq or args.dlq_only:
        filters.append(subjects.dead_letters(machine))
    return filters


def _subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


# --- rendering --------------------------------------------------------------


def format_message(msg: Message, *, colour: bool = False) -> str:
    """One human-readable line (no newline) for an ``ErrorEvent`` or ``DeadLetter``."""
    if isinstance(msg, DeadLetter):
        return _format_dead_letter(msg, colour)
    return _format_event(msg, colour)


def _format_event(ev: ErrorEvent, colour: bool) -> str:
    severity = _paint(ev.severity.name.ljust(SEVERITY_WIDTH), _COLOURS[ev.severity], colour)
    fields = [
        _utc_ms(ev.occurred_at or ev.received_at),
        _field(ev.machine),
        severity,
        _field(ev.source),
    ]
    return "  ".join([*fields, _one_line(f"{ev.error_type}: {ev.message}")])


def _format_dead_letter(dl: DeadLetter, colour: bool) -> str:
    sizes = ",".join(str(n) for n in dl.frame_sizes[:16]) + (
        ",…" if len(dl.frame_sizes) > 16 else ""
    )
    text = _one_line(
        f"{dl.reason.value} frames={len(dl.frame_sizes)} sizes=[{sizes}] {dl.detail}".rstrip()
    )
    return "  ".join(
        [_utc_ms(dl.received_at), _paint("DLQ", _DLQ_COLOUR, colour), _field(dl.machine), text]
    )


def _utc_ms(t: datetime) -> str:
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _one_line(text: str, max_chars: int = MESSAGE_MAX_CHARS) -> str:
    text = text.replace("\r\n", "\n").translate(_ONE_LINE)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _field(text: str) -> str:
    return _one_line(text, FIELD_MAX_CHARS) or "-"


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _use_colour(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return not os.environ.get("NO_COLOR") and bool(isatty and isatty())


class _View:
    """Prints the delivered messages that pass the filters on ``out``; counts lines.

    Messages before ``first_seq`` are skipped: nats-py restarts an ordered
    consumer that has not delivered anything yet (e.g. after a server restart)
    from sequence 1, whatever its start was.
    """

    def __init__(
        self,
        out: TextIO,
        filters: list[str],
        args: argparse.Namespace,
        follow: bool,
        first_seq: int,
    ) -> None:
        self.out, self.filters, self.json, self.limit = out, filters, args.json, args.limit
        self.first_seq = first_seq
        self.colour = not args.json and _use_colour(out)
        self.flush_each = follow
        self.printed = 0

    def show(self, msg: Msg) -> bool:
        """Print ``msg`` if it matches; True once ``limit`` lines have been printed."""
        if msg.metadata.sequence.stream < self.first_seq:
            return False
        if not any(_subject_matches(f, msg.subject) for f in self.filters):
            return False
        self.out.write(self.render(msg) + "\n")
        if self.flush_each:
            self.out.flush()
        self.printed += 1
        return self.limit is not None and self.printed >= self.limit

    def render(self, msg: Msg) -> str:
        seq = msg.metadata.sequence.stream
        try:
            contract = decode(msg.data)
        except msgspec.DecodeError:
            return self._undecodable(msg.subject, len(msg.data), seq)
        return (
            _json_line(msg.data, seq) if self.json else format_message(contract, colour=self.colour)
        )

    def _undecodable(self, subject: str, size: int, seq: int) -> str:
        if self.json:
            doc = {"type": "undecodable", "subject": subject, "bytes": size, "stream_seq": seq}
            return msgspec.json.encode(doc).decode()
        return f"?? undecodable message on {subject} ({size} bytes)"


def _json_line(data: bytes, seq: int) -> str:
    doc = msgspec.json.decode(data)
    doc["stream_seq"] = seq
    return msgspec.json.encode(doc).decode()


# --- NATS -------------------------------------------------------------------


async def _connect(cfg: BridgeConfig) -> Client:
    """Connect within ``nats.connect_timeout_secs``; later drops reconnect forever (announced)."""

    async def disconnected() -> None:
        print("busbridge tail: NATS disconnected; reconnecting", file=sys.stderr)

    async def reconnected() -> None:
        print("busbridge tail: NATS reconnected", file=sys.stderr)

    try:
        return await connect_tool(
            cfg, name="busbridge-tail", on_disconnect=disconnected, on_reconnect=reconnected
        )
    except NatsUnreachable as exc:
        raise _TailError(str(exc)) from exc


async def _stream_state(js: JetStreamContext, name: str) -> StreamState:
    try:
        return (await js.stream_info(name)).state
    except nats.js.errors.NotFoundError as exc:
        raise _TailError(f"stream {name} does not exist (has `busbridge run` created it?)") from exc
    except nats.errors.Error as exc:
        raise _TailError(
            f"cannot read stream {name}: {exc or type(exc).__name__} (is JetStream enabled?)"
        ) from exc


def _server_filters(nc: Client, filters: list[str], subjects: Subjects) -> list[str]:
    """``filters`` when the server can apply them, else the catch-all (filtered here only)."""
    version = nc.connected_server_version
    if len(filters) == 1 or (version.major, version.minor) >= _MULTI_FILTER_SINCE:
        return filters
    return [subjects.all]


def _consumer_config(filters: list[str], **settings: Any) -> ConsumerConfig:
    where = {"filter_subjects": filters} if len(filters) > 1 else {"filter_subject": filters[0]}
    return ConsumerConfig(inactive_threshold=INACTIVE_THRESHOLD_SECS, **where, **settings)


async def _start_settings(
    js: JetStreamContext,
    stream: str,
    filters: list[str],
    state: StreamState,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Consumer settings for where delivery starts: all, new (after ``last_seq``), or the last N matches."""
    if args.new:
        return _from_seq(state.last_seq + 1)
    if args.last is None or state.messages == 0:
        return {"deliver_policy": DeliverPolicy.ALL, "opt_start_seq": None}
    count = partial(_pending_from, js, stream, filters)
    return _from_seq(await _start_for_last(count, state.first_seq, state.last_seq, args.last))


def _from_seq(seq: int) -> dict[str, Any]:
    return {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": seq}


async def _pending_from(js: JetStreamContext, stream: str, filters: list[str], seq: int) -> int:
    """How many stored messages match ``filters`` from stream sequence ``seq`` on."""
    probe = _consumer_config(filters, ack_policy=AckPolicy.NONE, **_from_seq(seq))
    info = await js.add_consumer(stream, probe)
    await js.delete_consumer(stream, info.name)
    return info.num_pending or 0


async def _start_for_last(
    count: Callable[[int], Awaitable[int]], first: int, last: int, n: int
) -> int:
    """A start sequence from which exactly ``n`` messages match (``first`` when fewer do).

    ``count(seq)`` is non-increasing in ``seq``; the answer lies in ``[first,
    last - n + 1]``. The top is tried first: without a filter it is the answer.
    """
    lo, hi = first, max(first, last - n + 1)
    if await count(hi) >= n:
        return hi
    hi = max(lo, hi - 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        pending = await count(mid)
        if pending == n:
            return mid
        lo, hi = (mid, hi) if pending > n else (lo, mid - 1)
    return lo


async def _subscribe(js: JetStreamContext, stream: str, filters: list[str], start: dict) -> Any:
    config = ConsumerConfig(**start, **({"filter_subjects": filters} if len(filters) > 1 else {}))
    return await js.subscribe(
        filters[0],
        stream=stream,
        config=config,
        ordered_consumer=True,
        inactive_threshold=INACTIVE_THRESHOLD_SECS,
    )


# --- the run ----------------------------------------------------------------


async def run_tail(cfg: BridgeConfig, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Print the stream's events to ``out`` as ``args`` asks; return the exit status.

    ``args`` is a namespace built by a parser given ``add_arguments``. Returns 0
    when caught up (no ``--follow``), after ``--limit`` lines, or when ``out``
    is a closed pipe; 1 with a message on stderr when NATS is unreachable, the
    stream is missing or JetStream refuses a request. Never acknowledges or alters anything in the stream.
    Cancellation (e.g. Ctrl-C while following) unsubscribes and closes cleanly.
    """
    try:
        nc = await _connect(cfg)
    except _TailError as exc:
        return _fail(exc)
    try:
        await _tail(nc, cfg, args, out)
    except _TailError as exc:
        return _fail(exc)
    except nats.errors.Error as exc:  # e.g. refused consumer, no permission, request timeout
        return _fail(f"NATS error: {exc or type(exc).__name__}")
    except BrokenPipeError:
        return _silence(out)
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()
    return 0


async def _tail(nc: Client, cfg: BridgeConfig, args: argparse.Namespace, out: TextIO) -> None:
    js, stream = nc.jetstream(timeout=REQUEST_TIMEOUT_SECS), cfg.stream.name
    state = await _stream_state(js, stream)
    follow = args.follow or args.new
    if not follow and state.messages == 0:
        return
    subjects = Subjects(cfg.stream.subject_prefix)
    filters = subject_filters(subjects, args)
    server = _server_filters(nc, filters, subjects)
    start = await _start_settings(js, stream, server, state, args)
    view = _View(out, filters, args, follow, start["opt_start_seq"] or 0)
    sub = await _subscribe(js, stream, server, start)
    try:
        await _pump(sub, view, None if follow else state.last_seq)
    finally:
        with anyio.CancelScope(shield=True):
            await sub.unsubscribe()
    out.flush()


async def _pump(sub: Any, view: _View, until_seq: int | None) -> None:
    """Deliver to ``view`` until the limit, or (``until_seq`` set) until caught up."""
    if until_seq is not None and await _drained(sub, idle=False):
        return
    while (msg := await _next(sub, catching_up=until_seq is not None)) is not None:
        if view.show(msg) or (until_seq is not None and _caught_up(msg, until_seq)):
            return


async def _next(sub: Any, *, catching_up: bool) -> Msg | None:
    """The next message; ``None`` when catching up and the server has nothing left for us."""
    while True:
        try:
            return await sub.next_msg(timeout=IDLE_CHECK_SECS if catching_up else None)
        except nats.errors.TimeoutError:
            if await _drained(sub, idle=True):
                return None


async def _drained(sub: Any, *, idle: bool) -> bool:
    """Nothing pending on the server and nothing on the way to us.

    Before reading (``idle=False``) "on the way" means delivered at all; after
    ``IDLE_CHECK_SECS`` of silence it means still queued in the client.
    """
    try:
        info = await sub.consumer_info()
    except nats.js.errors.NotFoundError:  # the ordered consumer is being recreated
        return False
    on_the_way = sub.pending_msgs > 0 if idle else (info.delivered.consumer_seq or 0) > 0
    return not info.num_pending and not on_the_way


def _caught_up(msg: Msg, until_seq: int) -> bool:
    meta = msg.metadata
    return meta.sequence.stream >= until_seq or meta.num_pending == 0


def _fail(problem: object) -> int:
    print(f"busbridge tail: {problem}", file=sys.stderr)
    return 1


def _silence(out: TextIO) -> int:
    """The reader went away (``| head``): stop quietly, keep Python's exit flush from failing."""
    if out is sys.stdout:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0

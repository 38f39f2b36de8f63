"""Which lost events a bridge crash may excuse: the at-risk window of ``bridge_crash``.

A SIGKILLed bridge loses, by the nature of the legacy transport (ZMQ PUB/SUB, no acks),
frames that were still in its ZMQ/kernel receive buffers or read but not yet committed to
the spool, and frames sent while it was down that the publishers' sockets did not keep
(a connecting PUB/XPUB keeps queueing for a peer it lost and resends after reconnecting, so
in practice few are lost). Everything it had spooled must be stored (DESIGN §2 crash safety).
So events sent in

    [kill - read_lag, ready)

are *at risk*; losing one of them is reported, losing any other fails. ``kill``: just before
the SIGKILL; ``ready``: the restarted bridge answered ``/healthz`` (its ZMQ socket is bound
by then). All times are ``time.monotonic_ns`` of this host (the producer's clock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Set
from contextlib import closing
from pathlib import Path

import msgspec

from loadtest.load_producer import SentLog
from loadtest.message_mix import KIND_EVENT
from loadtest.traffic import find_token

__all__ = ["CrashWindow", "Token", "crash_window", "spooled_tokens"]

Token = tuple[int, int]


def spooled_tokens(spool_path: Path) -> set[Token]:
    """Tokens of the error events left in a dead bridge's spool (bridge/pipeline/spool.py: the
    ``spool`` rows whose ``seq`` is in ``pending``; ``payload`` = the encoded message): read but
    not yet acknowledged at the crash.
    Empty when there is no spool file."""
    if not spool_path.exists():
        return set()
    with closing(sqlite3.connect(spool_path)) as db:
        rows = db.execute(
            "SELECT s.payload FROM pending p JOIN spool s ON s.seq = p.seq "
            "WHERE s.kind = 'error_event'"
        ).fetchall()
    return {t for (payload,) in rows if (t := find_token(bytes(payload))) is not None}


class CrashWindow(msgspec.Struct, frozen=True, kw_only=True):
    """The verdict over one crash. Counts are expected events (``SentLog.expected_events``).

    ``read_lag_ms``: how far before the kill the window opens; ``down_ms``: kill -> ``ready``;
    ``at_risk``: sent within the window, ``at_risk_lost``: of those, not stored; split into
    ``*_before_kill`` (sent in the read lag) and ``*_while_down`` (kill -> ready);
    ``lost_outside``: lost events sent outside the window (must be 0), with samples
    ``(publisher, n)``; ``not_resumed``: publishers with nothing stored that they sent after
    ``ready`` (must be empty).
    """

    read_lag_ms: float
    down_ms: float
    at_risk: int
    at_risk_lost: int
    sent_before_kill: int
    lost_before_kill: int
    sent_while_down: int
    lost_while_down: int
    lost_outside: int
    lost_outside_samples: list[Token]
    not_resumed: list[int]


def crash_window(
    sent: SentLog, stored: Set[Token], *, kill_ns: int, ready_ns: int, read_lag_ns: int
) -> CrashWindow:
    """Classify every expected event of ``sent`` against ``stored`` (tokens seen as events)."""
    start = kill_ns - read_lag_ns
    counts = {
        "sent_before_kill": 0,
        "lost_before_kill": 0,
        "sent_while_down": 0,
        "lost_while_down": 0,
    }
    outside: list[Token] = []
    not_resumed: list[int] = []
    for p in range(sent.publishers):
        resumed = False
        for n, k, t in zip(sent.n[p], sent.kind[p], sent.sent_ns[p], strict=True):
            if k != KIND_EVENT:
                continue
            kept = (p, n) in stored
            resumed |= kept and t >= ready_ns
            if start <= t < ready_ns:
                where = "before_kill" if t < kill_ns else "while_down"
                counts["sent_" + where] += 1
                counts["lost_" + where] += not kept
            elif not kept:
                outside.append((p, n))
        if not resumed:
            not_resumed.append(p)
    return CrashWindow(
        read_lag_ms=read_lag_ns / 1e6,
        down_ms=round((ready_ns - kill_ns) / 1e6, 1),
        at_risk=counts["sent_before_kill"] + counts["sent_while_down"],
        at_risk_lost=counts["lost_before_kill"] + counts["lost_while_down"],
        lost_outside=len(outside),
        lost_outside_samples=outside[:10],
        not_resumed=not_resumed,
        **counts,
    )

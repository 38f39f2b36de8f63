"""What the probe observed in the stream, and its reconciliation against the producer's ``SentLog``.

``Observed`` is filled by ``loadtest.probe.StreamProbe`` (one entry per stored message);
``reconcile(observed, sent)`` is pure and gives the ``ProbeReport``:

* loss and copies by token: every ``SentLog.expected_events()`` token stored exactly once;
  flood tokens at most once;
* order per publisher socket: the publisher's events in send order must be stored in that
  order. Events that had a duplicate copy sent from another socket are left out of the
  order check (which copy the bridge stores first depends on two connections, so its place
  says nothing about one connection's order); ``order_checked`` in ``per_publisher`` counts
  the events judged;
* latency: first receipt minus first send (``SentLog.send_times``), stored events only; and
  the stream's stored time of the first copy minus first send (``latency_to_stored``): the
  bridge's part of it, when the probe could read that time;
* flood: flood tokens stored as events + ``FloodSummary.suppressed`` of summaries whose sample
  is a flood token == flood messages sent (DESIGN §2); suppressed non-flood events counted apart;
* dead letters: stored ``DeadLetter`` messages, plus those counted in ``DeadLetterSummary``
  messages (dead-letter flood control), vs malformed frame sets sent.
"""

from __future__ import annotations

from collections import Counter

from loadtest.load_producer import SentLog
from loadtest.message_mix import KIND_DUPLICATE, KIND_EVENT, KIND_FLOOD, KIND_MALFORMED
from loadtest.results import FloodReconciliation, ProbeReport, latency_stats

__all__ = ["Observed", "reconcile"]

Token = tuple[int, int]
_SECOND_NS = 1_000_000_000


class Observed:
    """Raw record of a stream read. ``first_ns``: token -> first receipt (monotonic ns), in
    stream order; ``stored_ns``: token -> when the stream stored that first copy (monotonic
    ns, converted from the server's clock), where known; ``copies``: extra stored copies per
    token; ``no_token``: error events without a token; ``events``: error events in all;
    ``dead_letters``: token per stored dead letter; ``flood_summaries``: ``(fingerprint,
    suppressed, sample token)``; ``other``: other types."""

    def __init__(self) -> None:
        self.first_ns: dict[Token, int] = {}
        self.stored_ns: dict[Token, int] = {}
        self.copies: Counter[Token] = Counter()
        self.no_token = 0
        self.events = 0
        self.dead_letters: list[Token | None] = []
        self.dead_letters_summarised = 0  # DeadLetterSummary.suppressed, summed
        self.flood_summaries: list[tuple[str, int, Token | None]] = []
        self.flood_started = 0
        self.flood_ended = 0
        self.other: Counter[str] = Counter()
        self.stream_messages = 0
        self.redelivered = 0

    def add_event(self, token: Token | None, now_ns: int, stored_ns: int | None = None) -> None:
        """An error event received at ``now_ns``, stored by the stream at ``stored_ns`` (both
        monotonic ns; None: unknown)."""
        self.events += 1
        if token is None:
            self.no_token += 1
        elif token in self.first_ns:
            self.copies[token] += 1
        else:
            self.first_ns[token] = now_ns
            if stored_ns is not None:
                self.stored_ns[token] = stored_ns


def reconcile(obs: Observed, sent: SentLog) -> ProbeReport:
    """The ``ProbeReport`` of ``obs`` against ``sent`` (see the module docstring)."""
    kinds = _token_kinds(sent)
    expected = {t for t, k in kinds.items() if k == KIND_EVENT}
    flood = {t for t, k in kinds.items() if k == KIND_FLOOD}
    stored = obs.first_ns
    lost = sorted(expected - stored.keys())
    per_pub: dict[int, Counter[str]] = {p: Counter() for p in range(sent.publishers)}
    for p, _ in lost:
        per_pub[p]["lost"] += 1
    duplicated = 0
    for t, extra in obs.copies.items():
        if t in expected or t in flood:
            duplicated += extra
            per_pub[t[0]]["duplicated"] += extra
    unexpected = obs.no_token + sum(1 for t in stored if t not in expected and t not in flood)
    unexpected += sum(1 for t in obs.dead_letters if t is None or kinds.get(t) != KIND_MALFORMED)
    out_of_order = _out_of_order(obs, sent, expected | flood, per_pub)
    send_times = sent.send_times()
    latencies = [
        stored[t] - send_times[t]
        for t in stored
        if t in send_times and kinds.get(t) != KIND_MALFORMED
    ]
    to_stored = [
        at - send_times[t]
        for t, at in obs.stored_ns.items()
        if t in send_times and kinds.get(t) != KIND_MALFORMED
    ]
    return ProbeReport(
        sent=sent.total(),
        expected=len(expected),
        received_unique=len(expected) - len(lost),
        lost=len(lost),
        duplicated=duplicated,
        out_of_order=out_of_order,
        unexpected=unexpected,
        dead_letters_expected=sent.malformed_sent(),
        dead_letters_received=len(obs.dead_letters) + obs.dead_letters_summarised,
        dead_letters_summarised=obs.dead_letters_summarised,
        latency=latency_stats(latencies),
        latency_to_stored=latency_stats(to_stored),
        flood=_flood(obs, sent, flood),
        timeline=_timeline(obs, sent),
        per_publisher={p: dict(c) for p, c in per_pub.items() if c},
        lost_samples=lost[:20],
        other_messages=sum(obs.other.values()),
        stream_messages=obs.stream_messages,
    )


def _token_kinds(sent: SentLog) -> dict[Token, int]:
    """Token -> kind of its original message (copies carry an original's token)."""
    out: dict[Token, int] = {}
    for p in range(sent.publishers):
        for n, k in zip(sent.n[p], sent.kind[p], strict=True):
            if k != KIND_DUPLICATE:
                out[(p, n)] = k
    return out


def _out_of_order(
    obs: Observed, sent: SentLog, judged: set[Token], per_pub: dict[int, Counter[str]]
) -> int:
    """Events stored before an event their publisher sent earlier (copied events left out)."""
    copied = sent.tokens(KIND_DUPLICATE)
    position = {t: i for i, t in enumerate(obs.first_ns)}
    total = 0
    for p in range(sent.publishers):
        highest = -1
        for n, k in zip(sent.n[p], sent.kind[p], strict=True):
            t = (p, n)
            if k == KIND_DUPLICATE or t not in judged or t in copied or t not in position:
                continue
            per_pub[p]["order_checked"] += 1
            if position[t] < highest:
                total += 1
                per_pub[p]["out_of_order"] += 1
            highest = max(highest, position[t])
    for c in per_pub.values():  # only worth showing next to a problem
        if set(c) == {"order_checked"}:
            c.clear()
    return total


def _flood(obs: Observed, sent: SentLog, flood: set[Token]) -> FloodReconciliation | None:
    if not flood and not obs.flood_summaries and not obs.flood_started:
        return None
    stored = sum(1 for t in flood if t in obs.first_ns)
    summaries = [s for s in obs.flood_summaries if s[2] in flood]
    suppressed = sum(s[1] for s in summaries)
    others = sum(s[1] for s in obs.flood_summaries if s[2] not in flood)
    return FloodReconciliation(
        sent=len(flood),
        stored_events=stored,
        suppressed_in_summaries=suppressed,
        summaries=len(summaries),
        balanced=stored + suppressed == len(flood),
        started=obs.flood_started,
        ended=obs.flood_ended,
        other_suppressed=others,
    )


def _timeline(obs: Observed, sent: SentLog) -> list[tuple[float, int, int]]:
    """``(second, sent that second, unique events first received that second)`` from the first send."""
    start = sent.start_ns()
    sent_per_sec = sent.per_second()
    received: list[int] = []
    for t in obs.first_ns.values():
        second = max(0, (t - start) // _SECOND_NS)
        if second >= len(received):
            received.extend([0] * (second + 1 - len(received)))
        received[second] += 1
    length = max(len(sent_per_sec), len(received))
    sent_per_sec += [0] * (length - len(sent_per_sec))
    received += [0] * (length - len(received))
    return [(float(s), sent_per_sec[s], received[s]) for s in range(length)]

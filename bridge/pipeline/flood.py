"""Flood control: a storm of similar errors becomes a few stored events plus summaries.

Design note
-----------
Per fingerprint (source, error_type, masked message; see ``fingerprint.py``)
a fixed window counts events: the first ``threshold`` of each ``window_secs``
pass, the rest are suppressed. The first suppression starts a flood
(``FloodStarted``, with the suppressed event as sample); every
``summary_interval_secs`` a ``FloodSummary`` reports what was suppressed since
the previous one (count, first/last seen, one sample); when nothing has been
suppressed for a whole window the flood ends with a last summary (if any is
owed) and ``FloodEnded``. Summing ``suppressed`` over a flood's summaries gives
exactly the number suppressed, so stored + summarised == sent.

Rules match an event's ``error_type`` or ``message`` with a regex; the first
matching rule applies, else the default rule. A rule may escalate the
severity of its flood events. Critical events are never suppressed unless
``suppress_critical``.

A global ceiling (``global_max_per_sec``; 0 = off) protects NATS from a storm
spread over many fingerprints: a token bucket where lower severities need
more tokens left to pass (debug > 80% of the bucket, info > 60%, warning >
40%, error > 20%), so as it drains they are shed first; critical is never
shed unless ``suppress_critical`` (then only when the bucket is empty). Shed events are summarised like a flood of pseudo-fingerprint
``global-<severity>`` under rule ``global_ceiling``.

State is bounded: at most ``max_fingerprints`` (least recently seen forgotten
first; an active flood forgotten that way is closed with its summaries, so no
count is lost). ``update_rules`` keeps all state (hot reload).

Pure policy: the clock is injected, nothing sleeps, logs or counts. ``check``
returns the verdict and any flood events to publish; ``tick`` (call about
once a second) returns due summaries and ended floods; ``flush`` closes every
flood (shutdown).
"""

from __future__ import annotations

import enum
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from contracts.messages import (
    ErrorEvent,
    FloodEnded,
    FloodEvent,
    FloodStarted,
    FloodSummary,
    Severity,
)

__all__ = ["GLOBAL_RULE_NAME", "FloodDecision", "FloodGate", "FloodRule", "Verdict"]

GLOBAL_RULE_NAME = "global_ceiling"
_GLOBAL_WINDOW_SECS = 10.0


class Verdict(enum.Enum):
    PASS = "pass"
    SUPPRESS = "suppress"


class FloodDecision(NamedTuple):
    """``verdict`` for the event; ``rule`` that decided (a metric label); flood ``events`` to publish now."""

    verdict: Verdict
    rule: str
    events: list[FloodEvent]


class FloodRule(msgspec.Struct, frozen=True):
    """``pattern`` (regex, case as written) is searched in error_type and message; None matches all."""

    name: str
    threshold: int
    window_secs: float
    pattern: str | None = None
    escalate_to: Severity | None = None

    def compiled(self) -> re.Pattern[str] | None:
        return re.compile(self.pattern) if self.pattern else None


class _Flood:
    __slots__ = (
        "first_seen",
        "last_seen",
        "last_summary_mono",
        "last_suppressed_mono",
        "sample",
        "started_at",
        "started_mono",
        "summaries",
        "suppressed_total",
        "unreported",
    )

    def __init__(self, ev: ErrorEvent, now: float) -> None:
        self.started_at = ev.received_at
        self.started_mono = now
        self.suppressed_total = 0
        self.unreported = 0
        self.first_seen = ev.received_at
        self.last_seen = ev.received_at
        self.sample = ev
        self.last_summary_mono = now
        self.last_suppressed_mono = now
        self.summaries = 0

    def add(self, ev: ErrorEvent, now: float) -> None:
        if self.unreported == 0:
            self.first_seen, self.sample = ev.received_at, ev
        self.unreported += 1
        self.suppressed_total += 1
        self.last_seen = ev.received_at
        self.last_suppressed_mono = now


class _State:
    __slots__ = ("count", "error_type", "flood", "key", "message", "rule", "source", "window_start")

    def __init__(self, key: str, rule: FloodRule, now: float, ev: ErrorEvent | None = None) -> None:
        self.key = key
        self.rule = rule
        self.window_start = now
        self.count = 0
        self.flood: _Flood | None = None
        self.source = ev.source if ev else "*"
        self.error_type = ev.error_type if ev else "*"
        self.message = ev.message if ev else ""


class _SeverityBucket:
    """Token bucket of ``rate`` per second; rank r passes only above (4 - r) / 5 of capacity."""

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.tokens = rate
        self._clock = clock
        self._last = clock()

    def take(self, rank: int) -> bool:
        now = self._clock()
        self.tokens = min(self.rate, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens - 1 >= self.rate * (4 - rank) / 5:
            self.tokens -= 1
            return True
        return False


class FloodGate:
    """See the module note. ``machine`` goes into the flood events."""

    def __init__(
        self,
        rules: Sequence[FloodRule],
        default_rule: FloodRule,
        *,
        machine: str,
        summary_interval_secs: float = 10.0,
        max_fingerprints: int = 10_000,
        suppress_critical: bool = False,
        global_max_per_sec: float = 0.0,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.machine = machine
        self._clock = clock
        self._wall = wall_clock
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._active: dict[str, _State] = {}
        self._outbox: list[FloodEvent] = []
        self._bucket: _SeverityBucket | None = None
        self._global_rule = FloodRule(GLOBAL_RULE_NAME, 0, _GLOBAL_WINDOW_SECS)
        self.reconfigure(
            summary_interval_secs=summary_interval_secs,
            max_fingerprints=max_fingerprints,
            suppress_critical=suppress_critical,
            global_max_per_sec=global_max_per_sec,
        )
        self.update_rules(rules, default_rule)

    def update_rules(self, rules: Sequence[FloodRule], default_rule: FloodRule) -> None:
        """Swap the rules, keeping every window and flood; rules apply again from the next event."""
        if any(r.threshold < 0 or r.window_secs <= 0 for r in [*rules, default_rule]):
            raise ValueError("rule thresholds must be >= 0 and windows > 0")
        self._rules = [(rule, rule.compiled()) for rule in rules]
        self._default = default_rule
        for state in self._states.values():
            if state.rule.name != GLOBAL_RULE_NAME:
                state.rule = self._rule_for(state.error_type, state.message)

    def reconfigure(
        self,
        *,
        summary_interval_secs: float,
        max_fingerprints: int,
        suppress_critical: bool,
        global_max_per_sec: float,
    ) -> None:
        """Set the gate's settings (also at construction; in place on hot reload, keeping
        windows and floods). Raises ``ValueError`` for a non-positive interval or size."""
        if summary_interval_secs <= 0 or max_fingerprints < 1 or global_max_per_sec < 0:
            raise ValueError("summary_interval_secs and max_fingerprints must be positive")
        self.summary_interval_secs = summary_interval_secs
        self.max_fingerprints = max_fingerprints
        self.suppress_critical = suppress_critical
        rate = self._bucket.rate if self._bucket else 0.0
        if global_max_per_sec != rate:
            self._bucket = (
                _SeverityBucket(global_max_per_sec, self._clock) if global_max_per_sec else None
            )
        self._evict_lru()

    @property
    def active_floods(self) -> int:
        return len(self._active)

    @property
    def tracked(self) -> int:
        return len(self._states)

    # -- decisions -----------------------------------------------------------------------------

    def check(self, ev: ErrorEvent) -> FloodDecision:
        """Pass or suppress ``ev``; also return flood events to publish now (starts, evictions)."""
        if ev.severity is Severity.CRITICAL and not self.suppress_critical:
            return FloodDecision(Verdict.PASS, "critical", self._drain_outbox())
        now = self._clock()
        state = self._state(ev, now)
        if now - state.window_start >= state.rule.window_secs:
            state.window_start, state.count = now, 0
        state.count += 1
        if state.count > state.rule.threshold:
            return FloodDecision(Verdict.SUPPRESS, state.rule.name, self._suppress(state, ev, now))
        if self._bucket is not None and not self._bucket.take(ev.severity.rank):
            events = self._suppress(self._global_state(ev, now), ev, now)
            return FloodDecision(Verdict.SUPPRESS, GLOBAL_RULE_NAME, events)
        return FloodDecision(Verdict.PASS, state.rule.name, self._drain_outbox())

    def _suppress(self, state: _State, ev: ErrorEvent, now: float) -> list[FloodEvent]:
        if state.flood is None:
            state.flood = _Flood(ev, now)
            self._active[state.key] = state
            self._outbox.append(self._started(state, ev))
        state.flood.add(ev, now)
        return self._drain_outbox()

    def tick(self) -> list[FloodEvent]:
        """Summaries that are due and floods that ended (quiet for a whole window)."""
        now = self._clock()
        for state in list(self._active.values()):
            flood = state.flood
            assert flood is not None
            if now - flood.last_suppressed_mono >= state.rule.window_secs:
                self._end(state)
            elif flood.unreported and now - flood.last_summary_mono >= self.summary_interval_secs:
                self._outbox.append(self._summary(state, now))
        return self._drain_outbox()

    def flush(self) -> list[FloodEvent]:
        """End every active flood now, with its owed summary (shutdown)."""
        for state in list(self._active.values()):
            self._end(state)
        return self._drain_outbox()

    # -- state ---------------------------------------------------------------------------------

    def _state(self, ev: ErrorEvent, now: float) -> _State:
        key = ev.fingerprint or f"{ev.source}|{ev.error_type}|{ev.message}"
        state = self._states.get(key)
        if state is None:
            rule = self._rule_for(ev.error_type, ev.message)
            state = self._states[key] = _State(key, rule, now, ev)
            self._evict_lru()
        else:
            self._states.move_to_end(key)
        return state

    def _global_state(self, ev: ErrorEvent, now: float) -> _State:
        key = f"global-{ev.severity.value}"
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _State(key, self._global_rule, now)
            self._evict_lru()
        self._states.move_to_end(key)
        return state

    def _rule_for(self, error_type: str, message: str) -> FloodRule:
        for rule, pattern in self._rules:
            if pattern is None or pattern.search(error_type) or pattern.search(message):
                return rule
        return self._default

    def _evict_lru(self) -> None:
        while len(self._states) > self.max_fingerprints:
            _, state = self._states.popitem(last=False)
            if state.flood is not None:
                self._end(state)

    def _end(self, state: _State) -> None:
        flood = state.flood
        assert flood is not None
        now = self._clock()
        if flood.unreported:
            self._outbox.append(self._summary(state, now))
        self._outbox.append(self._ended(state, flood))
        state.flood = None
        self._active.pop(state.key, None)

    def _drain_outbox(self) -> list[FloodEvent]:
        if not self._outbox:
            return []
        out, self._outbox = self._outbox, []
        return out

    # -- flood events --------------------------------------------------------------------------

    def _severity(self, state: _State, sample: ErrorEvent) -> Severity:
        return state.rule.escalate_to or sample.severity

    def _event_id(self, state: _State, kind: str, n: int = 0) -> str:
        assert state.flood is not None
        started_ms = int(state.flood.started_at.timestamp() * 1000)
        return f"flood-{state.key}-{started_ms}-{kind}-{n}"

    def _started(self, state: _State, ev: ErrorEvent) -> FloodStarted:
        return FloodStarted(
            event_id=self._event_id(state, "started"),
            machine=self.machine,
            fingerprint=state.key,
            source=state.source,
            error_type=state.error_type,
            rule=state.rule.name,
            threshold=state.rule.threshold,
            window_secs=state.rule.window_secs,
            severity=self._severity(state, ev),
            started_at=ev.received_at,
            sample=ev,
        )

    def _summary(self, state: _State, now: float) -> FloodSummary:
        flood = state.flood
        assert flood is not None
        flood.summaries += 1
        summary = FloodSummary(
            event_id=self._event_id(state, "summary", flood.summaries),
            machine=self.machine,
            fingerprint=state.key,
            source=state.source,
            error_type=state.error_type,
            rule=state.rule.name,
            severity=self._severity(state, flood.sample),
            suppressed=flood.unreported,
            suppressed_total=flood.suppressed_total,
            first_seen=flood.first_seen,
            last_seen=flood.last_seen,
            sample=flood.sample,
        )
        flood.unreported = 0
        flood.last_summary_mono = now
        return summary

    def _ended(self, state: _State, flood: _Flood) -> FloodEnded:
        return FloodEnded(
            event_id=self._event_id(state, "ended"),
            machine=self.machine,
            fingerprint=state.key,
            source=state.source,
            error_type=state.error_type,
            rule=state.rule.name,
            severity=self._severity(state, flood.sample),
            started_at=flood.started_at,
            ended_at=self._wall(),
            suppressed_total=flood.suppressed_total,
        )

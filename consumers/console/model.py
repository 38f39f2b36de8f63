"""The console's in-memory view of ERRBUS: issues, agents, floods, dead letters, the feed index.

Design note
-----------
JetStream is the store; this module only keeps an **index** of what one console process read
from the stream, in stream order, so every query the browser makes is answered from memory
and the browser only ever receives pages (at most ``MAX_PAGE`` rows):

* ``EventRow`` per ``ErrorEvent``: stream sequence, receive time, machine, severity, source,
  error type, the message cut to ``MESSAGE_CHARS``, fingerprint and transport. Kept in a
  list ordered by sequence, bounded by ``max_events`` (the oldest rows are dropped; their
  counts stay in their issue and agent). The full contract is read back from the stream by
  sequence when an operator opens one event (``ConsoleService.event_detail``).
* ``Issue`` per fingerprint (Sentry's grouping): count, first/last seen (receive time, UTC
  epoch seconds), first/last stream sequence, the highest severity, machines and agents
  with counts, and two trend series: events per minute (the last ``MINUTE_BUCKETS``
  minutes) and per hour (the last ``HOUR_BUCKETS`` hours), pruned as time moves on.
* ``Agent`` per (machine, source): counts and trends like an issue, the last event, and the
  transports its events came by (``legacy.dialect``; ``native`` when ``legacy`` is null).
* ``Flood`` per (machine, fingerprint, rule, start): from ``FloodStarted``/``FloodSummary``/
  ``FloodEnded``; active until ended; the last ``FLOOD_SUMMARIES`` summaries kept.
* ``DeadLetterRow`` per ``DeadLetter`` (bounded deque), frames read back by sequence.
* The latest ``PhaseChanged`` and ``SpoolEvicted`` per bridge and the fired alerts
  (``AlertFired`` read back from ``<prefix>.alert.>``), bounded.

Issue **states** (unresolved / resolved / ignored, with notes) are not derived here: they
live in the KV bucket (``consumers.console.store``) and are handed in with ``set_state``;
``display_state`` combines the two: a resolved issue with an event stored after its
resolution (``last_seq > resolved_seq``) shows as unresolved with the regression flag, on
every console, whether or not the reopening has been written back yet.

Nothing here does I/O, reads a clock or logs: ``ingest`` takes the stream sequence and the
decoded contract and returns the ``Change`` list the server pushes to browsers. Times are
UTC epoch seconds (float) everywhere; the trend buckets use the events' ``received_at`` (the
bridge's clock), and "now" for a trend is passed in by the caller.
"""

from __future__ import annotations

import bisect
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import msgspec

from bridge.migration import transport_of as _migration_transport
from consumers.console.alerts import AlertFired
from contracts.messages import (
    BridgeHeartbeat,
    DeadLetter,
    DeadLetterSummary,
    ErrorEvent,
    FloodEnded,
    FloodStarted,
    FloodSummary,
    Message,
    PhaseChanged,
    Severity,
    SpoolEvicted,
)

__all__ = [
    "HOUR_BUCKETS",
    "MAX_PAGE",
    "MINUTE_BUCKETS",
    "Agent",
    "Change",
    "ConsoleModel",
    "DeadLetterRow",
    "EventFilter",
    "EventRow",
    "Flood",
    "Issue",
    "IssueState",
    "StateName",
    "transport_of",
]

MESSAGE_CHARS = 300
MAX_PAGE = 500
MINUTE_BUCKETS = 60
HOUR_BUCKETS = 7 * 24
FLOOD_SUMMARIES = 200
ENDED_FLOODS = 200
MAX_ALERTS = 2000
_SEVERITY_RANK = {s.value: s.rank for s in Severity}

StateName = Literal["unresolved", "resolved", "ignored"]


def _intern(text: str) -> str:
    return sys.intern(text) if len(text) <= 64 else text


def transport_of(ev: ErrorEvent) -> str:
    """The migration view's label (``bridge.migration.transport_of``): ``zmq:<dialect>`` (the
    seven :7150 dialects), ``nats:library_a``/``nats:library_b`` (the legacy ``errors.>``
    libraries) or ``native:native`` (``legacy`` is null)."""
    return _migration_transport(ev) or "native:native"


class EventRow(msgspec.Struct, frozen=True, gc=False):
    """One stored ``ErrorEvent`` as listed (``at``: ``received_at`` in UTC epoch seconds)."""

    seq: int
    at: float
    machine: str
    severity: str
    source: str
    error_type: str
    message: str
    fingerprint: str
    transport: str
    occurred_at: float | None = None


class DeadLetterRow(msgspec.Struct, frozen=True, gc=False):
    """One stored ``DeadLetter`` as listed; ``preview``: the first frame's start as text.
    A ``DeadLetterSummary`` is listed as a row too: its sample's fields, ``suppressed`` the
    dead letters it counts (0 for a dead letter stored with its bytes)."""

    seq: int
    at: float
    machine: str
    reason: str
    dialect_guess: str | None
    frame_sizes: list[int]
    detail: str
    preview: str
    truncated: bool
    suppressed: int = 0


class IssueState(msgspec.Struct, frozen=True, kw_only=True):
    """An operator's decision on an issue, stored as JSON in the console KV bucket.

    ``state``: unresolved / resolved / ignored. ``note``, ``by`` (free text, e.g. a name),
    ``at`` (UTC epoch seconds). ``resolved_seq``: the last stream sequence of the issue the
    resolving console had seen; a later event is a regression. ``regression``: the issue was
    reopened by such an event (``reopened_seq``). ``history``: earlier decisions, newest
    first, at most ``HISTORY`` entries (each without its own history).
    """

    state: StateName = "unresolved"
    note: str = ""
    by: str = ""
    at: float = 0.0
    resolved_seq: int = 0
    regression: bool = False
    reopened_seq: int = 0
    history: list[dict[str, Any]] = []

    HISTORY = 20

    def then(self, **change: Any) -> IssueState:
        """A new state with ``change`` applied and this one pushed onto the history."""
        entry = {
            k: v for k, v in msgspec.to_builtins(self).items() if k != "history" and v not in ("",)
        }
        history = [entry, *self.history][: self.HISTORY] if self.at else list(self.history)
        fields = {**msgspec.structs.asdict(self), "history": history, **change}
        return IssueState(**fields)


@dataclass
class _Series:
    """Counts per minute and per hour (UTC epoch buckets), pruned to the kept windows."""

    minutes: dict[int, int] = field(default_factory=dict)
    hours: dict[int, int] = field(default_factory=dict)

    def add(self, at: float, n: int = 1) -> None:
        minute, hour = int(at // 60), int(at // 3600)
        self.minutes[minute] = self.minutes.get(minute, 0) + n
        self.hours[hour] = self.hours.get(hour, 0) + n
        if len(self.minutes) > 2 * MINUTE_BUCKETS:
            newest = max(self.minutes)
            self.minutes = {k: v for k, v in self.minutes.items() if k > newest - MINUTE_BUCKETS}
        if len(self.hours) > 2 * HOUR_BUCKETS:
            newest = max(self.hours)
            self.hours = {k: v for k, v in self.hours.items() if k > newest - HOUR_BUCKETS}

    def buckets(self, trend: str, now: float) -> list[int]:
        """Counts oldest first: ``1h`` 60 minutes, ``24h`` 24 hours, ``7d`` 7 days (by hour, summed per day)."""
        if trend == "1h":
            end = int(now // 60)
            return [self.minutes.get(m, 0) for m in range(end - MINUTE_BUCKETS + 1, end + 1)]
        end = int(now // 3600)
        if trend == "7d":
            hours = [self.hours.get(h, 0) for h in range(end - HOUR_BUCKETS + 1, end + 1)]
            return [sum(hours[d * 24 : d * 24 + 24]) for d in range(7)]
        return [self.hours.get(h, 0) for h in range(end - 23, end + 1)]

    def since(self, at: float) -> int:
        """Events in the minute buckets from ``at`` on (up to an hour back)."""
        first = int(at // 60)
        return sum(n for m, n in self.minutes.items() if m >= first)


@dataclass
class Issue:
    """Every ``ErrorEvent`` with one fingerprint (module note)."""

    fingerprint: str
    source: str
    error_type: str
    title: str
    severity: str
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    first_seq: int = 0
    last_seq: int = 0
    machines: Counter[str] = field(default_factory=Counter)
    agents: Counter[str] = field(default_factory=Counter)
    series: _Series = field(default_factory=_Series)

    def add(self, row: EventRow) -> None:
        self.count += 1
        if not self.first_seq:
            self.first_seen, self.first_seq = row.at, row.seq
        self.last_seen, self.last_seq = max(self.last_seen, row.at), row.seq
        self.title = row.message
        if _SEVERITY_RANK[row.severity] > _SEVERITY_RANK[self.severity]:
            self.severity = row.severity
        self.machines[row.machine] += 1
        self.agents[f"{row.machine}/{row.source}"] += 1
        self.series.add(row.at)


@dataclass
class Agent:
    """Every ``ErrorEvent`` of one (machine, source)."""

    machine: str
    source: str
    count: int = 0
    last: EventRow | None = None
    severities: Counter[str] = field(default_factory=Counter)
    transports: Counter[str] = field(default_factory=Counter)
    series: _Series = field(default_factory=_Series)

    @property
    def key(self) -> str:
        return f"{self.machine}/{self.source}"


@dataclass
class Flood:
    """One flood of one fingerprint under one rule on one machine."""

    key: str
    machine: str
    source: str
    error_type: str
    fingerprint: str
    rule: str
    severity: str
    started_at: float
    threshold: int
    window_secs: float
    sample: str
    started_seq: int
    suppressed_total: int = 0
    ended_at: float | None = None
    last_summary_at: float | None = None
    summaries: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=FLOOD_SUMMARIES))

    @property
    def active(self) -> bool:
        return self.ended_at is None


class Change(msgspec.Struct, frozen=True):
    """What ``ingest`` changed, for the live push: ``kind`` is ``event``, ``issue``,
    ``dead_letter``, ``flood``, ``bridge`` or ``alert``; ``key`` names the thing changed."""

    kind: str
    key: str
    seq: int


class EventFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What the feed asks for; empty values select everything. ``since``/``until``: UTC epoch
    seconds (inclusive); ``q``: case-insensitive text searched in message, error type, source,
    machine and fingerprint."""

    machines: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    error_types: tuple[str, ...] = ()
    fingerprint: str = ""
    since: float | None = None
    until: float | None = None
    q: str = ""

    def compile(self) -> Callable[[EventRow], bool]:
        checks: list[Callable[[EventRow], bool]] = []
        if self.machines:
            checks.append(lambda r, s=frozenset(self.machines): r.machine in s)
        if self.severities:
            checks.append(lambda r, s=frozenset(self.severities): r.severity in s)
        if self.sources:
            checks.append(lambda r, s=frozenset(self.sources): r.source in s)
        if self.error_types:
            checks.append(lambda r, s=frozenset(self.error_types): r.error_type in s)
        if self.fingerprint:
            checks.append(lambda r, f=self.fingerprint: r.fingerprint == f)
        if self.since is not None:
            checks.append(lambda r, t=self.since: r.at >= t)
        if self.until is not None:
            checks.append(lambda r, t=self.until: r.at <= t)
        if self.q:
            q = self.q.lower()
            checks.append(
                lambda r: (
                    q in r.message.lower()
                    or q in r.error_type.lower()
                    or q in r.source.lower()
                    or q in r.machine.lower()
                    or q == r.fingerprint
                )
            )
        return lambda r: all(c(r) for c in checks)


class ConsoleModel:
    """The index (module note). ``max_events``/``max_dead_letters``: rows kept for listing."""

    def __init__(self, *, max_events: int = 200_000, max_dead_letters: int = 10_000) -> None:
        if max_events < 1 or max_dead_letters < 1:
            raise ValueError("max_events and max_dead_letters must be >= 1")
        self.max_events = max_events
        self.events: list[EventRow] = []
        self._seqs: list[int] = []
        self.issues: dict[str, Issue] = {}
        self.agents: dict[str, Agent] = {}
        self.floods: dict[str, Flood] = {}
        self.dead_letters: deque[DeadLetterRow] = deque(maxlen=max_dead_letters)
        self.dead_letter_total = 0
        self.dead_letter_suppressed_total = 0  # counted in DeadLetterSummary messages
        self.phase_changes: dict[str, PhaseChanged] = {}
        self.heartbeats: dict[str, tuple[int, BridgeHeartbeat]] = {}
        self.evictions: dict[str, SpoolEvicted] = {}
        self.alerts: deque[tuple[int, Any]] = deque(maxlen=MAX_ALERTS)
        self.states: dict[str, IssueState] = {}
        self.state_revisions: dict[str, int] = {}
        self.event_total = 0
        self.last_seq = 0
        self.newest_at = 0.0

    # --- ingest ---------------------------------------------------------------------------

    def ingest(self, seq: int, msg: Message | Any) -> list[Change]:
        """Add one stored message (any contract; ``AlertFired`` too); return what changed.
        Messages at or below the last sequence ingested are ignored (a redelivery)."""
        if seq <= self.last_seq:
            return []
        self.last_seq = seq
        if isinstance(msg, ErrorEvent):
            return self._event(seq, msg)
        if isinstance(msg, DeadLetter):
            return self._dead_letter(seq, msg)
        if isinstance(msg, DeadLetterSummary):
            return self._dead_letter_summary(seq, msg)
        if isinstance(msg, FloodStarted | FloodSummary | FloodEnded):
            return self._flood(seq, msg)
        if isinstance(msg, PhaseChanged):
            self.phase_changes[msg.bridge_id] = msg
            return [Change("bridge", msg.bridge_id, seq)]
        if isinstance(msg, SpoolEvicted):
            self.evictions[msg.bridge_id] = msg
            return [Change("bridge", msg.bridge_id, seq)]
        if isinstance(msg, BridgeHeartbeat):
            self.heartbeats[msg.bridge_id] = (seq, msg)
            return []
        if isinstance(msg, AlertFired):
            self.alerts.append((seq, msg))
            return [Change("alert", msg.alert_id, seq)]
        return []

    def _event(self, seq: int, ev: ErrorEvent) -> list[Change]:
        at = ev.received_at.timestamp()
        fingerprint = ev.fingerprint or _fallback_fingerprint(ev)
        row = EventRow(
            seq=seq,
            at=at,
            machine=_intern(ev.machine),
            severity=ev.severity.value,
            source=_intern(ev.source),
            error_type=_intern(ev.error_type),
            message=ev.message[:MESSAGE_CHARS],
            fingerprint=_intern(fingerprint),
            transport=_intern(transport_of(ev)),
            occurred_at=ev.occurred_at.timestamp() if ev.occurred_at else None,
        )
        self.events.append(row)
        self._seqs.append(seq)
        if len(self.events) > self.max_events:
            drop = max(1, self.max_events // 10)
            del self.events[:drop], self._seqs[:drop]
        self.event_total += 1
        self.newest_at = max(self.newest_at, at)
        issue = self.issues.get(fingerprint)
        if issue is None:
            issue = self.issues[fingerprint] = Issue(
                fingerprint, row.source, row.error_type, row.message, row.severity
            )
        issue.add(row)
        agent = self.agents.get(f"{row.machine}/{row.source}")
        if agent is None:
            agent = self.agents[f"{row.machine}/{row.source}"] = Agent(row.machine, row.source)
        agent.count += 1
        agent.last = row
        agent.severities[row.severity] += 1
        agent.transports[row.transport] += 1
        agent.series.add(row.at)
        return [Change("event", str(seq), seq), Change("issue", fingerprint, seq)]

    def _dead_letter(self, seq: int, dl: DeadLetter) -> list[Change]:
        self.dead_letters.append(_dead_letter_row(seq, dl, dl.received_at, dl.detail))
        self.dead_letter_total += 1
        return [Change("dead_letter", str(seq), seq)]

    def _dead_letter_summary(self, seq: int, s: DeadLetterSummary) -> list[Change]:
        if not s.suppressed:  # a storm's closing summary with nothing new: no row
            return []
        ended = "; the storm ended" if s.ended else ""
        detail = (
            f"{s.suppressed} more like this suppressed ({s.suppressed_total} since "
            f"{s.first_seen:%H:%M:%S}; key {s.key}){ended}"
        )
        self.dead_letters.append(
            _dead_letter_row(seq, s.sample, s.last_seen, detail, suppressed=s.suppressed)
        )
        self.dead_letter_suppressed_total += s.suppressed
        return [Change("dead_letter", str(seq), seq)]

    def _flood(self, seq: int, msg: FloodStarted | FloodSummary | FloodEnded) -> list[Change]:
        base = f"{msg.machine}/{msg.fingerprint}/{msg.rule}"
        if isinstance(msg, FloodStarted):
            key = f"{base}/{seq}"
            self.floods[key] = Flood(
                key=key,
                machine=msg.machine,
                source=msg.source,
                error_type=msg.error_type,
                fingerprint=msg.fingerprint,
                rule=msg.rule,
                severity=msg.severity.value,
                started_at=msg.started_at.timestamp(),
                threshold=msg.threshold,
                window_secs=msg.window_secs,
                sample=msg.sample.message[:MESSAGE_CHARS],
                started_seq=seq,
            )
            self._trim_floods()
            return [Change("flood", key, seq)]
        flood = self._open_flood(base)
        if flood is None:  # its start is older than what was loaded
            return []
        if isinstance(msg, FloodSummary):
            flood.suppressed_total = msg.suppressed_total
            flood.last_summary_at = msg.last_seen.timestamp()
            flood.sample = msg.sample.message[:MESSAGE_CHARS]
            flood.summaries.append(
                {
                    "seq": seq,
                    "suppressed": msg.suppressed,
                    "suppressed_total": msg.suppressed_total,
                    "first_seen": msg.first_seen.timestamp(),
                    "last_seen": msg.last_seen.timestamp(),
                    "sample": msg.sample.message[:MESSAGE_CHARS],
                }
            )
        else:
            flood.ended_at = msg.ended_at.timestamp()
            flood.suppressed_total = msg.suppressed_total
        return [Change("flood", flood.key, seq)]

    def _open_flood(self, base: str) -> Flood | None:
        for key in reversed(self.floods):
            if key.startswith(base + "/") and self.floods[key].active:
                return self.floods[key]
        return None

    def _trim_floods(self) -> None:
        ended = [k for k, f in self.floods.items() if not f.active]
        for key in ended[: max(0, len(ended) - ENDED_FLOODS)]:
            del self.floods[key]

    # --- states -------------------------------------------------------------------------

    def set_state(self, fingerprint: str, state: IssueState | None, revision: int = 0) -> bool:
        """Apply a state read from KV (``None``: deleted). Returns whether it changed."""
        if revision and revision <= self.state_revisions.get(fingerprint, 0):
            return False
        self.state_revisions[fingerprint] = revision
        if state is None:
            return self.states.pop(fingerprint, None) is not None
        self.states[fingerprint] = state
        return True

    def display_state(self, issue: Issue) -> tuple[str, bool]:
        """``(state, regression)`` as shown (module note)."""
        st = self.states.get(issue.fingerprint)
        if st is None:
            return "unresolved", False
        if st.state == "resolved" and issue.last_seq > st.resolved_seq:
            return "unresolved", True
        return st.state, st.regression and st.state == "unresolved"

    # --- queries ------------------------------------------------------------------------

    def issue_row(self, issue: Issue, trend: str, now: float) -> dict[str, Any]:
        """One row of the issues view (times: UTC epoch seconds)."""
        state, regression = self.display_state(issue)
        st = self.states.get(issue.fingerprint)
        return {
            "fingerprint": issue.fingerprint,
            "title": issue.title,
            "source": issue.source,
            "error_type": issue.error_type,
            "severity": issue.severity,
            "count": issue.count,
            "first_seen": issue.first_seen,
            "last_seen": issue.last_seen,
            "last_seq": issue.last_seq,
            "machines": dict(issue.machines.most_common(8)),
            "agents": dict(issue.agents.most_common(8)),
            "machine_count": len(issue.machines),
            "agent_count": len(issue.agents),
            "trend": issue.series.buckets(trend, now),
            "state": state,
            "regression": regression,
            "note": st.note if st else "",
        }

    def issues_page(
        self,
        *,
        state: str = "unresolved",
        machine: str = "",
        severity: str = "",
        q: str = "",
        sort: str = "last_seen",
        trend: str = "24h",
        offset: int = 0,
        limit: int = 100,
        now: float,
    ) -> dict[str, Any]:
        """Issues matching the filters, sorted (``last_seen``, ``first_seen``, ``count``,
        ``severity``; newest / largest first), one page: ``{"total", "rows"}``."""
        ql = q.lower()
        picked = []
        for issue in self.issues.values():
            shown, _ = self.display_state(issue)
            if state != "all" and shown != state:
                continue
            if machine and machine not in issue.machines:
                continue
            if severity and issue.severity != severity:
                continue
            if ql and not (
                ql in issue.title.lower()
                or ql in issue.error_type.lower()
                or ql in issue.source.lower()
                or ql == issue.fingerprint
            ):
                continue
            picked.append(issue)
        keys: dict[str, Callable[[Issue], Any]] = {
            "count": lambda i: (i.count, i.last_seq),
            "first_seen": lambda i: (i.first_seen, i.first_seq),
            "severity": lambda i: (_SEVERITY_RANK[i.severity], i.last_seq),
        }
        picked.sort(key=keys.get(sort, lambda i: (i.last_seen, i.last_seq)), reverse=True)
        limit = max(1, min(limit, MAX_PAGE))
        rows = [self.issue_row(i, trend, now) for i in picked[offset : offset + limit]]
        return {"total": len(picked), "rows": rows}

    def events_page(
        self, flt: EventFilter, *, before_seq: int | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """Rows matching ``flt``, newest first, older than ``before_seq``; ``{"rows",
        "next_before_seq"}`` (``None`` when there is nothing older in the index)."""
        limit = max(1, min(limit, MAX_PAGE))
        end = len(self._seqs) if before_seq is None else bisect.bisect_left(self._seqs, before_seq)
        match = flt.compile()
        rows: list[EventRow] = []
        i = end - 1
        while i >= 0 and len(rows) < limit:
            if match(self.events[i]):
                rows.append(self.events[i])
            i -= 1
        more = i >= 0 and any(match(r) for r in reversed(self.events[: i + 1]))
        return {"rows": rows, "next_before_seq": rows[-1].seq if rows and more else None}

    def event_row(self, seq: int) -> EventRow | None:
        i = bisect.bisect_left(self._seqs, seq)
        return self.events[i] if i < len(self._seqs) and self._seqs[i] == seq else None

    def facets(self) -> dict[str, list[str]]:
        """Values present in the index, for the filter menus."""
        return {
            "machines": sorted({a.machine for a in self.agents.values()}),
            "sources": sorted({a.source for a in self.agents.values()}),
            "error_types": sorted({i.error_type for i in self.issues.values()}),
            "severities": [s.value for s in Severity],
        }

    def agent_row(self, agent: Agent, trend: str, now: float) -> dict[str, Any]:
        last = agent.last
        return {
            "key": agent.key,
            "machine": agent.machine,
            "source": agent.source,
            "count": agent.count,
            "severities": dict(agent.severities),
            "transports": dict(agent.transports.most_common()),
            "trend": agent.series.buckets(trend, now),
            "last": msgspec.to_builtins(last) if last else None,
        }

    def floods_view(self) -> dict[str, list[dict[str, Any]]]:
        """``{"active": [...], "ended": [...]}``, newest first, with their summaries."""
        out: dict[str, list[dict[str, Any]]] = {"active": [], "ended": []}
        for flood in reversed(self.floods.values()):
            row = {
                k: v for k, v in flood.__dict__.items() if k != "summaries" and k != "started_seq"
            }
            row["summaries"] = list(flood.summaries)[-50:]
            row["active"] = flood.active
            out["active" if flood.active else "ended"].append(row)
        return out

    def dead_letters_page(self, *, before_seq: int | None = None, limit: int = 100) -> list[Any]:
        rows = [r for r in reversed(self.dead_letters) if before_seq is None or r.seq < before_seq]
        return rows[: max(1, min(limit, MAX_PAGE))]


def _fallback_fingerprint(ev: ErrorEvent) -> str:
    from bridge.pipeline.fingerprint import fingerprint

    return fingerprint(ev.source, ev.error_type, ev.message)


def iter_new(changes: Iterable[Change], kind: str) -> list[str]:
    """Keys of ``changes`` of one kind, each once, in order."""
    return list(dict.fromkeys(c.key for c in changes if c.kind == kind))


def _dead_letter_row(
    seq: int, dl: DeadLetter, at: datetime, detail: str, *, suppressed: int = 0
) -> DeadLetterRow:
    """The listed row of a dead letter (or of a summary's sample, ``suppressed`` > 0)."""
    first = dl.frames[0] if dl.frames else b""
    return DeadLetterRow(
        seq=seq,
        at=at.timestamp(),
        machine=dl.machine,
        reason=dl.reason.value,
        dialect_guess=dl.dialect_guess.value if dl.dialect_guess else None,
        frame_sizes=list(dl.frame_sizes),
        detail=detail[:MESSAGE_CHARS],
        preview=first[:120].decode("utf-8", "replace"),
        truncated=dl.truncated is not None,
        suppressed=suppressed,
    )

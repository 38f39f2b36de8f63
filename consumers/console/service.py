"""The console's NATS side: reads ERRBUS and the KV buckets into a ``ConsoleModel``, writes
issue states, fires alerts, and hands live changes to the web server.

Design note
-----------
State, all owned by one ``ConsoleService`` on one event loop:

* one NATS connection (``bridge.adapters.nats_connect.connect_tool``; reconnects forever
  after a good start), or the caller's client;
* the ``ConsoleModel`` (``consumers.console.model``) fed by **one ordered consumer** on the
  stream (ephemeral, push, flow controlled, no acks: nothing in the stream is changed), from
  the first message (or ``since_secs`` back), filtered to the families the console shows
  (``error``, ``dlq``, ``flood``, ``bridge.*.phase_changed``, ``bridge.*.spool_evicted``,
  ``alert``). The stream's last sequence at start is the end of the **backlog**: until a
  message at or past it (or an idle consumer with nothing pending) is seen, ``caught_up`` is
  false, nothing is pushed to browsers and no alert fires;
* issue states: the KV bucket ``settings.kv_bucket`` (default ``busbridge_console``, history
  16, file storage, no TTL), key ``issue.<fingerprint>``, value ``IssueState`` JSON. A watcher
  keeps the model in step with every console's writes (the revision orders them);
  ``set_issue_state`` writes with compare-and-set on the revision, so two operators acting at
  once both land, in some order, with the earlier decision kept in the history. The reopening
  of a resolved issue by a new event is written the same way (one console wins the CAS, the
  others see it is no longer resolved);
* fleet state: the health bucket (``health.kv_bucket``: heartbeats of bridges and agents,
  ``contracts.health_keys``) and the phase bucket (``phase.kv_bucket``: ``fleet``,
  ``machine.<m>`` requests and ``status.<m>`` answers, ``bridge.fleet_phase``), re-read every
  ``kv_poll_secs`` (a missing bucket is shown as missing, not an error);
* alerts: ``consumers.console.alerts`` (``RuleEngine`` over every event, ``Firing`` claims
  each alert in the alerts bucket so it fires once per fleet);
* listeners: one bounded queue per open browser (server-sent events). Changes are gathered
  and flushed every ``push_interval_secs`` as one batch; a listener whose queue is full is
  sent ``resync`` (reload what it shows) instead of the batches it missed.

Failures: a reader, watcher or poller that fails (NATS down, a bucket deleted) logs, waits
``RETRY_SECS`` and starts again; the ordered consumer resumes after the last sequence the
model has. Nothing here raises into the web server except ``NatsUnreachable`` at ``start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType

from bridge.adapters.nats_connect import connect_tool
from consumers.console.alerts import (
    AlertFired,
    Firing,
    RuleEngine,
    alert_headers,
    alert_subject,
    decode_alert,
    encode_alert,
    rules_view,
)
from consumers.console.model import Change, ConsoleModel, EventFilter, IssueState, StateName
from consumers.health_view import fleet_rows, read_bucket
from contracts.codec import decode
from contracts.messages import DeadLetter, DeadLetterSummary, ErrorEvent

if TYPE_CHECKING:
    from bridge.config.model import BridgeConfig
    from consumers.console.settings import ConsoleSettings

__all__ = ["RETRY_SECS", "ConsoleService", "hexdump"]

log = logging.getLogger(__name__)

RETRY_SECS = 1.0
REQUEST_TIMEOUT_SECS = 5.0
IDLE_SECS = 0.5
LISTENER_QUEUE = 64
PUSH_ROWS = 200
_STATE_PREFIX = "issue."
_STATES = ("unresolved", "resolved", "ignored")
_issue_state_decoder = msgspec.json.Decoder(IssueState)


def hexdump(data: bytes, width: int = 16) -> list[str]:
    """``offset  hex bytes  |ascii|`` lines, ``width`` bytes each."""
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off : off + width]
        hexpart = " ".join(f"{b:02x}" for b in chunk).ljust(width * 3 - 1)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}  {hexpart}  |{text}|")
    return lines


class ConsoleService:
    """The console's state and NATS I/O (module note). ``start()``/``stop()`` bracket its life;
    ``clock`` gives UTC epoch seconds (trends, note times)."""

    def __init__(
        self,
        cfg: BridgeConfig,
        settings: ConsoleSettings,
        *,
        nc: Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self.clock = clock
        self.model = ConsoleModel(
            max_events=settings.max_events, max_dead_letters=settings.max_dead_letters
        )
        self.prefix = cfg.stream.subject_prefix
        self.stream = cfg.stream.name
        self.nc = nc
        self._owns_nc = nc is None
        self.kv: Any = None
        self.alerts_kv: Any = None
        self.caught_up = asyncio.Event()
        self.backlog_last_seq = 0
        self.started_at = clock()
        self.fleet: dict[str, Any] = {"health": [], "phase": [], "problems": []}
        self.webhook_outcomes: dict[str, str] = {}
        self.listeners: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self.engine = RuleEngine(settings.alerts.rules, self._resolved_seq)
        self.firing: Firing | None = None
        self._pending: list[Change] = []
        self._work: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self.undecodable = 0

    # --- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (``NatsUnreachable`` when NATS cannot be reached), open the buckets, read the
        stream's last sequence, and start the reader, watchers, poller, firing and pusher."""
        if self.nc is None:
            self.nc = await connect_tool(self.cfg, name="busbridge-console")
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
        self.kv = await _open_bucket(
            js,
            KeyValueConfig(
                bucket=self.settings.kv_bucket,
                description="busbridge console: issue states (issue.<fingerprint>)",
                history=16,
                storage=StorageType.FILE,
                replicas=self.settings.kv_replicas,
            ),
        )
        alerts = self.settings.alerts
        self.alerts_kv = await _open_bucket(
            js,
            KeyValueConfig(
                bucket=alerts.kv_bucket,
                description="busbridge console: fired alerts (fired.<alert_id>), one claim per alert",
                history=1,
                ttl=alerts.ttl_secs,
                storage=StorageType.FILE,
                replicas=self.settings.kv_replicas,
            ),
        )
        try:
            self.backlog_last_seq = (await js.stream_info(self.stream)).state.last_seq
        except nats.js.errors.NotFoundError:
            self.backlog_last_seq = 0
        self.firing = Firing(
            alerts,
            claim=self._claim,
            publish=self._publish_alert,
            on_webhook=self._webhook_outcome,
            session=self._session,
            live_from_seq=self.backlog_last_seq,
        )
        for job in (self._read, self._watch_states, self._poll_fleet, self._work_loop, self._push):
            self._tasks.append(asyncio.get_running_loop().create_task(self._forever(job)))

    async def stop(self) -> None:
        """Cancel every task, end the live streams, close the HTTP session and an owned client."""
        for q in list(self.listeners):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._http is not None:
            await self._http.close()
        if self.nc is not None and self._owns_nc:
            await self.nc.close()

    async def _forever(self, job: Callable[[], Any]) -> None:
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except nats.js.errors.NotFoundError:  # no stream yet: no bridge has provisioned it
                log.warning("console: stream %s not found; waiting for a bridge", self.stream)
                await asyncio.sleep(RETRY_SECS * 5)
                continue
            except Exception:  # any other failure: log it, start this part again
                log.exception("console: %s failed; again in %.0f s", job.__name__, RETRY_SECS)
            await asyncio.sleep(RETRY_SECS)

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    # --- the stream -------------------------------------------------------------------

    def _filters(self) -> list[str]:
        p = self.prefix
        return [
            f"{p}.error.>",
            f"{p}.dlq.>",
            f"{p}.flood.>",
            f"{p}.bridge.*.phase_changed",
            f"{p}.bridge.*.spool_evicted",
            f"{p}.alert.>",
        ]

    def _start_config(self) -> ConsumerConfig:
        filters = self._filters()
        if self.model.last_seq:
            start = {
                "deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": self.model.last_seq + 1,
            }
        elif self.settings.since_secs is not None:
            since = datetime.fromtimestamp(self.clock() - self.settings.since_secs, UTC)
            start = {
                "deliver_policy": DeliverPolicy.BY_START_TIME,
                "opt_start_time": since.isoformat().replace("+00:00", "Z"),
            }
        else:
            start = {"deliver_policy": DeliverPolicy.ALL}
        return ConsumerConfig(filter_subjects=filters, **start)

    async def _read(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
        sub = await js.subscribe(
            self._filters()[0],
            stream=self.stream,
            config=self._start_config(),
            ordered_consumer=True,
            inactive_threshold=30.0,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=IDLE_SECS)
                except nats.errors.TimeoutError:
                    if not self.caught_up.is_set():
                        info = await sub.consumer_info()
                        if not info.num_pending and not sub.pending_msgs:
                            self._now_caught_up()
                    continue
                meta = msg.metadata
                self._handle(meta.sequence.stream, msg.subject, msg.data)
                if not self.caught_up.is_set() and (
                    meta.sequence.stream >= self.backlog_last_seq or meta.num_pending == 0
                ):
                    self._now_caught_up()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _now_caught_up(self) -> None:
        self.caught_up.set()
        log.info(
            "console: caught up at seq %d (%d events, %d issues)",
            self.model.last_seq,
            self.model.event_total,
            len(self.model.issues),
        )
        self._pending.append(Change("status", "caught_up", self.model.last_seq))

    def _handle(self, seq: int, subject: str, data: bytes) -> None:
        try:
            if subject.startswith(f"{self.prefix}.alert."):
                msg: Any = decode_alert(data)
            else:
                msg = decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.undecodable += 1
            return
        changes = self.model.ingest(seq, msg)
        if not changes:
            return
        if self.caught_up.is_set():
            self._pending.extend(changes)
        if isinstance(msg, ErrorEvent):
            self._evaluate(seq, msg)

    def _evaluate(self, seq: int, ev: ErrorEvent) -> None:
        row = self.model.event_row(seq)
        fp = row.fingerprint if row else ev.fingerprint
        for alert in self.engine.observe(seq, ev, fp):
            if seq > self.backlog_last_seq:
                self._work.put_nowait(("fire", alert))
        state = self.model.states.get(fp)
        live = seq > self.backlog_last_seq
        if live and state is not None and state.state == "resolved" and seq > state.resolved_seq:
            self._work.put_nowait(("reopen", (fp, seq)))

    def _resolved_seq(self, fp: str) -> int:
        st = self.model.states.get(fp)
        return st.resolved_seq if st is not None and st.state == "resolved" else 0

    async def _work_loop(self) -> None:
        """Fire alerts and write reopenings one at a time, in stream order."""
        assert self.firing is not None
        while True:
            kind, item = await self._work.get()
            try:
                if kind == "fire":
                    await self.firing.fire(item)
                else:
                    await self._reopen(*item)
            except (nats.errors.Error, OSError) as exc:
                log.warning("console: %s %s failed: %s", kind, item, exc or type(exc).__name__)

    # --- issue states -------------------------------------------------------------------

    async def _watch_states(self) -> None:
        watcher = await self.kv.watch(f"{_STATE_PREFIX}>")
        try:
            async for entry in watcher:
                if entry is None:
                    continue
                fp = entry.key[len(_STATE_PREFIX) :]
                state = None
                if entry.value and entry.operation is None:
                    try:
                        state = _issue_state_decoder.decode(entry.value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("console: ignoring a malformed state for %s", fp)
                        continue
                if self.model.set_state(fp, state, entry.revision or 0):
                    self._pending.append(Change("state", fp, entry.revision or 0))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()

    async def set_issue_state(
        self, fingerprint: str, state: StateName, note: str = "", by: str = ""
    ) -> IssueState:
        """Resolve / ignore / reopen an issue for every console (compare-and-set on the KV
        revision; retried on a concurrent write). Raises ``KeyError`` for an unknown issue,
        ``ValueError`` for an unknown state, nats errors when NATS refuses."""
        if state not in _STATES:
            raise ValueError(f"state must be one of {', '.join(_STATES)}")
        issue = self.model.issues[fingerprint]

        def change(current: IssueState) -> IssueState:
            resolved_seq = issue.last_seq if state == "resolved" else current.resolved_seq
            return current.then(
                state=state,
                note=note[:2000],
                by=by[:200],
                at=self.clock(),
                resolved_seq=resolved_seq,
                regression=False,
                reopened_seq=0,
            )

        result = await self._cas(fingerprint, change)
        assert result is not None
        return result

    async def _reopen(self, fingerprint: str, seq: int) -> None:
        def change(current: IssueState) -> IssueState | None:
            if current.state != "resolved" or seq <= current.resolved_seq:
                return None
            return current.then(
                state="unresolved",
                note=f"regression: event {seq} after the resolution",
                by="console",
                at=self.clock(),
                regression=True,
                reopened_seq=seq,
            )

        await self._cas(fingerprint, change)

    async def _cas(
        self, fingerprint: str, change: Callable[[IssueState], IssueState | None]
    ) -> IssueState | None:
        key = f"{_STATE_PREFIX}{fingerprint}"
        while True:
            try:
                entry = await self.kv.get(key)
                current, revision = _issue_state_decoder.decode(entry.value), entry.revision
            except nats.js.errors.KeyNotFoundError:
                current, revision = IssueState(), 0
            new = change(current)
            if new is None:
                return None
            data = msgspec.json.encode(new)
            try:
                if revision:
                    revision = await self.kv.update(key, data, last=revision)
                else:
                    revision = await self.kv.create(key, data)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # another console wrote first: decide again on its value
            if self.model.set_state(fingerprint, new, revision):
                self._pending.append(Change("state", fingerprint, revision))
            return new

    # --- alerts -------------------------------------------------------------------------

    async def _claim(self, alert_id: str) -> bool:
        try:
            await self.alerts_kv.create(f"fired.{alert_id}", b"1")
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def _publish_alert(self, alert: AlertFired) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
        await js.publish(
            alert_subject(self.prefix, alert.rule),
            encode_alert(alert),
            stream=self.stream,
            headers=alert_headers(alert),
        )
        log.warning("console: alert %s: %s", alert.alert_id, alert.summary)

    def _webhook_outcome(self, alert_id: str, outcome: str) -> None:
        self.webhook_outcomes[alert_id] = outcome
        self._pending.append(Change("alert", alert_id, 0))

    # --- fleet --------------------------------------------------------------------------

    async def _poll_fleet(self) -> None:
        assert self.nc is not None
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
        previous = None
        while True:
            fleet = await self._read_fleet(js)
            if fleet != previous:
                self.fleet, previous = fleet, fleet
                self._pending.append(Change("bridge", "fleet", 0))
            await asyncio.sleep(self.settings.kv_poll_secs)

    async def _read_fleet(self, js: Any) -> dict[str, Any]:
        problems: list[str] = []
        health: list[Any] = []
        phase: list[dict[str, Any]] = []
        h = self.cfg.health
        for bucket, into in ((h.kv_bucket, "health"), (self.cfg.phase.kv_bucket, "phase")):
            try:
                entries = await read_bucket(await js.key_value(bucket), REQUEST_TIMEOUT_SECS)
            except nats.js.errors.BucketNotFoundError:
                problems.append(f"KV bucket {bucket} does not exist yet")
                continue
            if into == "health":
                rows = fleet_rows(
                    entries,
                    datetime.now(UTC),
                    stale_after_intervals=h.stale_after_intervals,
                    default_interval_secs=h.heartbeat_interval_secs,
                )
                health = [
                    {k: v for k, v in msgspec.to_builtins(r).items() if k != "stored_at"}
                    for r in rows
                ]
            else:
                phase = [_phase_entry(key, value, at) for key, value, at in entries]
        for row in health:  # ages move every poll: compare on what changes
            row["age_secs"] = round(row["age_secs"])
        return {
            "health": health,
            "phase": sorted(phase, key=lambda e: e["key"]),
            "problems": problems,
        }

    # --- live push ----------------------------------------------------------------------

    def listen(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(LISTENER_QUEUE)
        self.listeners.add(q)
        return q

    def unlisten(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self.listeners.discard(q)

    async def _push(self) -> None:
        while True:
            await asyncio.sleep(self.settings.push_interval_secs)
            if not self._pending:
                continue
            changes, self._pending = self._pending, []
            if not self.listeners:
                continue
            batch = self.batch(changes)
            for q in list(self.listeners):
                try:
                    q.put_nowait(batch)
                except asyncio.QueueFull:
                    with contextlib.suppress(asyncio.QueueEmpty):
                        while True:
                            q.get_nowait()
                    q.put_nowait({"resync": True})

    def batch(self, changes: list[Change]) -> dict[str, Any]:
        """One push: new event and dead-letter rows (the newest ``PUSH_ROWS``), the changed
        issues' fingerprints and which views must re-read (floods, bridges, alerts, states)."""
        seqs = [c.seq for c in changes if c.kind == "event"][-PUSH_ROWS:]
        events = [r for r in (self.model.event_row(s) for s in seqs) if r is not None]
        dl_seqs = {c.seq for c in changes if c.kind == "dead_letter"}
        dead = [r for r in self.model.dead_letters if r.seq in dl_seqs][-PUSH_ROWS:]
        kinds = {c.kind for c in changes}
        return {
            "events": msgspec.to_builtins(events),
            "dropped_events": max(0, len([c for c in changes if c.kind == "event"]) - PUSH_ROWS),
            "dead_letters": msgspec.to_builtins(dead),
            "issues": list(dict.fromkeys(c.key for c in changes if c.kind == "issue"))[:PUSH_ROWS],
            "states": list(dict.fromkeys(c.key for c in changes if c.kind == "state")),
            "alerts": [c.key for c in changes if c.kind == "alert"],
            "floods": "flood" in kinds,
            "bridges": "bridge" in kinds,
            "status": self.status(),
        }

    # --- reads for the web server -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        m = self.model
        return {
            "caught_up": self.caught_up.is_set(),
            "backlog_last_seq": self.backlog_last_seq,
            "last_seq": m.last_seq,
            "events": m.event_total,
            "events_indexed": len(m.events),
            "issues": len(m.issues),
            "dead_letters": m.dead_letter_total,
            "stream": self.stream,
            "nats_connected": bool(self.nc and self.nc.is_connected),
            "started_at": self.started_at,
            "now": self.clock(),
            "alerts_fired_here": self.firing.fired if self.firing else 0,
            "undecodable": self.undecodable,
        }

    async def raw_message(self, seq: int) -> Any:
        """The stored message at ``seq`` (``RawStreamMsg``); raises ``KeyError`` when the stream
        no longer has it."""
        assert self.nc is not None
        js = self.nc.jetstream(timeout=REQUEST_TIMEOUT_SECS)
        try:
            return await js.get_msg(self.stream, seq)
        except nats.js.errors.NotFoundError as exc:
            raise KeyError(seq) from exc

    async def event_detail(self, seq: int) -> dict[str, Any]:
        """The full stored contract at ``seq`` as stored (JSON), its subject and headers, the
        ``legacy`` fields apart. Raises ``KeyError``."""
        raw = await self.raw_message(seq)
        doc = msgspec.json.decode(raw.data)
        return {
            "seq": seq,
            "subject": raw.subject,
            "headers": dict(raw.headers or {}),
            "contract": doc,
            "legacy": doc.get("legacy") if isinstance(doc, dict) else None,
            "row": msgspec.to_builtins(self.model.event_row(seq)),
        }

    async def dead_letter_detail(self, seq: int) -> dict[str, Any]:
        """A dead letter's frames as hex dump and text (UTF-8, undecodable bytes as ``\\xNN``),
        with reason, detail and dialect guess; for a ``DeadLetterSummary``, its sample's, and
        ``summary`` (key, counts, times, threshold, window). Raises ``KeyError`` (also for
        another contract)."""
        raw = await self.raw_message(seq)
        try:
            dl = decode(raw.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise KeyError(seq) from exc
        summary = None
        if isinstance(dl, DeadLetterSummary):
            summary = {
                "key": dl.key,
                "suppressed": dl.suppressed,
                "suppressed_total": dl.suppressed_total,
                "first_seen": dl.first_seen.timestamp(),
                "last_seen": dl.last_seen.timestamp(),
                "threshold": dl.threshold,
                "window_secs": dl.window_secs,
                "ended": dl.ended,
            }
            dl = dl.sample
        if not isinstance(dl, DeadLetter):
            raise KeyError(seq)
        return {
            "summary": summary,
            "seq": seq,
            "subject": raw.subject,
            "headers": dict(raw.headers or {}),
            "event_id": dl.event_id,
            "received_at": dl.received_at.timestamp(),
            "machine": dl.machine,
            "reason": dl.reason.value,
            "dialect_guess": dl.dialect_guess.value if dl.dialect_guess else None,
            "detail": dl.detail,
            "truncated": msgspec.to_builtins(dl.truncated),
            "frames": [
                {
                    "size": size,
                    "kept": len(frame),
                    "hex": hexdump(frame),
                    "text": frame.decode("utf-8", "backslashreplace"),
                }
                for frame, size in zip(dl.frames, dl.frame_sizes, strict=False)
            ],
        }

    def issue_detail(self, fingerprint: str) -> dict[str, Any]:
        """The issue's row (24 h and 1 h trends), its stored state with history, its newest
        events. Raises ``KeyError``."""
        issue = self.model.issues[fingerprint]
        now = self.clock()
        row = self.model.issue_row(issue, "24h", now)
        row["trend_1h"] = issue.series.buckets("1h", now)
        row["machines"] = dict(issue.machines)
        row["agents"] = dict(issue.agents)
        st = self.model.states.get(fingerprint)
        row["stored_state"] = msgspec.to_builtins(st) if st else None
        page = self.model.events_page(EventFilter(fingerprint=fingerprint), limit=20)
        row["events"] = msgspec.to_builtins(page["rows"])
        return row

    def agent_detail(self, machine: str, source: str) -> dict[str, Any]:
        """An agent's row with its 1 h / 24 h / 7 d series, health entry and newest events."""
        agent = self.model.agents[f"{machine}/{source}"]
        now = self.clock()
        row = self.model.agent_row(agent, "24h", now)
        row["trend_1h"] = agent.series.buckets("1h", now)
        row["trend_7d"] = agent.series.buckets("7d", now)
        row["health"] = self.health_of(machine, source)
        flt = EventFilter(machines=(machine,), sources=(source,))
        row["events"] = msgspec.to_builtins(self.model.events_page(flt, limit=30)["rows"])
        return row

    def health_of(self, machine: str, source: str) -> dict[str, Any] | None:
        for entry in self.fleet["health"]:
            if entry["kind"] == "agent" and entry["machine"] == machine and entry["name"] == source:
                return entry
        return None

    def alerts_view(self) -> dict[str, Any]:
        rows = []
        for seq, alert in reversed(self.model.alerts):
            row = msgspec.to_builtins(alert)
            row["seq"] = seq
            row["webhook"] = self.webhook_outcomes.get(alert.alert_id, "")
            rows.append(row)
        return {
            "alerts": rows[:500],
            "rules": rules_view(self.settings.alerts),
            "webhooks": [h.url for h in self.settings.alerts.webhooks],
            "fired_here": self.firing.fired if self.firing else 0,
            "claims_lost_here": self.firing.lost_claims if self.firing else 0,
            "kv_bucket": self.settings.alerts.kv_bucket,
        }

    def bridges_view(self) -> dict[str, Any]:
        """Bridges (heartbeat rows joined with their phase status and last PhaseChanged),
        every health entry, the phase requests and what is missing."""
        phase = {e["key"]: e for e in self.fleet["phase"]}
        bridges = []
        for entry in self.fleet["health"]:
            if entry["kind"] != "bridge":
                continue
            status = phase.get(f"status.{entry['machine']}")
            changed = self.model.phase_changes.get(entry["name"])
            evicted = self.model.evictions.get(entry["name"])
            bridges.append(
                {
                    **entry,
                    "phase_status": status["value"] if status else None,
                    "phase_changed": msgspec.to_builtins(changed) if changed else None,
                    "spool_evicted": msgspec.to_builtins(evicted) if evicted else None,
                }
            )
        return {
            "bridges": bridges,
            "entries": self.fleet["health"],
            "phase": self.fleet["phase"],
            "problems": self.fleet["problems"],
            "phase_changes": [msgspec.to_builtins(c) for c in self.model.phase_changes.values()],
        }


def _phase_entry(key: str, value: bytes, at: datetime | None) -> dict[str, Any]:
    try:
        doc = msgspec.json.decode(value) if value else None
    except msgspec.DecodeError:
        doc = {"undecodable": value[:200].decode("utf-8", "replace")}
    return {"key": key, "value": doc, "stored_at": at.timestamp() if at else None}


async def _open_bucket(js: Any, config: KeyValueConfig) -> Any:
    try:
        return await js.key_value(config.bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(config=config)

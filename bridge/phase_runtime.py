"""Runs what the phase in force asks for, and re-arms it on every phase change.

Owned here, per phase (``bridge.phase.PhaseBehaviour``):

* the ZMQ ingest socket: bound and read in every phase but ``nats_only``,
  where it is closed and :7150 released (a rollback binds it again);
* the runner's ``Routing`` (``to_jetstream``, off in ``zmq_only``; the byte-for-byte legacy
  republish of ingested frames; the parity tap's in-process feed), one immutable value
  replaced whenever any of them changes;
* the legacy republish socket (``republish.enabled``), open while a phase
  republishes anything;
* the NATS-native re-emitter (``nats_primary``) and the parity tap (``dual``
  and ``nats_primary``), both started once NATS is ready and restarted after
  a failure;
* the fleet phase watcher (``phase.source: kv``).

A phase change cancels the phase's tasks and starts the next phase's; the
ingest socket stays open across phases that read it, so no frame is dropped
by a switch, and the pipeline behind it (spool, publisher) is never touched.
"""

from __future__ import annotations

import getpass
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import zmq

from bridge.adapters.republish import LegacyRepublisher
from bridge.adapters.zmq import Admission, BatchHandler, IngestSocket
from bridge.config.model import BridgeConfig, PhaseSource, ZmqMode
from bridge.cutover import CutoverController, Decision, load_persisted_phase
from bridge.fleet_phase import (
    PhaseRequest,
    PhaseStatus,
    now_utc,
    open_bucket,
    put_json,
    status_key,
    watch_requests,
)
from bridge.metrics import Metrics
from bridge.migration import fleet_rows, legacy_nats_idle_secs
from bridge.native_reemit import NativeReemitter
from bridge.parity import ParityLedger, ParityTap
from bridge.phase import GuardInputs, Phase
from bridge.pipeline.runner import IngestRunner, Routing
from contracts.messages import PhaseChanged
from contracts.migration import MigrationReport

__all__ = ["PhaseRuntime", "who"]

log = logging.getLogger(__name__)

_RETRY_SECS = 2.0


def _finite(secs: float) -> float | None:
    return None if secs == float("inf") else round(secs, 3)


def _inputs_dict(inputs: GuardInputs) -> dict[str, Any]:
    return {
        "parity_ratio": inputs.parity_ratio,
        "parity_events": inputs.parity_events,
        "backlog": inputs.backlog,
        "zmq_idle_secs": _finite(inputs.zmq_idle_secs),
        "legacy_nats_idle_secs": _finite(inputs.legacy_nats_idle_secs),
    }


def who() -> str:
    """``user@host`` of the caller, for ``by`` fields."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


class PhaseRuntime:
    """See the module note. ``js()`` returns a JetStream context once NATS is ready.
    ``zmq_intake``: where the ZMQ reader delivers its batches and the backpressure it respects
    (``Pipeline.zmq_intake``); default ``runner.handle_batch`` in this process."""

    def __init__(
        self,
        cfg: BridgeConfig,
        metrics: Metrics,
        runner: IngestRunner,
        *,
        js: Callable[[], Any],
        nats_ready: anyio.Event,
        backlog: Callable[[], int],
        catching_up: Callable[[], bool] = lambda: False,
        publish: Callable[[PhaseChanged], None],
        on_zmq_event: Callable[[str, int], None],
        migration: Callable[[], list[MigrationReport]] = list,
        zmq_intake: tuple[BatchHandler, Admission | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._zmq_intake = zmq_intake or (runner.handle_batch, None)
        self._m = metrics
        self.runner = runner
        self._js = js
        self._nats_ready = nats_ready
        self._backlog = backlog
        self._catching_up = catching_up
        self._on_zmq_event = on_zmq_event
        self._migration = migration
        self.ingest: IngestSocket | None = None
        self.republisher: LegacyRepublisher | None = None
        self.republish_endpoint = ""
        self.parity = ParityLedger(
            cfg.parity.match_window_secs,
            cfg.parity.window_secs,
            metrics=metrics,
            max_matched_ids=cfg.parity.max_matched_ids,
        )
        self.parity_tap: ParityTap | None = None
        self._parity_feed: ParityTap | None = None  # a started tap the pipeline feeds
        self._parity_paused_logged_at = -math.inf
        self.native: NativeReemitter | None = None
        self._started_at = time.monotonic()
        self._zmq_seen_at = self._started_at
        self._changed = anyio.Event()
        self._bound: dict[
            str, str
        ] = {}  # last endpoint bound per socket: a rollback binds the same one
        self.state_path = (
            Path(cfg.phase.state_file)
            if cfg.phase.state_file
            else Path(cfg.data_dir) / "phase.json"
        )
        previous = load_persisted_phase(self.state_path)
        self.controller = CutoverController(
            previous or cfg.phase.current,
            bridge_id=cfg.bridge_id or "",
            machine=cfg.machine or "",
            state_path=self.state_path,
            guards=cfg.phase.guards,
            inputs=self.guard_inputs,
            publish=publish,
            metrics=metrics,
            on_change=self._on_change,
        )
        self._previous = previous

    # --- startup, config ------------------------------------------------------

    def open(self) -> None:
        """Announce the starting phase, then ask for the configured one (file source) and arm
        the sockets. Raises ``zmq.ZMQError`` when :7150 or the republish port is taken."""
        by = f"startup (persisted {self.state_path})" if self._previous else "startup (config)"
        self.controller.start(by)
        if self.cfg.phase.source is PhaseSource.FILE and self._previous is not None:
            self.request(self.cfg.phase.current, by="config (startup)", force=self.cfg.phase.force)
        self._arm()

    def apply_config(self, cfg: BridgeConfig, live: list[str]) -> Decision | None:
        """A reloaded config: new guard settings; a new ``phase.current``/``force`` is requested."""
        self.cfg = cfg
        self.controller.guards = cfg.phase.guards
        if cfg.phase.source is PhaseSource.FILE and {"phase.current", "phase.force"} & set(live):
            return self.request(cfg.phase.current, by="config (reload)", force=cfg.phase.force)
        return None

    def request(self, target: Phase, *, by: str, force: bool = False) -> Decision:
        return self.controller.request(target, by=by, force=force)

    @property
    def phase(self) -> Phase:
        return self.controller.phase

    def guard_inputs(self) -> GuardInputs:
        stats = self.parity.stats()
        return GuardInputs(
            parity_ratio=stats.ratio,
            parity_events=stats.compared,
            parity_window_secs=stats.window_secs,
            backlog=self._backlog(),
            zmq_idle_secs=self.zmq_idle_secs(),
            legacy_nats_idle_secs=legacy_nats_idle_secs(self._migration()),
        )

    def zmq_idle_secs(self) -> float:
        """Seconds since a ZMQ frame was read or a publisher was connected (or since start)."""
        now = time.monotonic()
        if self.ingest is not None and self.ingest.publishers_connected:
            self._zmq_seen_at = now
        seen = max(self._zmq_seen_at, self.runner.last_frame_at or 0.0)
        return now - seen

    def describe(self) -> dict[str, Any]:
        """JSON-able view for ``/phase``: phase, source, last request, guards, parity."""
        last = self.controller.last
        stats = self.parity.stats()
        return {
            "phase": self.phase.value,
            "source": self.cfg.phase.source.value,
            "machine": self.cfg.machine,
            "bridge_id": self.cfg.bridge_id,
            "last_request": None
            if last is None
            else {
                "requested": last.requested.value,
                "result": last.result,
                "reason": last.reason,
                "by": last.by,
                "guards": [msgspec.to_builtins(g) for g in last.guards],
            },
            "guard_inputs": _inputs_dict(self.guard_inputs()),
            "parity": {
                "ratio": stats.ratio,
                "matched": stats.matched,
                "missing_nats": stats.missing_nats,
                "missing_zmq": stats.missing_zmq,
                "suppressed": stats.suppressed,
                "pending": stats.pending,
                "window_secs": stats.window_secs,
                # false: not in a phase that mirrors, or paused while the bridge catches up
                "running": self.parity_tap is not None,
                "zmq_side": "sub " + ", ".join(self.cfg.parity.zmq_endpoints)
                if self.cfg.parity.zmq_endpoints
                else "in_process",
            },
            "migration": {
                "legacy_nats_idle_secs": _finite(legacy_nats_idle_secs(self._migration())),
                "sources": [
                    {
                        **row,
                        "first_seen": row["first_seen"].isoformat(),
                        "last_seen": row["last_seen"].isoformat(),
                    }
                    for row in fleet_rows(self._migration())
                ],
            },
            "ingest_endpoints": self.zmq_endpoints,
            "republish_endpoint": self.republish_endpoint or None,
        }

    def _on_change(self, old: Phase, new: Phase) -> None:
        self.parity.reset()
        self._changed.set()

    def zmq_event(self, name: str, connected: int) -> None:
        self._zmq_seen_at = time.monotonic()
        self._on_zmq_event(name, connected)

    # --- sockets ----------------------------------------------------------------

    def _arm(self) -> None:
        """Open or close the sockets and set the runner's switches for the phase in force."""
        b = self.phase.behaviour
        if b.ingest and self.ingest is None:
            zc = self.cfg.zmq
            if (
                self._bound.get("ingest") and zc.mode is ZmqMode.BIND
            ):  # same port again, also for "*"
                zc = msgspec.structs.replace(zc, bind_endpoint=self._bound["ingest"])
            ingest = IngestSocket(zc, on_event=self.zmq_event)
            endpoints = ingest.open()
            self._bound["ingest"] = endpoints[0] if zc.mode is ZmqMode.BIND else ""
            self.ingest = ingest
        elif not b.ingest and self.ingest is not None:
            self.close_ingest()
            log.warning("phase %s: ZMQ ingest closed, port released", self.phase.value)
        wants_pub = self.cfg.republish.enabled and (b.republish_frames or b.republish_native)
        if wants_pub and self.republisher is None:
            rc = self.cfg.republish
            if self._bound.get("republish"):
                rc = msgspec.structs.replace(rc, bind_endpoint=self._bound["republish"])
            pub = LegacyRepublisher(rc)
            self.republish_endpoint = self._bound["republish"] = pub.open()
            self.republisher = pub
        elif not wants_pub and self.republisher is not None:
            self._close_republisher()
        self._reroute()

    def _reroute(self) -> None:
        """Give the runner the ``Routing`` of the phase, sockets and parity tap in force."""
        b, pub, tap = self.phase.behaviour, self.republisher, self._parity_feed
        in_process = tap is not None and not tap.zmq_endpoints
        pubacks = tap is not None and tap.pubacks
        self.runner.route(
            Routing(
                to_jetstream=b.to_jetstream,
                republish=pub.send if pub is not None and b.republish_frames else None,
                observe=tap.observe if in_process else None,  # type: ignore[union-attr]
                observe_flood=tap.observe_flood if pubacks else None,  # type: ignore[union-attr]
                confirmed=tap.confirmed_many if pubacks else None,  # type: ignore[union-attr]
            )
        )

    def close_ingest(self) -> None:
        ingest, self.ingest = self.ingest, None
        if ingest is not None:
            ingest.close()
            self._zmq_seen_at = time.monotonic()
            self._on_zmq_event("closed", 0)

    def _close_republisher(self) -> None:
        pub, self.republisher = self.republisher, None
        self._reroute()
        if pub is not None:
            pub.close()
        self.republish_endpoint = ""

    def close(self) -> None:
        """Close every socket (stop). Idempotent."""
        self.close_ingest()
        self._close_republisher()

    @property
    def zmq_endpoints(self) -> list[str]:
        return list(self.ingest.endpoints) if self.ingest is not None else []

    # --- tasks --------------------------------------------------------------------

    async def run(self) -> None:
        """Run the phase's tasks until cancelled; re-arm on every phase change."""
        async with anyio.create_task_group() as outer:
            if self.cfg.phase.source is PhaseSource.KV:
                outer.start_soon(self._retrying, "fleet phase watch", self._watch_kv)
            while True:
                changed = self._changed = anyio.Event()
                try:
                    self._arm()
                except zmq.ZMQError as exc:  # e.g. :7150 taken while we were in nats_only
                    log.error(
                        "phase %s: cannot open a socket (%s); retrying", self.phase.value, exc
                    )
                    with anyio.move_on_after(_RETRY_SECS):
                        await changed.wait()
                    continue
                async with anyio.create_task_group() as tg:
                    self._start_phase_tasks(tg)
                    await changed.wait()
                    tg.cancel_scope.cancel()

    def _start_phase_tasks(self, tg: anyio.abc.TaskGroup) -> None:
        b = self.phase.behaviour
        if self.ingest is not None:
            tg.start_soon(self.ingest.run, *self._zmq_intake)
            tg.start_soon(self.ingest.run_monitor)
        if b.republish_native and self.republisher is not None:
            tg.start_soon(self._retrying, "native re-emit", self._run_native)
        if self.cfg.parity.enabled and b.to_jetstream and b.ingest:
            tg.start_soon(self._retrying, "parity tap", self._run_parity)

    async def _retrying(self, what: str, fn: Callable[[], Awaitable[None]]) -> None:
        """Run ``fn`` once NATS is ready; restart it after a failure (NATS errors, ...)."""
        while True:
            await self._nats_ready.wait()
            try:
                await fn()
            except Exception as exc:  # noqa: BLE001 - a failed helper task must not stop the bridge
                log.warning("%s failed (%r); retrying in %.0f s", what, exc, _RETRY_SECS)
            await anyio.sleep(_RETRY_SECS)

    async def _run_native(self) -> None:
        assert self.republisher is not None
        subject = (
            self.cfg.republish.native_subject
            or f"{self.cfg.stream.subject_prefix}.error.{self.cfg.machine}.>"
        )
        self.native = NativeReemitter(
            self._js(),
            self.cfg.stream.name,
            subject,
            self.republisher,
            self.cfg.bridge_id or "",
            self._m,
        )
        await self.native.run()

    async def _run_parity(self) -> None:
        """The parity tap; without ``parity.zmq_endpoints`` the runner feeds its ZMQ side.

        Paused while the bridge catches up (NATS unreachable, or the spool draining), and the
        ledger reset: parity judges live mirroring. A backlog's messages reach JetStream after
        the match window, so they would only count as missing; and the tap's consumer would
        take every drained message a second time, costing the drain a fifth of its rate. The
        backlog is accounted by the spool instead (DESIGN §2). Catching up, or not, must last
        ``_PARITY_HYSTERESIS_SECS`` before the tap stops or starts: a burst that fills the
        publisher for a moment neither resets parity nor churns JetStream consumers.
        """
        while True:
            await _until(lambda: not self._catching_up(), hold_secs=_PARITY_HYSTERESIS_SECS)
            tap = self.parity_tap = ParityTap(
                self.cfg, self.parity, list(self.cfg.parity.zmq_endpoints), self._js()
            )
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(tap.run)
                    self._parity_feed = tap
                    self._reroute()
                    await _until(self._catching_up, hold_secs=_PARITY_HYSTERESIS_SECS)
                    tg.cancel_scope.cancel()
            finally:
                if self._parity_feed is tap:
                    self._parity_feed = None
                    self._reroute()
                self.parity_tap = None
            self.parity.reset()
            if (
                time.monotonic() - self._parity_paused_logged_at > 60
            ):  # overload can flap it: log a minute's first
                self._parity_paused_logged_at = time.monotonic()
                log.info(
                    "parity paused while NATS is unreachable or the spool drains (ledger reset)"
                )

    async def _watch_kv(self) -> None:
        kv = await open_bucket(self._js(), self.cfg.phase.kv_bucket, self.cfg.stream.replicas)
        newest = 0
        while True:
            newest = await watch_requests(
                kv, self.cfg.machine or "", lambda k, r, q: self._on_kv(kv, k, r, q), newest
            )

    async def _on_kv(self, kv: Any, key: str, revision: int, request: PhaseRequest) -> None:
        by = f"kv:{key}@{revision}" + (f" by {request.by}" if request.by else "")
        decision = self.request(request.phase, by=by, force=request.force)
        status = PhaseStatus(
            machine=self.cfg.machine or "",
            bridge_id=self.cfg.bridge_id or "",
            phase=decision.phase,
            requested=decision.requested,
            result=decision.result,
            reason=decision.reason,
            guards=decision.guards,
            key=key,
            revision=revision,
            at=now_utc(),
        )
        await put_json(kv, status_key(self.cfg.machine or ""), status)


#: catching up (or not) must last this long before the parity tap stops (or starts again)
_PARITY_HYSTERESIS_SECS = 2.0


async def _until(
    condition: Callable[[], bool], *, hold_secs: float = 0.0, poll_secs: float = 0.25
) -> None:
    """Return once ``condition()`` was true at every poll for ``hold_secs``."""
    since: float | None = None
    while True:
        if not condition():
            since = None
        elif since is None:
            since = time.monotonic()
        if since is not None and time.monotonic() - since >= hold_secs:
            return
        await anyio.sleep(poll_secs)

"""``busbridge health``: the whole fleet's health, read from the health KV bucket.

Every bridge keeps its latest ``BridgeHeartbeat`` and the latest ``HealthReport``
of each of its machine's legacy agents in one KV bucket (``health.kv_bucket``,
keys in ``contracts.health_keys``), so any machine sees every machine, with no
hub in between. One line per key::

    MACHINE  KIND    NAME               STATUS     AGE   DETAIL
    mainpc   bridge  mainpc             healthy    2s    phase dual, v0.1.0, nats up, zmq 3, spool 0, in 12.5/s
    mainpc   agent   SystemDigitalTwin  degraded   4s    base_agent 'degraded' via zmq_req in 3 ms
    pc2      bridge  pc2                stale      41s   last healthy; phase dual, ...
    pc2      bridge  pc2                stopped    8s    phase dual, ... (clean shutdown)

Age is measured from the time the server stored the entry (one clock for
every machine), so skewed machine clocks do not make an entry look stale.
An entry is **stale** when its age exceeds ``health.stale_after_intervals``
times its own ``interval_secs`` (``--stale-after SECS`` overrides): its bridge
stopped writing (crashed, or cut off from NATS). A bridge that shut down cleanly
wrote a last heartbeat with ``stopping`` set and shows as **stopped** instead
(``stopped`` in the JSON), never stale. Past the bucket's TTL
(``health.kv_ttl_secs``) the key disappears.

``--json`` prints the fleet as one JSON array per refresh (one line each):
objects with ``key``, ``kind`` (``bridge``/``agent``), ``machine``, ``name``,
``status`` (last reported: ``healthy``/``degraded``/``unhealthy``/``unknown``),
``stale``, ``stopped``, ``age_secs``, ``stored_at``, ``interval_secs``, ``detail`` and the
stored contract under ``report``. Colours only when the output is a terminal
and ``NO_COLOR`` is unset. ``--watch [SECS]`` refreshes every SECS seconds (2
by default) until interrupted. ``--machine NAME`` keeps one machine.

Exit status: 0 when the fleet was shown (whatever its health); 1 with a message
on stderr when NATS cannot be reached or the bucket does not exist. While
watching, a dropped connection is waited out (the error is printed, the view
resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from bridge.adapters.nats_connect import NatsUnreachable, connect_tool
from contracts.codec import decode
from contracts.health_keys import key_kind
from contracts.messages import BridgeHeartbeat, HealthReport

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from bridge.config.model import BridgeConfig

__all__ = ["FleetRow", "add_arguments", "fleet_rows", "read_bucket", "render_table", "run_health"]

DEFAULT_WATCH_SECS = 2.0
READ_TIMEOUT_SECS = 5.0

_COLOURS = {"healthy": "32", "degraded": "33", "unhealthy": "31", "unknown": "35", "stale": "90"}
_HEADER = ("MACHINE", "KIND", "NAME", "STATUS", "AGE", "DETAIL")


class _ViewError(Exception):
    """A failure reported on stderr with exit status 1."""


class FleetRow(msgspec.Struct, frozen=True, kw_only=True):
    """One key of the bucket as shown. ``status``: the last reported one; ``stale``: no longer
    written; ``stopped``: its bridge shut down cleanly (its last heartbeat said ``stopping``)."""

    key: str
    kind: str
    machine: str
    name: str
    status: str
    stale: bool
    age_secs: float
    stored_at: datetime | None
    interval_secs: float
    detail: str
    report: Any = None
    stopped: bool = False


# --- command line -----------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``health`` options: ``json``, ``watch`` (seconds or None), ``stale_after``, ``machine_filter``."""
    p.add_argument("--json", action="store_true", help="one JSON array of the fleet per refresh")
    p.add_argument(
        "--watch",
        nargs="?",
        const=DEFAULT_WATCH_SECS,
        type=_positive_float,
        metavar="SECS",
        help=f"refresh every SECS seconds (default {DEFAULT_WATCH_SECS:g}) until interrupted",
    )
    p.add_argument(
        "--stale-after",
        type=_positive_float,
        metavar="SECS",
        help="stale past this age (default: per entry)",
    )
    p.add_argument("--machine", dest="machine_filter", metavar="NAME", help="only this machine")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# --- model ------------------------------------------------------------------


def fleet_rows(
    entries: list[tuple[str, bytes, datetime | None]],
    now: datetime,
    *,
    stale_after_intervals: float,
    stale_after_secs: float | None = None,
    default_interval_secs: float = 10.0,
) -> list[FleetRow]:
    """Rows for ``(key, value, stored_at)`` entries, sorted by machine, kind (bridges first), name.

    Keys that are not health keys and values that are not health contracts are
    shown with kind ``?`` and status ``unknown`` (never dropped).
    """
    limits = (stale_after_intervals, stale_after_secs, default_interval_secs)
    rows = [_row(key, value, at, now, *limits) for key, value, at in entries]
    return sorted(rows, key=lambda r: (r.machine, r.kind != "bridge", r.name))


def _row(
    key: str,
    value: bytes,
    at: datetime | None,
    now: datetime,
    intervals: float,
    limit: float | None,
    fallback: float,
) -> FleetRow:
    age = max(0.0, (now - at).total_seconds()) if at is not None else 0.0
    try:
        msg = decode(value)
    except (msgspec.DecodeError, msgspec.ValidationError):
        msg = None
    if not isinstance(msg, HealthReport | BridgeHeartbeat) or key_kind(key) is None:
        machine = key.split(".")[1] if key_kind(key) is not None else "?"
        return FleetRow(
            key=key,
            kind="?",
            machine=machine,
            name=key,
            status="unknown",
            stale=False,
            age_secs=age,
            stored_at=at,
            interval_secs=0.0,
            detail="not a health contract",
        )
    interval = msg.interval_secs or fallback
    is_bridge = isinstance(msg, BridgeHeartbeat)
    stopped = is_bridge and msg.stopping
    stale = not stopped and age > (limit if limit is not None else intervals * interval)
    return FleetRow(
        key=key,
        kind="bridge" if is_bridge else "agent",
        machine=msg.machine,
        stopped=stopped,
        name=msg.bridge_id if is_bridge else msg.service,
        status=msg.status.value,
        stale=stale,
        age_secs=round(age, 3),
        stored_at=at,
        interval_secs=interval,
        detail=_bridge_detail(msg) if is_bridge else _agent_detail(msg),
        report=msgspec.to_builtins(msg),
    )


def _bridge_detail(hb: BridgeHeartbeat) -> str:
    text = (
        f"phase {hb.phase or '?'}, v{hb.version or '?'}, nats {'up' if hb.nats_connected else 'down'}, "
        f"zmq {hb.zmq_publishers_connected}, spool {hb.spool_messages}, in {hb.received_per_sec:g}/s"
    )
    text += (
        f", not ready: {','.join(hb.not_ready_reasons)}"
        if hb.not_ready_reasons and not hb.stopping
        else ""
    )
    return text + (" (clean shutdown)" if hb.stopping else "")


def _agent_detail(r: HealthReport) -> str:
    if r.reply_shape == "none":
        return f"{r.reason or 'no answer'} ({r.method} {r.endpoint})".strip()
    latency = f" in {r.latency_secs * 1000:.0f} ms" if r.latency_secs is not None else ""
    raw = f" {_short(r.raw_status)}" if r.raw_status is not None else ""
    reason = f" [{r.reason}{' ' + str(r.http_status) if r.http_status else ''}]" if r.reason else ""
    return f"{r.reply_shape}{raw} via {r.method}{latency}{reason}"


def _short(value: Any, max_chars: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


# --- rendering --------------------------------------------------------------


def render_table(rows: list[FleetRow], *, colour: bool = False) -> str:
    """The fleet as an aligned text table (no trailing newline)."""
    if not rows:
        return "no health entries (no bridge with health enabled has written to the bucket yet)"
    cells = [_HEADER] + [
        (r.machine, r.kind, r.name, _status_text(r), _age(r.age_secs), r.detail) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADER) - 1)]
    lines = []
    for n, cell in enumerate(cells):
        padded = [text.ljust(width) for text, width in zip(cell[:-1], widths, strict=True)]
        if n and colour:
            row = rows[n - 1]
            padded[3] = _paint(
                padded[3], _COLOURS["stale" if row.stale or row.stopped else row.status]
            )
        lines.append("  ".join([*padded, cell[-1]]).rstrip())
    return "\n".join(lines)


def _status_text(row: FleetRow) -> str:
    if row.stopped:
        return "stopped"
    return f"stale (last {row.status})" if row.stale else row.status


def _age(secs: float) -> str:
    secs = int(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def _paint(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def _use_colour(out: TextIO) -> bool:
    isatty = getattr(out, "isatty", None)
    return not os.environ.get("NO_COLOR") and bool(isatty and isatty())


def _json(rows: list[FleetRow]) -> str:
    return msgspec.json.encode(rows).decode()


# --- NATS -------------------------------------------------------------------


async def read_bucket(
    kv: KeyValue, timeout_secs: float = READ_TIMEOUT_SECS
) -> list[tuple[str, bytes, datetime | None]]:
    """Every live key of ``kv`` once, as ``(key, value, stored_at)`` (server time, UTC), its
    newest revision: a key written again while the watcher reads the initial values (a bridge's
    heartbeat every few seconds) arrives twice before the end-of-initial-values marker."""
    watcher = await kv.watchall(ignore_deletes=True)
    newest: dict[str, Any] = {}
    try:
        while (entry := await watcher.updates(timeout=timeout_secs)) is not None:
            seen = newest.get(entry.key)
            if seen is None or (entry.revision or 0) >= (seen.revision or 0):
                newest[entry.key] = entry
    finally:
        await watcher.stop()
    return [(e.key, e.value or b"", e.created) for e in newest.values()]


async def _connect(cfg: BridgeConfig) -> Client:
    """Connect within ``nats.connect_timeout_secs``; ``--watch`` waits out a later drop."""
    try:
        return await connect_tool(cfg, name="busbridge-health")
    except NatsUnreachable as exc:
        raise _ViewError(str(exc)) from exc


async def _bucket(nc: Client, name: str) -> KeyValue:
    try:
        return await nc.jetstream(timeout=READ_TIMEOUT_SECS).key_value(name)
    except nats.js.errors.BucketNotFoundError as exc:
        raise _ViewError(
            f"KV bucket {name} does not exist (no bridge with health enabled has connected yet)"
        ) from exc
    except nats.errors.Error as exc:
        raise _ViewError(
            f"cannot open KV bucket {name}: {exc or type(exc).__name__} (is JetStream enabled?)"
        ) from exc


# --- the run ----------------------------------------------------------------


async def run_health(cfg: BridgeConfig, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Show the fleet as ``args`` asks; return the exit status (see the module note)."""
    try:
        nc = await _connect(cfg)
    except _ViewError as exc:
        return _fail(exc)
    try:
        kv = await _bucket(nc, cfg.health.kv_bucket)
        if args.watch is None:
            await _show(kv, cfg, args, out)
            return 0
        while True:
            try:
                await _show(kv, cfg, args, out)
            except nats.errors.Error as exc:  # e.g. reconnecting: keep watching
                print(
                    f"busbridge health: NATS error: {exc or type(exc).__name__}; retrying",
                    file=sys.stderr,
                )
            await anyio.sleep(args.watch)
    except _ViewError as exc:
        return _fail(exc)
    except nats.errors.Error as exc:
        return _fail(f"NATS error: {exc or type(exc).__name__}")
    finally:
        with anyio.CancelScope(shield=True):
            await nc.close()


async def _show(kv: KeyValue, cfg: BridgeConfig, args: argparse.Namespace, out: TextIO) -> None:
    h = cfg.health
    rows = fleet_rows(
        await read_bucket(kv),
        datetime.now(UTC),
        stale_after_intervals=h.stale_after_intervals,
        stale_after_secs=args.stale_after,
        default_interval_secs=h.heartbeat_interval_secs,
    )
    if args.machine_filter:
        rows = [r for r in rows if r.machine == args.machine_filter]
    if args.json:
        text = _json(rows)
    else:
        colour = _use_colour(out)
        text = ("\x1b[H\x1b[2J" if colour and args.watch else "") + render_table(
            rows, colour=colour
        )
    out.write(text + "\n")
    out.flush()


def _fail(problem: object) -> int:
    print(f"busbridge health: {problem}", file=sys.stderr)
    return 1

"""``busbridge status``: one screen summarising a running bridge, read from its admin endpoint.

Sources (admin HTTP, ``bridge/admin.py``)
-----------------------------------------
``/metrics`` (Prometheus text; every number on the screen), ``/readyz`` (state
and reasons; answered with 503 when not ready, still JSON), and ``/phase``
(``{"phase", "machine", "parity": {"ratio"}, ...}``; optional: without it the
phase comes from the ``busbridge_phase{phase}`` series that is 1, else ``-``).
Rates: ``/metrics`` is read twice, ``interval_secs`` apart, and a rate is a
counter's increase divided by the time between the reads (``interval_secs``
0: one read, totals only). The p99 PubAck latency is the upper bound of the
histogram bucket holding the 99th percentile (of the interval when it saw
acks, else since start).

Screen::

    busbridge MainPC  http://127.0.0.1:9150  (rates over 1.0 s)
    state       ready
    phase       dual  parity 100.0 %
    ingest      1,234 frames (12.0/s, 3.4 KiB/s)  1,200 decoded  34 dead letters (0.0/s)  0 unknown severity
    publish     1,234 acked (12.0/s)  0 in flight  0 pending  0 failures  p99 <= 5 ms  5 duplicates
    spool       0 messages  0 B  oldest 0 s  0 evicted  0 dropped  1,234 retained  0 restored
    nats        connected  0 reconnects
    intake      native 12 acked (1.0/s)  0 nak'ed  0 redelivered | legacy 609 acked (100.0/s)  2 nak'ed (0.5/s)  0 redelivered
    publishers  3 ZMQ connections  idle 0 s
    floods      0 active  0 suppressed  0 flood events
    reloads     0 applied  0 partial  0 refused  0 invalid

Exit status (``run_status``): 0 ready, 3 answering but not ready (degraded or
not_ready: the screen says why), 1 the admin endpoint cannot be read.

``intake``: the NATS inputs from ``busbridge_intake_messages_total{input,outcome}``, per input
(``native``, ``legacy``, then any other): ``acked`` = stored + duplicate + suppressed + rejected
(the outcomes acknowledged on the input's stream), ``nak'ed`` = retry + abandoned (redelivered
later by JetStream), ``redelivered`` = dead-lettered after ``intake.max_deliveries``; ``-`` when
the bridge runs no NATS input.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "EXIT_NOT_READY",
    "EXIT_UNREACHABLE",
    "Reading",
    "admin_url",
    "parity_paused",
    "parse_metrics",
    "read_admin",
    "render",
    "run_status",
]

EXIT_UNREACHABLE = 1
EXIT_NOT_READY = 3
_Sample = tuple[dict[str, str], float]


def admin_url(host: str, port: int) -> str:
    """The base URL of an admin endpoint bound to ``host:port`` (a wildcard bind is read on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True)
class Reading:
    """One read of the admin endpoint: ``at`` monotonic seconds, ``series`` by sample name."""

    at: float
    series: dict[str, list[_Sample]]
    ready: dict[str, Any] = field(default_factory=dict)
    phase: dict[str, Any] = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(
            v
            for lbl, v in self.series.get(name, [])
            if all(lbl.get(k) == x for k, x in labels.items())
        )

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """``{label value: summed value}`` of ``name``."""
        out: dict[str, float] = {}
        for lbl, v in self.series.get(name, []):
            out[lbl.get(label, "")] = out.get(lbl.get(label, ""), 0.0) + v
        return out


def read_admin(base_url: str, timeout_secs: float = 5.0) -> Reading:
    """Read ``/metrics``, ``/readyz`` and ``/phase``. Raises ``OSError`` when ``/metrics`` cannot be read."""
    metrics = _get(f"{base_url}/metrics", timeout_secs)
    if metrics is None:
        raise OSError(f"{base_url}/metrics answered with an error status")
    at = time.monotonic()
    return Reading(
        at,
        parse_metrics(metrics),
        _get_json(f"{base_url}/readyz", timeout_secs),
        _get_json(f"{base_url}/phase", timeout_secs),
    )


def parse_metrics(text: str) -> dict[str, list[_Sample]]:
    """Prometheus text format -> ``{sample name: [(labels, value), ...]}``. Raises ``ValueError``."""
    series: dict[str, list[_Sample]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append((dict(s.labels), s.value))
    return series


def _get(url: str, timeout_secs: float, accept_error: bool = False) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_secs) as resp:
            return resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        with err:
            return err.read().decode("utf-8", "replace") if accept_error else None


def _get_json(url: str, timeout_secs: float) -> dict[str, Any]:
    """The JSON object at ``url`` (error statuses included: /readyz answers 503 with JSON); {} otherwise."""
    try:
        text = _get(url, timeout_secs, accept_error=True)
        value = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def render(
    first: Reading, last: Reading | None = None, *, url: str = "", machine: str | None = None
) -> str:
    """The status screen from one reading (totals) or two (totals of ``last``, rates between them)."""
    view = _View(first, last)
    now = view.now
    name = now.phase.get("machine") or machine or ""
    head = f"busbridge {name}".rstrip() + (f"  {url}" if url else "")
    head += f"  (rates over {view.secs:.1f} s)" if view.secs else ""
    lines = [head]
    rows: list[tuple[str, Callable[[_View], str]]] = [
        ("state", _state),
        ("phase", _phase),
        ("ingest", _ingest),
        ("publish", _publish),
        ("spool", _spool),
        ("nats", _nats),
        ("intake", _intake),
        ("publishers", _publishers),
        ("floods", _floods),
        ("reloads", _reloads),
    ]
    lines += [f"{label:<12}{row(view)}" for label, row in rows]
    return "\n".join(lines) + "\n"


class _View:
    """Totals from the latest reading, rates between the two."""

    def __init__(self, first: Reading, last: Reading | None) -> None:
        self.before, self.now = (first, last) if last is not None else (None, first)
        self.secs = (self.now.at - first.at) if last is not None and last.at > first.at else 0.0

    def total(self, name: str, **labels: str) -> float:
        return self.now.total(name, **labels)

    def rate(self, name: str, **labels: str) -> str:
        return self.rate_of(name, [labels])

    def rate_of(self, name: str, label_sets: list[dict[str, str]]) -> str:
        """The rate of the sum of ``name`` over ``label_sets``."""
        if self.before is None or not self.secs:
            return ""
        now = sum(self.now.total(name, **labels) for labels in label_sets)
        before = sum(self.before.total(name, **labels) for labels in label_sets)
        return f"{max(0.0, now - before) / self.secs:,.1f}/s"


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _with_rate(text: str, rate: str) -> str:
    return f"{text} ({rate})" if rate else text


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"  # pragma: no cover


def _state(v: _View) -> str:
    status = v.now.ready.get("status") or "unknown"
    reasons = v.now.ready.get("reasons") or []
    return f"{status} ({', '.join(map(str, reasons))})" if reasons else str(status)


def parity_paused(phase_view: dict[str, Any]) -> bool:
    """``/phase`` (``phase_view``) says the parity tap is not running in a phase that mirrors:
    the bridge is catching up (NATS down or the spool draining)."""
    return (
        phase_view.get("phase") in ("dual", "nats_primary")
        and (phase_view.get("parity") or {}).get("running") is False
    )


def _phase(v: _View) -> str:
    phase = v.now.phase.get("phase")
    if not phase:
        on = [p for p, value in v.now.labelled("busbridge_phase", "phase").items() if value == 1]
        phase = on[0] if len(on) == 1 else "-"
    if parity_paused(v.now.phase):
        return f"{phase}  parity paused (catching up)"
    parity = (v.now.phase.get("parity") or {}).get("ratio")
    if parity is None and "busbridge_parity_ratio" in v.now.series:
        parity = v.total("busbridge_parity_ratio")
    return (
        f"{phase}  parity {parity * 100:.1f} %"
        if isinstance(parity, int | float) and parity >= 0
        else str(phase)
    )


def _ingest(v: _View) -> str:
    frames = _n(v.total("busbridge_frames_received_total")) + " frames"
    rates = ", ".join(r for r in (v.rate("busbridge_frames_received_total"), _bytes_rate(v)) if r)
    dead = _with_rate(
        f"{_n(v.total('busbridge_dead_letters_total'))} dead letters",
        v.rate("busbridge_dead_letters_total"),
    )
    return (
        f"{_with_rate(frames, rates)}  {_n(v.total('busbridge_decoded_total'))} decoded  {dead}  "
        f"{_n(v.total('busbridge_unknown_severity_total'))} unknown severity"
    )


def _bytes_rate(v: _View) -> str:
    if v.before is None or not v.secs:
        return ""
    delta = v.total("busbridge_frames_received_bytes_total") - v.before.total(
        "busbridge_frames_received_bytes_total"
    )
    return f"{_bytes(max(0.0, delta) / v.secs)}/s"


def _publish(v: _View) -> str:
    acked = _with_rate(
        f"{_n(v.total('busbridge_acked_total'))} acked", v.rate("busbridge_acked_total")
    )
    return (
        f"{acked}  {_n(v.total('busbridge_in_flight'))} in flight  {_n(v.total('busbridge_pending'))} pending  "
        f"{_n(v.total('busbridge_publish_failures_total'))} failures  p99 {_p99(v)}  "
        f"{_n(v.total('busbridge_duplicates_total'))} duplicates"
    )


def _p99(v: _View) -> str:
    """Upper bound of the bucket holding the 99th percentile of PubAck latency."""
    buckets = _cumulative(v.now)
    if v.before is not None:
        earlier = _cumulative(v.before)
        interval = {le: n - earlier.get(le, 0.0) for le, n in buckets.items()}
        if interval and max(interval.values()) > 0:
            buckets = interval
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return "-"
    le = next(le for le in sorted(buckets) if buckets[le] >= 0.99 * total)
    return "> 10 s" if math.isinf(le) else f"<= {le * 1000:g} ms"


def _cumulative(r: Reading) -> dict[float, float]:
    out: dict[float, float] = {}
    for labels, value in r.series.get("busbridge_publish_latency_seconds_bucket", []):
        le = float(labels.get("le", "inf"))
        out[le] = out.get(le, 0.0) + value
    return out


def _spool(v: _View) -> str:
    return (
        f"{_n(v.total('busbridge_spool_messages'))} messages  {_bytes(v.total('busbridge_spool_bytes'))}  "
        f"oldest {_n(v.total('busbridge_spool_oldest_age_seconds'))} s  "
        f"{_n(v.total('busbridge_spool_evictions_total'))} evicted  {_n(v.total('busbridge_dropped_total'))} dropped  "
        f"{_n(v.total('busbridge_spool_retained_messages'))} retained  "
        f"{_n(v.total('busbridge_spool_restored_total'))} restored"
    )


def _nats(v: _View) -> str:
    state = "connected" if v.total("busbridge_nats_connected") >= 1 else "disconnected"
    return f"{state}  {_n(v.total('busbridge_nats_reconnects_total'))} reconnects"


_INTAKE = "busbridge_intake_messages_total"
_INTAKE_GROUPS = (
    ("acked", ("stored", "duplicate", "suppressed", "rejected")),
    ("nak'ed", ("retry", "abandoned")),
    ("redelivered", ("redelivered",)),
)


def _intake(v: _View) -> str:
    inputs = set(v.now.labelled(_INTAKE, "input"))
    ordered = [i for i in ("native", "legacy") if i in inputs] + sorted(
        inputs - {"native", "legacy"}
    )
    parts = []
    for name in ordered:
        groups = []
        for label, outcomes in _INTAKE_GROUPS:
            sets = [{"input": name, "outcome": o} for o in outcomes]
            total = sum(v.total(_INTAKE, **labels) for labels in sets)
            groups.append(_with_rate(f"{_n(total)} {label}", v.rate_of(_INTAKE, sets)))
        parts.append(f"{name} " + "  ".join(groups))
    return " | ".join(parts) or "-"


def _publishers(v: _View) -> str:
    text = f"{_n(v.total('busbridge_zmq_publishers_connected'))} ZMQ connections"
    if "busbridge_zmq_idle_seconds" in v.now.series:
        text += f"  idle {_n(v.total('busbridge_zmq_idle_seconds'))} s"
    return text


def _floods(v: _View) -> str:
    suppressed = _with_rate(
        f"{_n(v.total('busbridge_flood_suppressed_total'))} suppressed",
        v.rate("busbridge_flood_suppressed_total"),
    )
    return f"{_n(v.total('busbridge_floods_active'))} active  {suppressed}  {_n(v.total('busbridge_flood_events_total'))} flood events"


def _reloads(v: _View) -> str:
    counts = v.now.labelled("busbridge_config_reloads_total", "result")
    return "  ".join(
        f"{_n(counts.get(r, 0))} {r}" for r in ("applied", "partial", "refused", "invalid")
    )


def run_status(
    base_url: str,
    *,
    interval_secs: float = 1.0,
    timeout_secs: float = 5.0,
    machine: str | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print the screen for the bridge at ``base_url``; return the exit status (module note)."""
    try:
        first = read_admin(base_url, timeout_secs)
        last = None
        if interval_secs > 0:
            time.sleep(interval_secs)
            last = read_admin(base_url, timeout_secs)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"busbridge status: cannot read {base_url}/metrics: {reason}", file=err)
        return EXIT_UNREACHABLE
    out.write(render(first, last, url=base_url, machine=machine))
    return 0 if (last or first).ready.get("status") == "ready" else EXIT_NOT_READY

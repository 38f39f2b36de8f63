"""The final report of a load-test run: a text table per scenario and the JSON dump.

``render(results)`` gives, per ``ScenarioResult``, a two-column table: workload,
message counts (sent / expected / received / lost / duplicated / out of order /
unexpected, by token: see ``loadtest.results.ProbeReport``), dead letters, end-to-end
latency p50/p90/p99/max in ms, the flood reconciliation, every scenario ``extra``
(nested dicts, and lists of one dict, flattened to dotted keys), then each check as PASS/FAIL with its detail;
a last line sums up. ``write_json`` / ``read_json``: the full ``list[ScenarioResult]``
as JSON (msgspec; the shape of ``loadtest.results``), for machines and for plotting later.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from loadtest.results import ProbeReport, ScenarioResult
from loadtest.workload import Workload

__all__ = ["read_json", "render", "render_result", "summary_line", "write_json"]

_EXTRA_WIDTH = 110  # longest extra value shown in the table (the JSON has it whole)


def write_json(results: Sequence[ScenarioResult], path: str | Path) -> None:
    """Write ``results`` as an indented JSON array of ``ScenarioResult`` to ``path``."""
    Path(path).write_bytes(
        msgspec.json.format(msgspec.json.encode(list(results)), indent=2) + b"\n"
    )


def read_json(path: str | Path) -> list[ScenarioResult]:
    """The results written by ``write_json``. Raises ``msgspec.ValidationError`` on another shape."""
    return msgspec.json.decode(Path(path).read_bytes(), type=list[ScenarioResult])


def render(results: Sequence[ScenarioResult]) -> str:
    """Every result's table, then the summary line."""
    return "\n".join([*(render_result(r) for r in results), summary_line(results)]) + "\n"


def summary_line(results: Sequence[ScenarioResult]) -> str:
    """``== 3 scenarios: 2 passed, 1 failed (flood)``."""
    failed = [r.scenario for r in results if not r.passed]
    text = f"== {len(results)} scenario{'s' if len(results) != 1 else ''}: {len(results) - len(failed)} passed"
    return text + (f", {len(failed)} failed ({', '.join(failed)})" if failed else ", 0 failed")


def render_result(result: ScenarioResult) -> str:
    """One scenario's table (see the module docstring)."""
    verdict = "PASS" if result.passed else "FAIL"
    head = f"{result.scenario}: {verdict}  ({_num(result.duration_secs)} s, started {result.started_at})"
    rows = [("workload", describe_workload(result.workload))]
    if result.probe is not None:
        rows += list(_probe_rows(result.probe))
    rows += [(f"extra {key}", value) for key, value in _flatten(result.extra)]
    for i, c in enumerate(result.checks):
        rows.append(
            ("checks" if i == 0 else "", f"{'PASS' if c.ok else 'FAIL'} {c.name}: {c.detail}")
        )
    if not result.checks:
        rows.append(("checks", "FAIL none: the scenario made no check"))
    width = max(len(k) for k, _ in rows)
    return "\n".join([head, *(f"  {k.ljust(width)}  {v}" for k, v in rows)]) + "\n"


def describe_workload(w: Workload) -> str:
    """One line: rate, duration, publishers, dialect mix and the optional parts."""
    mix = ",".join(f"{d}={_num(x)}" for d, x in w.dialects.items())
    parts = [
        f"{_num(w.rate_per_sec)} msg/s for {_num(w.duration_secs)} s",
        f"{w.publishers} publishers",
        mix,
    ]
    if w.burst is not None:
        parts.append(
            f"burst x{_num(w.burst.factor)} for {_num(w.burst.length_secs)} s every {_num(w.burst.every_secs)} s"
        )
    if w.duplicate_ratio:
        parts.append(f"duplicates {_num(100 * w.duplicate_ratio)}%")
    if w.malformed_ratio:
        parts.append(f"malformed {_num(100 * w.malformed_ratio)}%")
    if w.flood is not None:
        parts.append(f"flood {_num(100 * w.flood.share)}% ({w.flood.source}/{w.flood.error_type})")
    return ", ".join(parts)


def _probe_rows(p: ProbeReport) -> Iterator[tuple[str, str]]:
    yield (
        "messages",
        " | ".join(
            f"{k} {_num(v)}"
            for k, v in (
                ("sent", p.sent),
                ("expected", p.expected),
                ("received", p.received_unique),
                ("lost", p.lost),
                ("duplicated", p.duplicated),
                ("out of order", p.out_of_order),
                ("unexpected", p.unexpected),
            )
        ),
    )
    yield (
        "dead letters",
        f"{_num(p.dead_letters_received)} stored / {_num(p.dead_letters_expected)} expected",
    )
    lat = p.latency
    yield (
        "latency ms",
        (
            f"p50 {_num(lat.p50_ms)} | p90 {_num(lat.p90_ms)} | p99 {_num(lat.p99_ms)} | max {_num(lat.max_ms)}"
            f" ({_num(lat.count)} events)"
            if lat is not None
            else "-"
        ),
    )
    stored = p.latency_to_stored
    if stored is not None:
        yield (
            "  to stored ms",
            f"p50 {_num(stored.p50_ms)} | p90 {_num(stored.p90_ms)} | p99 {_num(stored.p99_ms)}"
            f" | max {_num(stored.max_ms)} (send -> the stream's stored time)",
        )
    if p.flood is not None:
        f = p.flood
        yield (
            "flood",
            (
                f"sent {_num(f.sent)} = stored {_num(f.stored_events)} + suppressed {_num(f.suppressed_in_summaries)}"
                f" ({f.summaries} summaries, {f.started} started, {f.ended} ended): "
                + (
                    "balanced"
                    if f.balanced
                    else f"NOT balanced ({_num(f.stored_events + f.suppressed_in_summaries - f.sent)})"
                )
            ),
        )
    if p.per_publisher:
        worst = sorted(p.per_publisher.items())[:8]
        yield (
            "per publisher",
            "; ".join(f"p{k}: " + ", ".join(f"{n} {v}" for n, v in d.items()) for k, d in worst),
        )


def _flatten(values: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in values.items():
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0]  # e.g. the one CI recount of a scenario
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _value(value)


def _value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "-"
    if isinstance(value, int | float):
        return _num(value)
    if isinstance(value, str):
        return value
    text = msgspec.json.encode(value).decode()
    return text if len(text) <= _EXTRA_WIDTH else text[: _EXTRA_WIDTH - 3] + "..."


def _num(x: float) -> str:
    """Thousands separators; floats to 3 significant digits below 100, whole above."""
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"

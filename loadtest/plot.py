"""Plots of load-test results: latency distribution and throughput over time, as PNG or HTML.

Per ``ScenarioResult`` with a probe report, one row of two charts:

* latency distribution: events per log-spaced latency bucket (``LatencyStats.histogram_ms``,
  ms on a log axis) with p50 / p90 / p99 / max marked;
* throughput over time: messages sent and events received per second of the run
  (``ProbeReport.timeline``).

``write_plot(results, path)`` picks the format from the suffix: ``.png`` (matplotlib, Agg,
no display needed) or ``.html`` (one self-contained file: the same figure as inline SVG plus
the text report; no script, no external resource). The ``throughput`` scenario (no probe
report) gets a bar chart of its median throughput per target
(``extra["median_throughput_per_sec"]``). A result with ``extra["rss_samples"]`` (the ``soak``
scenario) gets one more row, the bridge's memory over time: VmRSS and RssAnon in MiB, the
end of the warm-up marked and the least-squares fit after it drawn, and on a second axis the
spool backlog and the messages not read yet. Raises ``ValueError`` for
another suffix. Needs matplotlib (the ``loadtest`` extra).
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path

from loadtest.report import render
from loadtest.results import ProbeReport, ScenarioResult

__all__ = ["SUFFIXES", "figure", "write_plot"]

SUFFIXES = (".png", ".html")
_BUCKET_RATIO = 10 ** (1 / 10)  # loadtest.results histogram: 10 log-spaced buckets per decade
_MARKS = (
    ("p50", "p50_ms", "tab:green"),
    ("p90", "p90_ms", "tab:olive"),
    ("p99", "p99_ms", "tab:orange"),
    ("max", "max_ms", "tab:red"),
)


def write_plot(results: Sequence[ScenarioResult], path: str | Path) -> None:
    """Write the charts of ``results`` to ``path`` (``.png`` or ``.html``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"plot file must end in {' or '.join(SUFFIXES)}: {path}")
    fig = figure(results)
    if suffix == ".png":
        fig.savefig(path, format="png", dpi=100)
        return
    svg = io.StringIO()
    fig.savefig(svg, format="svg")
    path.write_text(_html(results, svg.getvalue()), encoding="utf-8")


def figure(results: Sequence[ScenarioResult]):  # -> matplotlib.figure.Figure
    """A matplotlib ``Figure`` (no pyplot state): one row of charts per result with a probe
    report or throughput medians."""
    from matplotlib.figure import Figure

    shown = [r for r in results if r.probe is not None or _medians(r)]
    rows = len(shown) + sum(1 for r in shown if _rss_samples(r))
    fig = Figure(figsize=(12, 3.6 * max(1, rows)), layout="constrained")
    if not shown:
        fig.text(0.5, 0.5, "no probe data (see the report)", ha="center", va="center")
        return fig
    axes = iter(fig.subplots(rows, 2, squeeze=False))
    for result in shown:
        row = next(axes)
        title = f"{result.scenario} ({'PASS' if result.passed else 'FAIL'})"
        if result.probe is None:
            _medians_bar(row[0], _medians(result), title)
            row[1].set_axis_off()
            continue
        _latency(row[0], result.probe, title)
        _throughput(row[1], result.probe, title)
        if _rss_samples(result):
            _rss(fig, next(axes), result, title)
    return fig


def _rss_samples(result: ScenarioResult) -> list[list[float]]:
    """``extra["rss_samples"]`` of ``soak``: ``[secs, VmRSS MiB, RssAnon MiB, spool, unread]``."""
    samples = result.extra.get("rss_samples")
    return samples if isinstance(samples, list) and samples else []


def _rss(fig, row, result: ScenarioResult, title: str) -> None:
    """One chart over the whole row: RSS over time, warm-up end, fitted line after it."""
    grid = row[0].get_subplotspec().get_gridspec()
    index = row[0].get_subplotspec().rowspan.start
    for ax in row:
        ax.remove()
    ax = fig.add_subplot(grid[index, :])
    samples = _rss_samples(result)
    secs = [s[0] for s in samples]
    ax.plot(secs, [s[1] for s in samples], marker=".", color="tab:blue", label="VmRSS")
    ax.plot(secs, [s[2] for s in samples], marker=".", color="tab:gray", label="RssAnon")
    warmup = result.extra.get("warmup_secs")
    slope = result.extra.get("rss_slope_mib_per_min")
    if isinstance(warmup, int | float):
        ax.axvline(warmup, color="tab:orange", linestyle="--", linewidth=1, label="warm-up end")
        after = [s for s in samples if s[0] >= warmup]
        if isinstance(slope, int | float) and len(after) >= 2:
            t_mean = sum(s[0] for s in after) / len(after)
            v_mean = sum(s[1] for s in after) / len(after)
            ends = (after[0][0], after[-1][0])
            fit = [v_mean + slope / 60.0 * (t - t_mean) for t in ends]
            ax.plot(ends, fit, color="tab:red", linewidth=1.2, label=f"fit {slope:+.2f} MiB/min")
    ax.set_title(f"{title}: bridge memory")
    ax.set_xlabel("seconds since the first sample")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left", fontsize="small")
    if all(len(s) >= 5 for s in samples):  # backlogs, on their own axis
        backlog = ax.twinx()
        backlog.plot(secs, [s[3] for s in samples], color="tab:green", linewidth=0.8, label="spool")
        backlog.plot(
            secs, [s[4] for s in samples], color="tab:purple", linewidth=0.8, label="unread (ZMQ)"
        )
        backlog.set_ylabel("messages waiting")
        backlog.set_ylim(bottom=0)
        backlog.legend(loc="lower right", fontsize="small")


def _medians(result: ScenarioResult) -> dict[str, float]:
    """``extra["median_throughput_per_sec"]`` of the ``throughput`` scenario: target -> msg/s."""
    medians = result.extra.get("median_throughput_per_sec")
    return {str(k): float(v) for k, v in medians.items() if v} if isinstance(medians, dict) else {}


def _medians_bar(ax, medians: dict[str, float], title: str) -> None:
    ax.set_title(f"{title}: median throughput")
    bars = ax.bar(list(medians), list(medians.values()), color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in medians.values()])
    ax.set_ylabel("messages per second (stored)")


def _latency(ax, probe: ProbeReport, title: str) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_title(f"{title}: end-to-end latency")
    lat = probe.latency
    if lat is None or not lat.histogram_ms:
        ax.text(0.5, 0.5, "no events received", ha="center", va="center", transform=ax.transAxes)
        return
    # bucket k holds latencies in (previous bound, bound]; bounds are log-spaced, 10 per decade
    uppers = [b for b, _ in lat.histogram_ms]
    lowers = [b / _BUCKET_RATIO for b in uppers]
    counts = [c for _, c in lat.histogram_ms]
    widths = [u - lo for u, lo in zip(uppers, lowers, strict=True)]
    ax.bar(
        lowers,
        counts,
        width=widths,
        align="edge",
        color="tab:blue",
        alpha=0.6,
        edgecolor="tab:blue",
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(
        FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else "")
    )
    for label, attr, color in _MARKS:
        value = getattr(lat, attr)
        if value > 0:
            ax.axvline(
                value, color=color, linestyle="--", linewidth=1, label=f"{label} {_ms(value)} ms"
            )
    ax.set_xlabel("latency (ms, ZMQ send -> consumer receipt)")
    ax.set_ylabel("events per bucket")
    ax.legend(loc="upper right", fontsize="small")


def _ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _throughput(ax, probe: ProbeReport, title: str) -> None:
    ax.set_title(f"{title}: throughput")
    if not probe.timeline:
        ax.text(0.5, 0.5, "no timeline", ha="center", va="center", transform=ax.transAxes)
        return
    secs = [t for t, _, _ in probe.timeline]
    ax.step(
        secs,
        [s for _, s, _ in probe.timeline],
        where="post",
        label="sent / s",
        color="tab:gray",
        linewidth=3,
        alpha=0.5,
    )
    ax.step(
        secs,
        [r for _, _, r in probe.timeline],
        where="post",
        label="received / s",
        color="tab:blue",
        linewidth=1.2,
    )
    ax.set_xlabel("seconds since the first send")
    ax.set_ylabel("messages per second")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize="small")


def _html(results: Sequence[ScenarioResult], svg: str) -> str:
    svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype: inline SVG in HTML5
    verdict = "PASS" if results and all(r.passed for r in results) else "FAIL"
    names = ", ".join(r.scenario for r in results)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>busbridge loadtest: {html.escape(names)} {verdict}</title>"
        "<style>body{font-family:sans-serif;margin:1em}pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
        "svg{max-width:100%;height:auto}</style></head><body>\n"
        f"<h1>busbridge loadtest: {html.escape(names)} &mdash; {verdict}</h1>\n"
        f"{svg}\n<h2>Report</h2>\n<pre>{html.escape(render(results))}</pre>\n</body></html>\n"
    )

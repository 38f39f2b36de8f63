"""PromQL found in ops files (alert rules, the Grafana dashboard), for tests.

``series_in(expr)`` parses an expression with promql-parser (the Rust PromQL
parser's Python binding: a syntax error, an unknown function or an unclosed
parenthesis raises ``ValueError``) and returns the metric names it selects.
``metric_families()`` maps every family the bridge declares in
``bridge.metrics.Metrics`` to the series names Prometheus exports for it
(``_total`` for counters, ``_bucket``/``_sum``/``_count`` for histograms).
"""

from __future__ import annotations

import re

import promql_parser

from bridge.metrics import Metrics

__all__ = ["exported_series", "metric_families", "selectors_in", "series_in"]

#: Grafana's built-in range variables are not PromQL: give them a duration before parsing.
_GRAFANA_RANGE = re.compile(r"\$\{?__(rate_interval|interval|range)\}?")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def metric_families() -> dict[str, set[str]]:
    """``{family name: series names it exports}`` for every family of a fresh ``Metrics()``."""
    families = {}
    for family in Metrics().registry.collect():
        families[family.name] = {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return families


def exported_series() -> dict[str, str]:
    """``{series name: family name}``."""
    return {series: family for family, names in metric_families().items() for series in names}


def selectors_in(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector of ``expr`` (inside range vectors too). Raises ``ValueError``."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(_GRAFANA_RANGE.sub("5m", expr)), visit)
    return found


def series_in(expr: str) -> set[str]:
    """The metric names ``expr`` selects. Raises ``ValueError`` (also for a nameless selector)."""
    names = set()
    for selector in selectors_in(expr):
        if not selector.name:
            raise ValueError(f"selector without a metric name in {expr!r}")
        names.add(selector.name)
    return names

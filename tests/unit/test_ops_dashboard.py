"""ops/grafana/busbridge-dashboard.json: every metric family of bridge/metrics.py has a panel,
every expression is valid PromQL over exported series, and every panel follows the
$machine / $instance template."""

from __future__ import annotations

import json
from itertools import combinations

from tests.support.promql import exported_series, metric_families, selectors_in, series_in
from tests.support.source_scan import ROOT

DASHBOARD = ROOT / "ops" / "grafana" / "busbridge-dashboard.json"
TEMPLATE = {"machine": "$machine", "instance": "$instance"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels() -> list[dict]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _expressions() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def test_every_metric_family_has_a_panel() -> None:
    series = exported_series()
    covered = {
        series[name] for _, expr in _expressions() for name in series_in(expr) if name in series
    }
    missing = sorted(set(metric_families()) - covered)
    assert not missing, (
        f"metric families of bridge/metrics.py with no panel in {DASHBOARD.name}: {', '.join(missing)} "
        "(add a panel whose expression selects them)"
    )


def test_every_expression_parses_and_selects_exported_series() -> None:
    series = exported_series()
    for title, expr in _expressions():
        unknown = series_in(expr) - set(series)
        assert not unknown, f"panel {title!r}: {sorted(unknown)} not exported by bridge/metrics.py"


def test_every_selector_follows_the_machine_and_instance_template() -> None:
    for title, expr in _expressions():
        for selector in selectors_in(expr):
            matchers = {m.name: m.value for m in selector.matchers.matchers}
            assert {k: matchers.get(k) for k in TEMPLATE} == TEMPLATE, (
                f"panel {title!r}: {selector}"
            )


def test_template_variables_and_datasource() -> None:
    dash = _dashboard()
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource"
        and variables["datasource"]["query"] == "prometheus"
    )
    for name in TEMPLATE:
        assert variables[name]["type"] == "query" and variables[name]["includeAll"]
        [selected] = series_in(
            variables[name]["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
        )
        assert selected in exported_series()
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = _dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    boxes = [(p["title"], p["gridPos"]) for p in panels]
    for _, g in boxes:
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
    for (ta, a), (tb, b) in combinations(boxes, 2):
        apart = (
            a["x"] + a["w"] <= b["x"]
            or b["x"] + b["w"] <= a["x"]
            or a["y"] + a["h"] <= b["y"]
            or b["y"] + b["h"] <= a["y"]
        )
        assert apart, f"panels {ta!r} and {tb!r} overlap"

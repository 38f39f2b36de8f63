"""ops/prometheus/busbridge-alerts.yml: well-formed rules whose metrics the bridge exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from bridge.metrics import Metrics

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "busbridge-alerts.yml"
_METRIC = re.compile(r"\bbusbridge_[a-z_]+\b")


def _exported_names() -> set[str]:
    text = generate_latest(Metrics().registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("busbridge_")}


def test_rules_are_well_formed_and_unique() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules) >= 10
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_metric_in_an_expression_is_exported() -> None:
    exported = _exported_names()
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            for name in _METRIC.findall(rule["expr"]):
                assert name in exported, f"{rule['alert']}: {name} is not exported"

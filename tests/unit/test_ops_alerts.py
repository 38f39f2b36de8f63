"""ops/prometheus/busbridge-alerts.yml: well-formed rules, valid PromQL over series the bridge
exports, and (where ``promtool`` is installed: Debian package ``prometheus``) ``promtool check
rules`` plus a scenario per alert run by ``promtool test rules`` (tests.support.alert_scenarios)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.alert_scenarios import promtool_tests
from tests.support.promql import exported_series, series_in

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "busbridge-alerts.yml"
PROMTOOL = shutil.which("promtool")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
#: .ci/run fetches promtool and sets this, so CI fails instead of skipping when it is missing
_REQUIRED = os.environ.get("BUSBRIDGE_REQUIRE_PROMTOOL") == "1"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and not _REQUIRED,
    reason="promtool not installed (Debian: apt-get install prometheus)",
)


def test_promtool_is_there_when_ci_requires_it() -> None:
    assert PROMTOOL or not _REQUIRED, (
        ".ci/run sets BUSBRIDGE_REQUIRE_PROMTOOL=1 but promtool is not on PATH"
    )


def _exported_names() -> set[str]:
    return set(exported_series())


def _rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rules_are_well_formed_and_unique() -> None:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules) >= 10
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert _DURATION.fullmatch(str(rule["for"])), (
            f"{rule['alert']}: for: {rule['for']!r} is not a Prometheus duration"
        )
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_metric_in_an_expression_is_exported() -> None:
    exported = _exported_names()
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            for name in series_in(rule["expr"]):  # parses the PromQL (ValueError if invalid)
                assert name in exported, f"{rule['alert']}: {name} is not exported"


@needs_promtool
def test_promtool_check_rules() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_fires_on_its_condition_and_stays_quiet_when_healthy(tmp_path: Path) -> None:
    """``promtool test rules`` over the shipped expressions (annotations dropped: their wording is
    free); every alert needs a firing scenario in tests/support/alert_scenarios.py."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    tests, untested = promtool_tests([r["alert"] for r in _rules()])
    assert not untested, (
        f"alerts with no firing scenario in tests/support/alert_scenarios.py: {untested}"
    )
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "tests.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


PROMETHEUS = RULES.with_name("prometheus.yml")


def test_prometheus_config_scrapes_each_machine_and_loads_the_rules() -> None:
    from bridge.config.load import load_config

    doc = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert doc["rule_files"] == [RULES.name]
    [job] = [j for j in doc["scrape_configs"] if j["job_name"] == "busbridge"]
    scraped = {c["labels"]["machine"]: c["targets"] for c in job["static_configs"]}
    for name in ("mainpc", "pc2"):
        cfg = load_config(RULES.parents[1] / "config" / f"{name}.yaml")
        [target] = scraped[cfg.machine]
        assert target.endswith(f":{cfg.admin.port}") and cfg.admin.host == "0.0.0.0", name


@needs_promtool
def test_promtool_check_config() -> None:
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(PROMETHEUS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr

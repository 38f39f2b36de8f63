"""Hot reload: diff, live vs refused paths, merge, and the reloader's results."""

from __future__ import annotations

from pathlib import Path

from bridge.config.load import load_config, parse_config
from bridge.config.reload import ConfigReloader, merge_live, plan_reload

BASE = "machine: M\nzmq: {rcvhwm: 1000}\nflood: {default_threshold: 20}\nlog_level: INFO\n"


def test_plan_splits_live_and_refused_paths() -> None:
    old = parse_config(BASE)
    new = parse_config(BASE.replace("1000", "5000").replace("20}", "99}").replace("INFO", "DEBUG"))
    plan = plan_reload(old, new)
    assert sorted(plan.live) == ["flood.default_threshold", "log_level"]
    assert plan.refused == ["zmq.rcvhwm"]
    merged = merge_live(old, new, plan.live)
    assert (merged.flood.default_threshold, merged.log_level, merged.zmq.rcvhwm) == (
        99,
        "DEBUG",
        1000,
    )


def test_flood_rules_list_changes_are_live() -> None:
    old = parse_config(BASE)
    new = parse_config(
        "machine: M\nzmq: {rcvhwm: 1000}\nflood: {default_threshold: 20, rules: []}\n"
    )
    assert plan_reload(old, new).live == ["flood.rules"]


def _reloader(tmp_path: Path, applied: list, results: list) -> tuple[ConfigReloader, Path]:
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    return ConfigReloader(
        path, load_config(path), lambda cfg, live: applied.append(live), results.append
    ), path


def test_reloader_results(tmp_path: Path) -> None:
    applied: list = []
    results: list = []
    reloader, path = _reloader(tmp_path, applied, results)
    assert reloader.reload() == "unchanged"
    path.write_text(BASE.replace("20}", "50}"))
    assert reloader.reload() == "applied" and reloader.running.flood.default_threshold == 50
    path.write_text("zmq: {rcvhwm: -1}\n")
    assert reloader.reload() == "invalid" and reloader.running.flood.default_threshold == 50
    path.write_text(BASE.replace("1000", "7").replace("20}", "50}"))
    assert reloader.reload() == "refused" and reloader.running.zmq.rcvhwm == 1000
    path.write_text(BASE.replace("1000", "7").replace("20}", "60}"))
    assert reloader.reload() == "partial" and reloader.running.flood.default_threshold == 60
    assert applied == [["flood.default_threshold"], ["flood.default_threshold"]]
    assert results == ["unchanged", "applied", "invalid", "refused", "partial"]

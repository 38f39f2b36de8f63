"""Config loading: strict keys, every problem with its path, cross-field rules, example file."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bridge.cli import main
from bridge.config.load import load_config, parse_config
from bridge.config.model import ZmqMode
from bridge.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "config" / "busbridge.example.yaml"


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    return info.value.problems


def test_defaults_are_valid_and_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUSBRIDGE_MACHINE", "PC2")
    cfg = load_config(None)
    assert (cfg.machine, cfg.bridge_id, cfg.zmq.bind_endpoint) == ("PC2", "PC2", "tcp://*:7150")
    assert cfg.zmq.mode is ZmqMode.BIND and cfg.nats.servers == []


def test_example_file_loads_and_matches_defaults() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.machine == "MainPC" and cfg.stream.name == "ERRBUS"
    defaults = load_config(None)
    sections = [
        f for f in defaults.__struct_fields__ if isinstance(getattr(defaults, f), msgspec.Struct)
    ]
    assert len(sections) >= 13
    for section in sections:  # every section, including ones added later
        assert getattr(cfg, section) == getattr(defaults, section), (
            f"example {section} differs from the defaults"
        )


def test_every_problem_is_listed_with_its_path() -> None:
    problems = _problems(
        "zmq: {rcvhwm: -1, bogus: 1}\npublish: {max_in_flight: 0}\nstream: {duplicate_window_secs: x}\nnope: 1\n"
    )
    assert sorted(p.split(":")[0] for p in problems) == sorted(
        ["zmq.rcvhwm", "zmq.bogus", "stream.duplicate_window_secs", "publish.max_in_flight", "nope"]
    )


def test_cross_field_rules() -> None:
    problems = _problems(
        "zmq: {mode: connect}\nstream: {subject_prefix: errors.bridge}\n"
        "identity: {occurrence_window_secs: 10}\nlegacy: {local_timezone: Mars/Base}\n"
        "nats: {servers: ['http://x'], user: bob}\n"
        "publish: {batch_idle_secs: 2, ack_timeout_secs: 2}\n"
    )
    paths = sorted(p.split(":")[0] for p in problems)
    assert paths == sorted(
        [
            "publish.batch_idle_secs",
            "zmq.connect_endpoints",
            "stream.subject_prefix",
            "identity.occurrence_window_secs",
            "legacy.local_timezone",
            "nats.servers[0]",
            "nats.user",
        ]
    )


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("zmq: [unclosed\n")
    with pytest.raises(ConfigError):
        load_config(bad)


def test_repeated_keys_are_refused_not_silently_overridden() -> None:
    """YAML itself keeps the last of two equal keys; an operator who wrote ``flood:`` twice
    gets told, with both lines, along with every other problem."""
    with pytest.raises(ConfigError) as err:
        parse_config(
            "flood: {enabled: true}\nzmq: {rcvhwm: 5, rcvhwm: 6}\nflood: {enabled: false}\nadmin: {port: 70000}\n"
        )
    problems = err.value.problems
    assert "<yaml>: line 3: duplicate key 'flood' (first at line 1)" in problems
    assert "<yaml>: line 2: duplicate key 'rcvhwm' (first at line 2)" in problems
    assert any(p.startswith("admin.port") for p in problems) and len(problems) == 3
    assert (
        parse_config("zmq: {<<: {rcvhwm: 5}, rcvhwm: 6}\n").zmq.rcvhwm == 6
    )  # a merge key overriding is no repeat


def test_check_config_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("zmq: {rcvhwm: -1}\nadmin: {port: 70000}\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "zmq.rcvhwm" in err and "admin.port" in err


def test_flood_rules_are_validated() -> None:
    problems = _problems(
        "flood: {rules: [{name: a, match: '(unclosed'}, {name: a, escalate_to: urgent}]}\n"
    )
    paths = sorted(p.split(":")[0] for p in problems)
    assert paths == ["flood.rules[0].match", "flood.rules[1].escalate_to", "flood.rules[1].name"]

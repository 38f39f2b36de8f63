"""Legacy startup configs in both schemas (legacy-bus.md §5): which agents, which ports, which traps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.health import port_offset
from bridge.config.load import parse_config
from bridge.health.startup_config import (
    StartupConfigError,
    expand_port,
    load_startup_config,
    parse_startup_config,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
MAINPC = FIXTURES / "mainpc_startup_config.yaml"
PC2 = FIXTURES / "pc2_startup_config.yaml"

MAINPC_AGENTS = {
    # name: (group, port, health_check_port) with PORT_OFFSET 0
    "ServiceRegistry": ("foundation_services", 7200, 8200),
    "SystemDigitalTwin": ("foundation_services", 7220, 8220),
    "RequestCoordinator": ("foundation_services", 26002, 27002),
    "ModelManagerSuite": ("foundation_services", 7211, 8211),
    "CodeGenerator": ("utility_services", 5650, 6650),
    "Executor": ("utility_services", 5606, 5607),
    "CrossMachineGPUScheduler": ("gpu_infrastructure", 7155, 8155),
    "VRAMOptimizerAgent": ("gpu_infrastructure", 5572, 6572),
    "STTService": ("speech_services", 5800, 6800),
    "StreamingTTSAgent": ("audio_interface", 5562, 6562),
    "EmotionEngine": ("emotion_system", 5590, 6590),
    "TranslationService": ("translation_services", 5595, 6595),
    "UnifiedObservabilityCenter": ("learning_knowledge", 9100, 9110),
}


def test_mainpc_nested_agent_groups_give_every_agent_with_group_and_expanded_ports() -> None:
    cfg = load_startup_config(MAINPC, 0)
    assert cfg.schema == "mainpc"
    assert {a.name: (a.group, a.port, a.health_check_port) for a in cfg.agents} == MAINPC_AGENTS
    assert all(a.required for a in cfg.agents)


def test_mainpc_groups_nested_under_agent_groups_are_not_taken_for_agents() -> None:
    cfg = load_startup_config(MAINPC, 0)
    names = {a.name for a in cfg.agents}
    assert not names & {"description", "agents", "infra_core", "coordination", "docker_groups"}
    trap_paths = {s.split(":")[0] for s in cfg.skipped}
    for group in ("observability", "core_hubs", "vision_gpu"):
        assert {f"agent_groups.{group}.description", f"agent_groups.{group}.agents"} <= trap_paths
    assert {
        "agent_groups.docker_groups.infra_core",
        "agent_groups.docker_groups.coordination",
    } <= trap_paths


def test_an_agent_whose_port_cannot_be_expanded_is_skipped_with_the_reason() -> None:
    cfg = load_startup_config(MAINPC, 0)
    assert "BrokenPortAgent" not in {a.name for a in cfg.agents}
    assert any(
        s.startswith("agent_groups.translation_services.BrokenPortAgent:") and "${PC2_PORT}" in s
        for s in cfg.skipped
    )


def test_port_offset_shifts_every_expression_but_not_literal_ports() -> None:
    shifted = {a.name: a for a in load_startup_config(MAINPC, 1000).agents}
    assert (shifted["ServiceRegistry"].port, shifted["ServiceRegistry"].health_check_port) == (
        8200,
        9200,
    )
    assert shifted["Executor"].health_check_port == 6607  # port+1 of the shifted port
    assert shifted["RequestCoordinator"].health_check_port == 27002  # a plain integer in the file


def test_pc2_flat_services_list() -> None:
    cfg = load_startup_config(PC2, 0)
    assert cfg.schema == "pc2"
    agents = {a.name: a for a in cfg.agents}
    assert next(iter(agents)) == "CentralErrorBus"  # first, as in the legacy file
    assert (agents["CentralErrorBus"].port, agents["CentralErrorBus"].health_check_port) == (
        7150,
        8150,
    )
    assert (
        agents["VisionProcessingAgent"].port,
        agents["VisionProcessingAgent"].health_check_port,
    ) == (7160, 8160)
    assert (
        agents["UnifiedObservabilityCenter"].port,
        agents["UnifiedObservabilityCenter"].health_check_port,
    ) == (9100, 9110)
    assert agents["TutoringServiceAgent"].health_check_port == 8130  # quoted '8130'
    assert not agents["TutoringServiceAgent"].required and agents["TieredResponder"].required
    assert all(a.group is None and a.host == "0.0.0.0" for a in cfg.agents)
    assert len(agents) == 10
    assert cfg.skipped == ["pc2_services[10]: not a service (a mapping with a name)"]


def test_pc2_docker_groups_and_network_sections_are_not_services() -> None:
    names = {a.name for a in load_startup_config(PC2, 0).agents}
    assert not names & {"error_bus", "memory", "vision", "pc2_network", "agent_ports"}


@pytest.mark.parametrize(
    ("value", "offset", "port"),
    [
        (7200, 0, 7200),
        ("7200", 0, 7200),
        ("${PORT_OFFSET}+7200", 0, 7200),
        ("${PORT_OFFSET}+7200", 100, 7300),
        ("${PORT_OFFSET} + 8200", 5, 8205),
        ("$PORT_OFFSET+8200", 5, 8205),
        ("${PORT_OFFSET:-10}+8200", None, 8210),
        ("${PORT_OFFSET:-10}+8200", 0, 8200),
        ("${PORT_OFFSET}+7200", None, 7200),
        ("7000+200", 0, 7200),
    ],
)
def test_port_expressions(value: object, offset: int | None, port: int) -> None:
    assert expand_port(value, offset) == port


@pytest.mark.parametrize(
    "value",
    ["${PC2_PORT}+1", "7200-1", "abc", "", 0, 70000, "${PORT_OFFSET}+65535", True, None, [7200]],
)
def test_bad_port_expressions_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        expand_port(value, 1)


def test_a_file_with_both_schemas_gives_both_and_the_first_of_a_duplicate() -> None:
    text = (
        "agent_groups: {core: {A: {script_path: a.py, port: 7000}}}\n"
        "pc2_services: [{name: B, port: 7100, health_check_port: 8100}, {name: A, port: 9000}]\n"
    )
    cfg = parse_startup_config(text, 0)
    assert cfg.schema == "mainpc+pc2"
    assert [(a.name, a.health_check_port) for a in cfg.agents] == [("A", 7001), ("B", 8100)]
    assert cfg.skipped == ["pc2_services[1]: duplicate of agent 'A' listed earlier"]


@pytest.mark.parametrize(
    "text", ["global_settings: {}\n", "- just\n- a list\n", "agent_groups: [unclosed\n", ""]
)
def test_files_in_neither_schema_raise(text: str) -> None:
    with pytest.raises(StartupConfigError):
        parse_startup_config(text, 0)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(StartupConfigError, match="cannot read"):
        load_startup_config(tmp_path / "nope.yaml", 0)


def test_port_offset_comes_from_config_then_env_then_unset() -> None:
    assert port_offset(parse_config("health: {port_offset: 7}\n").health, {"PORT_OFFSET": "3"}) == 7
    assert port_offset(parse_config("{}").health, {"PORT_OFFSET": " 3 "}) == 3
    assert port_offset(parse_config("{}").health, {}) is None

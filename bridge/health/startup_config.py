"""The agents listed in a legacy ``startup_config.yaml``, in either schema (legacy-bus.md §5).

Schemas
-------
* MainPC (``main_pc_code/config/startup_config.yaml``)::

      agent_groups:
        <group>:
          <AgentName>: {script_path, port, health_check_port, required, dependencies, config?}

  **Trap:** ``docker_groups`` and groups such as ``observability`` or
  ``core_hubs`` (each ``{description, agents: [...]}``) are indented *under*
  ``agent_groups``; a naive loader sees agents named ``description`` and
  ``agents``. Here an entry is an agent only when its value is a mapping with a
  ``script_path``, ``port`` or ``health_check_port``; everything else is
  listed in ``skipped`` with the reason.
* PC2 (``pc2_code/config/startup_config.yaml``)::

      pc2_services:
        - {name, script_path, host: 0.0.0.0, port, health_check_port, required, dependencies, config?}

  ``host`` is the agent's bind address (``0.0.0.0``), not where to probe it;
  it is kept for information only.

A file holding both keys yields the agents of both. An agent listed twice is
kept once (the first), the other listed in ``skipped``.

Ports
-----
Integers, digit strings, or ``+`` sums of integers and ``${PORT_OFFSET}``
(also ``${PORT_OFFSET:-N}`` and ``$PORT_OFFSET``), e.g. ``${PORT_OFFSET}+7200``
as the legacy ``system_launcher.py`` expands them. A missing
``health_check_port`` is ``port + 1`` (BaseAgent's default, legacy-bus.md §4).
An agent whose ports cannot be worked out is skipped with the reason; only an
unreadable file or one with neither schema raises ``StartupConfigError``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from bridge.errors import BridgeError

__all__ = [
    "AgentSpec",
    "StartupConfig",
    "StartupConfigError",
    "expand_port",
    "load_startup_config",
    "parse_startup_config",
]

_AGENT_KEYS = ("script_path", "port", "health_check_port")
_TERM = re.compile(r"^(?:\$\{PORT_OFFSET(?::-(?P<default>\d+))?\}|\$PORT_OFFSET|(?P<number>\d+))$")


class StartupConfigError(BridgeError):
    """A legacy startup config could not be read or follows neither schema."""

    code = "startup_config_error"


class AgentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One legacy agent to probe. Ports are expanded (``${PORT_OFFSET}`` applied), 1..65535.

    ``group``: the MainPC agent group (``None`` for PC2). ``host``: the configured
    bind address, as written (informational).
    """

    name: str
    health_check_port: int
    port: int | None = None
    group: str | None = None
    host: str | None = None
    required: bool = False


class StartupConfig(msgspec.Struct, frozen=True, kw_only=True):
    """``schema``: ``mainpc``, ``pc2`` or ``mainpc+pc2``. ``skipped``: ``<path>: <why>`` per entry not taken."""

    schema: str
    agents: list[AgentSpec]
    skipped: list[str] = []


def load_startup_config(path: str | Path, port_offset: int | None) -> StartupConfig:
    """Read and parse ``path``. Raises ``StartupConfigError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupConfigError(f"cannot read legacy startup config {path}: {exc}") from exc
    return parse_startup_config(text, port_offset, str(path))


def parse_startup_config(
    text: str, port_offset: int | None, source: str = "<string>"
) -> StartupConfig:
    """Parse YAML ``text`` in either schema. Raises ``StartupConfigError``."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StartupConfigError(f"{source}: not YAML: {exc}") from exc
    if not isinstance(doc, dict) or not ({"agent_groups", "pc2_services"} & doc.keys()):
        raise StartupConfigError(
            f"{source}: neither agent_groups (MainPC) nor pc2_services (PC2) found"
        )
    agents: dict[str, AgentSpec] = {}
    skipped: list[str] = []
    schemas = []
    if "agent_groups" in doc:
        schemas.append("mainpc")
        _mainpc(doc["agent_groups"], port_offset, agents, skipped)
    if "pc2_services" in doc:
        schemas.append("pc2")
        _pc2(doc["pc2_services"], port_offset, agents, skipped)
    return StartupConfig(schema="+".join(schemas), agents=list(agents.values()), skipped=skipped)


def _mainpc(
    groups: Any, offset: int | None, agents: dict[str, AgentSpec], skipped: list[str]
) -> None:
    if not isinstance(groups, dict):
        skipped.append(f"agent_groups: not a mapping ({type(groups).__name__})")
        return
    for group, members in groups.items():
        if not isinstance(members, dict):
            skipped.append(
                f"agent_groups.{group}: not a mapping of agents ({type(members).__name__})"
            )
            continue
        for name, spec in members.items():
            where = f"agent_groups.{group}.{name}"
            if not (isinstance(spec, dict) and any(k in spec for k in _AGENT_KEYS)):
                skipped.append(
                    f"{where}: not an agent (no script_path/port; a group nested under agent_groups?)"
                )
                continue
            _add(str(name), spec, str(group), offset, where, agents, skipped)


def _pc2(
    services: Any, offset: int | None, agents: dict[str, AgentSpec], skipped: list[str]
) -> None:
    if not isinstance(services, list):
        skipped.append(f"pc2_services: not a list ({type(services).__name__})")
        return
    for i, spec in enumerate(services):
        where = f"pc2_services[{i}]"
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
            skipped.append(f"{where}: not a service (a mapping with a name)")
            continue
        _add(spec["name"], spec, None, offset, where, agents, skipped)


def _add(
    name: str,
    spec: dict,
    group: str | None,
    offset: int | None,
    where: str,
    agents: dict[str, AgentSpec],
    skipped: list[str],
) -> None:
    if name in agents:
        skipped.append(f"{where}: duplicate of agent {name!r} listed earlier")
        return
    try:
        agents[name] = _agent(name, spec, group, offset)
    except ValueError as exc:
        skipped.append(f"{where}: {exc}")


def _agent(name: str, spec: dict, group: str | None, offset: int | None) -> AgentSpec:
    port = expand_port(spec["port"], offset) if spec.get("port") is not None else None
    if spec.get("health_check_port") is not None:
        health = expand_port(spec["health_check_port"], offset)
    elif port is not None:
        health = _in_range(port + 1)
    else:
        raise ValueError("neither port nor health_check_port")
    host = spec.get("host")
    return AgentSpec(
        name=name,
        health_check_port=health,
        port=port,
        group=group,
        host=str(host) if host is not None else None,
        required=spec.get("required") is True,
    )


def expand_port(value: Any, port_offset: int | None) -> int:
    """A legacy port value as a port number: ``7200``, ``"7200"``, ``"${PORT_OFFSET}+7200"``,
    ``"${PORT_OFFSET:-0} + 7200"``. Raises ``ValueError`` for anything else or a result
    outside 1..65535. ``port_offset`` ``None`` (not set anywhere): the expression's
    ``:-N`` default, else 0."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"port {value!r} is not a number or a port expression")
    if isinstance(value, int):
        return _in_range(value)
    total = 0
    for term in value.split("+"):
        match = _TERM.match(term.strip())
        if match is None:
            raise ValueError(f"port {value!r}: cannot expand {term.strip()!r}")
        if match["number"] is not None:
            total += int(match["number"])
        else:
            total += port_offset if port_offset is not None else int(match["default"] or 0)
    return _in_range(total)


def _in_range(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} outside 1..65535")
    return port

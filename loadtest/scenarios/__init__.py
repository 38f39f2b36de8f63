"""Scenario registry: every named load-test scenario, its default workload and knobs.

A scenario is ``async def f(options: ScenarioOptions, progress: Progress) -> ScenarioResult``
registered with ``@scenario("name", defaults=Workload(...), params={...}, help="...")``.
``SCENARIOS`` maps names to those coroutine functions and ``DEFAULTS`` to
``(default workload, default params, one-line help)``; both are filled when this package is
imported (it imports the scenario modules listed in ``_MODULES``). ``run_scenario`` merges the
scenario's default params under the caller's and runs it. ``Progress`` is called about once a
second with a stage text and counters (``sent``, ``received``, ``spool`` ...).
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from loadtest.results import ScenarioResult
from loadtest.workload import Workload

__all__ = [
    "DEFAULTS",
    "SCENARIOS",
    "Progress",
    "Scenario",
    "ScenarioOptions",
    "machine_info",
    "no_progress",
    "run_scenario",
    "scenario",
    "utc_now",
]


class ScenarioOptions(msgspec.Struct, kw_only=True):
    """How to run one scenario: the workload, a scratch ``workdir`` (servers' stores, bridge
    data, logs), ``runs`` repetitions (scenarios that report medians), ``keep_workdir``, and
    scenario-specific ``params`` (``outage_secs``, ``kill_after_secs``, ...)."""

    workload: Workload
    workdir: Path
    runs: int = 1
    keep_workdir: bool = False
    params: dict[str, Any] = {}


Progress = Callable[[str, dict[str, float]], None]
Scenario = Callable[[ScenarioOptions, Progress], Awaitable[ScenarioResult]]

SCENARIOS: dict[str, Scenario] = {}
DEFAULTS: dict[str, tuple[Workload, dict[str, Any], str]] = {}

# Modules that register scenarios; one missing (not written yet) is skipped, any other error raises.
_MODULES = (
    "loadtest.scenarios.traffic_scenarios",
    "loadtest.scenarios.chaos",
    "loadtest.scenarios.throughput",
    "loadtest.scenarios.soak",
    "loadtest.scenarios.legacy_nats",
)


def scenario(
    name: str, *, defaults: Workload, params: dict[str, Any] | None = None, help: str = ""
) -> Callable[[Scenario], Scenario]:
    """Register the decorated coroutine function as scenario ``name``; raises ``ValueError``
    when the name is taken."""

    def register(fn: Scenario) -> Scenario:
        if name in SCENARIOS and SCENARIOS[name] is not fn:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = fn
        DEFAULTS[name] = (defaults, dict(params or {}), help)
        return fn

    return register


def no_progress(stage: str, counters: dict[str, float]) -> None:
    """A ``Progress`` that shows nothing."""


async def run_scenario(
    name: str, options: ScenarioOptions, progress: Progress | None = None
) -> ScenarioResult:
    """Run scenario ``name`` with ``options`` (its default params filled in under the given ones).

    Raises ``KeyError`` for an unknown name.
    """
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    params = {**DEFAULTS[name][1], **options.params}
    options = msgspec.structs.replace(options, params=params)
    options.workdir.mkdir(parents=True, exist_ok=True)
    return await SCENARIOS[name](options, progress or no_progress)


def utc_now() -> str:
    """Now as UTC ISO 8601 (``ScenarioResult.started_at``)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _nats_server_version() -> str:
    binary = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if not binary:
        return "unknown"
    try:
        return subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, Any]:
    """Facts about the machine a result was measured on: cpus, cpu model, memory, OS, Python,
    nats-server version."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nats_server": _nats_server_version(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in cpuinfo.splitlines()
                if ln.startswith("model name")
            ),
            "unknown",
        )
        mem_kb = next(
            int(ln.split()[1])
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        )
        info["memory_gb"] = round(mem_kb / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def _load_modules() -> None:
    for module in _MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


_load_modules()

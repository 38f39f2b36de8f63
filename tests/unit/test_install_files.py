"""The install path stays what CI tests: README commands, .ci/run and constraints.txt agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    run_cmd, test_cmd = _readme_commands()
    assert run_cmd.endswith("busbridge run") and test_cmd.endswith("python -m pytest")
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_cmd in ci_lines


def test_readme_commands_install_from_the_constraints_file() -> None:
    for cmd in _readme_commands():
        assert "pip install -q -c constraints.txt -e " in cmd


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins.setdefault(m[1].lower().replace("_", "-"), m[2])
    return pins


def test_every_direct_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["test"], *extras["loadtest"], *extras["dev"]]
    names = {re.match(r"[A-Za-z0-9_.-]+", req)[0].lower().replace("_", "-") for req in wanted}
    missing = sorted(names - set(_pins()))
    assert not missing, f"not in constraints.txt (run: bash .ci/lock): {missing}"

"""Imports point down: no module of ``bridge/`` imports ``consumers`` or ``loadtest`` except
``bridge/cli.py``, which imports a subcommand's module only when that subcommand runs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPPER = ("consumers", "loadtest")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_bridge_module_but_the_cli_imports_consumers_or_loadtest() -> None:
    offenders = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "bridge").rglob("*.py"))
        if path.name != "cli.py" or path.parent.name != "bridge"
        if _imports(path) & set(UPPER)
    ]
    assert not offenders


def test_contracts_import_nothing_of_the_project_but_contracts() -> None:
    for path in sorted((ROOT / "contracts").rglob("*.py")):
        assert not _imports(path) & {"bridge", "consumers", "loadtest", "busclient"}, path


def test_the_cli_imports_a_subcommand_module_only_for_that_subcommand() -> None:
    code = (
        "import sys\n"
        "from bridge.cli import _parser\n"
        "_parser('run').parse_args(['run'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('consumers', 'loadtest')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"

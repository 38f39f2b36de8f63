"""busclient is installed into agents: it may import only ``contracts``, nats-py, msgspec and the
standard library, never ``bridge``, ``consumers`` or ``loadtest``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import busclient

PACKAGE = Path(busclient.__file__).parent
ALLOWED_ROOTS = {"busclient", "contracts", "nats", "msgspec", "__future__"}
FORBIDDEN_ROOTS = {"bridge", "consumers", "loadtest"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            roots.add((node.module or "").split(".")[0])
    return roots


def test_sources_import_only_contracts_nats_msgspec_and_stdlib() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) >= 10
    for path in files:
        outside = _imported_roots(path) - ALLOWED_ROOTS - set(sys.stdlib_module_names)
        assert not outside, f"{path.relative_to(PACKAGE)} imports {sorted(outside)}"


def test_importing_every_module_loads_nothing_forbidden() -> None:
    modules = sorted(
        ".".join(("busclient", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in PACKAGE.rglob("*.py")
    )
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(FORBIDDEN_ROOTS)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"

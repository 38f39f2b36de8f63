"""Facts read from the source tree for tests on ops files: which environment variables the code reads."""

from __future__ import annotations

import ast
from pathlib import Path

__all__ = ["ROOT", "environment_variables_read"]

ROOT = Path(__file__).resolve().parents[2]


def environment_variables_read(*packages: str) -> dict[str, str]:
    """``{variable: "file:line"}`` for every environment variable the code in ``packages`` reads:
    string arguments (literal, or a module-level constant) of ``os.environ.get``, ``os.getenv``,
    ``environ.get``, ``os.environ[...]``, and module constants named ``ENV_*``/``*_ENV*``."""
    found: dict[str, str] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            consts = _string_constants(tree)
            where = path.relative_to(ROOT).as_posix()
            for name, line in _reads(tree, consts):
                found.setdefault(name, f"{where}:{line}")
            for const, value in consts.items():
                if (
                    const.isupper()
                    and (const.startswith("ENV_") or "_ENV" in const)
                    and value.isupper()
                ):
                    found.setdefault(value, where)
    return found


def _string_constants(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _reads(tree: ast.Module, consts: dict[str, str]) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        arg = None
        if isinstance(node, ast.Call) and node.args and _is_env_getter(node.func):
            arg = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            arg = node.slice
        value = _resolve(arg, consts)
        if value:
            out.append((value, node.lineno))
    return out


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _is_env_getter(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute) and func.attr == "getenv":
        return True
    return isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value)


def _resolve(arg: ast.expr | None, consts: dict[str, str]) -> str | None:
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return consts.get(arg.id)
    return None

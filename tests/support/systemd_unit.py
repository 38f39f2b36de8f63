"""Read systemd unit files for tests: ``[Section]`` then ``Key=Value`` lines; a key may repeat
(``SystemCallFilter=``), so every value is kept in order. ``#``/``;`` lines are comments, a
trailing ``\\`` continues a line. ``%i`` is expanded by ``instance()``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["Unit", "read_unit"]


class Unit:
    """``unit["Service"]["ExecStart"]`` is the list of values of that key in that section."""

    def __init__(self, sections: dict[str, dict[str, list[str]]]) -> None:
        self.sections = sections

    def __getitem__(self, section: str) -> dict[str, list[str]]:
        return self.sections[section]

    def one(self, section: str, key: str) -> str:
        """The only (or last) value of ``key``; ``KeyError`` when absent."""
        return self.sections[section][key][-1]

    def instance(self, name: str) -> Unit:
        """The unit as ``<template>@<name>.service`` sees it (``%i`` replaced)."""
        return Unit(
            {
                s: {k: [v.replace("%i", name) for v in vs] for k, vs in keys.items()}
                for s, keys in self.sections.items()
            }
        )


def read_unit(path: Path) -> Unit:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if not sep or current is None:
            raise ValueError(f"{path}: not a Key=Value line in a section: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return Unit(sections)

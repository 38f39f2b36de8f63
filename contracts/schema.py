"""JSON Schemas of the contracts, generated into ``contracts/schemas/``.

``python -m contracts.schema`` rewrites the files; a test fails when they are
out of date. One file per contract: ``<type tag>.schema.json``.

The text is independent of the installed msgspec's formatting: msgspec < 0.23 copies a
struct's docstring into ``description`` verbatim (indented), 0.23 cleans it the way
``inspect.cleandoc`` does. Every ``description`` is passed through ``inspect.cleandoc``
here (idempotent on already-clean text), and the members of every ``anyOf`` (whose order
is not meaningful, and which msgspec < 0.19 lists null-first) are sorted by their JSON text,
so the committed files are the same on every msgspec version ``pyproject.toml`` admits.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import msgspec

from contracts.messages import (
    BridgeHeartbeat,
    ConsumerDeadLetter,
    DeadLetter,
    DeadLetterSummary,
    ErrorEvent,
    FloodEnded,
    FloodStarted,
    FloodSummary,
    HealthReport,
    PhaseChanged,
    SpoolEvicted,
)

__all__ = ["CONTRACTS", "SCHEMA_DIR", "render_schemas", "write_schemas"]

CONTRACTS = (
    ErrorEvent,
    DeadLetter,
    SpoolEvicted,
    FloodStarted,
    FloodSummary,
    FloodEnded,
    PhaseChanged,
    HealthReport,
    BridgeHeartbeat,
    DeadLetterSummary,
    ConsumerDeadLetter,
)
SCHEMA_DIR = Path(__file__).parent / "schemas"


def _normalise(node: object) -> object:
    """Return ``node`` (a JSON Schema value) with descriptions cleandoc'ed, ``anyOf`` sorted."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                out[key] = inspect.cleandoc(value)
            elif key == "anyOf" and isinstance(value, list):
                members = [_normalise(item) for item in value]
                out[key] = sorted(members, key=lambda m: json.dumps(m, sort_keys=True))
            else:
                out[key] = _normalise(value)
        return out
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    return node


def render_schemas() -> dict[str, str]:
    """Return ``{file name: schema JSON text}`` for every contract (normalised)."""
    out = {}
    for struct in CONTRACTS:
        name = struct.__struct_config__.tag
        schema = _normalise(msgspec.json.schema(struct))
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for p in write_schemas():
        sys.stdout.write(f"wrote {p}\n")

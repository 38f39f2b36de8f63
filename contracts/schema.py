"""JSON Schemas of the contracts, generated into ``contracts/schemas/``.

``python -m contracts.schema`` rewrites the files; a test fails when they are
out of date. One file per contract: ``<type tag>.schema.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec

from contracts.messages import (
    BridgeHeartbeat,
    DeadLetter,
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
    ErrorEvent, DeadLetter, SpoolEvicted, FloodStarted, FloodSummary, FloodEnded, PhaseChanged,
    HealthReport, BridgeHeartbeat,
)  # fmt: skip
SCHEMA_DIR = Path(__file__).parent / "schemas"


def render_schemas() -> dict[str, str]:
    """Return ``{file name: schema JSON text}`` for every contract."""
    out = {}
    for struct in CONTRACTS:
        name = struct.__struct_config__.tag
        schema = msgspec.json.schema(struct)
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

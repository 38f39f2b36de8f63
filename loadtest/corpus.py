"""Loader of the captured legacy frame corpus (legacy-bus.md §7).

``load_corpus(path=None) -> list[CorpusRow]``: one row per JSONL line, with
``frames_b64`` decoded to ``bytes``. The default file is
``<repo>/../shared/corpus/legacy_frames.sample.jsonl`` (``shared/`` beside the
repository); the environment variable ``BUSBRIDGE_CORPUS`` overrides it. Raises ``FileNotFoundError``
when the file is missing (``corpus_path()`` lets tests check first).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CORPUS_ENV", "CorpusRow", "corpus_path", "default_corpus_path", "load_corpus"]

CORPUS_ENV = "BUSBRIDGE_CORPUS"
_REPO = Path(__file__).resolve().parents[1]
_DEFAULT = _REPO.parent / "shared" / "corpus" / "legacy_frames.sample.jsonl"


@dataclass(frozen=True)
class CorpusRow:
    """One captured message; ``row["key"]`` reads any original JSON field."""

    i: int
    dialect: str
    variant: str
    case: str
    origin: str  # "legacy" | "synthetic"
    frames: list[bytes]
    raw: dict[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    @property
    def is_legacy(self) -> bool:
        return self.origin == "legacy"


def corpus_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The corpus file to read: ``path``, else ``$BUSBRIDGE_CORPUS``, else the default."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(CORPUS_ENV) or _DEFAULT)


def default_corpus_path() -> Path:
    """The corpus file used when none is named (env ``BUSBRIDGE_CORPUS`` or the default)."""
    return corpus_path(None)


def load_corpus(path: str | os.PathLike[str] | None = None) -> list[CorpusRow]:
    """Every row of the corpus file, in file order."""
    with corpus_path(path).open(encoding="utf-8") as lines:
        return [_row(json.loads(line)) for line in lines if line.strip()]


def _row(raw: dict[str, Any]) -> CorpusRow:
    return CorpusRow(
        i=raw["i"],
        dialect=raw["dialect"],
        variant=raw["variant"],
        case=raw["case"],
        origin=raw["origin"],
        frames=[base64.b64decode(frame) for frame in raw["frames_b64"]],
        raw=raw,
    )

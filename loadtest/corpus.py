"""Reader of the captured legacy corpus (``shared/corpus/legacy_frames.sample.jsonl``).

Each line: ``{i, dialect, variant, case, origin: legacy|synthetic, frames_b64, ...}``
(legacy-bus.md §7). ``load_corpus`` returns ``CorpusRow`` values with the
frames decoded to bytes. The default path is ``../shared/corpus/...`` beside
the repository, or env ``BUSBRIDGE_CORPUS``.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import msgspec

__all__ = ["CorpusRow", "default_corpus_path", "load_corpus"]


class CorpusRow(msgspec.Struct, frozen=True):
    i: int
    dialect: str
    variant: str
    case: str
    origin: str
    frames: list[bytes]


class _Line(msgspec.Struct):
    i: int
    dialect: str
    variant: str
    case: str
    origin: str
    frames_b64: list[str]


def default_corpus_path() -> Path:
    env = os.environ.get("BUSBRIDGE_CORPUS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "corpus" / "legacy_frames.sample.jsonl"


def load_corpus(path: str | os.PathLike[str] | None = None) -> list[CorpusRow]:
    """Read every row. Raises ``OSError`` or ``msgspec.DecodeError`` on a bad file."""
    decoder = msgspec.json.Decoder(_Line)
    rows = []
    with open(path or default_corpus_path(), "rb") as fh:
        for line in fh:
            if line.strip():
                r = decoder.decode(line)
                frames = [base64.b64decode(f) for f in r.frames_b64]
                rows.append(CorpusRow(r.i, r.dialect, r.variant, r.case, r.origin, frames))
    return rows

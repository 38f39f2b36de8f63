"""Coverage-guided fuzzing with atheris (optional: ``pip install -e '.[fuzz]'``).

Targets:

* ``decode``: the input is split on ``SEPARATOR`` into at most ``MAX_FRAMES``
  frames and given to ``LegacyDecoder.decode`` (with the read-side frame cap
  on); the result must be an ``ErrorEvent`` or ``DeadLetter`` that round-trips
  through ``contracts.codec``. Any exception is a finding.
* ``config``: the input, as UTF-8 text (invalid bytes replaced), is given to
  ``parse_config``; it must return a config or raise ``ConfigError``.

Run (libFuzzer flags after the target; seeds from the legacy corpus and the
example config are written to ``SEED_DIR`` first)::

    python -m tests.fuzz.harness decode -runs=200000 -max_total_time=300
    python -m tests.fuzz.harness config -max_total_time=300

``tests/fuzz/test_atheris.py`` runs both for a bounded number of runs in the
suite when atheris is installed, and is skipped otherwise.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from bridge.config.load import parse_config
    from bridge.errors import ConfigError
    from bridge.pipeline.decode import LegacyDecoder
    from contracts.codec import decode as codec_decode
    from contracts.codec import encode
    from contracts.messages import DeadLetter, ErrorEvent

SEPARATOR = b"\x00\xfe\x00"
MAX_FRAMES = 5
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]

_decoder = LegacyDecoder(
    machine="fuzz",
    identity=lambda frames, error_id: error_id or "h",
    max_frame_bytes=4096,
    oversized_keep_bytes=64,
)


def fuzz_decode(data: bytes) -> None:
    frames = data.split(SEPARATOR, MAX_FRAMES - 1)
    result = _decoder.decode(frames, RECEIVED)
    if not isinstance(result, ErrorEvent | DeadLetter):
        raise AssertionError(f"decode returned {type(result).__name__}")
    if codec_decode(encode(result)) != result:
        raise AssertionError("result does not round-trip through the codec")


def fuzz_config(data: bytes) -> None:
    try:
        parse_config(data.decode("utf-8", "replace"), "<fuzz>")
    except ConfigError as exc:
        if not exc.problems:
            raise AssertionError("ConfigError without problems") from exc


def seeds(target: str, folder: Path) -> Path:
    """Write a few realistic inputs for ``target`` into ``folder``; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    if target == "decode":
        from loadtest.corpus import load_corpus

        for row in load_corpus()[:200]:
            (folder / f"row{row.i}").write_bytes(SEPARATOR.join(row.frames))
    else:
        (folder / "example").write_bytes(
            (ROOT / "ops" / "config" / "busbridge.example.yaml").read_bytes()
        )
        (folder / "secret").write_bytes(
            b"nats: {user: u, password: x, tls: {ca_file: c}}\nzmq: {curve: {enabled: true}}\n"
        )
    return folder


def main(argv: list[str]) -> None:
    target, flags = argv[1], argv[2:]
    test_one = {"decode": fuzz_decode, "config": fuzz_config}[target]
    corpus = seeds(target, Path(tempfile.mkdtemp(prefix=f"busbridge-fuzz-{target}-")))
    atheris.Setup([argv[0], *flags, str(corpus)], test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

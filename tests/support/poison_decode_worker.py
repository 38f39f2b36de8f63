"""A decode worker child that dies (``os._exit(3)``) on any message with a frame starting with
``POISON``, else the real one: ``python -m tests.support.poison_decode_worker ENDPOINT JSON``.
It stands for a decoder crash that takes the process down (a segfault in a C extension, the
OOM killer), which ``LegacyDecoder.decode`` itself never does."""

from __future__ import annotations

import os
import sys

from bridge.adapters import decode_worker
from bridge.pipeline.decode import LegacyDecoder

_decode = LegacyDecoder.decode


def _dying_decode(self, frames, received_at):  # type: ignore[no-untyped-def]
    if any(bytes(frame).startswith(b"POISON") for frame in frames):
        os._exit(3)
    return _decode(self, frames, received_at)


if __name__ == "__main__":
    LegacyDecoder.decode = _dying_decode  # type: ignore[method-assign]
    sys.exit(decode_worker.main())

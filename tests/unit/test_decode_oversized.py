"""The decoder's read-side frame cap: a message with a frame above ``max_frame_bytes`` becomes
an ``oversized`` DeadLetter holding the head of each frame, the real sizes and a truncation
marker; anything at or below the cap decodes as before. Property-tested over frame sets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.pipeline.decode import LegacyDecoder
from contracts.codec import decode as codec_decode
from contracts.codec import encode
from contracts.messages import DeadLetter, DeadLetterReason, ErrorEvent

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = b'ERROR:{"source": "A", "error_type": "t", "message": "m", "severity": "ERROR"}'


def decoder(cap: int | None, keep: int, seen: list[list[bytes]] | None = None) -> LegacyDecoder:
    def identity(frames: Any, error_id: str | None) -> str:
        if seen is not None:
            seen.append(list(frames))
        return error_id or "h"

    return LegacyDecoder(
        machine="m", identity=identity, max_frame_bytes=cap, oversized_keep_bytes=keep
    )


def test_a_frame_above_the_cap_is_dead_lettered_with_its_head_and_size() -> None:
    seen: list[list[bytes]] = []
    big = EVENT + b" " * 200
    result = decoder(len(EVENT) + 10, 8, seen).decode([b"ERROR:", big], RECEIVED)
    assert isinstance(result, DeadLetter) and result.reason is DeadLetterReason.OVERSIZED
    assert result.frames == [b"ERROR:", big[:8]] and result.frame_sizes == [6, len(big)]
    assert result.truncated is not None and result.truncated.fields == ["frames"]
    assert (result.truncated.original_bytes, result.truncated.kept_bytes) == (6 + len(big), 6 + 8)
    assert seen == [[b"ERROR:", big]]  # the id covers the whole frames, as on any other bridge


def test_at_the_cap_or_without_a_cap_nothing_changes() -> None:
    assert isinstance(decoder(len(EVENT), 8).decode([EVENT], RECEIVED), ErrorEvent)
    assert isinstance(decoder(None, 8).decode([EVENT + b" " * 100_000], RECEIVED), ErrorEvent)
    negative = decoder(-1, 8).decode([b"x" * 10_000], RECEIVED)
    assert isinstance(negative, DeadLetter) and negative.reason is not DeadLetterReason.OVERSIZED


FRAMES = st.lists(
    st.binary(max_size=300) | st.sampled_from([EVENT, EVENT + b"x" * 100]), max_size=4
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAMES, st.integers(0, 320), st.integers(0, 64))
def test_cap_decides_oversized_exactly(frames: list[bytes], cap: int, keep: int) -> None:
    result = decoder(cap, keep).decode(frames, RECEIVED)
    assert codec_decode(encode(result)) == result
    too_big = any(len(f) > cap for f in frames)
    is_oversized = isinstance(result, DeadLetter) and result.reason is DeadLetterReason.OVERSIZED
    assert is_oversized == too_big
    if is_oversized:
        assert isinstance(result, DeadLetter)
        assert result.frames == [f[:keep] for f in frames] and result.frame_sizes == [
            len(f) for f in frames
        ]
        assert sum(map(len, result.frames)) <= keep * len(frames)
    else:
        assert result == decoder(None, keep).decode(frames, RECEIVED)

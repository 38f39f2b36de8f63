"""Dead-letter flood control: a broken agent spraying undecodable bytes cannot fill the stream.

Design note
-----------
Flood control by fingerprint covers error events only; a crash-looping agent that sends
garbage produces dead letters, each stored with its raw bytes. ``DeadLetterGate`` keys dead
letters by what a storm shares without knowing its sender (ZMQ SUB does not tell who sent a
frame): ``dead_letter_key`` = reason, dialect guess and the first ``leading_bytes`` bytes of the
first frame. Per key and ``window_secs`` (a fixed window starting at the key's first dead
letter in it) the first ``threshold`` dead letters pass and are stored with their bytes; the
rest are suppressed and counted. Garbage whose leading bytes vary (a short constant header,
then random bytes) makes a new key per frame: so the dead letters that passed their own key
are also counted per reason and dialect guess (the aggregate key ``<reason>|<guess>|*``), of
which ``aggregate_threshold`` per window pass. Nothing is dropped without being counted in a stored
``DeadLetterSummary``: one per key every ``summary_interval_secs`` while it suppresses
(``tick``), a last one (``ended``) once the key was quiet for a whole window, and at
``flush`` (shutdown, or flood control turned off) for every key with counts not yet reported.
At most ``max_keys`` keys are tracked; the least recently used is dropped first, after its
counts were put in a summary. The gate decides and builds summaries; it neither logs nor
counts (the runner does), and both clocks are injected: ``clock`` monotonic seconds,
``wall_clock`` UTC ``datetime`` for the contract's times.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import msgspec

from contracts.messages import DeadLetter, DeadLetterSummary, Truncation

__all__ = ["SAMPLE_FRAME_BYTES", "DeadLetterGate", "dead_letter_key"]

#: bytes of each frame kept in a summary's sample
SAMPLE_FRAME_BYTES = 256


def dead_letter_key(dl: DeadLetter, leading_bytes: int = 8) -> str:
    """``<reason>|<dialect guess or ->|<hex of the first frame's first bytes>``."""
    head = dl.frames[0][:leading_bytes] if dl.frames else b""
    guess = dl.dialect_guess.value if dl.dialect_guess is not None else "-"
    return f"{dl.reason.value}|{guess}|{head.hex()}"


class _Storm:
    __slots__ = (
        "count",
        "first_seen",
        "last_seen",
        "last_summary_mono",
        "last_suppressed_mono",
        "sample",
        "total",
        "unreported",
        "window_start",
    )

    def __init__(self, now: float) -> None:
        self.window_start = now
        self.count = 0  # dead letters of the key in the current window (passed and suppressed)
        self.unreported = 0  # suppressed since the last summary
        self.total = 0  # suppressed since the storm began
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None
        self.sample: DeadLetter | None = None
        self.last_suppressed_mono = -1.0
        self.last_summary_mono = now


class DeadLetterGate:
    """``check(dl) -> bool`` (True: store it), ``tick()`` / ``flush()`` -> summaries to publish.
    See the module note. Raises ``ValueError`` for a negative threshold or non-positive
    window, interval, key count or leading-byte count."""

    def __init__(
        self,
        *,
        machine: str,
        threshold: int,
        window_secs: float,
        summary_interval_secs: float,
        max_keys: int,
        leading_bytes: int,
        aggregate_threshold: int,
        clock: Callable[[], float],
        wall_clock: Callable[[], datetime],
    ) -> None:
        if min(threshold, aggregate_threshold) < 0 or min(window_secs, summary_interval_secs) <= 0:
            raise ValueError("threshold must be >= 0, window and interval positive")
        if max_keys < 1 or leading_bytes < 1:
            raise ValueError("max_keys and leading_bytes must be positive")
        self.machine = machine
        self.threshold = threshold
        self.aggregate_threshold = aggregate_threshold
        self.window_secs = window_secs
        self.summary_interval_secs = summary_interval_secs
        self.max_keys = max_keys
        self.leading_bytes = leading_bytes
        self._clock = clock
        self._wall = wall_clock
        self._storms: OrderedDict[str, _Storm] = OrderedDict()
        self._outbox: list[DeadLetterSummary] = []

    @property
    def suppressing(self) -> int:
        """Keys with dead letters suppressed and not yet ended."""
        return sum(1 for s in self._storms.values() if s.total)

    def key(self, dl: DeadLetter) -> str:
        return dead_letter_key(dl, self.leading_bytes)

    def check(self, dl: DeadLetter) -> bool:
        now = self._clock()
        key = self.key(dl)
        if self._within(key, now, self.threshold):
            guess = dl.dialect_guess.value if dl.dialect_guess is not None else "-"
            key = f"{dl.reason.value}|{guess}|*"
            if self._within(key, now, self.aggregate_threshold):
                return True
        self._suppress(self._storms[key], dl, now)
        return False

    def _within(self, key: str, now: float, threshold: int) -> bool:
        """Count one more dead letter of ``key``; True while the window's count <= threshold."""
        storm = self._storms.get(key)
        if storm is None:
            storm = self._storms[key] = _Storm(now)
            self._evict()
        else:
            self._storms.move_to_end(key)
        if now - storm.window_start >= self.window_secs:
            storm.window_start, storm.count = now, 0
        storm.count += 1
        return storm.count <= threshold

    def _suppress(self, storm: _Storm, dl: DeadLetter, now: float) -> None:
        at = self._wall()
        storm.unreported += 1
        storm.total += 1
        storm.first_seen = storm.first_seen or at
        storm.last_seen = at
        storm.sample = dl
        storm.last_suppressed_mono = now

    def tick(self) -> list[DeadLetterSummary]:
        """Summaries that are due, and last summaries of storms quiet for a whole window."""
        now = self._clock()
        for key, storm in list(self._storms.items()):
            if not storm.total:
                if now - storm.window_start >= self.window_secs:
                    del self._storms[key]  # a key that never suppressed: forget it
                continue
            if now - storm.last_suppressed_mono >= self.window_secs:
                self._outbox.append(self._summary(key, storm, now, ended=True))
                del self._storms[key]
            elif storm.unreported and now - storm.last_summary_mono >= self.summary_interval_secs:
                self._outbox.append(self._summary(key, storm, now, ended=False))
        return self._drain()

    def flush(self) -> list[DeadLetterSummary]:
        """A last summary for every key that suppressed anything; forget every key."""
        now = self._clock()
        for key, storm in self._storms.items():
            if storm.total:
                self._outbox.append(self._summary(key, storm, now, ended=True))
        self._storms.clear()
        return self._drain()

    def _evict(self) -> None:
        while len(self._storms) > self.max_keys:
            key, storm = self._storms.popitem(last=False)
            if storm.total:
                self._outbox.append(self._summary(key, storm, self._clock(), ended=True))

    def _drain(self) -> list[DeadLetterSummary]:
        out, self._outbox = self._outbox, []
        return out

    def _summary(self, key: str, storm: _Storm, now: float, *, ended: bool) -> DeadLetterSummary:
        sample = storm.sample
        assert sample is not None and storm.first_seen is not None and storm.last_seen is not None
        aggregate = key.endswith("|*")
        head = sample.frames[0][: self.leading_bytes] if sample.frames and not aggregate else b""
        summary = DeadLetterSummary(
            event_id=f"dls-{uuid.uuid4().hex}",
            machine=self.machine,
            key=key,
            reason=sample.reason,
            dialect_guess=sample.dialect_guess,
            leading_bytes=head,
            threshold=self.aggregate_threshold if aggregate else self.threshold,
            window_secs=self.window_secs,
            suppressed=storm.unreported,
            suppressed_total=storm.total,
            first_seen=storm.first_seen,
            last_seen=storm.last_seen,
            sample=_cut(sample),
            ended=ended,
        )
        storm.unreported = 0
        storm.last_summary_mono = now
        return summary


def _cut(dl: DeadLetter) -> DeadLetter:
    if all(len(frame) <= SAMPLE_FRAME_BYTES for frame in dl.frames):
        return dl
    kept = [frame[:SAMPLE_FRAME_BYTES] for frame in dl.frames]
    original = sum(dl.frame_sizes)
    return msgspec.structs.replace(
        dl,
        frames=kept,
        truncated=Truncation(
            original_bytes=original, kept_bytes=sum(map(len, kept)), fields=["frames"]
        ),
    )

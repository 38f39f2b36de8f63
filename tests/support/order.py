"""Checks on what a load run stored: exactly once, and in per-publisher order."""

from __future__ import annotations

from collections import Counter, defaultdict

from loadtest.producer import parse_id
from tests.support.stream import StoredMessage

__all__ = ["assert_exactly_once_in_order"]


def assert_exactly_once_in_order(stored: list[StoredMessage], expected: set[str]) -> None:
    """Every id in ``expected`` stored once, nothing else, and each publisher's ``n`` increasing."""
    ids = [m.headers["Nats-Msg-Id"] for m in stored]
    dupes = [i for i, c in Counter(ids).items() if c > 1]
    assert not dupes, f"{len(dupes)} duplicated, e.g. {dupes[:5]}"
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:5]}"
    assert set(ids) == expected, f"unexpected ids: {sorted(set(ids) - expected)[:5]}"
    last: dict[int, int] = defaultdict(lambda: -1)
    for i in ids:
        pub, n = parse_id(i)
        assert n > last[pub], f"publisher {pub}: {n} stored after {last[pub]}"
        last[pub] = n

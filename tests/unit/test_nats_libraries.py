"""The legacy NATS libraries' payloads (the capture of the real library A and B publishes)
decode into the fields the contracts want; copies of one library A error share its id."""

from __future__ import annotations

import base64
import json
import os
from collections import defaultdict
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest

from bridge.legacy.dialects import Decoded, Rejected
from bridge.legacy.nats_libraries import decode_legacy_nats
from contracts.messages import DeadLetterReason, Dialect, Severity, TimestampKind

LIVE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "legacy_nats_live.sample.jsonl"
if not LIVE.is_file():
    if os.environ.get("BUSBRIDGE_REQUIRE_CORPUS") == "1":
        raise RuntimeError(f"BUSBRIDGE_REQUIRE_CORPUS=1 but no capture at {LIVE}")
    pytest.skip(f"legacy NATS capture not found at {LIVE}", allow_module_level=True)

ROWS = [
    r
    for r in map(json.loads, LIVE.read_text(encoding="utf-8").splitlines())
    if r["kind"] == "publish" and r.get("payload_b64")
]


def _decoded(r: dict) -> Decoded:
    out = decode_legacy_nats(r["subject"], base64.b64decode(r["payload_b64"]))
    assert isinstance(out, Decoded), out
    return out


def test_every_captured_publish_decodes_with_its_library_and_id() -> None:
    copies: dict[str, set[str]] = defaultdict(set)
    for r in ROWS:
        d = _decoded(r)
        payload = json.loads(base64.b64decode(r["payload_b64"]))
        lib = Dialect.NATS_LIBRARY_A if r["lib"] == "A" else Dialect.NATS_LIBRARY_B
        assert d.legacy.dialect is lib and d.legacy.topic == r["subject"]
        assert d.error_id == (payload.get("id") or payload.get("error_id"))
        assert d.source == (payload.get("agent_name") or payload.get("source_agent"))
        assert d.legacy.timestamp_kind is TimestampKind.NAIVE_LOCAL_ISO
        if lib is Dialect.NATS_LIBRARY_A:
            copies[d.error_id].add(r["subject"])
            assert d.error_type == payload["category"]
    assert any(len(subjects) == 4 for subjects in copies.values())  # critical: 4 copies


def test_severities_and_extras() -> None:
    b = next(r for r in ROWS if r["lib"] == "B" and r["subject"].startswith("errors.critical."))
    assert _decoded(b).severity is Severity.CRITICAL
    with_stack = next(
        r
        for r in ROWS
        if json.loads(base64.b64decode(r["payload_b64"])).get("stack_trace") is not None
    )
    details = _decoded(with_stack).details
    assert isinstance(details, dict) and "stack_trace" in details and "details" in details


def test_naive_local_time_uses_the_configured_zone() -> None:
    r = ROWS[0]
    utc8 = timezone(timedelta(hours=8))
    local = decode_legacy_nats(r["subject"], base64.b64decode(r["payload_b64"]), utc8)
    plain = _decoded(r)
    assert isinstance(local, Decoded) and local.occurred_at is not None
    assert plain.occurred_at is not None and plain.occurred_at.tzinfo is UTC
    assert plain.occurred_at - local.occurred_at == timedelta(hours=8)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", DeadLetterReason.EMPTY_PAYLOAD),
        (b"\xff\xfe", DeadLetterReason.INVALID_UTF8),
        (b"[1]", DeadLetterReason.NOT_AN_OBJECT),
        (b'{"neither": 1}', DeadLetterReason.UNKNOWN_SCHEMA),
    ],
)
def test_what_is_not_a_library_payload_is_rejected(
    payload: bytes, reason: DeadLetterReason
) -> None:
    out = decode_legacy_nats("errors.events", payload)
    assert isinstance(out, Rejected) and out.reason is reason

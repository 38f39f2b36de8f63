"""Walking skeleton, end to end: the captured legacy corpus replayed over real ZMQ
sockets into a real bridge and a real nats-server; every message accounted for
exactly once in the stream."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import anyio
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from contracts.messages import DeadLetter, ErrorEvent, Severity
from contracts.subjects import HEADER_CONTRACT, HEADER_MSG_ID, HEADER_ORIGIN
from loadtest.corpus import load_corpus
from loadtest.replay import connect_publishers, replay
from tests.support.bridge import make_config, running_bridge
from tests.support.http import http_get
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

CORPUS = load_corpus()
LEGACY = [r for r in CORPUS if r.origin == "legacy"]
SYNTHETIC = [r for r in CORPUS if r.origin == "synthetic"]


def _expected_event_count() -> int:
    """Legacy rows minus the PC2/CROSS_MACHINE copies that share an error_id."""
    ids = collections.Counter(
        m.group(1)
        for r in LEGACY
        for f in r.frames
        for m in re.finditer(rb'"error_id": "([^"]+)"', f)
    )
    return len(LEGACY) - sum(n - 1 for n in ids.values())


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def _replay_corpus(endpoint: str) -> None:
    def send() -> None:
        with zmq.Context() as ctx:
            socks = connect_publishers(ctx, endpoint, 4)
            replay(socks, CORPUS)
            for s in socks:
                s.close(linger=10_000)

    await anyio.to_thread.run_sync(send)


@pytest.fixture
async def stored(nats_server: NatsServerProcess, tmp_path: Path):
    cfg = make_config(nats_server.url, tmp_path)
    async with running_bridge(cfg) as bridge:
        await _replay_corpus(bridge.zmq_endpoints[0])
        expected = _expected_event_count() + len(SYNTHETIC)
        assert await wait_for_count(nats_server.url, cfg.stream.name, expected) == expected
        _, metrics = await http_get(f"http://127.0.0.1:{bridge.admin_port}/metrics")
        ready, _ = await http_get(f"http://127.0.0.1:{bridge.admin_port}/readyz")
    return await fetch_all(nats_server.url, cfg.stream.name), metrics, ready


async def test_every_message_is_stored_exactly_once(stored) -> None:
    messages, metrics, ready = stored
    events = [m for m in messages if isinstance(m.msg, ErrorEvent)]
    dead = [m for m in messages if isinstance(m.msg, DeadLetter)]
    assert len(events) == _expected_event_count() == 109
    assert len(dead) == len(SYNTHETIC) == 10
    assert len({m.headers[HEADER_MSG_ID] for m in messages}) == len(messages)
    assert all(m.headers[HEADER_MSG_ID] == m.msg.event_id for m in messages)
    assert {m.headers[HEADER_ORIGIN] for m in messages} == {"TestPC"}
    assert ready == 200
    assert _metric(metrics, "busbridge_frames_received_total") == len(CORPUS)
    assert _metric(metrics, "busbridge_dead_letters_total{") == len(SYNTHETIC)
    # the PC2_ERROR / CROSS_MACHINE_ERROR copies are dropped in the bridge, before NATS
    assert _metric(metrics, 'busbridge_duplicates_total{by="bridge"}') == len(LEGACY) - 109


async def test_dead_letters_carry_the_exact_frames(stored) -> None:
    messages, _, _ = stored
    dead = sorted((m.msg.frames for m in messages if isinstance(m.msg, DeadLetter)), key=repr)
    assert dead == sorted((r.frames for r in SYNTHETIC), key=repr)
    for m in messages:
        if isinstance(m.msg, DeadLetter):
            assert m.subject == "errbus.dlq.TestPC"
            assert m.headers[HEADER_CONTRACT] == "dead_letter"


async def test_each_dialect_decoded(stored) -> None:
    messages, _, _ = stored
    events = [m.msg for m in messages if isinstance(m.msg, ErrorEvent)]
    by_dialect = collections.defaultdict(list)
    for ev in events:
        by_dialect[ev.legacy.dialect.value].append(ev)
    assert set(by_dialect) == {r.dialect for r in LEGACY}
    d1 = next(
        e
        for e in by_dialect["errpub_envelope"]
        if e.event_id == "fb685d84-d253-40a5-bf94-f8fd71b35dfe"
    )
    assert (d1.source, d1.error_type, d1.severity) == (
        "SystemDigitalTwin",
        "vram_exhausted",
        Severity.ERROR,
    )
    assert d1.occurred_at is not None and d1.occurred_at.tzinfo is not None
    d2 = [e for e in by_dialect["pc2_topic"] if e.legacy.source_machine == "PC2"]
    assert len(d2) == len(by_dialect["pc2_topic"])
    d3 = next(e for e in by_dialect["prefix_flat"] if e.source == "MemoryClient")
    assert d3.legacy.timestamp_kind.value == "epoch_seconds" and d3.occurred_at is not None
    d4 = next(
        e for e in by_dialect["multipart_colon"] if e.legacy.raw_severity == "ErrorSeverity.WARNING"
    )
    assert d4.severity is Severity.WARNING and d4.error_type == "tts_request_error"
    d5 = {e.error_type for e in by_dialect["multipart_bare"] if e.source == "AdvancedRouterAgent"}
    assert d5 == {"vram_exhausted", "timeout_error", "connection_error"}  # in any order: 4 sockets
    d6 = [e for e in by_dialect["bare_json"] if e.source == "ModelManagerSuite"]
    assert d6 and all(e.legacy.topic == "" for e in d6)
    d7 = by_dialect["prefix_text"]
    assert {e.source for e in d7} == {"LocalFineTunerAgent"} and {e.error_type for e in d7} == {
        "model_loading"
    }
    assert any("音声合成" in e.message for e in d7)


async def test_subjects_follow_the_scheme(stored) -> None:
    messages, _, _ = stored
    for m in messages:
        if isinstance(m.msg, ErrorEvent):
            prefix, kind, machine, severity, _source = m.subject.split(".")
            assert (prefix, kind, machine, severity) == (
                "errbus",
                "error",
                "TestPC",
                m.msg.severity.value,
            )


async def test_identical_frames_without_id_are_kept(stored) -> None:
    messages, _, _ = stored
    hashed = [m.msg.event_id for m in messages if re.fullmatch(r"[0-9a-f]{32}-\d+", m.msg.event_id)]
    counters = collections.Counter(i.rsplit("-", 1)[0] for i in hashed)
    repeats = {
        k: sorted(int(i.rsplit("-", 1)[1]) for i in hashed if i.startswith(k))
        for k, n in counters.items()
        if n > 1
    }
    assert sorted(repeats.values()) == [[1, 2], [1, 2], [1, 2]]

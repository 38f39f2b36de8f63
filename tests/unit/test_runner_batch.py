"""The ingest runner's batch path (what the ZMQ reader calls): same outcomes and counts as one
message at a time, counters added once per batch."""

from __future__ import annotations

import time

from bridge.metrics import Metrics
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.dedup import DedupWindow
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.runner import IngestRunner
from contracts.subjects import Subjects
from loadtest.traffic import frames, token
from tests.support.fakes import RecordingSink


def _runner() -> tuple[IngestRunner, RecordingSink, Metrics]:
    metrics, sink = Metrics(), RecordingSink()
    decoder = LegacyDecoder(machine="M", identity=EventIdentity(600, 1000, time.monotonic))
    builder = OutboundBuilder(Subjects("errbus"), "M", 1 << 20, metrics)
    return (
        IngestRunner(decoder, builder, sink, metrics, dedup=DedupWindow(600, 1000, time.monotonic)),
        sink,
        metrics,
    )


def _messages() -> list[list[bytes]]:
    d1 = [frames("D1", n % 2, n, source=f"Agent{n % 2}", error_type="timeout") for n in range(6)]
    return [
        *d1[:3],
        [b"ERROR:{not json"],
        *d1[3:],
        d1[0],
    ]  # a dead letter, and d1[0] again (same error_id)


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_batch_counts_and_submits_like_one_message_at_a_time() -> None:
    one, one_sink, one_m = _runner()
    for message in _messages():
        one(message)
    batch, batch_sink, batch_m = _runner()
    batch.handle_batch(_messages())
    assert [i.msg_id for i in batch_sink.items] == [i.msg_id for i in one_sink.items]
    assert [i.msg_id for i in batch_sink.items if i.kind == "error_event"] == [
        token(n % 2, n) for n in range(6)
    ]
    for name, labels in [
        ("busbridge_frames_received_total", {}),
        ("busbridge_frames_received_bytes_total", {}),
        ("busbridge_decoded_total", {"dialect": "errpub_envelope"}),
        ("busbridge_dead_letters_total", {"reason": "invalid_json"}),
        ("busbridge_duplicates_total", {"by": "bridge"}),
        ("busbridge_inventory_events_total", {"source": "Agent1", "dialect": "errpub_envelope"}),
    ]:
        assert _value(batch_m, name, **labels) == _value(one_m, name, **labels) > 0, name
    assert _value(batch_m, "busbridge_frames_received_total") == batch.received == 8
    assert _value(batch_m, "busbridge_decoded_total", dialect="errpub_envelope") == 7
    assert _value(batch_m, "busbridge_frames_received_bytes_total") == sum(
        len(f) for m in _messages() for f in m
    )

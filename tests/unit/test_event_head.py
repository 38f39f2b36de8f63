"""EventHead: the decode worker's events settled from their JSON without decoding them whole give
the very same outbound messages, counters, dedup and flood events as the whole contracts."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
import pytest

from bridge.metrics import Metrics
from bridge.pipeline.decode import LegacyDecoder
from bridge.pipeline.dedup import DedupWindow
from bridge.pipeline.event_head import EventHead, decode_heads, full_event
from bridge.pipeline.flood import FloodGate, FloodRule
from bridge.pipeline.identity import EventIdentity
from bridge.pipeline.outbound import OutboundBuilder
from bridge.pipeline.runner import IngestRunner, Routing
from contracts.codec import decode, encode
from contracts.messages import DeadLetter, ErrorEvent, FloodStarted, FloodSummary, Severity
from contracts.subjects import Subjects
from loadtest.producer import envelope
from loadtest.traffic import frames
from tests.support.fakes import FakeClock, RecordingSink

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
MAX_PAYLOAD = 64 * 1024


def _decoded() -> list[ErrorEvent | DeadLetter]:
    """Events of several dialects (one with a 100 KB detail), a repeat of the first (same legacy
    id), one flood of a single fingerprint and a dead letter, as the decode worker decodes them."""
    decoder = LegacyDecoder(machine="M", identity=EventIdentity(600, 1000, time.monotonic))
    dialects = ["D1", "D2", "D3", "D4", "D5", "D6", "D7"]
    messages = [
        frames(d, 1, n, source="Agent1", error_type="timeout") for n, d in enumerate(dialects)
    ]
    messages.append(messages[0])
    messages += [[envelope(2, 100 + n)] for n in range(12)]  # one fingerprint: a flood
    messages.append([b"ERROR:{not json"])
    messages.append(frames("D1", 3, 999, source="Big", error_type="dump", pad_bytes=100_000))
    return [decoder.decode(m, NOW) for m in messages]


def _runner(clock: FakeClock) -> tuple[IngestRunner, RecordingSink, Metrics, list]:
    metrics, sink = Metrics(), RecordingSink()
    observed: list = []
    builder = OutboundBuilder(Subjects("errbus"), "M", MAX_PAYLOAD, metrics)
    flood = FloodGate(
        [], FloodRule("default", threshold=3, window_secs=60.0), machine="M", clock=clock
    )
    runner = IngestRunner(
        LegacyDecoder(machine="M", identity=EventIdentity(600, 1000, time.monotonic)),
        builder,
        sink,
        metrics,
        dedup=DedupWindow(600, 1000, time.monotonic),
        flood=flood,
        wall_clock=lambda: NOW,
        routing=Routing(observe=observed.extend, observe_flood=observed.append),
    )
    return runner, sink, metrics, observed


def _outbound(sink: RecordingSink) -> list[tuple]:
    return [(i.subject, i.payload, dict(i.headers), i.kind, i.msg_id, i.rank) for i in sink.items]


def test_heads_keep_their_json_and_give_back_the_whole_event() -> None:
    decoded = _decoded()
    payloads = [encode(m) for m in decoded]
    heads = decode_heads(payloads)
    assert [h.__class__ for h in heads] == [
        EventHead if m.__class__ is ErrorEvent else DeadLetter for m in decoded
    ]
    for head, msg, payload in zip(heads, decoded, payloads, strict=True):
        if isinstance(head, EventHead):
            assert head.payload is payload
            assert full_event(head) == msg
            assert (head.event_id, head.fingerprint, head.source, head.severity) == (
                msg.event_id,
                msg.fingerprint,
                msg.source,
                msg.severity,
            )
        else:
            assert head == msg
    event = decoded[0]
    assert full_event(event) is event


def test_a_head_never_takes_a_payload_from_the_json() -> None:
    data = encode(_decoded()[0])
    forged = data[:-1] + b',"payload":"AAAA","busbridge":"x"}'
    head = decode_heads([forged])[0]
    assert isinstance(head, EventHead) and head.payload is forged
    with pytest.raises(msgspec.ValidationError):
        decode_heads([b'{"type":"flood_started"}'])


def test_settling_heads_and_whole_events_gives_the_same_outcomes() -> None:
    decoded = _decoded()
    payloads = [encode(m) for m in decoded]
    whole_clock, head_clock = FakeClock(), FakeClock()
    whole, whole_sink, whole_m, whole_seen = _runner(whole_clock)
    heads, head_sink, head_m, head_seen = _runner(head_clock)
    routing_whole, routing_heads = whole.routing, heads.routing
    whole.settle(list(decoded), routing_whole)
    heads.settle(decode_heads(payloads), routing_heads, payloads)
    for runner, clock in ((whole, whole_clock), (heads, head_clock)):
        clock.advance(30.0)
        for event in runner.flood.tick():  # type: ignore[union-attr]
            runner.emit(event)
    assert _outbound(head_sink) == _outbound(whole_sink)
    kinds = [i.kind for i in head_sink.items]
    assert "flood_started" in kinds and "flood_summary" in kinds and "dead_letter" in kinds
    floods = [decode(i.payload) for i in head_sink.items if i.kind.startswith("flood_")]
    samples = [f.sample for f in floods if isinstance(f, FloodStarted | FloodSummary)]
    assert samples and all(isinstance(s, ErrorEvent) for s in samples)
    assert all(s.source == "Agent002" and s.details is not None for s in samples)
    oversized = [i for i in head_sink.items if i.msg_id == decoded[-1].event_id]
    assert len(oversized) == 1 and len(oversized[0].payload) < MAX_PAYLOAD
    assert decode(oversized[0].payload).truncated is not None  # type: ignore[union-attr]
    assert [m.event_id for m in head_seen if hasattr(m, "event_id")] == [
        m.event_id for m in whole_seen if hasattr(m, "event_id")
    ]
    for name, labels in [
        ("busbridge_decoded_total", {"dialect": "errpub_envelope"}),
        ("busbridge_duplicates_total", {"by": "bridge"}),
        ("busbridge_flood_suppressed_total", {"rule": "default"}),
        ("busbridge_dead_letters_total", {"reason": "invalid_json"}),
        ("busbridge_inventory_events_total", {"source": "Agent002", "dialect": "errpub_envelope"}),
        ("busbridge_unknown_severity_total", {}),
        ("busbridge_truncated_total", {"kind": "error_event"}),
    ]:
        got = head_m.registry.get_sample_value(name, labels)
        assert got == whole_m.registry.get_sample_value(name, labels), name
    assert head_m.registry.get_sample_value("busbridge_duplicates_total", {"by": "bridge"}) == 1
    assert head_sink.items[0].headers.wire == whole_sink.items[0].headers.wire  # type: ignore


def test_a_head_is_an_error_event_of_its_severity_to_the_builder() -> None:
    ev = _decoded()[0]
    assert isinstance(ev, ErrorEvent)
    critical = msgspec.structs.replace(ev, severity=Severity.CRITICAL)
    payload = encode(critical)
    builder = OutboundBuilder(Subjects("errbus"), "M", MAX_PAYLOAD)
    head = decode_heads([payload])[0]
    from_head, from_whole = builder.build(head), builder.build(critical, payload)
    assert (from_head.subject, from_head.rank, from_head.payload) == (
        from_whole.subject,
        from_whole.rank,
        payload,
    )
    assert from_head.subject.startswith("errbus.error.M.critical.")

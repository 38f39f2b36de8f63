"""The load producer's traffic: legacy wire shapes with a token, the deterministic mix, the ZMQ producer
(counts, kinds, order, pacing) and a real bridge + nats-server decoding every dialect back to its token."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest
import zmq

from bridge.adapters.nats_server import NatsServerProcess
from bridge.legacy.dialects import Decoded, Rejected, read_frames
from bridge.pipeline.fingerprint import fingerprint
from contracts.messages import DeadLetter, ErrorEvent
from loadtest import traffic
from loadtest.corpus import load_corpus
from loadtest.load_producer import EVENT_ERROR_TYPE, LoadProducer, SentLog, source_name
from loadtest.message_mix import KIND_DUPLICATE, KIND_EVENT, KIND_FLOOD, KIND_MALFORMED, message_mix
from loadtest.workload import Burst, FloodSpec, Workload
from tests.support.bridge import make_config, running_bridge
from tests.support.stream import fetch_all, wait_for_count

AT = 1795248136.503872  # 2026-11-21T08:02:16.503872 UTC, like the corpus
ALL_DIALECTS = dict.fromkeys(traffic.DIALECTS, 1.0)
# (dialect, n) -> the corpus variant whose wire shape it must have (legacy-bus.md §1)
VARIANTS = {
    ("D1", 0): ("errpub_envelope", "ErrorPublisher(name)"),
    ("D2", 0): ("pc2_topic", "publish_error"),
    ("D3", 0): ("prefix_flat", "flat_epoch"),
    ("D3", 1): ("prefix_flat", "flat_src_iso"),
    ("D3", 2): ("prefix_flat", "flat_nots"),
    ("D3", 3): ("prefix_flat", "flat_iso_enum"),
    ("D4", 0): ("multipart_colon", "mp_ctx"),
    ("D4", 1): ("multipart_colon", "mp_rc_enum_str"),
    ("D4", 2): ("multipart_colon", "mp_sndmore_test"),
    ("D5", 0): ("multipart_bare", "pc2_agent_report_error"),
    ("D6", 0): ("bare_json", "mms_topic_field"),
    ("D6", 1): ("bare_json", "central_relay:json_with_agent"),
    ("D7", 0): ("prefix_text", "local_fine_tuner_model_loading"),
}


def _corpus_frames(dialect: str, variant: str, topic_prefix: bytes = b"") -> list[bytes]:
    return next(
        r.frames
        for r in load_corpus()
        if (r.dialect, r.variant) == (dialect, variant)
        and r.is_legacy
        and r.frames[0].startswith(topic_prefix)
    )


def _split(frames: list[bytes]) -> tuple[bytes, bytes]:
    """(topic, JSON payload) of a 1- or 2-frame JSON message."""
    if len(frames) == 2:
        return frames[0], frames[1]
    start = frames[0].index(b"{")
    return frames[0][:start], frames[0][start:]


def _keys(obj: object) -> object:
    """Key order, nested, with the JSON type of each leaf (details/context contents vary by call site)."""
    if not isinstance(obj, dict):
        return type(obj).__name__
    return [(k, "any" if k in ("details", "context") else _keys(v)) for k, v in obj.items()]


def _ours(dialect: str, n: int, **kw: object) -> list[bytes]:
    args = {"source": "LocalFineTunerAgent", "error_type": "model_loading", "at": AT} | kw
    return traffic.frames(dialect, 3, n, **args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- wire shapes and tokens


@pytest.mark.parametrize(("dialect", "n"), sorted(VARIANTS))
def test_frames_have_the_legacy_wire_shape(dialect: str, n: int) -> None:
    corpus_dialect, variant = VARIANTS[(dialect, n)]
    theirs, ours = _corpus_frames(corpus_dialect, variant), _ours(dialect, n)
    assert len(ours) == len(theirs)
    if dialect == "D7":
        assert ours[0].startswith(b"ERROR:LocalFineTunerAgent:model_loading:")
        assert theirs[0].startswith(b"ERROR:LocalFineTunerAgent:model_loading:")
        assert "—".encode() in ours[0]  # raw UTF-8 on the wire, as only D7 sends
        return
    (our_topic, our_json), (their_topic, their_json) = _split(ours), _split(theirs)
    if dialect == "D2":
        assert our_topic == b"PC2_ERROR:PC2_SERVICE:" and their_topic.startswith(b"PC2_ERROR:")
    else:
        assert our_topic == their_topic
    assert _keys(json.loads(our_json)) == _keys(json.loads(their_json))
    assert (
        json.dumps(json.loads(our_json)).encode() == our_json
    )  # json.dumps separators ", " / ": ", ASCII
    assert b'":"' not in our_json and b'", "' in our_json and our_json.isascii()
    assert 200 < sum(map(len, ours)) < 600  # ~300 B (D2: ~550 B, its envelope is larger)


def test_d2_cross_machine_copy_is_the_same_envelope_with_the_same_id() -> None:
    kw = {
        "source": "advanced_router",
        "error_type": "connection_error",
        "severity": "high",
        "at": AT,
    }
    original, copy = traffic.frames("D2", 1, 9, **kw)[0], traffic.cross_machine_copy(1, 9, **kw)[0]  # type: ignore[arg-type]
    theirs = _corpus_frames(
        "pc2_topic", "publish_error(send_to_mainpc=True)", b"CROSS_MACHINE_ERROR:PC2:"
    )[0]
    prefix = b"CROSS_MACHINE_ERROR:PC2:"
    assert copy.startswith(prefix)
    ours_obj, theirs_obj = json.loads(copy[len(prefix) :]), json.loads(theirs[len(prefix) :])
    assert _keys(ours_obj) == _keys(theirs_obj)
    orig_obj = json.loads(original[len(b"PC2_ERROR:PC2_SERVICE:") :])
    assert ours_obj == {**orig_obj, "cross_machine_alert": True, "originating_machine": "PC2"}
    assert ours_obj["error_data"]["error_id"] == traffic.token(1, 9)


def test_token_round_trip() -> None:
    assert traffic.token(7, 42) == "lt-p007-000000042"
    assert traffic.find_token(b"x lt-p007-000000042 lt-p001-000000001") == (7, 42)
    assert traffic.find_token("before lt-p255-999999999") == (255, 999_999_999)
    assert traffic.find_token(b"lt-p7-42") is None
    with pytest.raises(ValueError):
        traffic.token(1000, 0)
    for dialect in traffic.DIALECTS:
        for n in range(4):
            assert traffic.find_token(b"".join(_ours(dialect, n))) == (3, n)


@pytest.mark.parametrize("dialect", traffic.DIALECTS)
def test_decoder_keeps_the_token_in_the_event(dialect: str) -> None:
    for n in range(12):
        decoded = read_frames(
            traffic.frames(dialect, 2, n, source="LoadAgent002", error_type=EVENT_ERROR_TYPE)
        )
        assert isinstance(decoded, Decoded), decoded
        kept = decoded.message.encode() + msgspec.json.encode(decoded.details)
        assert traffic.find_token(kept) == (2, n)
        assert decoded.error_id == (traffic.token(2, n) if dialect in ("D1", "D2") else None)
    copy = read_frames(
        traffic.cross_machine_copy(2, 5, source="LoadAgent002", error_type=EVENT_ERROR_TYPE)
    )
    assert (
        isinstance(copy, Decoded)
        and copy.legacy.cross_machine_copy
        and copy.error_id == traffic.token(2, 5)
    )


def _print(decoded: Decoded | Rejected) -> str:
    assert isinstance(decoded, Decoded)
    return fingerprint(decoded.source, decoded.error_type, decoded.message)


def test_events_have_distinct_fingerprints_and_a_flood_has_one() -> None:
    for dialect in traffic.DIALECTS:  # one token is sent in one dialect only
        events = {
            _print(
                read_frames(
                    traffic.frames(dialect, p, n, source="LoadAgent", error_type=EVENT_ERROR_TYPE)
                )
            )
            for p in range(3)
            for n in range(20)
        }
        assert len(events) == 3 * 20, dialect
    flood = {
        _print(
            read_frames(
                traffic.flood_frames(
                    p, n, source="FloodAgent", error_type="memory_scheduler_timeout"
                )
            )
        )
        for p in range(3)
        for n in range(20)
    }
    assert len(flood) == 1


def test_malformed_frames_are_dead_lettered_with_the_token() -> None:
    reasons = set()
    for n in range(traffic.MALFORMED_VARIANTS * 2):
        frames = traffic.malformed(4, n)
        rejected = read_frames(frames)
        assert isinstance(rejected, Rejected), (frames, rejected)
        assert traffic.find_token(b"".join(frames)) == (4, n)
        reasons.add(rejected.reason.value)
    assert len(reasons) >= 5


# --------------------------------------------------------------------------- workload and mix


def test_workload_validates_and_integrates_bursts() -> None:
    with pytest.raises(ValueError):
        Workload(dialects={"D9": 1.0})
    with pytest.raises(ValueError):
        Workload(rate_per_sec=0)
    with pytest.raises(ValueError):
        Workload(duplicate_ratio=0.1, publishers=1)
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"rate_per_sec": -1}', type=Workload)
    w = Workload(
        rate_per_sec=100, duration_secs=10, burst=Burst(every_secs=4, length_secs=1, factor=5)
    )
    assert w.rate_at(0.5) == 500 and w.rate_at(1.5) == 100 and w.rate_at(4.2) == 500
    assert w.expected_slots() == 100 * 10 + 400 * 3  # bursts at 0, 4, 8
    assert msgspec.json.decode(msgspec.json.encode(w), type=Workload) == w


def test_mix_is_deterministic_and_follows_the_ratios() -> None:
    w = Workload(
        publishers=4,
        dialects={"D1": 2.0, "D2": 1.0, "D5": 1.0},
        duplicate_ratio=0.25,
        malformed_ratio=0.1,
        flood=FloodSpec(share=0.2),
        seed=7,
    )
    slots = [s for s, _ in zip(message_mix(w), range(20_000), strict=False)]
    again = [s for s, _ in zip(message_mix(w), range(20_000), strict=False)]
    other = [
        s
        for s, _ in zip(
            message_mix(msgspec.structs.replace(w, seed=8)), range(20_000), strict=False
        )
    ]
    assert slots == again and slots != other
    kinds = collections.Counter(s.kind for s in slots)
    assert abs(kinds[KIND_MALFORMED] / 20_000 - 0.1) < 0.01
    assert abs(kinds[KIND_FLOOD] / 20_000 - 0.9 * 0.2) < 0.01
    events = [s for s in slots if s.kind == KIND_EVENT]
    by_dialect = collections.Counter(s.dialect for s in events)
    assert (
        abs(by_dialect["D1"] / len(events) - 0.5) < 0.02
        and abs(by_dialect["D5"] / len(events) - 0.25) < 0.02
    )
    dups = [s for s in events if s.dup_socket >= 0]
    assert {s.dialect for s in dups} == {"D1", "D2"}
    assert abs(len(dups) / (by_dialect["D1"] + by_dialect["D2"]) - 0.25) < 0.02
    assert all(s.dup_socket != s.socket for s in dups) and {s.socket for s in slots} == {0, 1, 2, 3}


# --------------------------------------------------------------------------- the producer against a real ZMQ SUB


class _Sink:
    """A SUB bound on loopback that drains every frame set into ``received`` (in arrival order)."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.received: list[list[bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                self.received.append(self.sock.recv_multipart())

    def wait_for(self, count: int, timeout_secs: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_secs
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def sink() -> Iterator[_Sink]:
    ctx = zmq.Context()
    s = _Sink(ctx)
    try:
        yield s
    finally:
        s.close()
        ctx.term()


def _run(endpoint: str, workload: Workload) -> SentLog:
    with LoadProducer(endpoint, workload) as producer:
        producer.start()
        producer.wait()
        return producer.stop()


def test_producer_sends_the_logged_messages_in_order(sink: _Sink) -> None:
    w = Workload(
        rate_per_sec=3000,
        duration_secs=1.0,
        publishers=3,
        dialects=ALL_DIALECTS,
        duplicate_ratio=0.3,
        malformed_ratio=0.1,
        flood=FloodSpec(share=0.1),
        seed=3,
    )
    log = _run(sink.endpoint, w)
    sink.wait_for(log.total())
    assert log.publishers == 3 and log.total() - log.duplicates_sent() == w.expected_slots() == 3000
    assert len(sink.received) == log.total()
    by_kind: collections.Counter[int] = collections.Counter()
    last_n: dict[int, int] = {}
    seen: collections.Counter[tuple[int, int]] = collections.Counter()
    copied = log.tokens(
        KIND_DUPLICATE
    )  # a copy may overtake its original (another socket): not ordered
    for frames in sink.received:
        tok = traffic.find_token(b"".join(frames))
        assert tok is not None
        seen[tok] += 1
        if tok not in copied:  # each socket's own messages arrive in that socket's order
            assert tok[1] > last_n.get(tok[0], -1)
            last_n[tok[0]] = tok[1]
        decoded = read_frames(frames)
        if isinstance(decoded, Rejected):
            by_kind[KIND_MALFORMED] += 1
        elif decoded.source == "FloodAgent":
            by_kind[KIND_FLOOD] += 1
    assert by_kind[KIND_MALFORMED] == log.malformed_sent() > 0
    assert by_kind[KIND_FLOOD] == log.flood_sent() > 0
    assert sum(1 for c in seen.values() if c == 2) == log.duplicates_sent() > 0
    assert set(seen) == log.expected_events() | log.tokens(KIND_MALFORMED) | log.tokens(KIND_FLOOD)
    for p in range(3):  # own tokens numbered 0.. per socket; copies come from another socket
        own = [n for n, k in zip(log.n[p], log.kind[p], strict=True) if k != KIND_DUPLICATE]
        assert own == list(range(len(own)))
        assert log.sent_ns[p] == sorted(log.sent_ns[p]) and log.sent_ns[p][0] >= log.started_ns
        dup_pubs = [
            q
            for q, k in zip(log.token_publisher[p], log.kind[p], strict=True)
            if k == KIND_DUPLICATE
        ]
        assert dup_pubs and p not in dup_pubs
    assert log.tokens(KIND_DUPLICATE) <= log.expected_events()
    assert sum(log.per_second()) == log.total()


def test_producer_paces_to_the_rate_with_bursts(sink: _Sink) -> None:
    w = Workload(
        rate_per_sec=400,
        duration_secs=2.0,
        publishers=2,
        burst=Burst(every_secs=1.0, length_secs=0.5, factor=4),
    )
    log = _run(sink.endpoint, w)
    assert log.total() == w.expected_slots() == 400 * 2 + 1200 * 2 // 2  # 2 bursts of 0.5 s at 4x
    times = sorted(t - log.started_ns for ts in log.sent_ns for t in ts)
    halves = collections.Counter(int(t // 500_000_000) for t in times)  # half-second bins
    assert halves[0] > 2 * halves[1] and halves[2] > 2 * halves[3]  # burst halves carry ~4x
    assert halves[0] + halves[1] < 0.8 * log.total()  # not sent all at once


def test_producer_stops_early_and_reports_live_count(sink: _Sink) -> None:
    producer = LoadProducer(
        sink.endpoint, Workload(rate_per_sec=500, duration_secs=60.0, publishers=2)
    )
    with producer:
        producer.start()
        deadline = time.monotonic() + 10
        while producer.sent_count < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert producer.sent_count >= 50 and not producer.finished
        log = producer.stop()
        assert producer.stop() is log and producer.finished
    assert 50 <= log.total() < 60 * 500
    sink.wait_for(log.total())
    assert len(sink.received) == log.total()


def test_producer_start_fails_without_a_subscriber() -> None:
    producer = LoadProducer(
        "tcp://127.0.0.1:1", Workload(duration_secs=1.0)
    )  # nothing listens on port 1
    with pytest.raises(TimeoutError):
        producer.start(timeout_secs=0.5)
    assert not producer._process.is_alive()


# --------------------------------------------------------------------------- a real bridge and nats-server


async def test_real_bridge_stores_every_dialect_with_its_token(
    nats_server: NatsServerProcess, tmp_path: Path
) -> None:
    w = Workload(
        rate_per_sec=600,
        duration_secs=1.0,
        publishers=3,
        dialects=ALL_DIALECTS,
        duplicate_ratio=0.3,
        malformed_ratio=0.08,
        flood=FloodSpec(share=0.05),
        seed=11,
    )
    cfg = make_config(nats_server.url, tmp_path / "bridge")
    async with running_bridge(cfg) as bridge:
        log = await anyio.to_thread.run_sync(_run, bridge.zmq_endpoints[0], w)
        events, flood = log.expected_events(), log.tokens(KIND_FLOOD)
        expected = len(events) + len(flood) + log.malformed_sent()
        assert await wait_for_count(nats_server.url, cfg.stream.name, expected) == expected
    stored = await fetch_all(nats_server.url, cfg.stream.name)
    by_token: dict[tuple[int, int], list[ErrorEvent]] = collections.defaultdict(list)
    dead: set[tuple[int, int] | None] = set()
    for m in stored:
        if isinstance(m.msg, ErrorEvent):
            tok = traffic.find_token(m.msg.message.encode() + msgspec.json.encode(m.msg.details))
            assert tok is not None, m.msg
            by_token[tok].append(m.msg)
        elif isinstance(m.msg, DeadLetter):
            dead.add(traffic.find_token(b"".join(m.msg.frames)))
    assert set(by_token) == events | flood and all(len(v) == 1 for v in by_token.values())
    assert dead == log.tokens(KIND_MALFORMED) and log.duplicates_sent() > 0
    stored_events = [v[0] for v in by_token.values()]
    assert {e.legacy.dialect.value for e in stored_events} == {
        "errpub_envelope",
        "pc2_topic",
        "prefix_flat",
        "multipart_colon",
        "multipart_bare",
        "bare_json",
        "prefix_text",
    }
    assert {e.legacy.variant for e in stored_events if e.legacy.dialect.value == "prefix_flat"} == {
        "flat_epoch",
        "flat_src_iso",
        "flat_nots",
        "flat_iso_enum",
    }
    for tok, (event,) in by_token.items():
        if event.legacy.dialect.value in ("errpub_envelope", "pc2_topic"):
            assert event.event_id == traffic.token(*tok)  # Nats-Msg-Id == legacy error_id == token
        if (
            tok in events
        ):  # D4 dicts carry no agent field, flat_src_iso no error_type (legacy-bus.md §1)
            source = (
                "unknown"
                if event.legacy.dialect.value == "multipart_colon"
                else source_name(tok[0])
            )
            error_type = "" if event.legacy.variant == "flat_src_iso" else EVENT_ERROR_TYPE
            assert (event.source, event.error_type) == (source, error_type)

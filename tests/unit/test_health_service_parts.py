"""Decisions of the fleet-health parts, with injected clocks: the sink's latest-per-key and stream
policy, heartbeat rates and status, the fleet view's staleness and table, and the health config."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from bridge.adapters.health_kv import HealthStoreRefused, HealthStoreUnavailable, bucket_definition
from bridge.config.load import load_config, parse_config
from bridge.errors import ConfigError
from bridge.health.heartbeat import BridgeStats, HeartbeatBuilder, collect_stats
from bridge.health.sink import HealthSink
from bridge.metrics import Metrics
from consumers.health_view import fleet_rows, render_table
from contracts import BridgeHeartbeat, HealthReport, HealthStatus, decode, encode

T0 = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "ops" / "config" / "busbridge.example.yaml"


def _report(status: HealthStatus, n: int = 0, service: str = "A") -> HealthReport:
    return HealthReport(
        event_id=f"r{n}",
        machine="m",
        service=service,
        status=status,
        checked_at=T0,
        interval_secs=30.0,
    )


def _beat(n: int = 0) -> BridgeHeartbeat:
    return BridgeHeartbeat(
        event_id=f"h{n}",
        bridge_id="m",
        machine="m",
        sent_at=T0,
        status=HealthStatus.HEALTHY,
        interval_secs=10.0,
    )


class _Writer:
    """In-memory KV and stream; ``down`` makes every write fail like a NATS outage."""

    def __init__(self) -> None:
        self.kv: dict[str, bytes] = {}
        self.stream: list[tuple[str, str]] = []
        self.down = False
        self.refuse: set[str] = set()

    async def put(self, key: str, payload: bytes) -> None:
        if self.down:
            raise HealthStoreUnavailable("down")
        if key in self.refuse:
            raise HealthStoreRefused("too big")
        self.kv[key] = payload

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        if self.down:
            raise HealthStoreUnavailable("down")
        self.stream.append((subject, decode(payload).event_id))


async def _drain(sink: HealthSink) -> None:
    with anyio.fail_after(5):
        while sink.pending:
            await anyio.sleep(0.01)


async def _with_sink(writer: _Writer, clock: list[float], steps) -> None:
    sink = HealthSink(
        writer,
        lambda m: (f"subj.{m.event_id}", {}),
        refresh_secs=300.0,
        retry_secs=0.01,
        retry_max_secs=0.02,
        clock=lambda: clock[0],
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(sink.run)
        await steps(sink)
        tg.cancel_scope.cancel()


async def test_sink_streams_reports_on_change_or_refresh_and_every_heartbeat() -> None:
    writer, clock = _Writer(), [0.0]

    async def steps(sink: HealthSink) -> None:
        for n, status in enumerate(
            [
                HealthStatus.HEALTHY,
                HealthStatus.HEALTHY,
                HealthStatus.DEGRADED,
                HealthStatus.DEGRADED,
            ]
        ):
            sink.offer("agent.m.A", _report(status, n))
            await _drain(sink)
        clock[0] = 301.0  # the refresh is due: the unchanged status is stored again
        sink.offer("agent.m.A", _report(HealthStatus.DEGRADED, 4))
        for n in range(3):
            sink.offer("bridge.m.m", _beat(n))
            await _drain(sink)

    await _with_sink(writer, clock, steps)
    assert [eid for _, eid in writer.stream] == ["r0", "r2", "r4", "h0", "h1", "h2"]
    assert (
        decode(writer.kv["agent.m.A"]).event_id == "r4"
        and decode(writer.kv["bridge.m.m"]).event_id == "h2"
    )


async def test_sink_holds_the_latest_value_through_an_outage_and_keeps_a_pending_stream_copy() -> (
    None
):
    writer, clock = _Writer(), [0.0]

    async def steps(sink: HealthSink) -> None:
        sink.offer("agent.m.A", _report(HealthStatus.HEALTHY, 0))
        await _drain(sink)
        writer.down = True
        sink.offer("agent.m.A", _report(HealthStatus.UNHEALTHY, 1))  # a change: wants a stream copy
        await anyio.sleep(0.05)
        sink.offer(
            "agent.m.A", _report(HealthStatus.UNHEALTHY, 2)
        )  # no change, but inherits the copy
        for n in range(5):
            sink.offer("bridge.m.m", _beat(n))
        await anyio.sleep(0.05)
        assert sink.pending == 2  # one per key, however many offers
        writer.down = False
        await _drain(sink)

    await _with_sink(writer, clock, steps)
    assert sorted(eid for _, eid in writer.stream) == [
        "h4",
        "r0",
        "r2",
    ]  # latest only, the change kept
    assert decode(writer.kv["agent.m.A"]).event_id == "r2"


async def test_sink_drops_a_value_the_server_refuses_for_good() -> None:
    writer, clock = _Writer(), [0.0]
    writer.refuse.add("agent.m.Huge")

    async def steps(sink: HealthSink) -> None:
        sink.offer("agent.m.Huge", _report(HealthStatus.HEALTHY, 0, "Huge"))
        sink.offer("agent.m.A", _report(HealthStatus.HEALTHY, 1))
        await _drain(sink)

    await _with_sink(writer, clock, steps)
    assert list(writer.kv) == ["agent.m.A"]


def test_heartbeat_rates_cover_the_time_since_the_previous_one_and_status_follows_readiness() -> (
    None
):
    clock = [100.0]
    builder = HeartbeatBuilder(
        bridge_id="b",
        machine="m",
        interval_secs=10.0,
        phase=lambda: "nats_primary",
        version="9.9",
        clock=lambda: clock[0],
        now=lambda: T0,
    )
    clock[0] = 110.0
    first = builder.build(
        BridgeStats(received_total=500, stored_total=400, ready=True), agents_probed=3
    )
    clock[0] = 115.0
    second = builder.build(
        BridgeStats(
            received_total=600,
            stored_total=400,
            dropped_total=5,
            degraded=True,
            not_ready_reasons=("nats_disconnected",),
        )
    )
    third = builder.build(BridgeStats(received_total=600, stored_total=400))
    assert (first.received_per_sec, first.stored_per_sec, first.status) == (
        50.0,
        40.0,
        HealthStatus.HEALTHY,
    )
    assert (second.received_per_sec, second.stored_per_sec, second.dropped_per_sec) == (
        20.0,
        0.0,
        1.0,
    )
    assert (second.status, second.not_ready_reasons) == (
        HealthStatus.DEGRADED,
        ["nats_disconnected"],
    )
    assert third.status is HealthStatus.UNHEALTHY
    assert (first.phase, first.version, first.agents_probed, first.interval_secs) == (
        "nats_primary",
        "9.9",
        3,
        10.0,
    )
    assert len({first.event_id, second.event_id, third.event_id}) == 3


def test_collect_stats_sums_every_label_of_the_bridge_counters() -> None:
    m = Metrics()
    m.frames_received.inc(7)
    m.acked.labels("error_event").inc(3)
    m.acked.labels("dead_letter").inc(2)
    m.dropped.labels("shutdown").inc(1)
    m.spool_rows.set(4)
    m.nats_connected.set(1)
    stats = collect_stats(m, lambda: (False, {"reasons": ["spool_backlog"], "degraded": True}))
    assert (
        stats.received_total,
        stats.stored_total,
        stats.dropped_total,
        stats.spool_messages,
    ) == (7, 5, 1, 4)
    assert stats.nats_connected and stats.degraded and stats.not_ready_reasons == ("spool_backlog",)


def test_fleet_rows_mark_entries_stale_past_their_own_intervals() -> None:
    now = T0 + timedelta(seconds=100)
    entries = [
        (
            "agent.m.A",
            encode(_report(HealthStatus.HEALTHY)),
            now - timedelta(seconds=89),
        ),  # 3 x 30 s not yet past
        (
            "agent.m.B",
            encode(_report(HealthStatus.DEGRADED, service="B")),
            now - timedelta(seconds=91),
        ),
        ("bridge.m.m", encode(_beat()), now - timedelta(seconds=31)),  # 3 x 10 s past
        ("something.else", b"not json", now),
    ]
    rows = {r.key: r for r in fleet_rows(entries, now, stale_after_intervals=3.0)}
    assert [rows[k].stale for k in ("agent.m.A", "agent.m.B", "bridge.m.m")] == [False, True, True]
    assert rows["agent.m.B"].status == "degraded"  # the last reported status is kept
    assert (rows["something.else"].kind, rows["something.else"].status) == ("?", "unknown")
    ordered = [r.key for r in fleet_rows(entries, now, stale_after_intervals=3.0)]
    assert ordered == [
        "something.else",
        "bridge.m.m",
        "agent.m.A",
        "agent.m.B",
    ]  # machine "?" first, bridges first
    assert not any(
        r.stale for r in fleet_rows(entries, now, stale_after_intervals=3.0, stale_after_secs=1000)
    )


def test_table_colours_only_when_asked_and_shows_stale_with_the_last_status() -> None:
    now = T0 + timedelta(seconds=100)
    rows = fleet_rows(
        [("bridge.m.m", encode(_beat()), now - timedelta(seconds=75))],
        now,
        stale_after_intervals=3.0,
    )
    plain, coloured = render_table(rows), render_table(rows, colour=True)
    assert "stale (last healthy)" in plain and "1m15s" in plain and "\x1b[" not in plain
    assert "\x1b[90mstale (last healthy)" in coloured
    assert "no health entries" in render_table([])


def test_example_health_section_equals_the_defaults_and_the_bucket_definition() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.health == load_config(None).health
    assert bucket_definition(cfg.health) == {
        "bucket": "busbridge_health",
        "description": bucket_definition(cfg.health)["description"],
        "history": 1,
        "ttl": 300 * 10**9,
        "storage": "file",
        "replicas": 1,
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("health: {kv_ttl_secs: 20, heartbeat_interval_secs: 10}", "health.kv_ttl_secs"),
        ("health: {startup_config: /x.yaml, probe_interval_secs: 200}", "health.kv_ttl_secs"),
        ("health: {probe_methods: []}", "health.probe_methods"),
        ("health: {probe_methods: [smoke_signals]}", "health.probe_methods"),
        ("health: {service_methods: {A: []}}", "health.service_methods"),
        ("health: {max_concurrent_probes: 0, bogus: 1}", "health.bogus"),
        ("health: {probe_host: ' '}", "health.probe_host"),
    ],
)
def test_bad_health_config_is_refused_with_its_path(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text + "\n")
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_bad_port_offset_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT_OFFSET", "ten")
    with pytest.raises(ConfigError, match=r"health\.port_offset"):
        parse_config("{}")
    assert (
        parse_config("health: {port_offset: 5}").health.port_offset == 5
    )  # an explicit value wins


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.health_view import _use_colour

    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert _use_colour(Tty()) and not _use_colour(object())  # type: ignore[arg-type]
    monkeypatch.setenv("NO_COLOR", "1")
    assert not _use_colour(Tty())  # type: ignore[arg-type]


async def test_read_bucket_gives_each_key_once_at_its_newest_revision() -> None:
    """A heartbeat written while the watcher reads the initial values arrives twice."""
    from types import SimpleNamespace

    from consumers.health_view import read_bucket

    entries = [
        SimpleNamespace(key="bridge.m.a", value=b"old", created=None, revision=3),
        SimpleNamespace(key="agent.m.x", value=b"x", created=None, revision=4),
        SimpleNamespace(key="bridge.m.a", value=b"new", created=None, revision=5),
        None,  # nats-py's end of the initial values
    ]

    class Watcher:
        async def updates(self, timeout: float) -> object:  # noqa: ASYNC109 (nats-py's KV watcher signature)
            return entries.pop(0)

        async def stop(self) -> None:
            pass

    class Bucket:
        async def watchall(self, ignore_deletes: bool) -> Watcher:
            return Watcher()

    assert await read_bucket(Bucket()) == [("bridge.m.a", b"new", None), ("agent.m.x", b"x", None)]  # type: ignore[arg-type]

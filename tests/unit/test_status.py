"""``busbridge status`` rendering (consumers.status): totals, rates between two reads, p99 from
the latency histogram, the phase's fallbacks, readiness reasons. Readings are built from the
bridge's real registry (``Metrics``) rendered to Prometheus text and parsed back."""

from __future__ import annotations

from prometheus_client import generate_latest

from bridge.metrics import Metrics
from consumers.status import Reading, admin_url, parse_metrics, render

READY = {"status": "ready", "reasons": []}


def _reading(
    m: Metrics, at: float, ready: dict | None = None, phase: dict | None = None
) -> Reading:
    return Reading(
        at, parse_metrics(generate_latest(m.registry).decode()), ready or READY, phase or {}
    )


def _line(screen: str, label: str) -> str:
    [line] = [ln for ln in screen.splitlines() if ln.split(" ", 1)[0] == label]
    return line[12:]


def test_totals_and_rates_between_two_reads() -> None:
    m = Metrics()
    m.frames_received.inc(100)
    m.frames_received_bytes.inc(4096)
    m.acked.labels("error_event").inc(90)
    first = _reading(m, at=10.0)
    m.frames_received.inc(10)
    m.frames_received_bytes.inc(2048)
    m.acked.labels("error_event").inc(6)
    m.acked.labels("dead_letter").inc(4)
    m.decoded.labels("errpub_envelope").inc(105)
    m.dead_letters.labels("invalid_json").inc(5)
    m.spool_rows.set(12)
    m.spool_bytes.set(3 * 1024 * 1024)
    m.spool_evictions.labels("max_bytes", "debug").inc(2)
    m.spool_retained_rows.set(40)
    m.spool_restored.inc(7)
    m.zmq_publishers.set(3)
    m.nats_connected.set(1)
    m.floods_active.set(1)
    m.flood_suppressed.labels("timeout_error").inc(40)
    m.config_reloads.labels("applied").inc()
    screen = render(first, _reading(m, at=12.0), url="http://127.0.0.1:9150", machine="MainPC")

    assert screen.splitlines()[0] == "busbridge MainPC  http://127.0.0.1:9150  (rates over 2.0 s)"
    assert (
        _line(screen, "ingest")
        == "110 frames (5.0/s, 1.0 KiB/s)  105 decoded  5 dead letters (2.5/s)  0 unknown severity"
    )
    assert _line(screen, "publish").startswith(
        "100 acked (5.0/s)  0 in flight  0 pending  0 failures  p99 -"
    )
    assert _line(screen, "spool") == (
        "12 messages  3.0 MiB  oldest 0 s  2 evicted  0 dropped  40 retained  7 restored"
    )
    assert _line(screen, "nats") == "connected  0 reconnects"
    assert _line(screen, "publishers").startswith("3 ZMQ connections")
    assert _line(screen, "floods") == "1 active  40 suppressed (20.0/s)  0 flood events"
    assert _line(screen, "reloads") == "1 applied  0 partial  0 refused  0 invalid"
    assert _line(screen, "state") == "ready"


def test_one_read_shows_totals_without_rates() -> None:
    m = Metrics()
    m.frames_received.inc(3)
    screen = render(_reading(m, at=1.0))
    assert screen.splitlines()[0] == "busbridge"
    assert _line(screen, "ingest").startswith("3 frames  0 decoded  0 dead letters  ")


def test_p99_is_the_bucket_bound_of_the_interval() -> None:
    m = Metrics()
    for _ in range(100):
        m.publish_latency.observe(0.2)  # before the interval: slow
    first = _reading(m, at=0.0)
    for _ in range(99):
        m.publish_latency.observe(0.0015)
    m.publish_latency.observe(0.004)
    assert "p99 <= 2 ms" in _line(render(first, _reading(m, at=1.0)), "publish")
    assert "p99 <= 250 ms" in _line(render(first), "publish")  # one read: since start


def test_phase_from_the_phase_endpoint_else_the_metric_else_dash() -> None:
    m = Metrics()
    assert _line(
        render(_reading(m, 0, phase={"phase": "nats_primary", "parity": {"ratio": 0.995}})), "phase"
    ) == ("nats_primary  parity 99.5 %")
    paused = {"phase": "dual", "parity": {"ratio": None, "running": False}}
    assert (
        _line(render(_reading(m, 0, phase=paused)), "phase") == "dual  parity paused (catching up)"
    )
    m.phase.labels("dual").set(1)
    assert _line(render(_reading(m, 0)), "phase") == "dual"  # parity -1: nothing compared yet
    bare = Reading(0.0, parse_metrics("busbridge_ready 1\n"), READY, {})
    assert _line(render(bare), "phase") == "-"


def test_not_ready_shows_the_status_and_its_reasons() -> None:
    m = Metrics()
    ready = {"status": "degraded", "reasons": ["nats_disconnected", "spool_backlog"]}
    screen = render(_reading(m, 0, ready=ready))
    assert _line(screen, "state") == "degraded (nats_disconnected, spool_backlog)"
    assert _line(screen, "nats") == "disconnected  0 reconnects"


def test_admin_url_reads_a_wildcard_bind_on_loopback() -> None:
    assert admin_url("0.0.0.0", 9150) == "http://127.0.0.1:9150"
    assert admin_url("192.168.100.17", 9150) == "http://192.168.100.17:9150"
    assert admin_url("::", 9150) == "http://[::1]:9150"


def test_phase_show_says_when_parity_is_paused() -> None:
    import argparse
    import io

    from consumers.phase_cli import _show

    local = {
        "machine": "MainPC",
        "phase": "dual",
        "source": "file",
        "last_request": None,
        "parity": {"ratio": None, "window_secs": 300, "running": False},
        "guard_inputs": {"backlog": 1234},
    }
    out = io.StringIO()
    _show(out, argparse.Namespace(json=False), local, None, "no NATS")
    assert "  parity - over 300 s (paused while catching up); backlog 1234\n" in out.getvalue()
    out = io.StringIO()
    _show(
        out,
        argparse.Namespace(json=False),
        local | {"parity": {"ratio": 1.0, "window_secs": 300, "running": True}},
        None,
        "",
    )
    assert "  parity 1.0000 over 300 s; backlog 1234\n" in out.getvalue()


def test_intake_line_per_nats_input_acked_naked_redelivered_with_rates() -> None:
    m = Metrics()
    legacy = {o: m.intake_messages.labels("legacy", o) for o in ("stored", "duplicate", "retry")}
    native = m.intake_messages.labels("native", "stored")
    legacy["stored"].inc(300)
    legacy["duplicate"].inc(300)
    native.inc(10)
    first = _reading(m, at=10.0)
    legacy["stored"].inc(100)
    legacy["duplicate"].inc(100)
    m.intake_messages.labels("legacy", "suppressed").inc(5)
    m.intake_messages.labels("legacy", "rejected").inc(3)
    legacy["retry"].inc(4)
    m.intake_messages.labels("legacy", "abandoned").inc(2)
    m.intake_messages.labels("legacy", "redelivered").inc(1)
    native.inc(2)
    screen = render(first, _reading(m, at=12.0))
    assert _line(screen, "intake") == (
        "native 12 acked (1.0/s)  0 nak'ed (0.0/s)  0 redelivered (0.0/s)"
        " | legacy 808 acked (104.0/s)  6 nak'ed (3.0/s)  1 redelivered (0.5/s)"
    )
    # one read: totals only; no NATS input at all: a dash
    assert _line(render(first), "intake") == (
        "native 10 acked  0 nak'ed  0 redelivered | legacy 600 acked  0 nak'ed  0 redelivered"
    )
    assert _line(render(_reading(Metrics(), at=1.0)), "intake") == "-"

"""``loadtest.bridge_watch.metric`` against a real exposition served over HTTP: the same sums
as parsing the whole text, while it parses only the requested samples' lines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.bridge_watch import metric


def _registry() -> CollectorRegistry:
    r = CollectorRegistry()
    published = Counter("bb_published", "published", ["kind"], registry=r)
    published.labels("error_event").inc(7)
    published.labels("dead_letter").inc(2)
    Gauge("bb_spool_messages", "spool", registry=r).set(295)
    Gauge("bb_spool_messages_max", "a name the first one is a prefix of", registry=r).set(9)
    latency = Histogram("bb_latency_seconds", "latency", buckets=(0.01, 0.1), registry=r)
    for value in (0.005, 0.05, 0.5):
        latency.observe(value)
    return r


@pytest.fixture
def admin_port() -> Iterator[int]:
    body = generate_latest(_registry())

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _whole(name: str, **labels: str) -> float:
    text = generate_latest(_registry()).decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize(
    ("name", "labels", "expected"),
    [
        ("bb_published_total", {}, 9.0),
        ("bb_published_total", {"kind": "dead_letter"}, 2.0),
        ("bb_spool_messages", {}, 295.0),  # not summed with bb_spool_messages_max
        ("bb_spool_messages_max", {}, 9.0),
        ("bb_latency_seconds_bucket", {"le": "0.1"}, 2.0),
        ("bb_latency_seconds_count", {}, 3.0),
        ("bb_absent", {}, 0.0),
    ],
)
def test_metric_sums_what_parsing_the_whole_exposition_sums(
    admin_port: int, name: str, labels: dict[str, str], expected: float
) -> None:
    assert metric(admin_port, name, **labels) == expected == _whole(name, **labels)


def test_metric_is_zero_when_the_bridge_does_not_answer(admin_port: int) -> None:
    assert metric(1, "bb_spool_messages") == 0.0

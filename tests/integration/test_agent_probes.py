"""Agent probes on real sockets: ZMQ REQ and HTTP /health against fake legacy agents,
method fallback, WP-07's plain-string request, timeouts with socket reset, and probe rounds."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from bridge.adapters.agent_probe import ProbeClient
from bridge.config.model import ProbeMethod
from bridge.health.probes import AgentProber
from bridge.health.rounds import ProbeRounds
from bridge.health.startup_config import AgentSpec
from contracts.messages import HealthReport, HealthStatus
from tests.support.fake_agents import FakeAgents, base_agent_reply, http, hung, zmq_agent

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 0.5
WP07 = json.dumps(
    {
        "agent_name": "EmotionEngine",
        "health_metrics": {"status": "healthy"},
        "version": "1.0",
        "schema": "WP-07-unified-health",
    }
).encode()


def _wp07(request: bytes) -> bytes:
    return WP07 if request == b"health_check" else b"Unknown health request"


def _prober(client: ProbeClient, **kw) -> AgentProber:
    settings = {
        "machine": "mainpc",
        "bridge_id": "mainpc",
        "host": "127.0.0.1",
        "timeout_secs": TIMEOUT,
        "interval_secs": 1.0,
        "methods": [ProbeMethod.ZMQ_REQ, ProbeMethod.HTTP_NEXT_PORT],
    }
    return AgentProber(client, **{**settings, **kw})


def _spec(agent) -> AgentSpec:
    return AgentSpec(name=agent.name, health_check_port=agent.port, group=agent.group)


async def test_each_protocol_and_reply_shape_over_real_sockets() -> None:
    agents = [
        zmq_agent("Ok", base_agent_reply("ok", "healthy")),
        zmq_agent("Degraded", base_agent_reply("degraded", "degraded")),
        zmq_agent("Wp07", _wp07),
        zmq_agent("Garbage", b"\x00\xff\xfe\x01 garbage"),
        zmq_agent("ErrorBusService", b'{"status": "success", "data": {"status": "ok"}}'),
        http("HttpOnly", 200, base_agent_reply("ok", "degraded")),
        http("Moc", 503, b'{"status": "unhealthy", "reason": "db"}'),
        hung("Hung"),
    ]
    async with FakeAgents(agents) as fleet, ProbeClient() as client:
        prober = _prober(client)
        reports = {a.name: await prober.probe(_spec(a)) for a in fleet.agents}

    def summary(r: HealthReport) -> tuple:
        return r.status, r.reply_shape, r.method, r.reason

    assert summary(reports["Ok"]) == (HealthStatus.HEALTHY, "base_agent", "zmq_req", "")
    assert summary(reports["Degraded"]) == (HealthStatus.DEGRADED, "base_agent", "zmq_req", "")
    assert summary(reports["Wp07"]) == (HealthStatus.HEALTHY, "wp07_unified", "zmq_req", "")
    assert agents[2].requests == [b'{"action": "health_check"}', b"health_check"]
    assert summary(reports["Garbage"]) == (
        HealthStatus.UNKNOWN,
        "unrecognised",
        "zmq_req",
        "unrecognised_reply",
    )
    assert summary(reports["ErrorBusService"]) == (
        HealthStatus.HEALTHY,
        "error_bus_service",
        "zmq_req",
        "",
    )
    assert summary(reports["HttpOnly"]) == (
        HealthStatus.DEGRADED,
        "base_agent",
        "http_next_port",
        "",
    )
    assert reports["HttpOnly"].endpoint == f"http://127.0.0.1:{agents[5].port + 1}/health"
    assert summary(reports["Moc"]) == (
        HealthStatus.UNHEALTHY,
        "status_field",
        "http_next_port",
        "http_error",
    )
    assert reports["Moc"].http_status == 503
    assert summary(reports["Hung"]) == (HealthStatus.UNHEALTHY, "none", "zmq_req", "timeout")
    assert [a["reason"] for a in reports["Hung"].details["attempts"]] == ["timeout", "timeout"]
    for name in ("Ok", "Degraded", "Wp07", "HttpOnly"):
        assert reports[name].latency_secs is not None and 0 < reports[name].latency_secs < TIMEOUT
    assert (
        reports["Ok"].endpoint == f"tcp://127.0.0.1:{agents[0].port}"
        and reports["Ok"].group == "foundation_services"
    )
    assert reports["Ok"].details["status"] == "ok" and reports["Ok"].raw_status == "ok"


async def test_nothing_listening_is_connection_refused_on_both_methods() -> None:
    async with FakeAgents([http("Placeholder", 200, b"ok")]) as fleet, ProbeClient() as client:
        free = fleet.agents[0].port  # the ZMQ port of an HTTP-only agent: nothing listens there
        report = await _prober(client, methods=[ProbeMethod.ZMQ_REQ, ProbeMethod.HTTP]).probe(
            AgentSpec(name="Gone", health_check_port=free)
        )
    assert (report.status, report.reason) == (HealthStatus.UNHEALTHY, "connection_refused")
    assert [a["reason"] for a in report.details["attempts"]] == [
        "connection_refused",
        "connection_refused",
    ]


async def test_zmq_req_to_an_http_port_is_a_protocol_mismatch() -> None:
    async with (
        FakeAgents([http("Web", 200, b'{"status": "ok"}')]) as fleet,
        ProbeClient() as client,
    ):
        web_port = fleet.agents[0].port + 1
        report = await _prober(client, methods=[ProbeMethod.ZMQ_REQ]).probe(
            AgentSpec(name="Web", health_check_port=web_port)
        )
        fallback = await _prober(client, methods=[ProbeMethod.ZMQ_REQ, ProbeMethod.HTTP]).probe(
            AgentSpec(name="Web", health_check_port=web_port)
        )
    assert (report.status, report.reason) == (HealthStatus.UNHEALTHY, "protocol_mismatch")
    assert (fallback.status, fallback.method) == (HealthStatus.HEALTHY, "http")


async def test_a_timed_out_socket_is_replaced_so_the_next_probe_gets_the_answer() -> None:
    agent = zmq_agent("Slow", base_agent_reply("ok", "healthy"))
    agent.delays_secs = [TIMEOUT * 2]  # the first answer comes after the probe gave up
    async with FakeAgents([agent]) as fleet, ProbeClient() as client:
        prober = _prober(client, methods=[ProbeMethod.ZMQ_REQ])
        first = await prober.probe(_spec(fleet.agents[0]))
        await anyio.sleep(
            TIMEOUT * 2
        )  # the late answer goes to the closed socket, not to the next probe
        second = await prober.probe(_spec(fleet.agents[0]))
    assert (first.status, first.reason) == (HealthStatus.UNHEALTHY, "timeout")
    assert (second.status, second.reason, second.reply_shape) == (
        HealthStatus.HEALTHY,
        "",
        "base_agent",
    )
    assert len(agent.requests) == 2


class _CountingTransport:
    """A ``ProbeClient`` that records how many ZMQ sessions were open at once."""

    def __init__(self, client: ProbeClient) -> None:
        self.client, self.open, self.max_open = client, 0, 0

    @asynccontextmanager
    async def zmq_session(self, endpoint: str, timeout_secs: float):
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            async with self.client.zmq_session(endpoint, timeout_secs) as session:
                yield session
        finally:
            self.open -= 1

    async def http_get(self, url: str, timeout_secs: float):
        return await self.client.http_get(url, timeout_secs)


async def test_rounds_probe_every_agent_with_bounded_concurrency_and_reread_the_file(
    tmp_path: Path,
) -> None:
    agents = [hung(f"Hung{i}") for i in range(4)] + [zmq_agent("Ok", b'{"status": "ok"}')]
    reports: list[HealthReport] = []
    async with FakeAgents(agents) as fleet, ProbeClient() as client:
        path = tmp_path / "startup_config.yaml"
        path.write_text(fleet.mainpc_yaml())
        transport = _CountingTransport(client)
        rounds = ProbeRounds(
            _prober(transport, methods=[ProbeMethod.ZMQ_REQ]),
            path,
            fleet.offset,
            interval_secs=0.1,
            max_concurrent=2,
            exclude=["Hung3"],
            on_report=reports.append,
        )
        assert await rounds.round() == 4
        path.write_text("not: [a startup config")  # a broken edit keeps the agents known before
        assert await rounds.round() == 4
    assert sorted(r.service for r in reports) == sorted(["Hung0", "Hung1", "Hung2", "Ok"] * 2)
    assert {r.service: r.status for r in reports}["Ok"] is HealthStatus.HEALTHY
    assert transport.max_open == 2  # concurrent, and never more than max_concurrent_probes

"""One health check of one legacy agent -> one ``HealthReport`` (legacy-bus.md §4).

Methods are tried in order (``health.probe_methods``, or the agent's entry in
``health.service_methods``) until one gets an answer:

* ``zmq_req``: REQ to ``tcp://<probe_host>:<health_check_port>`` (BaseAgent's REP)
  with ``{"action": "health_check"}``; when the answer is WP-07's ``Unknown health
  request`` the plain string ``health_check`` is sent on the same socket;
* ``http_next_port``: ``GET http://<probe_host>:<health_check_port + 1>/health``
  (BaseAgent's HTTP: the Docker HEALTHCHECK's port is the ZMQ REP, HTTP is on +1);
* ``http``: ``GET http://<probe_host>:<health_check_port>/health`` (FastAPI services).

The first answer decides (``bridge.health.replies.normalise_reply``), even a
garbage one (status ``unknown``: something answers there). When no method gets an
answer the agent is ``unhealthy`` with the first method's reason (``timeout``,
``connection_refused``, ``protocol_mismatch``, ``http_failure``), and every
attempt is listed in ``details["attempts"]``. Each request is bounded by
``probe_timeout_secs``; a ZMQ socket that timed out is closed, never reused.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.adapters.agent_probe import Answer, NoAnswer, ZmqSession
from bridge.config.model import BridgeConfig, ProbeMethod
from bridge.health.replies import (
    JSON_REQUEST,
    PLAIN_REQUEST,
    Verdict,
    is_request_rejected,
    normalise_reply,
)
from bridge.health.startup_config import AgentSpec
from contracts.messages import HealthReport, HealthStatus

__all__ = ["AgentProber", "ProbeTransport", "endpoint_for"]


class ProbeTransport(Protocol):  # bridge.adapters.agent_probe.ProbeClient
    def zmq_session(
        self, endpoint: str, timeout_secs: float
    ) -> Any: ...  # async context manager -> ZmqSession

    async def http_get(self, url: str, timeout_secs: float) -> Answer: ...


def endpoint_for(method: ProbeMethod, host: str, health_check_port: int) -> str:
    """Where ``method`` asks an agent whose ``health_check_port`` is given."""
    host = f"[{host}]" if ":" in host else host
    if method is ProbeMethod.ZMQ_REQ:
        return f"tcp://{host}:{health_check_port}"
    port = health_check_port + 1 if method is ProbeMethod.HTTP_NEXT_PORT else health_check_port
    return f"http://{host}:{port}/health"


class AgentProber:
    """Checks agents through ``transport``; see the module note. ``probe`` never raises ``NoAnswer``."""

    def __init__(
        self,
        transport: ProbeTransport,
        *,
        machine: str,
        bridge_id: str,
        host: str,
        timeout_secs: float,
        interval_secs: float,
        methods: list[ProbeMethod],
        service_methods: dict[str, list[ProbeMethod]] | None = None,
        max_reply_bytes: int = 16384,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transport = transport
        self.machine, self.bridge_id, self.host = machine, bridge_id, host
        self.timeout_secs, self.interval_secs = timeout_secs, interval_secs
        self.methods, self.service_methods = list(methods), dict(service_methods or {})
        self.max_reply_bytes = max_reply_bytes
        self._now = now

    @classmethod
    def from_config(cls, cfg: BridgeConfig, transport: ProbeTransport) -> AgentProber:
        h = cfg.health
        return cls(
            transport,
            machine=cfg.machine or "",
            bridge_id=cfg.bridge_id or "",
            host=h.probe_host,
            timeout_secs=h.probe_timeout_secs,
            interval_secs=h.probe_interval_secs,
            methods=h.probe_methods,
            service_methods=h.service_methods,
            max_reply_bytes=h.max_reply_bytes,
        )

    async def probe(self, agent: AgentSpec) -> HealthReport:
        """Check ``agent`` once; the report of the first answer, or ``unhealthy`` without one."""
        checked_at = self._now()
        attempts: list[dict[str, str]] = []
        for method in self.service_methods.get(agent.name, self.methods):
            endpoint = endpoint_for(method, self.host, agent.health_check_port)
            try:
                answer = await self._ask(method, endpoint)
            except NoAnswer as exc:
                attempts.append(
                    {
                        "method": method.value,
                        "endpoint": endpoint,
                        "reason": exc.reason,
                        "detail": exc.detail,
                    }
                )
                continue
            verdict = normalise_reply(
                answer.payload, http_status=answer.http_status, max_reply_bytes=self.max_reply_bytes
            )
            return self._answered(agent, checked_at, verdict, answer, method, endpoint)
        return self._silent(agent, checked_at, attempts)

    async def _ask(self, method: ProbeMethod, endpoint: str) -> Answer:
        if method is not ProbeMethod.ZMQ_REQ:
            return await self._transport.http_get(endpoint, self.timeout_secs)
        session: ZmqSession
        async with self._transport.zmq_session(endpoint, self.timeout_secs) as session:
            answer = await session.request(JSON_REQUEST)
            if is_request_rejected(answer.payload):  # WP-07 wants the plain string
                answer = await session.request(PLAIN_REQUEST)
            return answer

    def _answered(
        self,
        agent: AgentSpec,
        checked_at: datetime,
        v: Verdict,
        answer: Answer,
        method: ProbeMethod,
        endpoint: str,
    ) -> HealthReport:
        return self._report(
            agent,
            checked_at,
            status=v.status,
            raw_status=v.raw_status,
            reply_shape=v.shape,
            reason=v.reason,
            latency_secs=answer.latency_secs,
            http_status=answer.http_status,
            method=method.value,
            endpoint=endpoint,
            details=v.details,
        )

    def _silent(
        self, agent: AgentSpec, checked_at: datetime, attempts: list[dict[str, str]]
    ) -> HealthReport:
        first = attempts[0] if attempts else {"method": "", "endpoint": "", "reason": "no_method"}
        return self._report(
            agent,
            checked_at,
            status=HealthStatus.UNHEALTHY,
            reply_shape="none",
            reason=first["reason"],
            method=first["method"],
            endpoint=first["endpoint"],
            details={"attempts": attempts},
        )

    def failed(self, agent: AgentSpec, detail: str) -> HealthReport:
        """The report for a probe that broke inside the bridge (reason ``probe_error``, status ``unknown``)."""
        return self._report(
            agent,
            self._now(),
            status=HealthStatus.UNKNOWN,
            reply_shape="none",
            reason="probe_error",
            details=detail,
        )

    def _report(self, agent: AgentSpec, checked_at: datetime, **fields: Any) -> HealthReport:
        return HealthReport(
            event_id=uuid.uuid4().hex,
            machine=self.machine,
            service=agent.name,
            checked_at=checked_at,
            interval_secs=self.interval_secs,
            reported_by=self.bridge_id,
            group=agent.group,
            **fields,
        )

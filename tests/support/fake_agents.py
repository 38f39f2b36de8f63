"""Fake legacy agents answering health checks in the legacy protocols (legacy-bus.md §4), on real sockets.

Each agent gets two adjacent loopback ports, like a BaseAgent: ``health_check_port``
(ZMQ REP) and ``health_check_port + 1`` (HTTP ``/health``). What listens there:

* ``zmq(reply)``: a ZMQ REP on the health port answering every request with
  ``reply(request)``; nothing on +1;
* ``http(status, body)``: nothing on the health port; HTTP on +1;
* ``hung()``: a ZMQ REP that never reads (no answer) and a TCP listener on +1
  that accepts and never answers: the probe times out on both.

``FakeAgents`` (``async with``) starts them and writes a legacy startup config in
either schema (``mainpc_yaml``/``pc2_yaml``) with ``${PORT_OFFSET}+N`` port
expressions; everything is closed on exit.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import zmq
import zmq.asyncio
from aiohttp import web

__all__ = ["AgentSpec", "FakeAgents", "base_agent_reply", "http", "hung", "zmq_agent"]

Reply = Callable[[bytes], bytes]


def base_agent_reply(status: str, health_status: str) -> bytes:
    """BaseAgent's health reply (common/core/base_agent.py)."""
    return json.dumps(
        {
            "status": status,
            "ready": True,
            "initialized": True,
            "message": "running",
            "timestamp": "2025-08-19T10:00:00",
            "uptime": 12.5,
            "active_threads": 3,
            "health_checks": {},
            "health_details": {},
            "health_status": health_status,
        }
    ).encode()


@dataclass
class AgentSpec:
    name: str
    kind: str  # zmq | http | hung
    reply: Reply | None = None
    http_status: int = 200
    body: bytes = b""
    group: str = "foundation_services"
    port: int = 0  # health_check_port, set when started
    requests: list[bytes] = field(default_factory=list)
    #: seconds to wait before answering the 1st, 2nd, ... request (then at once)
    delays_secs: list[float] = field(default_factory=list)


def zmq_agent(name: str, reply: bytes | Reply, group: str = "foundation_services") -> AgentSpec:
    fn = reply if callable(reply) else (lambda request, r=reply: r)
    return AgentSpec(name, "zmq", reply=fn, group=group)


def http(name: str, status: int, body: bytes, group: str = "foundation_services") -> AgentSpec:
    return AgentSpec(name, "http", http_status=status, body=body, group=group)


def hung(name: str, group: str = "foundation_services") -> AgentSpec:
    return AgentSpec(name, "hung", group=group)


def _adjacent_free_ports() -> int:
    """A port P such that P and P+1 are free on 127.0.0.1 right now."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two adjacent free ports")


class FakeAgents:
    """Runs ``agents``; see the module note. ``offset`` is the PORT_OFFSET the YAML is written for."""

    def __init__(self, agents: list[AgentSpec]) -> None:
        self.agents = agents
        self.ctx = zmq.asyncio.Context()
        self._stack = AsyncExitStack()
        self._sockets: list[zmq.asyncio.Socket] = []
        self.offset = 0

    async def __aenter__(self) -> FakeAgents:
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tg.cancel_scope.cancel)
        for agent in self.agents:
            agent.port = _adjacent_free_ports()
            await self._start(agent, tg)
        self.offset = min(a.port for a in self.agents) // 2
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        for sock in self._sockets:
            sock.close(linger=0)
        self.ctx.term()

    async def _start(self, agent: AgentSpec, tg: anyio.abc.TaskGroup) -> None:
        if agent.kind in ("zmq", "hung"):
            rep = self.ctx.socket(zmq.REP)
            rep.setsockopt(zmq.LINGER, 0)
            rep.bind(f"tcp://127.0.0.1:{agent.port}")
            self._sockets.append(rep)
            if agent.kind == "zmq":
                tg.start_soon(self._answer, rep, agent)
        if agent.kind == "http":
            await self._start_http(agent)
        if agent.kind == "hung":
            listener = await anyio.create_tcp_listener(
                local_host="127.0.0.1", local_port=agent.port + 1
            )
            tg.start_soon(_serve_hung, listener)

    async def _answer(self, rep: zmq.asyncio.Socket, agent: AgentSpec) -> None:
        assert agent.reply is not None
        while True:
            request = await rep.recv()
            agent.requests.append(request)
            if agent.delays_secs:
                await anyio.sleep(agent.delays_secs.pop(0))
            await rep.send(agent.reply(request))

    async def _start_http(self, agent: AgentSpec) -> None:
        async def health(request: web.Request) -> web.Response:
            agent.requests.append(b"GET " + request.path.encode())
            return web.Response(
                status=agent.http_status, body=agent.body, content_type="application/json"
            )

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", agent.port + 1).start()

    def _expr(self, port: int) -> str:
        return f"${{PORT_OFFSET}}+{port - self.offset}"

    def mainpc_yaml(self) -> str:
        """MainPC schema: agents nested in their groups, plus the groups that trap naive loaders."""
        lines = [
            "global_settings:",
            "  health_checks: {interval_seconds: 30, timeout_seconds: 10, retries: 3}",
            "agent_groups:",
        ]
        for group in dict.fromkeys(a.group for a in self.agents):
            lines.append(f"  {group}:")
            for a in (a for a in self.agents if a.group == group):
                lines += [
                    f"    {a.name}:",
                    f"      script_path: main_pc_code/agents/{a.name.lower()}.py",
                    f"      port: '{self._expr(a.port - 1000)}'",
                    f"      health_check_port: '{self._expr(a.port)}'",
                    "      required: true",
                    "      dependencies: []",
                ]
        lines += [
            "  core_hubs:",
            "    description: hubs",
            f"    agents: [{', '.join(a.name for a in self.agents)}]",
            "  docker_groups:",
            f"    infra_core: [{self.agents[0].name}]",
        ]
        return "\n".join(lines) + "\n"

    def pc2_yaml(self, extra_services: str = "") -> str:
        """PC2 schema: one flat ``pc2_services`` list (``extra_services``: more YAML list items first)."""
        lines = [
            "global_settings:",
            "  health_checks: {start_period_seconds: 300}",
            "pc2_services:",
            extra_services.rstrip(),
        ]
        for a in self.agents:
            lines += [
                f"  - name: {a.name}",
                f"    script_path: pc2_code/agents/{a.name.lower()}.py",
                "    host: 0.0.0.0",
                f"    port: '{self._expr(a.port - 1000)}'",
                f"    health_check_port: '{self._expr(a.port)}'",
                "    required: true",
                "    dependencies: []",
            ]
        lines += [
            "error_bus_port: ${PORT_OFFSET}+7150",
            "docker_groups:",
            "  error_bus: [CentralErrorBus]",
        ]
        return "\n".join(line for line in lines if line) + "\n"


async def _serve_hung(listener: anyio.abc.Listener) -> None:
    async with listener:
        await listener.serve(_hold_open)


async def _hold_open(stream: anyio.abc.SocketStream) -> None:
    async with stream:
        await anyio.sleep_forever()

"""Admin HTTP (aiohttp): ``/metrics`` ``/healthz`` ``/health`` ``/readyz``.

* ``/healthz`` (and ``/health``, the path legacy supervisors probe, answering
  ``{"status": "ok"}`` like the new legacy services): liveness. 200 while the
  event loop serves requests.
* ``/readyz``: 200 ``{"status": "ready", ...}`` only when the readiness check
  passes (NATS connected, a PubAck or JetStream probe within
  ``ready_max_age_secs``, no backlog waiting in the spool, ingest socket
  open); otherwise 503 with the failing ``reasons`` and ``"status"``
  ``"degraded"`` (NATS or backlog only: the spool is buffering, nothing is
  lost) or ``"not_ready"``.
* ``/metrics``: Prometheus text format of the bridge's registry.
* ``/phase``: the cutover phase in force, the last request and its guard
  results, the parity checker's figures (``bridge.phase_runtime``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge.metrics import Metrics

__all__ = ["AdminServer", "Readiness"]

#: returns (ready, details): details is a JSON-able dict with at least "reasons"
Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class AdminServer:
    """Serves the admin endpoints on ``host:port`` (0: any free port; see ``self.port``)."""

    def __init__(
        self,
        metrics: Metrics,
        readiness: Readiness,
        host: str,
        port: int,
        phase: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._phase = phase
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_health)
        app.router.add_get("/health", self._get_health)
        app.router.add_get("/readyz", self._get_ready)
        app.router.add_get("/phase", self._get_phase)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here; needed for port 0
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _get_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _get_phase(self, request: web.Request) -> web.Response:
        if self._phase is None:
            return web.json_response({"error": "no phase controller"}, status=404)
        return web.json_response(self._phase())

    async def _get_ready(self, request: web.Request) -> web.Response:
        ready, details = self._readiness()
        self._metrics.ready.set(1 if ready else 0)
        status = "ready" if ready else ("degraded" if details.get("degraded") else "not_ready")
        body = {"status": status, **details}
        return web.json_response(body, status=200 if ready else 503)

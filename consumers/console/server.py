"""HTTP side of ``busbridge console``: an aiohttp app serving the page, a JSON API and a live
stream of changes (server-sent events).

``create_app(cfg, settings)`` builds the app; its startup connects the ``ConsoleService``
(``consumers.console.service``) and its cleanup stops it. Routes (times are UTC epoch
seconds; every list is one page of at most ``model.MAX_PAGE`` rows):

* ``GET /`` the page (``static/index.html``), ``GET /static/...`` its assets;
* ``GET /api/status`` reader progress (``caught_up``, ``last_seq``, counts);
* ``GET /api/issues?state=unresolved|resolved|ignored|all&machine=&severity=&q=&sort=last_seen|first_seen|count|severity&trend=1h|24h|7d&offset=&limit=``
  ``{"total", "rows"}``; ``GET /api/issues/{fingerprint}`` one issue with its state history
  and newest events; ``POST /api/issues/{fingerprint}/state`` with JSON ``{"state",
  "note", "by"}`` stores the decision for every console (400 bad state, 404 unknown issue,
  503 NATS refused);
* ``GET /api/events?machine=&severity=&source=&error_type=&fingerprint=&since=&until=&q=&before_seq=&limit=``
  (list parameters comma separated) ``{"rows", "next_before_seq"}`` newest first;
  ``GET /api/events/{seq}`` the stored contract, subject, headers and legacy fields (404 when
  the stream no longer has it);
* ``GET /api/facets`` machines, sources, error types, severities seen;
* ``GET /api/agents?trend=`` every agent with counts, trend, transports, last event and health;
  ``GET /api/agents/{machine}/{source}``;
* ``GET /api/floods`` active and ended floods with their summaries;
* ``GET /api/dead-letters?before_seq=&limit=``; ``GET /api/dead-letters/{seq}`` frames as hex and text;
* ``GET /api/bridges`` bridge heartbeats, phase status keys and every health entry;
* ``GET /api/alerts`` fired alerts (from the stream) with webhook outcomes, and the rules;
* ``GET /api/live`` ``text/event-stream``: one ``data:`` JSON batch per push (``service.batch``),
  ``{"resync": true}`` when a slow browser missed some; a comment line every 15 s keeps it open.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import nats.errors
from aiohttp import web

from consumers.console.model import EventFilter
from consumers.console.service import ConsoleService

if TYPE_CHECKING:
    from nats.aio.client import Client

    from bridge.config.model import BridgeConfig
    from consumers.console.settings import ConsoleSettings

__all__ = ["SERVICE", "STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).with_name("static")
SERVICE = web.AppKey("service", ConsoleService)
KEEPALIVE_SECS = 15.0
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TRENDS = ("1h", "24h", "7d")


def create_app(
    cfg: BridgeConfig, settings: ConsoleSettings, *, nc: Client | None = None
) -> web.Application:
    """The console app. ``nc``: a connected client to use (the caller closes it); else the
    service connects with the bridge config's NATS settings. Starting the app raises
    ``NatsUnreachable`` when NATS cannot be reached."""
    app = web.Application()
    service = ConsoleService(cfg, settings, nc=nc)
    app[SERVICE] = service

    async def start(_: web.Application) -> None:
        await service.start()

    async def stop(_: web.Application) -> None:
        await service.stop()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)
    r = app.router
    r.add_get("/", _index)
    r.add_static("/static/", STATIC_DIR, append_version=False)
    r.add_get("/api/status", _status)
    r.add_get("/api/issues", _issues)
    r.add_get("/api/issues/{fp}", _issue)
    r.add_post("/api/issues/{fp}/state", _issue_state)
    r.add_get("/api/events", _events)
    r.add_get("/api/events/{seq}", _event)
    r.add_get("/api/facets", _facets)
    r.add_get("/api/agents", _agents)
    r.add_get("/api/agents/{machine}/{source}", _agent)
    r.add_get("/api/floods", _floods)
    r.add_get("/api/dead-letters", _dead_letters)
    r.add_get("/api/dead-letters/{seq}", _dead_letter)
    r.add_get("/api/bridges", _bridges)
    r.add_get("/api/alerts", _alerts)
    r.add_get("/api/live", _live)
    return app


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, text: str) -> web.Response:
    return _json({"error": text}, status)


def _svc(request: web.Request) -> ConsoleService:
    return request.app[SERVICE]


def _int(request: web.Request, name: str, default: int | None) -> int | None:
    text = request.query.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from exc


def _float(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from exc


def _list(request: web.Request, name: str) -> tuple[str, ...]:
    return tuple(v for v in request.query.get(name, "").split(",") if v)


def _trend(request: web.Request) -> str:
    trend = request.query.get("trend", "24h")
    return trend if trend in _TRENDS else "24h"


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def _status(request: web.Request) -> web.Response:
    return _json(_svc(request).status())


async def _issues(request: web.Request) -> web.Response:
    svc = _svc(request)
    q = request.query
    page = svc.model.issues_page(
        state=q.get("state", "unresolved"),
        machine=q.get("machine", ""),
        severity=q.get("severity", ""),
        q=q.get("q", ""),
        sort=q.get("sort", "last_seen"),
        trend=_trend(request),
        offset=max(0, _int(request, "offset", 0) or 0),
        limit=_int(request, "limit", 100) or 100,
        now=svc.clock(),
    )
    return _json(page)


def _fingerprint(request: web.Request) -> str:
    fp = request.match_info["fp"]
    if not _TOKEN.match(fp):
        raise web.HTTPBadRequest(text="bad fingerprint")
    return fp


async def _issue(request: web.Request) -> web.Response:
    try:
        return _json(_svc(request).issue_detail(_fingerprint(request)))
    except KeyError:
        return _error(404, "no such issue")


async def _issue_state(request: web.Request) -> web.Response:
    fp = _fingerprint(request)
    try:
        body = msgspec.json.decode(await request.read())
        if not isinstance(body, dict):
            raise TypeError
        state = await _svc(request).set_issue_state(
            fp, body.get("state", ""), str(body.get("note", "")), str(body.get("by", ""))
        )
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        return _error(400, str(exc) or "body must be a JSON object with state, note, by")
    except KeyError:
        return _error(404, "no such issue")
    except nats.errors.Error as exc:
        return _error(503, f"NATS: {exc or type(exc).__name__}")
    return _json(msgspec.to_builtins(state))


async def _events(request: web.Request) -> web.Response:
    flt = EventFilter(
        machines=_list(request, "machine"),
        severities=_list(request, "severity"),
        sources=_list(request, "source"),
        error_types=_list(request, "error_type"),
        fingerprint=request.query.get("fingerprint", ""),
        since=_float(request, "since"),
        until=_float(request, "until"),
        q=request.query.get("q", "").strip(),
    )
    page = _svc(request).model.events_page(
        flt, before_seq=_int(request, "before_seq", None), limit=_int(request, "limit", 100) or 100
    )
    return _json(page)


async def _event(request: web.Request) -> web.Response:
    try:
        seq = int(request.match_info["seq"])
        return _json(await _svc(request).event_detail(seq))
    except (KeyError, ValueError):
        return _error(404, "no such message in the stream")


async def _facets(request: web.Request) -> web.Response:
    return _json(_svc(request).model.facets())


async def _agents(request: web.Request) -> web.Response:
    svc = _svc(request)
    trend, now = _trend(request), svc.clock()
    rows = []
    for agent in svc.model.agents.values():
        row = svc.model.agent_row(agent, trend, now)
        row["health"] = svc.health_of(agent.machine, agent.source)
        rows.append(row)
    known = {(a.machine, a.source) for a in svc.model.agents.values()}
    for entry in svc.fleet["health"]:  # probed agents that never reported an error
        if entry["kind"] == "agent" and (entry["machine"], entry["name"]) not in known:
            rows.append(
                {
                    "key": f"{entry['machine']}/{entry['name']}",
                    "machine": entry["machine"],
                    "source": entry["name"],
                    "count": 0,
                    "severities": {},
                    "transports": {},
                    "trend": [],
                    "last": None,
                    "health": entry,
                }
            )
    rows.sort(key=lambda r: (-(r["last"] or {}).get("at", 0), r["key"]))
    return _json({"rows": rows})


async def _agent(request: web.Request) -> web.Response:
    try:
        return _json(
            _svc(request).agent_detail(request.match_info["machine"], request.match_info["source"])
        )
    except KeyError:
        return _error(404, "no events of this agent")


async def _floods(request: web.Request) -> web.Response:
    return _json(_svc(request).model.floods_view())


async def _dead_letters(request: web.Request) -> web.Response:
    svc = _svc(request)
    rows = svc.model.dead_letters_page(
        before_seq=_int(request, "before_seq", None), limit=_int(request, "limit", 100) or 100
    )
    return _json(
        {
            "rows": rows,
            "total": svc.model.dead_letter_total,
            "suppressed": svc.model.dead_letter_suppressed_total,
        }
    )


async def _dead_letter(request: web.Request) -> web.Response:
    try:
        return _json(await _svc(request).dead_letter_detail(int(request.match_info["seq"])))
    except (KeyError, ValueError):
        return _error(404, "no such dead letter in the stream")


async def _bridges(request: web.Request) -> web.Response:
    return _json(_svc(request).bridges_view())


async def _alerts(request: web.Request) -> web.Response:
    return _json(_svc(request).alerts_view())


async def _live(request: web.Request) -> web.StreamResponse:
    svc = _svc(request)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    q = svc.listen()
    try:
        await resp.write(b"data: " + msgspec.json.encode({"status": svc.status()}) + b"\n\n")
        while True:
            try:
                batch = await asyncio.wait_for(q.get(), KEEPALIVE_SECS)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if batch is None:
                break
            await resp.write(b"data: " + msgspec.json.encode(batch) + b"\n\n")
    except ConnectionResetError:
        pass  # the browser went away
    finally:
        svc.unlisten(q)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp

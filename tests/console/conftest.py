"""A real stack for the console's browser tests, shared by the module: a nats-server (port 0),
a ``busbridge run`` process (flood rule ``console_test`` on ``FloodTest``, health on), two
``busbridge console`` processes on it (so state written through one is read by the other),
an aiohttp webhook receiver, one ZMQ publisher, and headless Chromium (Playwright, sync API).

Everything is stopped by its PID / closed at the end of the module. Without Chromium or
Playwright the browser tests skip, unless ``BUSBRIDGE_REQUIRE_BROWSER=1`` (CI): then they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from aiohttp import web

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.console_bench import BROWSER_ARGS, CHROMIUM, ConsoleProcess
from loadtest.harness import BridgeProcess
from loadtest.replay import connect_publishers
from tests.support.nats_server import running_nats_server

BRIDGE_EXTRA = """
health: {enabled: true, heartbeat_interval_secs: 1}
flood:
  enabled: true
  summary_interval_secs: 1
  default_threshold: 100000
  rules: [{name: console_test, match: FloodTest, threshold: 3, window_secs: 30}]
dead_letters: {threshold: 3, summary_interval_secs: 1}
"""
CONSOLE_SETTINGS = "push_interval_secs: 0.1\nkv_poll_secs: 1\n"


def browser_or_skip() -> Any:
    """The Playwright module, or skip (fail with BUSBRIDGE_REQUIRE_BROWSER=1)."""
    required = os.environ.get("BUSBRIDGE_REQUIRE_BROWSER") == "1"
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if required:
            pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    return sync_api


class WebhookReceiver:
    """An aiohttp server on a free loopback port, in its own thread, keeping every POSTed body."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="webhook", daemon=True)
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(json.loads(await request.read()))
        return web.json_response({"ok": True})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class Stack:
    """What the tests drive: ``send(frames)`` over ZMQ, two console URLs, the webhook bodies."""

    def __init__(
        self,
        server: NatsServerProcess,
        bridge: BridgeProcess,
        consoles: list[ConsoleProcess],
        hook: WebhookReceiver,
        sock: zmq.Socket,
    ) -> None:
        self.server, self.bridge, self.consoles, self.hook, self._sock = (
            server,
            bridge,
            consoles,
            hook,
            sock,
        )
        self.url = consoles[0].url
        self.url_b = consoles[1].url

    def send(self, *messages: list[bytes]) -> None:
        for frames in messages:
            self._sock.send_multipart(frames)


def unique(prefix: str) -> str:
    """A name no other test uses (the stack is shared by the module)."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    browser_or_skip()  # before starting anything
    work = tmp_path_factory.mktemp("console")
    hook = WebhookReceiver()
    hook.start()
    with running_nats_server(work / "nats") as server:
        bridge = BridgeProcess(work, server.url, extra=BRIDGE_EXTRA)
        consoles = [
            ConsoleProcess(
                work, bridge.config, settings=CONSOLE_SETTINGS, webhooks=(hook.url,), name=n
            )
            for n in ("console-a", "console-b")
        ]
        ctx = zmq.Context()
        sock = None
        try:
            bridge.start()
            for console in consoles:
                console.start()
            [sock] = connect_publishers(ctx, bridge.endpoint, 1)
            yield Stack(server, bridge, consoles, hook, sock)
        finally:
            if sock is not None:
                sock.close(linger=0)
            ctx.term()
            for console in consoles:
                console.stop()
            bridge.stop()
            hook.stop()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    sync_api = browser_or_skip()
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh 1366x768 page on console A, its reader caught up."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    context.set_default_timeout(30_000)
    try:
        yield open_console(context, stack.url)
    finally:
        context.close()


def open_console(context: Any, url: str, view: str = "issues") -> Any:
    page = context.new_page()
    page.goto(f"{url}/#/{view}")
    page.wait_for_function("document.querySelector('#conn').dataset.caughtUp === '1'")
    return page

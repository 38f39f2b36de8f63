"""Command line of ``busbridge console`` (its options are declared in ``bridge.cli``).

``busbridge console [-c CONFIG] [--nats-url URL] [--console-config FILE] [--host H]
[--port 9160] [--webhook URL ...]``: NATS, the stream and the health/phase buckets come from
the bridge config (``-c``, else the defaults: the embedded server ``busbridge run`` starts on
127.0.0.1:4222); the console's own settings from ``--console-config``
(``consumers.console.settings``); ``--host``/``--port``/``--webhook`` override them. Serves
until SIGINT/SIGTERM. Exit status 0 after a clean stop, 1 when NATS cannot be reached at
start, 2 for a bad config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from consumers.console.alerts import WebhookConfig
from consumers.console.server import create_app
from consumers.console.settings import ConsoleSettings, load_settings

if TYPE_CHECKING:
    from bridge.config.model import BridgeConfig

__all__ = ["effective_settings", "run_console"]

log = logging.getLogger(__name__)


def effective_settings(args: argparse.Namespace) -> ConsoleSettings:
    """The settings file with the command-line overrides. Raises ``ConfigError``."""
    settings = load_settings(getattr(args, "console_config", None))
    overrides = {k: getattr(args, k, None) for k in ("host", "port")}
    settings = msgspec.structs.replace(
        settings, **{k: v for k, v in overrides.items() if v is not None}
    )
    hooks = [WebhookConfig(url=url) for url in getattr(args, "webhook", []) or []]
    if hooks:
        alerts = settings.alerts
        alerts = msgspec.structs.replace(alerts, webhooks=[*alerts.webhooks, *hooks])
        settings = msgspec.structs.replace(settings, alerts=alerts)
    return settings


def run_console(cfg: BridgeConfig, args: argparse.Namespace) -> int:
    """Serve the console until interrupted; return the exit status (module note)."""
    settings = effective_settings(args)
    app = create_app(cfg, settings)
    host = settings.host
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host

    def announce(text: str) -> None:
        where = f"http://{shown}:{settings.port}/" if settings.port else text.strip()
        print(
            f"busbridge console: {where} (stream {cfg.stream.name}; Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )

    web.run_app(app, host=host, port=settings.port, print=announce, access_log=None)
    return 0

"""``busbridge console``: a live web console for the whole fleet (DESIGN §8 "Consumers").

Issues grouped by fingerprint with states shared through NATS KV, a live feed with filters,
per-agent views, floods, dead letters with their bytes, each machine's bridge, and alerts
fired once per fleet. Parts: ``model`` (the in-memory index), ``service`` (NATS: the stream
reader, the KV buckets, alert firing, the live push), ``alerts`` (rules and the
``AlertFired`` contract), ``server`` (aiohttp app), ``settings`` (its own YAML), ``static/``
(the page: plain HTML, CSS and JS, no build step).
"""

from consumers.console.cli import effective_settings, run_console
from consumers.console.server import create_app
from consumers.console.settings import ConsoleSettings, load_settings

__all__ = ["ConsoleSettings", "create_app", "effective_settings", "load_settings", "run_console"]

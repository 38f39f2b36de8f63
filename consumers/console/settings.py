"""Settings of ``busbridge console``: a strict YAML file of their own (``--console-config``).

The bridge's config file (``-c``) still says where NATS is, the stream, its subject prefix and
the health and phase buckets; this file only holds what is the console's::

    host: 127.0.0.1          # HTTP bind address
    port: 9160
    kv_bucket: busbridge_console   # issue states (resolve / ignore / reopen, with notes)
    kv_replicas: 1
    since_secs: null         # read the stream from this far back at start (null: all of it)
    max_events: 200000       # event rows kept for the feed (counts are never dropped)
    max_dead_letters: 10000
    kv_poll_secs: 2.0        # health and phase buckets re-read this often
    push_interval_secs: 0.1  # live changes are sent to browsers at most this often
    alerts:
      rules: [...]           # consumers.console.alerts.AlertRule; default_rules() when omitted
      webhooks: [{url: http://hooks.example/errbus, timeout_secs: 5, attempts: 3}]
      kv_bucket: busbridge_console_alerts
      ttl_secs: 604800

Unknown keys fail; ``load_settings`` raises ``ConfigError`` listing the problem with its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec
import yaml
from msgspec import Meta

from bridge.errors import ConfigError
from consumers.console.alerts import AlertsConfig

__all__ = ["DEFAULT_PORT", "ConsoleSettings", "load_settings"]

DEFAULT_PORT = 9160


class ConsoleSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """See the module note; times in seconds."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = DEFAULT_PORT
    kv_bucket: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "busbridge_console"
    kv_replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    since_secs: Annotated[float, Meta(gt=0)] | None = None
    max_events: Annotated[int, Meta(ge=1)] = 200_000
    max_dead_letters: Annotated[int, Meta(ge=1)] = 10_000
    kv_poll_secs: Annotated[float, Meta(gt=0)] = 2.0
    push_interval_secs: Annotated[float, Meta(gt=0)] = 0.1
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)


def load_settings(path: str | None) -> ConsoleSettings:
    """The settings in ``path`` (YAML), or the defaults for ``None``. Raises ``ConfigError``."""
    if not path:
        return ConsoleSettings()
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
        return msgspec.convert(doc, ConsoleSettings)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise ConfigError(path, [str(exc)]) from exc

"""Error hierarchy of the bridge, caught at the edges (CLI, app).

``BridgeError`` is the base; each subclass has a stable ``code`` attribute that
the CLI maps to an exit status and that log lines carry.
"""

from __future__ import annotations

__all__ = ["BridgeError", "ConfigError", "EmbeddedServerError", "ProvisioningError"]


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    code = "bridge_error"
    exit_status = 1


class ConfigError(BridgeError):
    """A configuration was refused. ``problems`` lists every ``path: message``."""

    code = "config_error"
    exit_status = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid configuration {source} ({len(self.problems)} problem(s)):\n{lines}"
        )


class EmbeddedServerError(BridgeError):
    """The embedded nats-server could not be found, started or reached."""

    code = "embedded_server_error"


class ProvisioningError(BridgeError):
    """The JetStream stream could not be created or updated as configured."""

    code = "provisioning_error"

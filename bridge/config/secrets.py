"""Resolve the NATS secrets a config refers to, into nats-py connect options.

Secrets are never config values: the config names a creds file, a password
file or environment variable, a token file or environment variable (DESIGN §8).
Shared by the bridge's NATS adapter and the consumers so both authenticate the
same way. Raises ``ConfigError`` naming the key when a secret cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.config.model import NatsConfig
from bridge.errors import ConfigError

__all__ = ["nats_auth_options"]


def nats_auth_options(c: NatsConfig) -> dict[str, Any]:
    """``{"user_credentials"|"user"+"password"|"token": ...}`` for ``nats.connect``."""
    opts: dict[str, Any] = {}
    if c.creds_file:
        opts["user_credentials"] = c.creds_file
    if c.user:
        opts["user"] = c.user
        opts["password"] = _secret(c.password_file, c.password_env, "nats.password")
    if c.token_file or c.token_env:
        opts["token"] = _secret(c.token_file, c.token_env, "nats.token")
    return opts


def _secret(file: str | None, env: str | None, what: str) -> str:
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("nats", [f"{what}_file: cannot read {file}: {exc.strerror}"]) from exc
    value = os.environ.get(env or "")
    if not value:
        raise ConfigError("nats", [f"{what}_env: environment variable {env} is not set"])
    return value

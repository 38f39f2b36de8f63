"""Settings of a ``BusClient``: constructor arguments first, then the environment, then defaults.

Environment (read once, when the config is built):

* ``BUSBRIDGE_NATS_URL``, else ``NATS_SERVERS`` (the legacy libraries' variable): NATS server
  URLs, comma separated. Default ``nats://127.0.0.1:4222`` (the machine's sidecar NATS).
* ``BUSBRIDGE_MACHINE``: the machine name in the intake subject and the events; default the
  host name.
* ``BUSBRIDGE_SUBJECT_PREFIX``: the sidecar's ``stream.subject_prefix`` (default ``errbus``, so
  intake subjects are ``errbus_intake.<machine>.<source>``).
* ``AGENT_NAME`` (legacy library B's variable): the default ``source`` of ``BusClient.report``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.subjects import DEFAULT_PREFIX, Subjects

__all__ = [
    "CLIENT_APIS",
    "DEFAULT_SERVERS",
    "ENV_AGENT_NAME",
    "ENV_MACHINE",
    "ENV_NATS_SERVERS",
    "ENV_NATS_URL",
    "ENV_SUBJECT_PREFIX",
    "ClientConfig",
    "resolve_servers",
]

ENV_NATS_URL = "BUSBRIDGE_NATS_URL"
ENV_NATS_SERVERS = "NATS_SERVERS"
ENV_MACHINE = "BUSBRIDGE_MACHINE"
ENV_SUBJECT_PREFIX = "BUSBRIDGE_SUBJECT_PREFIX"
ENV_AGENT_NAME = "AGENT_NAME"

DEFAULT_SERVERS = ("nats://127.0.0.1:4222",)

#: values of the ``Busbridge-Client-Api`` header: the native API, or the legacy API a shim
#: stands in for (``contracts.subjects.HEADER_CLIENT_API``)
CLIENT_APIS = ("native", "errpub", "pc2_errpub", "library_a", "library_b", "base_agent")


def resolve_servers(servers: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """NATS URLs: ``servers`` (a comma separated string or a list) if given, else
    ``BUSBRIDGE_NATS_URL``, else ``NATS_SERVERS``, else ``DEFAULT_SERVERS``."""
    for candidate in (servers, os.environ.get(ENV_NATS_URL), os.environ.get(ENV_NATS_SERVERS)):
        urls = _split(candidate)
        if urls:
            return urls
    return DEFAULT_SERVERS


def _split(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(s.strip() for s in items if s and s.strip())


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything a ``BusClient`` needs; build it with ``ClientConfig.from_env(**overrides)``.

    ``servers``: NATS URLs. ``machine``: the machine token of the intake subject and of every
    event. ``prefix``: the sidecar's subject prefix. ``source``: the default event source.
    ``client_api``: the default ``Busbridge-Client-Api`` header value (``CLIENT_APIS``).
    ``max_buffered_events`` / ``max_buffered_bytes``: the local buffer's bound (events not yet
    acknowledged by JetStream, payload bytes). ``ack_timeout_secs``: how long one publish waits
    for its PubAck before it is retried. ``retry_initial_secs`` .. ``retry_max_secs``: backoff
    between retries (doubling, with jitter). ``connect_timeout_secs``, ``reconnect_wait_secs``,
    ``ping_interval_secs``, ``max_outstanding_pings``: NATS connection settings (a silent server
    is given up after about ping interval x max pings). ``connect_options``: extra keyword
    arguments for ``nats.aio.client.Client.connect`` (``user_credentials``, ``tls``, ``token``,
    ...). ``exit_flush_secs``: how long an interpreter exit waits for a client still open.
    Raises ``ValueError`` on a setting out of range.
    """

    servers: tuple[str, ...] = DEFAULT_SERVERS
    machine: str = "localhost"
    prefix: str = DEFAULT_PREFIX
    source: str = "unknown"
    client_api: str = "native"
    max_buffered_events: int = 10_000
    max_buffered_bytes: int = 16 * 1024 * 1024
    ack_timeout_secs: float = 5.0
    retry_initial_secs: float = 0.05
    retry_max_secs: float = 2.0
    connect_timeout_secs: float = 2.0
    reconnect_wait_secs: float = 0.5
    ping_interval_secs: float = 10.0
    max_outstanding_pings: int = 3
    connection_name: str | None = None
    connect_options: Mapping[str, Any] = field(default_factory=dict)
    exit_flush_secs: float = 2.0

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be > 0"
            for name in (
                "max_buffered_events",
                "max_buffered_bytes",
                "ack_timeout_secs",
                "retry_initial_secs",
                "retry_max_secs",
                "connect_timeout_secs",
                "reconnect_wait_secs",
                "ping_interval_secs",
                "max_outstanding_pings",
            )
            if not getattr(self, name) > 0
        ]
        if not self.servers:
            problems.append("servers must not be empty")
        if self.exit_flush_secs < 0:
            problems.append("exit_flush_secs must be >= 0")
        if self.retry_max_secs < self.retry_initial_secs:
            problems.append("retry_max_secs must be >= retry_initial_secs")
        if problems:
            raise ValueError("busclient config: " + "; ".join(problems))
        Subjects(self.prefix)  # raises ValueError on a prefix colliding with errors.>

    @classmethod
    def from_env(cls, **overrides: Any) -> ClientConfig:
        """A config from ``overrides`` (field names; ``None`` means "not given"), the environment
        (module docstring) and the defaults. ``servers`` may be a comma separated string."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown busclient settings: {sorted(unknown)}")
        given["servers"] = resolve_servers(given.get("servers"))
        given.setdefault("machine", os.environ.get(ENV_MACHINE) or socket.gethostname())
        given.setdefault("prefix", os.environ.get(ENV_SUBJECT_PREFIX) or DEFAULT_PREFIX)
        given.setdefault("source", os.environ.get(ENV_AGENT_NAME) or "unknown")
        return cls(**given)

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

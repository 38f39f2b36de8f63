"""How every NATS client of the project connects: the sidecar's long-lived link and the tools.

One place for the server list (``nats.servers``, else the embedded server's fixed port), the
connect options every client shares (name, timeouts, keepalive, credentials and TLS from
``bridge.config.secrets``) and the two connect styles:

* ``connect_options(c, ...)``: keyword options for ``nats.connect``; the bridge's
  ``JetStreamLink`` adds its callbacks and connects with reconnects unlimited (an unreachable
  server at boot is waited out while the spool buffers).
* ``connect_tool(cfg, name=...)``: for a command that talks to NATS for a while and must fail
  fast at start (``busbridge tail``, ``health``, ``phase``, ``console``): connects within
  ``nats.connect_timeout_secs`` or raises ``NatsUnreachable`` with the cause in words (the
  last client error, e.g. an authorization violation, rather than nats-py's generic timeout);
  once connected, a later drop is reconnected forever when ``keep_reconnecting``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats.errors
from nats.aio.client import Client

from bridge.config.model import BridgeConfig, NatsConfig
from bridge.config.secrets import nats_auth_options
from bridge.errors import BridgeError

__all__ = ["NatsUnreachable", "connect_options", "connect_tool", "nats_servers"]


class NatsUnreachable(BridgeError):
    """A tool could not connect to NATS at start; the message names the servers and the cause."""

    code = "nats_unreachable"


def nats_servers(cfg: BridgeConfig) -> list[str]:
    """``nats.servers``, else the URL of the embedded server ``busbridge run`` starts.

    Raises ``NatsUnreachable`` when neither is known (embedded port 0 is picked at start).
    """
    if cfg.nats.servers:
        return list(cfg.nats.servers)
    host, port = cfg.nats.embedded.host, cfg.nats.embedded.port
    if port == 0:
        raise NatsUnreachable(
            "nats.servers is empty and nats.embedded.port is 0 (picked at start): pass --nats-url"
        )
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return [f"nats://[{host}]:{port}" if ":" in host else f"nats://{host}:{port}"]


def connect_options(c: NatsConfig, *, name: str, **overrides: Any) -> dict[str, Any]:
    """Keyword options for ``nats.connect``/``Client.connect``: ``name`` (``nats.name`` wins),
    connect timeout, keepalive (``ping_interval_secs`` x ``max_outstanding_pings``), the
    reconnect buffer, credentials and TLS, then ``overrides`` (callbacks, reconnect policy).

    Raises ``ConfigError`` when a credential file or variable cannot be read."""
    opts: dict[str, Any] = {
        "name": c.name or name,
        "connect_timeout": c.connect_timeout_secs,
        "reconnect_time_wait": c.reconnect_wait_secs,
        "ping_interval": c.ping_interval_secs,
        "max_outstanding_pings": c.max_outstanding_pings,
        "pending_size": c.reconnect_buffer_bytes,
    }
    opts.update(nats_auth_options(c))
    opts.update(overrides)
    return opts


async def connect_tool(
    cfg: BridgeConfig,
    *,
    name: str,
    servers: list[str] | None = None,
    keep_reconnecting: bool = True,
    on_disconnect: Callable[[], Awaitable[None]] | None = None,
    on_reconnect: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """Connect a tool's client within ``nats.connect_timeout_secs`` (servers: ``servers``, else
    ``nats_servers(cfg)``). Raises ``NatsUnreachable`` (no answer in time, refused, bad
    credentials: the cause in words) or ``ConfigError`` (unreadable secrets). With
    ``keep_reconnecting`` a drop after a good start is reconnected forever (1 s apart); else
    the client gives up after one try."""
    servers = servers or nats_servers(cfg)
    secs = cfg.nats.connect_timeout_secs
    nc, errors = Client(), []

    async def remember(exc: Exception) -> None:
        errors.append(exc)

    async def disconnected() -> None:
        if on_disconnect is not None and not nc.is_closed:
            await on_disconnect()

    async def reconnected() -> None:
        if on_reconnect is not None:
            await on_reconnect()

    options = connect_options(
        cfg.nats,
        name=name,
        max_reconnect_attempts=1,
        reconnect_time_wait=0.2,
        error_cb=remember,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )
    try:
        with anyio.fail_after(secs):
            await nc.connect(servers=servers, **options)
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        with anyio.CancelScope(shield=True):
            await nc.close()
        cause = errors[-1] if errors else exc
        why = (
            f"no answer within {secs:g} s"
            if isinstance(cause, TimeoutError)
            else str(cause) or repr(cause)
        )
        raise NatsUnreachable(f"cannot connect to NATS {', '.join(servers)}: {why}") from exc
    # nats-py reads these on every reconnect: a drop after a good start is waited out.
    nc.options.update(
        max_reconnect_attempts=-1 if keep_reconnecting else 0, reconnect_time_wait=1.0
    )
    return nc

"""Real nats-server for tests: port 0, a temp store dir, always stopped.

Reuses the bridge's own ``NatsServerProcess`` (one implementation of "start a
nats-server and read its port from its log"). The 3-node cluster lives in
``loadtest/servers.py`` (the load tools use it too) and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.servers import cluster_config, running_cluster  # moved there; re-exported for tests

__all__ = ["cluster_config", "running_cluster", "running_nats_server"]


@contextmanager
def running_nats_server(
    store_dir: Path, *, port: int = 0, **kwargs: object
) -> Iterator[NatsServerProcess]:
    """Start a JetStream-enabled server in ``store_dir``; stop it (by its PID) on exit."""
    server = NatsServerProcess(store_dir, port=port, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()

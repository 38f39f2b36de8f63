"""Real nats-server for tests: port 0, a temp store dir, always stopped.

Reuses the bridge's own ``NatsServerProcess`` (one implementation of "start a
nats-server and read its port from its log").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bridge.adapters.nats_server import NatsServerProcess

__all__ = ["cluster_config", "running_cluster", "running_nats_server"]


@contextmanager
def running_nats_server(store_dir: Path, *, port: int = 0, **kwargs: object) -> Iterator[NatsServerProcess]:
    """Start a JetStream-enabled server in ``store_dir``; stop it (by its PID) on exit."""
    server = NatsServerProcess(store_dir, port=port, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def cluster_config(name: str, cluster_port: int, cluster_ports: list[int]) -> str:
    """Config text joining a server to a JetStream cluster over loopback routes."""
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports if p != cluster_port)
    return f'cluster {{\n  name: "{name}"\n  listen: "127.0.0.1:{cluster_port}"\n  routes: [{routes}]\n}}\n'


@contextmanager
def running_cluster(store_dir: Path, size: int = 3) -> Iterator[list[NatsServerProcess]]:
    """``size`` JetStream servers (``n1``..) clustered over loopback; all stopped on exit."""
    from loadtest.harness import free_port

    ports = [free_port() for _ in range(size)]
    servers = [
        NatsServerProcess(store_dir / f"n{i + 1}", server_name=f"n{i + 1}", extra_config=cluster_config("bb", p, ports))
        for i, p in enumerate(ports)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()

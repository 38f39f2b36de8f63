"""nats-servers for load runs and tests: a JetStream cluster on loopback, a restart on the
same store dir, the stream leader of a clustered stream.

Every server is a ``NatsServerProcess`` (bridge/adapters/nats_server.py): port 0 unless
given, its own store dir, stopped by its own PID. ``tests/support/nats_server.py``
re-exports ``running_cluster`` and ``cluster_config``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import nats
import nats.errors
import nats.js.errors

from bridge.adapters.nats_server import NatsServerProcess
from loadtest.harness import free_port

__all__ = ["cluster_config", "restarted", "running_cluster", "stream_leader"]


def cluster_config(name: str, cluster_port: int, cluster_ports: list[int]) -> str:
    """Config text joining a server to a JetStream cluster over loopback routes."""
    routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in cluster_ports if p != cluster_port)
    return f'cluster {{\n  name: "{name}"\n  listen: "127.0.0.1:{cluster_port}"\n  routes: [{routes}]\n}}\n'


@contextmanager
def running_cluster(store_dir: Path, size: int = 3) -> Iterator[list[NatsServerProcess]]:
    """``size`` JetStream servers (``n1``..) clustered over loopback; all stopped on exit.

    Each node has its own store dir ``store_dir/n<i>`` and a free client port. Nodes a
    caller killed are skipped (``stop`` is idempotent).
    """
    ports = [free_port() for _ in range(size)]
    servers = [
        NatsServerProcess(
            store_dir / f"n{i + 1}",
            server_name=f"n{i + 1}",
            extra_config=cluster_config("bb", p, ports),
        )
        for i, p in enumerate(ports)
    ]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


def restarted(server: NatsServerProcess, timeout_secs: float = 15.0) -> NatsServerProcess:
    """A new server on ``server``'s store dir, client port, name and extra config, started.

    ``server`` must be stopped (its PID gone); the new process owns its own PID. Raises
    ``EmbeddedServerError`` when it does not become ready (e.g. the port was taken meanwhile).
    """
    again = NatsServerProcess(
        server.store_dir,
        binary=server.binary,
        host=server.host,
        port=server.port,
        max_payload_bytes=server.max_payload_bytes,
        extra_config=server.extra_config,
        server_name=server.server_name,
    )
    again.start(timeout_secs)
    return again


async def stream_leader(
    url: str | list[str], stream: str = "ERRBUS", *, timeout_secs: float = 20.0
) -> str:
    """The server name of ``stream``'s cluster leader, asked through ``url`` (waits through an
    election). Raises ``TimeoutError`` when no leader is known within ``timeout_secs``."""
    nc = await nats.connect(
        url if isinstance(url, list) else [url], max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        with anyio.fail_after(timeout_secs):
            while True:
                try:
                    info = await nc.jetstream(timeout=1).stream_info(stream)
                    if info.cluster and info.cluster.leader:
                        return info.cluster.leader
                except (
                    nats.errors.TimeoutError,
                    nats.errors.NoRespondersError,
                    nats.js.errors.ServiceUnavailableError,
                ):
                    pass  # election in progress
                except nats.js.errors.NotFoundError:
                    pass  # not provisioned yet
                await anyio.sleep(0.1)
    finally:
        await nc.close()

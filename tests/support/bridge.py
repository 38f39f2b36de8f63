"""Run a real ``Bridge`` inside a test: started in a task group, stopped and drained after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import msgspec

from bridge.app import Bridge
from bridge.config.load import parse_config
from bridge.config.model import BridgeConfig

__all__ = ["make_config", "running_bridge"]


def make_config(nats_url: str | None, data_dir: Path, **sections: dict) -> BridgeConfig:
    """A config for tests: ZMQ ingest and republish on free loopback ports, admin on a free port, fast timeouts,
    flood control off (steady test traffic is a flood by design; flood tests turn it on).
    Fleet health off (its heartbeats would add to the stream counts tests assert; health tests turn it on).

    ``sections`` override top-level sections key by key, e.g. ``publish={...}``.
    """
    doc: dict = {
        "machine": "TestPC",
        "data_dir": str(data_dir),
        "zmq": {"bind_endpoint": "tcp://127.0.0.1:*"},
        "republish": {"bind_endpoint": "tcp://127.0.0.1:*"},
        "nats": {"servers": [nats_url] if nats_url else [], "embedded": {"port": 0}},
        "admin": {"port": 0, "probe_interval_secs": 0.5},
        "publish": {"ack_timeout_secs": 2.0, "drain_timeout_secs": 10.0},
        "flood": {"enabled": False},
        "health": {"enabled": False},
    }
    for key, value in sections.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(msgspec.json.encode(doc).decode(), "<test>")


@asynccontextmanager
async def running_bridge(cfg: BridgeConfig, *, wait_nats: bool = True) -> AsyncIterator[Bridge]:
    """Yield a started bridge (socket bound; with ``wait_nats``, also the stream provisioned and
    PubAcks subscribed); stop it gracefully on exit."""
    bridge = Bridge(cfg)
    async with anyio.create_task_group() as tg:
        await tg.start(_serve, bridge)
        try:
            if wait_nats:
                with anyio.fail_after(30):
                    await bridge.nats_ready.wait()
            yield bridge
        finally:
            bridge.request_stop()


async def _serve(bridge: Bridge, *, task_status: anyio.abc.TaskStatus[Bridge]) -> None:
    await bridge.serve(task_status=task_status)

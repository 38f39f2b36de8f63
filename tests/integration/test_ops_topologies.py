"""The nats-server layouts shipped in ``ops/nats/`` carry a real bridge: single node, 3-node
cluster, and leaf-per-machine with a hub that sources every leaf (store-and-forward).

Each server is started from the shipped file by the real binary; only ports and store dirs are
moved to temp ones (``tests.support.ops_nats``). Frames come from real ZMQ publisher sockets.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path

import anyio
import nats
import pytest
import zmq
from nats.js.api import StreamConfig

from loadtest.replay import connect_publishers
from tests.support.bridge import make_config, running_bridge
from tests.support.frames import d1_frame
from tests.support.ops_nats import OPS_NATS, running_shipped
from tests.support.stream import fetch_all, wait_for_count

pytestmark = pytest.mark.integration

HUB_STREAM = json.loads((OPS_NATS / "leaf" / "stream-ERRBUS_ALL.json").read_text(encoding="utf-8"))


async def send_frames(endpoint: str, count: int, source: str) -> list[str]:
    """Send ``count`` D1 frames from one real ZMQ publisher; return their event ids."""
    ids = [str(uuid.uuid4()) for _ in range(count)]

    def send() -> None:
        ctx = zmq.Context()
        try:
            [sock] = connect_publishers(ctx, endpoint, 1)  # waits for the bridge's subscription
            for event_id in ids:
                sock.send(d1_frame(event_id, source))
        finally:
            ctx.destroy(linger=10_000)  # closes every socket, flushing what was sent

    await anyio.to_thread.run_sync(send)
    return ids


async def test_single_node_config(tmp_path: Path) -> None:
    with running_shipped(tmp_path / "nats", "single.conf") as servers:
        url = servers["single"].url
        async with running_bridge(make_config(url, tmp_path / "bridge")) as bridge:
            assert (
                bridge.link is not None and bridge.link.max_payload == 1024 * 1024
            )  # max_payload: 1MB
            ids = await send_frames(bridge.zmq_endpoints[0], 5, "SingleAgent")
            assert await wait_for_count(url, "ERRBUS", 5) == 5
        stored = await fetch_all(url, "ERRBUS")
    assert [m.msg.event_id for m in stored] == ids


async def test_three_node_cluster_configs(tmp_path: Path) -> None:
    with running_shipped(
        tmp_path / "nats", "cluster/n1.conf", "cluster/n2.conf", "cluster/n3.conf"
    ) as servers:
        urls = [s.url for s in servers.values()]
        cfg = make_config(
            urls[0], tmp_path / "bridge", nats={"servers": urls}, stream={"replicas": 3}
        )
        async with running_bridge(cfg) as bridge:
            ids = await send_frames(bridge.zmq_endpoints[0], 5, "ClusterAgent")
            assert await wait_for_count(urls[2], "ERRBUS", 5) == 5
        nc = await nats.connect(urls[1])
        try:
            info = await nc.jetstream().stream_info("ERRBUS")
        finally:
            await nc.close()
        stored = await fetch_all(urls[1], "ERRBUS")
    assert info.cluster is not None and info.cluster.name == "errbus"  # the shipped cluster name
    assert info.cluster.leader in {"n1", "n2", "n3"} and len(info.cluster.replicas or []) == 2
    assert [m.msg.event_id for m in stored] == ids


async def _add_hub_stream(url: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(StreamConfig.from_response(dict(HUB_STREAM)))
    finally:
        await nc.close()


@pytest.mark.timeout(240)  # the hub re-sources a leaf with a 10 s-per-failure server backoff
async def test_leaf_per_machine_store_and_forward_to_hub(tmp_path: Path) -> None:
    files = ("leaf/hub.conf", "leaf/mainpc.conf", "leaf/pc2.conf")
    with running_shipped(tmp_path / "nats", *files) as servers:
        hub, mainpc, pc2 = servers["hub"], servers["mainpc"], servers["pc2"]
        await _add_hub_stream(hub.url)
        main_cfg = make_config(mainpc.url, tmp_path / "main", machine="MainPC")
        pc2_cfg = make_config(pc2.url, tmp_path / "pc2", machine="PC2")
        async with running_bridge(main_cfg) as main_bridge, running_bridge(pc2_cfg) as pc2_bridge:
            main_ids = await send_frames(main_bridge.zmq_endpoints[0], 3, "MainAgent")
            pc2_ids = await send_frames(pc2_bridge.zmq_endpoints[0], 3, "Pc2Agent")
            assert (
                await wait_for_count(mainpc.url, "ERRBUS", 3) == 3
            )  # each leaf holds only its own
            assert await wait_for_count(pc2.url, "ERRBUS", 3) == 3
            assert await wait_for_count(hub.url, HUB_STREAM["name"], 6) == 6

            hub.stop()  # partition: the hub is gone, each machine keeps storing locally
            main_ids += await send_frames(main_bridge.zmq_endpoints[0], 2, "MainAgent")
            pc2_ids += await send_frames(pc2_bridge.zmq_endpoints[0], 4, "Pc2Agent")
            assert await wait_for_count(mainpc.url, "ERRBUS", 5) == 5
            assert await wait_for_count(pc2.url, "ERRBUS", 7) == 7

            hub.start()  # same ports and store: the leaves reconnect, sourcing catches up
            assert (
                await wait_for_count(
                    hub.url, HUB_STREAM["name"], 12, timeout_secs=150, settle_secs=2
                )
                == 12
            )
        on_hub = await fetch_all(
            hub.url, HUB_STREAM["name"], "errbus.>"
        )  # sourced: no subjects of its own
        local = {name: await fetch_all(servers[name].url, "ERRBUS") for name in ("mainpc", "pc2")}

    assert [m.msg.event_id for m in local["mainpc"]] == main_ids
    assert [m.msg.event_id for m in local["pc2"]] == pc2_ids
    seen = Counter(m.msg.event_id for m in on_hub)
    assert set(seen) == set(main_ids) | set(pc2_ids) and set(seen.values()) == {1}, (
        "exactly once on the hub"
    )
    by_machine = {m.msg.event_id: m.msg.machine for m in on_hub}
    assert {by_machine[i] for i in main_ids} == {"MainPC"} and {by_machine[i] for i in pc2_ids} == {
        "PC2"
    }

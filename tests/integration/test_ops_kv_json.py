"""ops/nats/stream-KV_*.json equal the KV buckets the bridge creates on a real nats-server.

Two directions: what the bridge's own code creates has every setting the file states,
and a bucket created by hand from the file (``nats stream add --config``) is taken by
the bridge as it is (creating it again with the bridge's settings is a no-op, which
JetStream only allows for an identical config) and works as a KV bucket.
"""

from __future__ import annotations

import json
from pathlib import Path

import nats
import pytest

from bridge.adapters.health_kv import bucket_config_for
from bridge.adapters.nats_server import NatsServerProcess
from bridge.config.load import load_config
from bridge.fleet_phase import bucket_config, open_bucket

pytestmark = pytest.mark.integration

OPS = Path(__file__).resolve().parents[2] / "ops"
CFG = load_config(OPS / "config" / "busbridge.example.yaml")
BUCKETS = {
    "phase": bucket_config(CFG.phase.kv_bucket, CFG.stream.replicas),
    "health": bucket_config_for(CFG.health),
}


def _file(bucket: str) -> dict:
    return json.loads(
        (OPS / "nats" / f"stream-KV_busbridge_{bucket}.json").read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("bucket", sorted(BUCKETS))
async def test_what_the_bridge_creates_matches_the_file(
    bucket: str, nats_server: NatsServerProcess
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        if bucket == "phase":
            await open_bucket(js, CFG.phase.kv_bucket, CFG.stream.replicas)
        else:
            await js.create_key_value(BUCKETS[bucket])
        want = _file(bucket)
        reply = await nc.request(f"$JS.API.STREAM.INFO.{want['name']}", b"", timeout=5)
        have = json.loads(reply.data)["config"]
        differing = {
            k: (v, have.get(k)) for k, v in want.items() if have.get(k, _DEFAULTS.get(k)) != v
        }
        assert not differing, f"file vs server (file, server): {differing}"
    finally:
        await nc.close()


#: what the server leaves out of a config when it is false/empty
_DEFAULTS = {
    "deny_purge": False,
    "discard_new_per_subject": False,
    "no_ack": False,
    "sealed": False,
}


@pytest.mark.parametrize("bucket", sorted(BUCKETS))
async def test_a_bucket_created_from_the_file_is_taken_unchanged(
    bucket: str, nats_server: NatsServerProcess
) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        want = _file(bucket)
        reply = await nc.request(
            f"$JS.API.STREAM.CREATE.{want['name']}", json.dumps(want).encode(), timeout=5
        )
        assert "error" not in json.loads(reply.data), reply.data
        js = nc.jetstream()
        kv = await js.create_key_value(
            BUCKETS[bucket]
        )  # the bridge's create: refused if the config differed
        await kv.put("machine.mainpc", b'{"phase":"dual"}')
        assert (await kv.get("machine.mainpc")).value == b'{"phase":"dual"}'
        info = json.loads(
            (await nc.request(f"$JS.API.STREAM.INFO.{want['name']}", b"", timeout=5)).data
        )
        assert info["state"]["messages"] == 1
    finally:
        await nc.close()

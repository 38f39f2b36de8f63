"""KV buckets as JetStream stream definitions (JSON for ``nats stream add --config FILE``).

A KV bucket is a stream named ``KV_<bucket>`` with fixed settings. nats-py derives
them from a ``KeyValueConfig`` inside ``create_key_value`` (nats-py 2.x,
``nats/js/client.py``); ``kv_stream_config`` repeats that derivation for the two
buckets busbridge creates (phase: ``bridge.fleet_phase.bucket_config``; health:
``bridge.adapters.health_kv.bucket_config_for``), so operators can create or diff
them by hand. ``tests/integration/test_ops_kv_json.py`` proves the files equal what
the bridge creates on a real server, and that a bucket made from a file is accepted
by the bridge unchanged.
"""

from __future__ import annotations

import json

from nats.js.api import DiscardPolicy, KeyValueConfig, StreamConfig

__all__ = ["kv_stream_config", "kv_stream_definition"]

#: nats-py's KV duplicate window: 2 min, or the TTL when that is shorter
_KV_DUPLICATE_WINDOW_SECS = 120.0


def kv_stream_config(kv: KeyValueConfig) -> StreamConfig:
    """The ``KV_<bucket>`` stream that ``js.create_key_value(kv)`` creates (durations in seconds)."""
    duplicate_window = _KV_DUPLICATE_WINDOW_SECS
    if kv.ttl and kv.ttl < duplicate_window:
        duplicate_window = kv.ttl
    return StreamConfig(
        name=f"KV_{kv.bucket}",
        description=kv.description,
        subjects=[f"$KV.{kv.bucket}.>"],
        allow_direct=kv.direct,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=duplicate_window,
        max_age=kv.ttl,
        max_bytes=kv.max_bytes,
        max_consumers=-1,
        max_msg_size=kv.max_value_size,
        max_msgs=-1,
        max_msgs_per_subject=kv.history,
        num_replicas=kv.replicas,
        storage=kv.storage,
    )


def kv_stream_definition(kv: KeyValueConfig) -> str:
    """``kv_stream_config(kv)`` as JetStream API JSON (nanosecond durations), sorted keys."""
    return json.dumps(kv_stream_config(kv).as_dict(), indent=2, sort_keys=True) + "\n"

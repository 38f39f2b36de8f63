"""Fleet-wide phase through a NATS KV bucket (``phase.source: kv``).

Keys of the bucket (``phase.kv_bucket``, default ``busbridge_phase``):

* ``fleet`` - the phase every bridge should be in (``busbridge phase set --fleet``);
* ``machine.<machine>`` - one machine's phase (``busbridge phase set``);
* ``status.<machine>`` - what that machine's bridge did with the last request.

Requests and statuses are JSON (``PhaseRequest``, ``PhaseStatus``). A bridge
follows the **newest** of ``fleet`` and its ``machine.<machine>`` key (by KV
revision), so a per-machine rollback after a fleet move wins, and the next
fleet move wins again. Every request goes through the bridge's guards. While
NATS is unreachable nothing changes: the phase in force (persisted on disk by
``bridge.cutover``) holds, also across a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError

from bridge.phase import Phase
from contracts.messages import GuardResult
from contracts.subjects import sanitise_token

__all__ = [
    "FLEET_KEY",
    "PhaseRequest",
    "PhaseStatus",
    "bucket_config",
    "bucket_definition",
    "machine_key",
    "open_bucket",
    "status_key",
    "watch_requests",
]

log = logging.getLogger(__name__)

FLEET_KEY = "fleet"
_HISTORY = 16


def machine_key(machine: str) -> str:
    return f"machine.{sanitise_token(machine)}"


def status_key(machine: str) -> str:
    return f"status.{sanitise_token(machine)}"


class PhaseRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``fleet`` / ``machine.<m>``: ``by`` is who asked (user@host); ``at`` UTC."""

    phase: Phase
    force: bool = False
    by: str = ""
    at: datetime | None = None


class PhaseStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Value of ``status.<m>``: the bridge's answer to request ``key``@``revision``.

    ``result``: applied, forced, refused or unchanged; ``reason`` says why a
    request was refused; ``phase`` is the phase in force afterwards.
    """

    machine: str
    bridge_id: str
    phase: Phase
    requested: Phase
    result: str
    reason: str = ""
    guards: list[GuardResult] = []
    key: str = ""
    revision: int = 0
    at: datetime | None = None


def bucket_config(bucket: str, replicas: int = 1) -> KeyValueConfig:
    """The phase KV bucket as the bridge and ``busbridge phase`` create it: file storage,
    history 16 (the last requests and answers per key), no TTL."""
    return KeyValueConfig(
        bucket=bucket,
        description="busbridge cutover phase: fleet / machine.<m> requests and status.<m> answers",
        history=_HISTORY,
        storage=StorageType.FILE,
        replicas=replicas,
    )


def bucket_definition(bucket: str, replicas: int = 1) -> dict[str, Any]:
    """``bucket_config`` as a JSON-able dict (the ``nats kv add`` options)."""
    doc = bucket_config(bucket, replicas).as_dict()
    doc["storage"] = doc["storage"].value
    return doc


async def open_bucket(js: Any, bucket: str, replicas: int = 1) -> Any:
    """The phase bucket, created if missing. Raises nats errors when JetStream refuses."""
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(config=bucket_config(bucket, replicas))


async def put_json(kv: Any, key: str, value: msgspec.Struct) -> int:
    """Write ``value`` as JSON; return the KV revision."""
    return await kv.put(key, msgspec.json.encode(value))


def decode_request(data: bytes | None) -> PhaseRequest | None:
    if not data:
        return None
    try:
        return msgspec.json.decode(data, type=PhaseRequest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error("ignoring a malformed phase request in KV: %s", exc)
        return None


def now_utc() -> datetime:
    return datetime.now(UTC)


OnRequest = Callable[[str, int, PhaseRequest], Awaitable[None]]


async def watch_requests(
    kv: Any, machine: str, on_request: OnRequest, after_revision: int = 0
) -> int:
    """Call ``on_request(key, revision, request)`` for the newest request that concerns
    ``machine`` whenever a newer one is written, until cancelled or the watch ends
    (NATS lost: returns the last revision handled; the caller watches again from it).

    On the initial sync only the newest of ``fleet`` / ``machine.<m>`` is handed on.
    """
    keys = {FLEET_KEY, machine_key(machine)}
    watcher = await kv.watch(">", ignore_deletes=True)
    newest = after_revision
    initial: tuple[str, int, PhaseRequest] | None = None
    syncing = True
    try:
        async for entry in watcher:
            if entry is None:  # initial values delivered
                syncing = False
                if initial is not None:
                    await on_request(*initial)
                    newest = initial[1]
                continue
            if entry.key not in keys or entry.revision <= newest:
                continue
            request = decode_request(entry.value)
            if request is None:
                continue
            if syncing:
                initial = (entry.key, entry.revision, request)
                continue
            newest = entry.revision
            await on_request(entry.key, entry.revision, request)
    finally:
        await watcher.stop()
    return newest

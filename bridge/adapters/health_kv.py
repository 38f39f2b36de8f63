"""NATS side of fleet health: the KV bucket and stream publishes, on the bridge's own connection.

``bucket_config_for(cfg)`` is the nats-py ``KeyValueConfig`` of the bucket
(``health.kv_bucket``, history 1, ``max_age`` = ``health.kv_ttl_secs``,
storage, replicas); ``bucket_definition(cfg)`` the same as a JSON-able dict
(JetStream API units: ``ttl`` in nanoseconds), for ops files.

``HealthStore(link, cfg)`` writes through the ``JetStreamLink``'s client:
``ensure_bucket()`` creates the bucket, or updates its TTL/replicas when it
exists with other settings (retrying while JetStream is not ready, like the
stream); ``put(key, payload)`` stores the latest value of a key;
``publish(subject, payload, headers)`` stores a copy in the stream and waits for
its PubAck. Both raise ``HealthStoreUnavailable`` when NATS is down, the bucket
is not provisioned yet (or went missing: ``provisioned`` turns false so the
owner provisions it again), or the server does not answer within
``request_timeout_secs``: the caller keeps the value and tries again later.
``HealthStoreRefused``: the value is larger than the server's ``max_payload``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from bridge.adapters.jetstream import JetStreamLink
from bridge.config.model import HealthConfig, StorageKind
from bridge.errors import BridgeError, ProvisioningError

__all__ = [
    "HealthStore",
    "HealthStoreRefused",
    "HealthStoreUnavailable",
    "bucket_config_for",
    "bucket_definition",
]

log = logging.getLogger(__name__)

_NOT_READY = (
    nats.js.errors.ServiceUnavailableError,
    nats.errors.NoRespondersError,
    nats.errors.TimeoutError,
)


class HealthStoreUnavailable(BridgeError):
    """A health write could not be made now (NATS down, bucket missing, no answer); retry later."""

    code = "health_store_unavailable"


class HealthStoreRefused(BridgeError):
    """The server refuses this value for good (larger than its max_payload): do not retry it."""

    code = "health_store_refused"


def bucket_config_for(cfg: HealthConfig) -> KeyValueConfig:
    storage = StorageType.FILE if cfg.kv_storage is StorageKind.FILE else StorageType.MEMORY
    return KeyValueConfig(
        bucket=cfg.kv_bucket,
        description="busbridge fleet health: latest BridgeHeartbeat and HealthReport per key",
        history=1,
        ttl=cfg.kv_ttl_secs,
        storage=storage,
        replicas=cfg.kv_replicas,
    )


def bucket_definition(cfg: HealthConfig) -> dict[str, Any]:
    """The bucket as a JSON-able dict (``ttl`` in nanoseconds, as the JetStream API has it)."""
    doc = bucket_config_for(cfg).as_dict()
    doc["storage"] = doc["storage"].value
    return doc


class HealthStore:
    """KV puts and stream publishes for fleet health; see the module note."""

    def __init__(
        self, link: JetStreamLink, cfg: HealthConfig, *, request_timeout_secs: float = 5.0
    ) -> None:
        self._link = link
        self.cfg = cfg
        self.request_timeout_secs = request_timeout_secs
        self._kv: KeyValue | None = None

    @property
    def provisioned(self) -> bool:
        """The bucket was created or found (and not found missing since)."""
        return self._kv is not None

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def ensure_bucket(self, timeout_secs: float = 30.0) -> None:
        """Create or update the bucket. Raises ``ProvisioningError`` (refused, or not ready in time)."""
        deadline = time.monotonic() + timeout_secs
        while True:
            try:
                self._kv = await self._provision()
                return
            except _NOT_READY as exc:
                if time.monotonic() > deadline:
                    raise ProvisioningError(
                        f"JetStream not ready for KV bucket {self.cfg.kv_bucket}: {exc!r}"
                    ) from exc
                await anyio.sleep(0.5)
            except (
                nats.errors.Error,
                OSError,
            ) as exc:  # refused, or the connection dropped meanwhile
                raise ProvisioningError(
                    f"cannot provision KV bucket {self.cfg.kv_bucket}: {exc!r}"
                ) from exc

    async def _provision(self) -> KeyValue:
        nc = self._link.nc
        if nc is None:
            raise nats.errors.NoRespondersError
        js = nc.jetstream(timeout=self.request_timeout_secs)
        wanted = bucket_config_for(self.cfg)
        try:
            return await js.create_key_value(wanted)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # exists with other settings
                raise ProvisioningError(
                    f"cannot create KV bucket {wanted.bucket}: {exc.description}"
                ) from exc
        stream = f"KV_{wanted.bucket}"
        current = (await js.stream_info(stream)).config
        log.warning(
            "KV bucket %s exists with other settings: updating ttl/replicas/storage", wanted.bucket
        )
        await js.update_stream(current.evolve(max_age=wanted.ttl, num_replicas=wanted.replicas))
        return await js.key_value(wanted.bucket)

    async def put(self, key: str, payload: bytes) -> None:
        """Store ``payload`` as the latest value of ``key``. Raises ``HealthStoreUnavailable``."""
        kv = self._kv
        if kv is None or not self._link.connected:
            raise HealthStoreUnavailable("NATS not connected or KV bucket not provisioned yet")
        try:
            with anyio.fail_after(self.request_timeout_secs):
                await kv.put(key, payload)
        except nats.errors.MaxPayloadError as exc:
            raise HealthStoreRefused(
                f"KV put {key}: {len(payload)} B over the server's max_payload"
            ) from exc
        except (nats.errors.NoRespondersError, nats.js.errors.NotFoundError) as exc:
            self._kv = (
                None  # the bucket is gone (e.g. a server with a fresh store): provision again
            )
            raise HealthStoreUnavailable(
                f"KV put {key}: bucket {self.cfg.kv_bucket} missing: {exc!r}"
            ) from exc
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise HealthStoreUnavailable(f"KV put {key}: {exc!r}") from exc

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> None:
        """Store a copy in the stream (PubAck awaited). Raises ``HealthStoreUnavailable``."""
        nc = self._link.nc
        if nc is None or not self._link.connected:
            raise HealthStoreUnavailable("NATS not connected")
        try:
            await nc.jetstream().publish(
                subject, payload, timeout=self.request_timeout_secs, headers=headers
            )
        except nats.errors.MaxPayloadError as exc:
            raise HealthStoreRefused(
                f"publish {subject}: {len(payload)} B over the server's max_payload"
            ) from exc
        except (nats.errors.Error, OSError) as exc:
            raise HealthStoreUnavailable(f"publish {subject}: {exc!r}") from exc
